//! `kudo bench`: scale measurements that print a table and write JSON (see `crate::bench`).

use std::path::PathBuf;

use super::CliResult;
use crate::bench;

/// Measure kudo at scale: fan-out to many simulated clusters, rollouts, restarts, Git sync
/// and template rendering. Numbers only, no pass/fail; run a release build:
///
///   cargo run --release -- bench fanout --clusters 10,100,1000
///   cargo run --release -- bench fanout --clusters 100 --sim-process
///   cargo run --release -- bench idle --clusters 10,100 --window 10m
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
    /// The fanout fleet converged, then observed for a window in which nothing changes:
    /// API requests per second per cluster and the control plane's share of one core.
    Idle(IdleArgs),
    /// Runs one size in this process and prints its JSON (used by the scenarios above).
    #[command(hide = true)]
    FleetChild(ChildArgs),
    /// Generated Git repository: cold sync, then a one-file commit.
    Git(GitArgs),
    /// Templates per second over a package.
    Render(RenderArgs),
    /// K simulated clusters (in `kudo sim` processes) driven by R sharded `kudo serve`
    /// replicas, each its own process, against one process: fanout time, RSS and CPU per
    /// process; then `kill -9` of a member: handover time, clusters moved, steps run again.
    Shards(ShardArgs),
    /// The control plane's cost per cluster, push mode against agent mode (each cluster's
    /// `kudo manager --agent` runs its engine): RSS, CPU, requests per plan, watches.
    Agents(AgentArgs),
    /// Writes a demo fleet to --out: a Git repository with M instances and a kudo.yaml
    /// declaring N simulated clusters, for `kudo serve --config <out>/kudo.yaml` (the web
    /// console at scale; the console bench uses it).
    DemoFleet(DemoArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Simulated clusters.
    #[arg(long, default_value_t = 200)]
    pub clusters: usize,
    /// Instances, each on every cluster.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// How long workloads take to become ready, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub ready_delay_ms: u64,
    /// The idle window after convergence, in seconds.
    #[arg(long, default_value_t = 20)]
    pub idle_seconds: u64,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ShardArgs {
    /// Simulated clusters.
    #[arg(long, default_value_t = 2000)]
    pub clusters: usize,
    /// Sharded replicas (separate processes).
    #[arg(long, default_value_t = 4)]
    pub replicas: usize,
    /// Instances, each on every cluster.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// How long workloads take to become ready, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub ready_delay_ms: u64,
    /// memberLeaseDuration (and the leader's leaseDuration), in seconds.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// The idle window after convergence, in seconds.
    #[arg(long, default_value_t = 20)]
    pub idle_seconds: u64,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 1200)]
    pub timeout_s: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Simulated clusters.
    #[arg(long, default_value_t = 1000)]
    pub clusters: usize,
    /// Instances, each on every cluster.
    #[arg(long, default_value_t = 10)]
    pub instances: usize,
    /// How long workloads take to become ready, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub ready_delay_ms: u64,
    /// An empty or new folder to write to.
    #[arg(long)]
    pub out: PathBuf,
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
    /// Serve the clusters from a `kudo sim` child process over loopback instead of this
    /// process, so peak RSS and CPU are the control plane's alone (not for `coldstart`).
    #[arg(long)]
    pub sim_process: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// How long the converged fleet is observed (`10m`, `30s`, `1h`; a bare number is
    /// seconds).
    #[arg(long, default_value = "10m", value_parser = parse_window)]
    pub window: std::time::Duration,
}

/// A window longer than zero, in kudo.yaml's duration syntax.
fn parse_window(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::util::duration::parse(s).map_err(|e| e.to_string())?;
    if d.is_zero() {
        return Err("the window must be longer than zero".into());
    }
    Ok(d)
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
        Scenario::Fanout(f) => fleet(bench::fleet::Mode::Fanout, f, None).await?,
        Scenario::Rollout(f) => fleet(bench::fleet::Mode::Rollout, f, None).await?,
        Scenario::Coldstart(f) => fleet(bench::fleet::Mode::Coldstart, f, None).await?,
        Scenario::Idle(i) => fleet(bench::fleet::Mode::Idle, i.fleet, Some(i.window)).await?,
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
        Scenario::Shards(s) => {
            if s.replicas < 2 || s.clusters == 0 {
                return Err(
                    "shards: --replicas must be at least 2 and --clusters at least 1".into(),
                );
            }
            bench::shards::run(&bench::shards::ShardOptions {
                clusters: s.clusters,
                replicas: s.replicas,
                instances: s.instances.max(1),
                ready_delay_ms: s.ready_delay_ms,
                lease_s: s.lease_seconds,
                timeout_s: s.timeout_s,
                idle_s: s.idle_seconds,
            })
            .await?
        }
        Scenario::Agents(a) => {
            bench::agents::run(&bench::agents::AgentOptions {
                clusters: a.clusters.max(1),
                instances: a.instances.max(1),
                ready_delay_ms: a.ready_delay_ms,
                timeout_s: a.timeout_s,
                idle_s: a.idle_seconds,
            })
            .await?
        }
        Scenario::DemoFleet(d) => {
            let config = bench::demo::write_demo_fleet(
                &d.out,
                d.clusters,
                d.instances,
                std::time::Duration::from_millis(d.ready_delay_ms),
            )?;
            println!(
                "{} clusters × {} instances written; run:\n  kudo serve --config {}\nthen open http://127.0.0.1:8080/",
                d.clusters,
                d.instances,
                config.display()
            );
            return Ok(());
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
    window: Option<std::time::Duration>,
) -> Result<(bench::Table, serde_json::Value), super::CliError> {
    if args.sim_process && mode == bench::fleet::Mode::Coldstart {
        return Err(
            "--sim-process: coldstart reads the clusters' stores directly; run it without".into(),
        );
    }
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
            sim_process: args.sim_process,
            window_s: window.map_or(0.0, |w| w.as_secs_f64()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_in_kudo_yaml_syntax_and_are_never_empty() {
        assert_eq!(parse_window("10m"), Ok(std::time::Duration::from_secs(600)));
        assert_eq!(parse_window("5s"), Ok(std::time::Duration::from_secs(5)));
        assert_eq!(parse_window("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(
            parse_window("0s"),
            Err("the window must be longer than zero".to_string())
        );
        assert!(parse_window("ten minutes").is_err());
    }

    #[test]
    fn idle_takes_the_fleet_flags_and_a_window() {
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "kudo",
            "bench",
            "idle",
            "--clusters",
            "2",
            "--instances",
            "1",
            "--window",
            "3s",
            "--sim-process",
        ])
        .expect("parses");
        let crate::cli::Command::Bench(Args {
            scenario: Scenario::Idle(i),
            ..
        }) = cli.command
        else {
            panic!("not bench idle: {cli:?}");
        };
        assert_eq!(i.fleet.clusters, vec![2]);
        assert!(i.fleet.sim_process);
        assert_eq!(i.window, std::time::Duration::from_secs(3));
        let err = crate::cli::Cli::try_parse_from(["kudo", "bench", "idle", "--window", "0"])
            .expect_err("refused");
        assert!(
            err.to_string().contains("--window") && err.to_string().contains("longer than zero"),
            "{err}"
        );
    }
}
