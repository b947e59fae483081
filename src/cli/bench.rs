//! `kudo bench`: scale measurements that print a table and write JSON (see `crate::bench`).

use std::path::PathBuf;

use super::CliResult;
use crate::bench;

/// Measure kudo at scale: fan-out to many simulated clusters, rollouts, restarts, Git sync
/// and template rendering. Numbers only, no pass/fail; run a release build:
///
///   cargo run --release -- bench fanout --clusters 10,100,1000
///   cargo run --release -- bench all --json bench.json
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub scenario: Scenario,

    /// Also write the figures as JSON to this file.
    #[arg(long, global = true, env = "KUDO_BENCH_JSON")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Scenario {
    /// Generated Git repository: cold sync, then a one-file commit.
    Git(GitArgs),
    /// Templates per second over a package.
    Render(RenderArgs),
}

#[derive(Debug, clap::Args)]
pub struct GitArgs {
    /// Framework versions in the generated repository.
    #[arg(long, default_value_t = 200)]
    pub versions: usize,
    /// Instance files in the generated repository.
    #[arg(long, default_value_t = 5000)]
    pub instances: usize,
    /// Simulated clusters the instances are placed on.
    #[arg(long, default_value_t = 10)]
    pub clusters: usize,
    /// Frameworks the versions are spread over (200 versions / 20 = 10 each).
    #[arg(long, default_value_t = 20)]
    pub frameworks: usize,
    /// One-file commits measured per case (median and max reported).
    #[arg(long, default_value_t = 5)]
    pub commits: usize,
}

#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Package folder (default: ../shared/kudo-operators/kafka/operator beside the checkout).
    #[arg(long)]
    pub package: Option<PathBuf>,
    /// How long to render, in seconds.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
}

pub async fn run(args: Args) -> CliResult {
    let (table, json) = match args.scenario {
        Scenario::Git(g) => {
            let opts = bench::git::GitOptions {
                versions: g.versions,
                instances: g.instances,
                clusters: g.clusters,
                frameworks: g.frameworks,
                commits: g.commits,
            };
            tokio::task::spawn_blocking(move || bench::git::run(&opts)).await??
        }
        Scenario::Render(r) => {
            let package = r.package.unwrap_or_else(default_render_package);
            tokio::task::spawn_blocking(move || bench::render::run(&package, r.seconds)).await??
        }
    };
    print!("{}", table.render());
    write_json(args.json.as_deref(), &json)
}

pub(crate) fn write_json(path: Option<&std::path::Path>, json: &serde_json::Value) -> CliResult {
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(json)?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

fn default_render_package() -> PathBuf {
    PathBuf::from("../shared/kudo-operators/kafka/operator")
}
