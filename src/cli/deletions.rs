//! `kudo deletions confirm`: releases GitOps deletions that a revision would make beyond its
//! repository's `maxDeletions` (they wait, listed in `kudo status -o json`, until a person
//! confirms that exact revision).

use serde_json::json;

use super::CliResult;
use super::status::{DEFAULT_SERVER, request_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Confirm the held deletions of one repository's revision (a write: needs a write token
    /// when the server has tokens).
    Confirm(ConfirmArgs),
}

#[derive(Debug, clap::Args)]
pub struct ConfirmArgs {
    /// The repository (its `name` in kudo.yaml).
    pub repository: String,
    /// The revision (commit) whose deletions are confirmed, as `kudo status` shows it
    /// (at least 7 characters); a newer revision needs its own confirmation.
    #[arg(long)]
    pub revision: String,
    /// The `kudo serve` HTTP address.
    #[arg(long, env = "KUDO_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// A file holding a write token (`apiTokens` with `role: write`).
    #[arg(long, env = "KUDO_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

pub async fn run(args: Args) -> CliResult {
    match args.command {
        Sub::Confirm(a) => {
            let token = match &a.token_file {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| format!("token file {}: {e}", f.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let path = format!("/api/v1/repositories/{}/confirm-deletions", a.repository);
            let answer = request_json(
                &a.server,
                http::Method::POST,
                &path,
                token.as_deref(),
                Some(&json!({"revision": a.revision})),
            )
            .await?;
            println!(
                "confirmed {} deletions of repository {} at revision {}",
                answer
                    .get("confirmed")
                    .and_then(|c| c.as_u64())
                    .unwrap_or(0),
                a.repository,
                a.revision
            );
            Ok(())
        }
    }
}
