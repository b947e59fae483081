//! `kudo diff`: what a revision would change on the live clusters of a `kudo.yaml`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use super::CliResult;
use crate::gitops::config::{Config, EMBEDDED_NAME};
use crate::gitops::diff::{diff_all, has_differences, load_revision, render};

/// Shows, per cluster, what a revision would change: instances added and removed, version
/// and parameter changes with the plan each would trigger, and each object's diff against
/// the live cluster (server-side apply dry run). Exit status 0: no differences; 1:
/// differences, a cluster that could not be compared, or an error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The control plane's configuration (the same file `kudo serve` reads).
    #[arg(long, short = 'c', env = "KUDO_CONFIG")]
    pub config: Option<PathBuf>,
    /// Compare this local folder (frameworks/ and instances/) instead of the repositories.
    #[arg(long, conflicts_with = "git_ref")]
    pub dir: Option<PathBuf>,
    /// Compare this Git ref (branch, tag or commit) of a repository instead of its
    /// configured ref.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// The repository --ref applies to (needed when the config has several Git ones).
    #[arg(long, requires = "git_ref")]
    pub repository: Option<String>,
    /// Colour the diff: auto (when stdout is a terminal), always or never.
    #[arg(long, value_enum, default_value_t = Colour::Auto)]
    pub colour: Colour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Colour {
    Auto,
    Always,
    Never,
}

pub async fn run(args: Args) -> CliResult {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::embedded(&std::env::current_dir()?).inspect(|_| {
            tracing::info!(
                config = EMBEDDED_NAME,
                "no --config: using the embedded default"
            );
        })?,
    };
    let (dir, reference, repository) = (
        args.dir.clone(),
        args.git_ref.clone(),
        args.repository.clone(),
    );
    let loaded = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            load_revision(
                &config,
                dir.as_deref(),
                reference.as_deref(),
                repository.as_deref(),
            )
        })
        .await?
    };
    let desired = loaded?;
    let diffs = diff_all(&config, &desired).await;
    let colour = match args.colour {
        Colour::Always => true,
        Colour::Never => false,
        Colour::Auto => std::io::stdout().is_terminal(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(render(&diffs, &desired.revision, colour).as_bytes())?;
    stdout.flush()?;
    if has_differences(&diffs) {
        // Differences are the answer, not an error: exit 1 without an error message.
        std::process::exit(1);
    }
    Ok(())
}
