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
    /// K simulated clusters × M instances each: commit (webhook) to every plan COMPLETE,
    /// against the ideal critical path; RSS, CPU and API requests per plan, per K.
    Fanout(FleetArgs),
    /// The fanout fleet, then one parameter change rolled out `parallel` and in
    /// `maxUnavailable` waves.
    Rollout(FleetArgs),
    /// A daemon stopped mid-rollout and started again: time to ready and to every plan
    /// continuing (none restarted).
    Coldstart(FleetArgs),
    /// Runs one size in this process and prints its JSON (used by the scenarios above).
    #[command(hide = true)]
    FleetChild(ChildArgs),
    /// Generated Git repository: cold sync, then a one-file commit.
    Git(GitArgs),
    /// Templates per second over a package.
    Render(RenderArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Fleet sizes to measure, each in its own process (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
    pub clusters: Vec<usize>,
    /// Instances per cluster (each instance is placed on every cluster).
    #[arg(long, default_value_t = 10)]
    pub instances: usize,
    /// Latency the simulated API servers add to every request, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub latency_ms: u64,
    /// Delay before simulated workloads report ready, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub ready_delay_ms: u64,
    /// Wave size of the `rollout` scenario's second change, percent of the clusters.
    #[arg(long, default_value_t = 10)]
    pub max_unavailable_percent: u32,
    /// Give up on a size after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
}

#[derive(Debug, clap::Args)]
pub struct ChildArgs {
    #[arg(long, value_enum)]
    pub mode: bench::fleet::Mode,
    #[arg(long)]
    pub options: String,
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
        Scenario::Fanout(f) => fleet(bench::fleet::Mode::Fanout, f).await?,
        Scenario::Rollout(f) => fleet(bench::fleet::Mode::Rollout, f).await?,
        Scenario::Coldstart(f) => fleet(bench::fleet::Mode::Coldstart, f).await?,
        Scenario::FleetChild(c) => {
            let opts: bench::fleet::FleetOptions = serde_json::from_str(&c.options)?;
            let report = bench::fleet::run_child(c.mode, opts).await?;
            println!("{}", serde_json::to_string(&report)?);
            return Ok(());
        }
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

/// Runs every size in a child process of this binary and tabulates the reports.
async fn fleet(
    mode: bench::fleet::Mode,
    args: FleetArgs,
) -> Result<(bench::Table, serde_json::Value), super::CliError> {
    let exe = std::env::current_exe()?;
    let mut reports = Vec::new();
    for &clusters in &args.clusters {
        let opts = bench::fleet::FleetOptions {
            clusters,
            instances: args.instances,
            latency_ms: args.latency_ms,
            ready_delay_ms: args.ready_delay_ms,
            timeout_s: args.timeout_s,
            max_unavailable_percent: args.max_unavailable_percent,
        };
        let mode_name = serde_json::to_value(mode)?;
        eprintln!(
            "bench {}: {clusters} clusters × {} instances ...",
            mode_name.as_str().unwrap_or_default(),
            args.instances
        );
        let out = tokio::process::Command::new(&exe)
            .args(["bench", "fleet-child", "--mode"])
            .arg(mode_name.as_str().unwrap_or_default())
            .arg("--options")
            .arg(serde_json::to_string(&opts)?)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(std::process::Stdio::inherit())
            .output()
            .await?;
        if !out.status.success() {
            return Err(format!(
                "bench child for {clusters} clusters failed ({})",
                out.status
            )
            .into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        let report: bench::fleet::FleetReport = serde_json::from_str(line)
            .map_err(|e| format!("bench child for {clusters} clusters printed no report: {e}"))?;
        reports.push(report);
    }
    Ok(bench::fleet::tabulate(mode, &reports))
}
