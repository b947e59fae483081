//! The simulated clusters of a fleet run, in one of two places:
//!
//! - in this process, on a [`SimRuntime`] of their own (threads named `kudo-sim`), so CPU
//!   splits by thread between control plane and simulators; RSS includes them;
//! - in a `kudo sim` child process over loopback HTTP (`--sim-process`), so this process's
//!   RSS and CPU are the control plane's alone; the child's are the simulators'.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::BenchError;
use super::fleet::FleetOptions;
use crate::sim::workload::{WorkloadConfig, Workloads};
use crate::sim::{SimCluster, SimRuntime};

fn setup(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Setup {
        scenario: "fleet",
        reason: reason.to_string(),
    }
}

/// The bench's name of cluster `i` (`kudo sim` calls it `sim-<i+1>`).
pub fn cluster_name(i: usize) -> String {
    format!("c{i:04}")
}

pub enum Clusters {
    InProcess {
        runtime: SimRuntime,
        sims: BTreeMap<String, SimCluster>,
        workloads: Vec<Workloads>,
    },
    Process {
        child: tokio::process::Child,
        pid: u32,
        kubeconfig: PathBuf,
    },
}

impl Clusters {
    /// Starts `opts.clusters` clusters with the options' latency and readiness delay; files
    /// (the child's kubeconfig) go under `dir`.
    pub async fn start(opts: &FleetOptions, dir: &Path) -> Result<Clusters, BenchError> {
        if opts.sim_process {
            Self::start_process(opts, dir).await
        } else {
            Self::start_in_process(opts)
        }
    }

    fn start_in_process(opts: &FleetOptions) -> Result<Clusters, BenchError> {
        let runtime = SimRuntime::per_core()
            .map_err(|e| setup(format!("cannot start the simulator runtime: {e}")))?;
        let mut sims = BTreeMap::new();
        let mut workloads = Vec::new();
        for c in 0..opts.clusters {
            let name = cluster_name(c);
            let sim = SimCluster::new(&name).on_runtime(runtime.handle());
            sim.faults()
                .set_latency(Duration::from_millis(opts.latency_ms));
            workloads.push(sim.spawn_workloads(WorkloadConfig {
                ready_delay: Duration::from_millis(opts.ready_delay_ms),
                job_duration: Duration::from_millis(opts.ready_delay_ms),
            }));
            sims.insert(name, sim);
        }
        Ok(Clusters::InProcess {
            runtime,
            sims,
            workloads,
        })
    }

    /// Runs `kudo sim` (this executable) and waits for it to print its kubeconfig's path,
    /// which it does once every cluster listens.
    async fn start_process(opts: &FleetOptions, dir: &Path) -> Result<Clusters, BenchError> {
        let kubeconfig = dir.join("sim-kubeconfig");
        let (child, pid) = spawn_sim(
            opts.clusters,
            &kubeconfig,
            opts.latency_ms,
            opts.ready_delay_ms,
            Duration::from_secs(opts.timeout_s.max(1)),
        )
        .await?;
        Ok(Clusters::Process {
            child,
            pid,
            kubeconfig,
        })
    }
}

/// Runs `kudo sim --clusters N` (this executable) writing `kubeconfig`, and waits for it to
/// print that path, which it does once every cluster listens. Returns the child and its pid.
pub async fn spawn_sim(
    clusters: usize,
    kubeconfig: &Path,
    latency_ms: u64,
    ready_delay_ms: u64,
    timeout: Duration,
) -> Result<(tokio::process::Child, u32), BenchError> {
    let exe = std::env::current_exe().map_err(setup)?;
    // A test binary would take `sim` as a test filter and run the suite again.
    if exe.file_stem().and_then(|s| s.to_str()) != Some("kudo") {
        return Err(setup(format!(
            "the simulated clusters run as `kudo sim` from this executable, and {} is not kudo",
            exe.display()
        )));
    }
    let mut child = tokio::process::Command::new(&exe)
        .arg("sim")
        .args(["--clusters", &clusters.to_string()])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--latency-ms", &latency_ms.to_string()])
        .args(["--ready-delay-ms", &ready_delay_ms.to_string()])
        .args(["--job-duration-ms", &ready_delay_ms.to_string()])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| setup(format!("cannot run {} sim: {e}", exe.display())))?;
    let pid = child.id().ok_or_else(|| setup("kudo sim exited at once"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| setup("kudo sim: no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(timeout, lines.next_line())
        .await
        .map_err(|_| BenchError::Timeout {
            scenario: "fleet",
            what: format!("kudo sim to serve {clusters} clusters"),
            seconds: timeout.as_secs(),
        })?
        .map_err(|e| setup(format!("kudo sim: {e}")))?;
    if first.as_deref().map(Path::new) != Some(kubeconfig) {
        let status = child.try_wait().ok().flatten();
        return Err(setup(format!(
            "kudo sim printed {first:?} instead of its kubeconfig {} (exit: {status:?})",
            kubeconfig.display()
        )));
    }
    // Its stdout stays drained, so it never blocks writing to a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, pid))
}

impl Clusters {
    /// The `clusters:` entry of kudo.yaml for cluster `i`.
    pub fn config_entry(&self, i: usize, opts: &FleetOptions) -> String {
        let name = cluster_name(i);
        match self {
            Clusters::InProcess { .. } => format!(
                "  - {{name: {name}, labels: {{fleet: bench}}, sim: {{latency: {}ms, readyDelay: {}ms}}}}\n",
                opts.latency_ms, opts.ready_delay_ms
            ),
            Clusters::Process { kubeconfig, .. } => format!(
                "  - {{name: {name}, labels: {{fleet: bench}}, kubeconfig: \"{}\", context: sim-{}}}\n",
                kubeconfig.display(),
                i + 1
            ),
        }
    }

    /// The clusters the daemon is handed in process (none when they are in a child).
    pub fn sims(&self) -> BTreeMap<String, SimCluster> {
        match self {
            Clusters::InProcess { sims, .. } => sims.clone(),
            Clusters::Process { .. } => BTreeMap::new(),
        }
    }

    /// The process serving the clusters when it is not this one.
    pub fn sim_pid(&self) -> Option<u32> {
        match self {
            Clusters::InProcess { .. } => None,
            Clusters::Process { pid, .. } => Some(*pid),
        }
    }

    /// Peak RSS of the `kudo sim` process (None in process: it is part of ours).
    pub fn sim_peak_rss_bytes(&self) -> Option<u64> {
        self.sim_pid().and_then(super::process::pid_peak_rss_bytes)
    }

    /// Stops the simulators: workloads first, then the runtime (waiting for its threads), or
    /// Ctrl-C to the child (killed if it has not exited after ten seconds). Call after the
    /// daemon stopped.
    pub async fn stop(self) {
        match self {
            Clusters::InProcess {
                runtime,
                sims,
                workloads,
            } => {
                drop(workloads);
                drop(sims);
                runtime.shutdown().await;
            }
            Clusters::Process { mut child, pid, .. } => {
                if let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: kill has no memory preconditions; `pid` is our child, not
                    // yet waited for, so it cannot have been reused.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::kill(pid, libc::SIGINT)
                    };
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    tracing::warn!("kudo sim did not exit on Ctrl-C; killing it");
                    let _ = child.kill().await;
                }
            }
        }
    }
}
