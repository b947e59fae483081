//! Fleet scenarios over simulated clusters, each run of one size in its own process (the CLI
//! re-executes itself with `--child`), so peak RSS and CPU seconds belong to that size.
//!
//! Everything is the real path of `kudo serve`: a real Git repository (git CLI), the daemon
//! built from a parsed `kudo.yaml`, the webhook over HTTP, the engine on every cluster. The
//! simulated clusters run in the same process on a runtime of their own (CPU is split by
//! thread between control plane and simulators; RSS includes them), or with `--sim-process`
//! in a `kudo sim` child over loopback, so RSS is the control plane's alone (see
//! [`super::clusters`]). Requests are the daemon's own, by verb, watches apart
//! ([`super::usage`]).
//!
//! `idle` converges the fleet, then measures a window in which nothing changes: what a
//! converged fleet costs its clusters (requests per second per cluster) and the control plane
//! (share of one core).
//!
//! The ideal critical path of one plan on one cluster, for request latency L, readiness
//! delay D and P serial phases (the steps of a phase run in parallel): the Instance spec
//! reaches the cluster (L), each phase applies its objects (L) and waits for them to be
//! ready (D), and the final status is written (L): `2L + P·(L + D)`. A parallel rollout
//! has the same ideal for the whole fleet; a rollout in W waves costs W times that.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::clusters::Clusters;
use super::usage::{Sample, Usage, verb_breakdown};
use super::{BenchError, process};
use crate::gitops::config::Config;
use crate::gitops::serve::{Daemon, Options, Shared, serve_http};
use crate::sim::SimCluster;

/// Serial phases of the bench framework's deploy plan (each with [`STEPS`] parallel steps).
pub const PHASES: u32 = 3;
pub const STEPS: u32 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetOptions {
    pub clusters: usize,
    /// Instances per cluster (every instance is placed on every cluster).
    pub instances: usize,
    pub latency_ms: u64,
    pub ready_delay_ms: u64,
    /// Give up waiting after this long.
    pub timeout_s: u64,
    /// For `rollout`: the wave size as a percentage of the clusters.
    pub max_unavailable_percent: u32,
    /// Serve the clusters from a `kudo sim` child process over loopback.
    #[serde(default)]
    pub sim_process: bool,
    /// For `idle`: how long the converged fleet is observed, in seconds.
    #[serde(default)]
    pub window_s: f64,
}

impl FleetOptions {
    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms)
    }
    fn ready_delay(&self) -> Duration {
        Duration::from_millis(self.ready_delay_ms)
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    /// `2L + P·(L + D)` in seconds (see the module docs).
    pub fn ideal_plan_seconds(&self) -> f64 {
        let l = self.latency().as_secs_f64();
        let d = self.ready_delay().as_secs_f64();
        2.0 * l + f64::from(PHASES) * (l + d)
    }

    /// Waves of a `maxUnavailable: N%` rollout over the fleet.
    pub fn waves(&self) -> usize {
        let per = (self.clusters * self.max_unavailable_percent as usize / 100).max(1);
        self.clusters.div_ceil(per)
    }

    /// Waves of the staged rollout: a one-cluster canary stage, then the rest in waves of
    /// `maxUnavailable: N%` of the rest, counted by the planner's own `stage_waves`.
    pub fn staged_waves(&self) -> usize {
        use crate::gitops::rollout::{Count, Strategy};
        use crate::gitops::stages::{Stage, stage_waves};
        let names: Vec<String> = (0..self.clusters)
            .map(super::clusters::cluster_name)
            .collect();
        let (canary, rest) = names.split_at(names.len().min(1));
        let stage = |clusters: &[String], strategy| Stage {
            name: String::new(),
            clusters: clusters.to_vec(),
            strategy,
            gates: Vec::new(),
        };
        let percent = Strategy::MaxUnavailable(Count::Percent(self.max_unavailable_percent));
        stage_waves(&stage(canary, Strategy::Parallel)).len()
            + stage_waves(&stage(rest, percent)).len()
    }
}

/// One converge measurement: from the webhook to every plan COMPLETE as the daemon sees it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Converge {
    pub seconds: f64,
    pub ideal_seconds: f64,
    pub ratio: f64,
    /// This process's CPU: control plane, plus the simulators when they run in it.
    pub cpu_seconds: f64,
    /// Requests other than watches per plan.
    pub requests_per_instance_plan: f64,
    /// Control-plane CPU per plan, in milliseconds.
    pub control_plane_cpu_ms_per_plan: f64,
    #[serde(flatten)]
    pub usage: Usage,
}

/// A converged fleet observed for a window in which nothing changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Idle {
    /// Requests other than watches per second per cluster.
    pub requests_per_second_per_cluster: f64,
    /// CPU seconds per second: 1.0 is one core busy.
    pub control_plane_core_share: f64,
    pub simulator_core_share: f64,
    /// This process's RSS at the end of the window.
    pub rss_bytes: u64,
    #[serde(flatten)]
    pub usage: Usage,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetReport {
    pub options: Option<FleetOptions>,
    pub plans: usize,
    /// Daemon start until ready (first sync, every cluster probed, engines started).
    pub startup_seconds: f64,
    pub fanout: Converge,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_parallel: Option<Converge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_waves: Option<Converge>,
    /// A canary stage of one cluster, then the rest in `maxUnavailable` waves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_staged: Option<Converge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coldstart: Option<ColdStart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle: Option<Idle>,
    /// Process peak RSS (daemon, and simulated clusters unless `simProcess`), and RSS when
    /// ready before the commit.
    pub peak_rss_bytes: u64,
    pub idle_rss_bytes: u64,
    /// Peak RSS of the `kudo sim` process (`simProcess` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim_peak_rss_bytes: Option<u64>,
    pub cpu_seconds_total: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColdStart {
    /// Steps COMPLETE over all plans when the first daemon stopped (it stops once a third
    /// are), of all steps.
    pub steps_done_at_stop: u64,
    pub steps_total: u64,
    /// New daemon start until `/readyz` would answer ready.
    pub ready_seconds: f64,
    /// New daemon start until every plan advanced past where it stood (or completed).
    pub all_continued_seconds: f64,
    /// New daemon start until every plan COMPLETE.
    pub converged_seconds: f64,
    /// Plans whose uid changed (restarted instead of continued): must be 0.
    pub plans_restarted: u64,
    /// Steps that were COMPLETE at the stop and not COMPLETE later (re-run): must be 0.
    pub steps_regressed: u64,
}

/// Which scenario a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Fanout,
    Rollout,
    Coldstart,
    Idle,
}

fn setup(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Setup {
        scenario: "fleet",
        reason: reason.to_string(),
    }
}

/// The bench framework and instance documents in a Git work tree.
pub(crate) struct Repo {
    pub(crate) dir: PathBuf,
    instances: usize,
}

impl Repo {
    pub(crate) fn create(dir: &Path, instances: usize) -> Result<Repo, BenchError> {
        let repo = Repo {
            dir: dir.to_path_buf(),
            instances,
        };
        std::fs::create_dir_all(dir).map_err(setup)?;
        git(dir, &["init", "-q", "-b", "main"])?;
        repo.write_framework()?;
        Ok(repo)
    }

    fn write(&self, rel: &str, text: &str) -> Result<(), BenchError> {
        let path = self.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(setup)?;
        }
        std::fs::write(&path, text).map_err(|e| setup(format!("{}: {e}", path.display())))
    }

    fn write_framework(&self) -> Result<(), BenchError> {
        let base = "frameworks/bench/1.0.0";
        let mut tasks = String::new();
        let mut phases = String::new();
        for p in 1..=PHASES {
            phases.push_str(&format!(
                "      - name: phase-{p}\n        strategy: parallel\n        steps:\n"
            ));
            for s in 1..=STEPS {
                let n = format!("p{p}-s{s}");
                tasks.push_str(&format!(
                    "  - {{name: {n}, kind: Apply, spec: {{resources: [{n}.yaml]}}}}\n"
                ));
                phases.push_str(&format!("          - {{name: {n}, tasks: [{n}]}}\n"));
                self.write(
                    &format!("{base}/templates/{n}.yaml"),
                    &format!(
                        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ .Name }}}}-{n}
spec:
  replicas: {{{{ .Params.REPLICAS }}}}
  selector:
    matchLabels: {{app: {{{{ .Name }}}}-{n}}}
  template:
    metadata:
      labels: {{app: {{{{ .Name }}}}-{n}}}
    spec:
      containers:
        - name: main
          image: nginx:1.27
          env:
            - {{name: MESSAGE, value: {{{{ .Params.MESSAGE | quote }}}}}}
"#
                    ),
                )?;
            }
        }
        self.write(
            &format!("{base}/operator.yaml"),
            &format!(
                "apiVersion: kudo.dev/v1beta1\nname: bench\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n{tasks}plans:\n  deploy:\n    strategy: serial\n    phases:\n{phases}"
            ),
        )?;
        self.write(
            &format!("{base}/params.yaml"),
            "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: REPLICAS, type: integer, default: 2}\n  - {name: MESSAGE, default: v1}\n",
        )
    }

    /// Every instance file with `message` and the rollout strategy given (YAML).
    pub(crate) fn write_instances(&self, message: &str, rollout: &str) -> Result<(), BenchError> {
        for i in 0..self.instances {
            self.write(
                &format!("instances/bench-{i:03}.yaml"),
                &format!(
                    "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: bench-{i:03}\n  namespace: bench\nspec:\n  framework: bench\n  version: 1.0.0\n  parameters:\n    MESSAGE: {message}\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: bench}}\n    rollout: {rollout}\n"
                ),
            )?;
        }
        Ok(())
    }

    pub(crate) fn commit(&self, message: &str) -> Result<String, BenchError> {
        git(&self.dir, &["add", "-A"])?;
        git(
            &self.dir,
            &[
                "-c",
                "user.name=kudo bench",
                "-c",
                "user.email=bench@kudo.invalid",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                message,
            ],
        )?;
        Ok(git(&self.dir, &["rev-parse", "HEAD"])?.trim().to_string())
    }
}

fn git(dir: &Path, args: &[&str]) -> Result<String, BenchError> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| setup(format!("git {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(setup(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn config_text(opts: &FleetOptions, clusters: &Clusters, repo: &Path, cache: &Path) -> String {
    let mut text = format!(
        "listen: 127.0.0.1:0\ncacheDir: {}\nrepositories:\n  - {{name: bench, url: \"file://{}\", interval: 1h}}\nclusters:\n",
        cache.display(),
        repo.display()
    );
    for c in 0..opts.clusters {
        text.push_str(&clusters.config_entry(c, opts));
    }
    text
}

/// Waits until `f` is true, checking every `every`; errors after the timeout.
async fn wait_until(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                scenario: "fleet",
                what: what.to_string(),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// A daemon with its HTTP API, for the webhook.
struct Running {
    daemon: Daemon,
    addr: std::net::SocketAddr,
    stop_http: tokio::sync::oneshot::Sender<()>,
    http: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: Config, options: Options) -> Result<Running, BenchError> {
        let daemon = Daemon::start(config, options).await.map_err(setup)?;
        let (stop_http, rx) = tokio::sync::oneshot::channel::<()>();
        let (addr, http) = serve_http(
            daemon.shared.clone(),
            "127.0.0.1:0".parse().map_err(setup)?,
            async move {
                let _ = rx.await;
            },
        )
        .await
        .map_err(setup)?;
        Ok(Running {
            daemon,
            addr,
            stop_http,
            http,
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.daemon.shared
    }

    async fn webhook(&self) -> Result<(), BenchError> {
        let url = format!("http://{}/api/v1/hooks/git", self.addr);
        let response = reqwest::Client::new()
            .post(&url)
            .header("X-GitHub-Event", "push")
            .body("{}")
            .send()
            .await
            .map_err(|e| setup(format!("webhook {url}: {e}")))?;
        if !response.status().is_success() {
            return Err(setup(format!("webhook {url}: {}", response.status())));
        }
        Ok(())
    }

    async fn stop(self) {
        let _ = self.stop_http.send(());
        self.daemon.shutdown().await;
        let _ = self.http.await;
    }
}

/// Commit, webhook, and wait until the daemon sees every rollout of that commit complete.
#[allow(clippy::too_many_arguments)]
async fn converge(
    run: &Running,
    repo: &Repo,
    message: &str,
    ideal: f64,
    plans: usize,
    timeout: Duration,
    sim_pid: Option<u32>,
) -> Result<Converge, BenchError> {
    let commit = repo.commit(message)?;
    let before = Sample::take(run.shared(), sim_pid);
    let cpu_before = process::cpu_seconds().unwrap_or_default();
    let started = Instant::now();
    run.webhook().await?;
    let shared = run.shared().clone();
    let mut halted = 0;
    wait_until(
        &format!("every rollout of {message} to complete"),
        timeout,
        Duration::from_millis(5),
        || {
            let s = shared.plan_summary();
            halted = s.halted;
            s.revision == commit && (s.complete == s.instances || s.halted > 0)
        },
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    if halted > 0 {
        return Err(setup(format!("{message}: {halted} rollouts halted")));
    }
    let usage = Usage::between(&before, &Sample::take(run.shared(), sim_pid));
    let plans = plans.max(1) as f64;
    Ok(Converge {
        seconds,
        ideal_seconds: ideal,
        ratio: seconds / ideal,
        cpu_seconds: process::cpu_seconds().unwrap_or_default() - cpu_before,
        requests_per_instance_plan: usage.api_requests as f64 / plans,
        control_plane_cpu_ms_per_plan: usage.control_plane_cpu_seconds * 1000.0 / plans,
        usage,
    })
}

/// Watches the converged fleet for the window: nothing changes in Git or the clusters.
async fn idle(
    run: &Running,
    opts: &FleetOptions,
    sim_pid: Option<u32>,
) -> Result<Idle, BenchError> {
    let window = Duration::try_from_secs_f64(opts.window_s)
        .map_err(|e| setup(format!("idle window {} s: {e}", opts.window_s)))?;
    let before = Sample::take(run.shared(), sim_pid);
    tokio::time::sleep(window).await;
    let usage = Usage::between(&before, &Sample::take(run.shared(), sim_pid));
    let seconds = usage.window_seconds.max(f64::EPSILON);
    Ok(Idle {
        requests_per_second_per_cluster: usage.api_requests as f64
            / seconds
            / opts.clusters.max(1) as f64,
        control_plane_core_share: usage.control_plane_cpu_seconds / seconds,
        simulator_core_share: usage.simulator_cpu_seconds / seconds,
        rss_bytes: process::rss_bytes().unwrap_or_default(),
        usage,
    })
}

/// Runs one size of `mode` in this process and returns its report.
pub async fn run_child(mode: Mode, opts: FleetOptions) -> Result<FleetReport, BenchError> {
    if opts.sim_process && mode == Mode::Coldstart {
        return Err(setup(
            "coldstart reads the clusters' stores directly and cannot use --sim-process",
        ));
    }
    let tmp = tempfile::tempdir().map_err(setup)?;
    let repo = Repo::create(&tmp.path().join("repo"), opts.instances)?;
    repo.commit("framework only")?;
    // Clusters built here outlive a daemon (coldstart restarts one against the same fleet).
    let clusters = Clusters::start(&opts, tmp.path()).await?;
    let result = run_fleet(mode, &opts, &repo, &clusters, tmp.path()).await;
    let sim_peak_rss_bytes = clusters.sim_peak_rss_bytes();
    clusters.stop().await;
    let mut report = result?;
    report.sim_peak_rss_bytes = sim_peak_rss_bytes;
    report.peak_rss_bytes = process::peak_rss_bytes().unwrap_or_default();
    report.cpu_seconds_total = process::cpu_seconds().unwrap_or_default();
    Ok(report)
}

async fn run_fleet(
    mode: Mode,
    opts: &FleetOptions,
    repo: &Repo,
    clusters: &Clusters,
    tmp: &Path,
) -> Result<FleetReport, BenchError> {
    let config_text = config_text(opts, clusters, &repo.dir, &tmp.join("cache"));
    let config = Config::parse("bench kudo.yaml", &config_text, tmp).map_err(setup)?;
    let sims = clusters.sims();
    let sim_pid = clusters.sim_pid();
    let options = Options {
        sims: sims.clone(),
        ..Options::default()
    };
    let plans = opts.clusters * opts.instances;
    let started = Instant::now();
    let run = Running::start(config.clone(), options.clone()).await?;
    let shared = run.shared().clone();
    let ready = wait_until(
        "the daemon to be ready",
        opts.timeout(),
        Duration::from_millis(5),
        || shared.ready(),
    )
    .await;
    if let Err(e) = ready {
        run.stop().await;
        return Err(e);
    }
    let startup_seconds = started.elapsed().as_secs_f64();
    let idle_rss_bytes = process::rss_bytes().unwrap_or_default();
    let ideal = opts.ideal_plan_seconds();
    let mut report = FleetReport {
        options: Some(opts.clone()),
        plans,
        startup_seconds,
        idle_rss_bytes,
        ..Default::default()
    };
    repo.write_instances("v1", "parallel")?;
    if mode == Mode::Coldstart {
        report.coldstart = Some(coldstart(run, repo, &sims, config, options, opts).await?);
        return Ok(report);
    }
    let converged = converge(
        &run,
        repo,
        "instances",
        ideal,
        plans,
        opts.timeout(),
        sim_pid,
    )
    .await;
    report.fanout = match converged {
        Ok(c) => c,
        Err(e) => {
            run.stop().await;
            return Err(e);
        }
    };
    let rest = async {
        match mode {
            Mode::Rollout => {
                repo.write_instances("v2", "parallel")?;
                report.rollout_parallel = Some(
                    converge(
                        &run,
                        repo,
                        "MESSAGE=v2",
                        ideal,
                        plans,
                        opts.timeout(),
                        sim_pid,
                    )
                    .await?,
                );
                repo.write_instances(
                    "v3",
                    &format!("{{maxUnavailable: \"{}%\"}}", opts.max_unavailable_percent),
                )?;
                let waves_ideal = ideal * opts.waves() as f64;
                report.rollout_waves = Some(
                    converge(
                        &run,
                        repo,
                        "MESSAGE=v3",
                        waves_ideal,
                        plans,
                        opts.timeout(),
                        sim_pid,
                    )
                    .await?,
                );
                repo.write_instances(
                    "v4",
                    &format!(
                        "{{stages: [{{name: canary, clusters: [{}]}}, {{name: rest, clusterSelector: {{matchLabels: {{fleet: bench}}}}, maxUnavailable: \"{}%\"}}]}}",
                        super::clusters::cluster_name(0),
                        opts.max_unavailable_percent
                    ),
                )?;
                report.rollout_staged = Some(
                    converge(
                        &run,
                        repo,
                        "MESSAGE=v4",
                        ideal * opts.staged_waves() as f64,
                        plans,
                        opts.timeout(),
                        sim_pid,
                    )
                    .await?,
                );
            }
            Mode::Idle => report.idle = Some(idle(&run, opts, sim_pid).await?),
            Mode::Fanout | Mode::Coldstart => {}
        }
        Ok::<_, BenchError>(())
    }
    .await;
    run.stop().await;
    rest.map(|()| report)
}

/// Per plan (cluster/namespace/name): its uid and the names of its COMPLETE steps.
type Progress = std::collections::BTreeMap<String, (String, std::collections::BTreeSet<String>)>;

/// Read straight from the simulated clusters' stores: no requests, so measuring does not
/// load the API servers the daemon talks to.
fn progress(sims: &std::collections::BTreeMap<String, SimCluster>) -> Progress {
    let mut out = Progress::new();
    let everything = crate::sim::selector::Selector::default();
    for (name, sim) in sims {
        let items = sim.with_store(|s| {
            let t = s.target("kudo.dev", "v1beta1", "instances", "").ok()?;
            s.list(&t, &everything, &everything, None, None).ok()
        });
        for obj in items.map(|p| p.items).unwrap_or_default() {
            // Read in place: deserializing 10,000 Instances per poll would load the machine.
            let meta = |k: &str| {
                obj.pointer(&format!("/metadata/{k}"))
                    .and_then(|v| v.as_str())
            };
            let key = format!(
                "{name}/{}/{}",
                meta("namespace").unwrap_or_default(),
                meta("name").unwrap_or_default()
            );
            let Some(plan) = obj.pointer("/status/planStatus/deploy") else {
                continue;
            };
            let mut done = std::collections::BTreeSet::new();
            for phase in plan
                .get("phases")
                .and_then(|p| p.as_array())
                .into_iter()
                .flatten()
            {
                let phase_name = phase
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default();
                for step in phase
                    .get("steps")
                    .and_then(|p| p.as_array())
                    .into_iter()
                    .flatten()
                {
                    if step.get("status").and_then(|v| v.as_str()) == Some("COMPLETE") {
                        let step_name = step
                            .get("name")
                            .and_then(|v| v.as_str())
                            .unwrap_or_default();
                        done.insert(format!("{phase_name}/{step_name}"));
                    }
                }
            }
            let uid = plan.get("uid").and_then(|v| v.as_str()).unwrap_or_default();
            out.insert(key, (uid.to_string(), done));
        }
    }
    out
}

/// Stops the daemon mid-rollout (once a third of all steps are done; some plans may not have
/// started), starts a new one against the same clusters and measures how it picks up.
async fn coldstart(
    run: Running,
    repo: &Repo,
    sims: &std::collections::BTreeMap<String, SimCluster>,
    config: Config,
    options: Options,
    opts: &FleetOptions,
) -> Result<ColdStart, BenchError> {
    let plans = opts.clusters * opts.instances;
    let steps_total = (plans as u64) * u64::from(PHASES * STEPS);
    repo.commit("instances")?;
    run.webhook().await?;
    // Mid-rollout: every plan exists and at least a third of all steps are done.
    let deadline = Instant::now() + opts.timeout();
    let at_stop = loop {
        let read = Instant::now();
        let p = progress(sims);
        let pause = (read.elapsed() * 4).max(Duration::from_millis(20));
        let done: u64 = p.values().map(|(_, d)| d.len() as u64).sum();
        // Some plans may not have started yet: the new daemon must start those too.
        if done * 3 >= steps_total {
            break p;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                scenario: "coldstart",
                what: "the first daemon to be mid-rollout".into(),
                seconds: opts.timeout_s,
            });
        }
        tokio::time::sleep(pause).await;
    };
    run.stop().await;
    let at_stop = {
        // What the stopped daemon left behind (steps may have finished while it stopped).
        let after = progress(sims);
        if after.len() == at_stop.len() {
            after
        } else {
            at_stop
        }
    };
    let steps_done_at_stop: u64 = at_stop.values().map(|(_, d)| d.len() as u64).sum();
    let started = Instant::now();
    let run = Running::start(config, options).await?;
    let shared = run.shared().clone();
    wait_until(
        "the new daemon to be ready",
        opts.timeout(),
        Duration::from_millis(5),
        || shared.ready(),
    )
    .await?;
    let ready_seconds = started.elapsed().as_secs_f64();
    let mut all_continued_seconds = None;
    let mut plans_restarted = 0;
    let mut steps_regressed = 0;
    let deadline = Instant::now() + opts.timeout();
    let converged_seconds = loop {
        let read = Instant::now();
        let now = progress(sims);
        // Reading 10,000 Instances costs CPU the daemon needs: poll at most a fifth of the time.
        let pause = (read.elapsed() * 4).max(Duration::from_millis(20));
        let complete_steps = (PHASES * STEPS) as usize;
        let mut continued = 0;
        let mut complete = 0;
        for (key, (uid, done)) in &now {
            let Some((uid0, done0)) = at_stop.get(key) else {
                // Not started when the first daemon stopped: the new one started it.
                if !done.is_empty() {
                    continued += 1;
                }
                if done.len() == complete_steps {
                    complete += 1;
                }
                continue;
            };
            if uid != uid0 {
                plans_restarted += 1;
            }
            steps_regressed += done0.difference(done).count() as u64;
            if done.len() > done0.len() || done.len() == complete_steps {
                continued += 1;
            }
            if done.len() == complete_steps {
                complete += 1;
            }
        }
        if plans_restarted > 0 || steps_regressed > 0 {
            run.stop().await;
            return Err(setup(format!(
                "after the restart {plans_restarted} plans got a new uid and {steps_regressed} finished steps were no longer COMPLETE"
            )));
        }
        if continued == plans && all_continued_seconds.is_none() {
            all_continued_seconds = Some(started.elapsed().as_secs_f64());
        }
        if complete == plans {
            break started.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            run.stop().await;
            return Err(BenchError::Timeout {
                scenario: "coldstart",
                what: format!("every plan to complete after the restart ({complete}/{plans})"),
                seconds: opts.timeout_s,
            });
        }
        tokio::time::sleep(pause).await;
    };
    run.stop().await;
    Ok(ColdStart {
        steps_done_at_stop,
        steps_total,
        ready_seconds,
        all_continued_seconds: all_continued_seconds.unwrap_or(converged_seconds),
        converged_seconds,
        plans_restarted,
        steps_regressed,
    })
}

/// The table and JSON of a scenario over several sizes (growth relative to the first).
pub fn tabulate(mode: Mode, reports: &[FleetReport]) -> (super::Table, serde_json::Value) {
    use super::report::{mib, secs};
    use super::usage::amount;
    let first = reports.first();
    let opts = first.and_then(|r| r.options.clone());
    let title = match &opts {
        Some(o) => format!(
            "{mode:?}: {} instances per cluster, latency {} ms, readiness {} ms, {PHASES} serial phases × {STEPS} parallel steps{}{}",
            o.instances,
            o.latency_ms,
            o.ready_delay_ms,
            if mode == Mode::Idle {
                format!(", window {}", secs(o.window_s))
            } else {
                String::new()
            },
            if o.sim_process {
                "; clusters in a `kudo sim` process (RSS and CP CPU: the control plane's alone)"
            } else {
                "; clusters in this process on their own threads (RSS includes them)"
            }
        ),
        None => format!("{mode:?}: no runs"),
    };
    let growth = |r: &FleetReport, f: fn(&FleetReport) -> f64| -> String {
        match first {
            Some(b) if f(b) > 0.0 && !std::ptr::eq(b, r) => format!("×{:.1}", f(r) / f(b)),
            _ => "".into(),
        }
    };
    let size = |r: &FleetReport| r.plans as f64;
    let cpu = |s: f64| format!("{s:.1} s");
    let share = |s: f64| format!("{:.1}%", s * 100.0);
    let watches = |u: &Usage| format!("{} ({})", u.watch_requests, u.watch_restarts);
    let sim_rss = |r: &FleetReport| r.sim_peak_rss_bytes.map_or("in process".into(), mib);
    let mut table = match mode {
        Mode::Fanout => super::Table::new(
            title,
            &[
                "clusters",
                "plans",
                "startup",
                "converged",
                "ideal",
                "ratio",
                "peak RSS",
                "per cluster",
                "sim RSS",
                "CP CPU",
                "sim CPU",
                "CP ms/plan",
                "req/plan",
                "req/plan by verb",
                "watches (restarts)",
                "× plans",
                "× time",
                "× RSS",
            ],
        ),
        Mode::Rollout => super::Table::new(
            title,
            &[
                "clusters",
                "plans",
                "deploy",
                "parallel update",
                "ideal",
                "ratio",
                "waves",
                "waves update",
                "ideal",
                "ratio",
                "staged waves",
                "staged update",
                "ideal",
                "ratio",
                "CP ms/plan (waves)",
                "req/plan (waves)",
                "by verb (waves)",
            ],
        ),
        Mode::Coldstart => super::Table::new(
            title,
            &[
                "clusters",
                "plans",
                "steps done at stop",
                "ready",
                "all continued",
                "converged",
                "restarted",
                "steps re-run",
                "peak RSS",
            ],
        ),
        Mode::Idle => super::Table::new(
            title,
            &[
                "clusters",
                "plans",
                "window",
                "req/s per cluster",
                "by verb (req/s per cluster)",
                "watches (restarts)",
                "open watches",
                "CP CPU",
                "sim CPU",
                "RSS",
                "sim RSS",
            ],
        ),
    };
    for r in reports {
        let o = r.options.clone().unwrap_or_default();
        let plans = r.plans.max(1) as f64;
        let row = match mode {
            Mode::Fanout => vec![
                o.clusters.to_string(),
                r.plans.to_string(),
                secs(r.startup_seconds),
                secs(r.fanout.seconds),
                secs(r.fanout.ideal_seconds),
                format!("{:.2}", r.fanout.ratio),
                mib(r.peak_rss_bytes),
                format!(
                    "{:.0} KiB",
                    r.peak_rss_bytes as f64 / 1024.0 / o.clusters.max(1) as f64
                ),
                sim_rss(r),
                cpu(r.fanout.usage.control_plane_cpu_seconds),
                cpu(r.fanout.usage.simulator_cpu_seconds),
                amount(r.fanout.control_plane_cpu_ms_per_plan),
                amount(r.fanout.requests_per_instance_plan),
                verb_breakdown(&r.fanout.usage.requests_by_verb, plans),
                watches(&r.fanout.usage),
                growth(r, size),
                growth(r, |r| r.fanout.seconds),
                growth(r, |r| r.peak_rss_bytes as f64),
            ],
            Mode::Rollout => {
                let p = r.rollout_parallel.clone().unwrap_or_default();
                let w = r.rollout_waves.clone().unwrap_or_default();
                let st = r.rollout_staged.clone().unwrap_or_default();
                vec![
                    o.clusters.to_string(),
                    r.plans.to_string(),
                    secs(r.fanout.seconds),
                    secs(p.seconds),
                    secs(p.ideal_seconds),
                    format!("{:.2}", p.ratio),
                    o.waves().to_string(),
                    secs(w.seconds),
                    secs(w.ideal_seconds),
                    format!("{:.2}", w.ratio),
                    o.staged_waves().to_string(),
                    secs(st.seconds),
                    secs(st.ideal_seconds),
                    format!("{:.2}", st.ratio),
                    amount(w.control_plane_cpu_ms_per_plan),
                    amount(w.requests_per_instance_plan),
                    verb_breakdown(&w.usage.requests_by_verb, plans),
                ]
            }
            Mode::Coldstart => {
                let c = r.coldstart.clone().unwrap_or_default();
                vec![
                    o.clusters.to_string(),
                    r.plans.to_string(),
                    format!("{} / {}", c.steps_done_at_stop, c.steps_total),
                    secs(c.ready_seconds),
                    secs(c.all_continued_seconds),
                    secs(c.converged_seconds),
                    c.plans_restarted.to_string(),
                    c.steps_regressed.to_string(),
                    mib(r.peak_rss_bytes),
                ]
            }
            Mode::Idle => {
                let i = r.idle.clone().unwrap_or_default();
                let per = i.usage.window_seconds * o.clusters.max(1) as f64;
                vec![
                    o.clusters.to_string(),
                    r.plans.to_string(),
                    secs(i.usage.window_seconds),
                    amount(i.requests_per_second_per_cluster),
                    verb_breakdown(&i.usage.requests_by_verb, per),
                    watches(&i.usage),
                    i.usage.watches_open.to_string(),
                    share(i.control_plane_core_share),
                    share(i.simulator_core_share),
                    mib(i.rss_bytes),
                    sim_rss(r),
                ]
            }
        };
        table.row(row);
    }
    let json = serde_json::json!({
        "scenario": format!("{mode:?}").to_lowercase(),
        "phases": PHASES,
        "stepsPerPhase": STEPS,
        "runs": reports,
    });
    (table, json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(clusters: usize) -> FleetOptions {
        FleetOptions {
            clusters,
            instances: 2,
            latency_ms: 5,
            ready_delay_ms: 200,
            timeout_s: 120,
            max_unavailable_percent: 10,
            sim_process: false,
            window_s: 0.0,
        }
    }

    #[test]
    fn ideal_path_and_waves() {
        let o = opts(100);
        // 2·5 ms + 3·(5 + 200) ms
        assert!((o.ideal_plan_seconds() - 0.625).abs() < 1e-9);
        assert_eq!(o.waves(), 10);
        assert_eq!(opts(5).waves(), 5, "at least one cluster per wave");
        assert_eq!(opts(1000).waves(), 10);
    }

    /// Two clusters × two instances through the real daemon: every figure is filled in and
    /// the request count is what plans need, not zero.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_rollout_converges_and_counts_requests() {
        let mut o = opts(2);
        o.ready_delay_ms = 20;
        o.latency_ms = 1;
        let r = run_child(Mode::Rollout, o).await.expect("bench runs");
        assert_eq!(r.plans, 4);
        assert!(r.fanout.seconds >= r.fanout.ideal_seconds, "{r:?}");
        assert!(
            r.fanout.requests_per_instance_plan >= f64::from(PHASES * STEPS),
            "{r:?}"
        );
        // The simulators answered on their own threads; watches are not requests per plan.
        let u = &r.fanout.usage;
        assert!(
            u.simulator_cpu_seconds > 0.0 && u.control_plane_cpu_seconds > 0.0,
            "{u:?}"
        );
        assert!(!u.requests_by_verb.contains_key("watch"), "{u:?}");
        assert!(u.watches_open > 0, "{u:?}");
        let waves = r.rollout_waves.expect("waves ran");
        assert!(waves.seconds >= waves.ideal_seconds, "{waves:?}");
        let staged = r.rollout_staged.expect("staged ran");
        assert!(staged.seconds >= staged.ideal_seconds, "{staged:?}");
        assert!(r.peak_rss_bytes >= r.idle_rss_bytes && r.idle_rss_bytes > 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restarted_daemon_continues_every_plan() {
        let mut o = opts(2);
        o.ready_delay_ms = 150;
        o.latency_ms = 1;
        let r = run_child(Mode::Coldstart, o).await.expect("bench runs");
        let c = r.coldstart.expect("coldstart ran");
        assert_eq!((c.plans_restarted, c.steps_regressed), (0, 0), "{c:?}");
        assert!(
            c.steps_done_at_stop > 0 && c.steps_done_at_stop < c.steps_total,
            "{c:?}"
        );
        assert!(c.converged_seconds >= c.ready_seconds, "{c:?}");
    }
}
