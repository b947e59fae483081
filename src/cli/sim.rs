//! `kudo sim`: simulated clusters on loopback, for kubectl and for trying kudo without a cluster.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::CliResult;
use crate::sim::{SimCluster, kubeconfig, workload};

/// Serve N simulated Kubernetes clusters over HTTP on loopback until Ctrl-C.
///
/// Writes a kubeconfig with one context per cluster (`sim-1` … `sim-N`, the first current)
/// and prints its path, e.g.:
///
///   kudo sim --clusters 3 &
///   kubectl --kubeconfig /tmp/kudo-sim/kubeconfig get ns
///   kubectl --kubeconfig /tmp/kudo-sim/kubeconfig --context sim-2 apply --server-side -f deploy.yaml
///
/// Workloads become ready after --ready-delay-ms (Jobs finish after --job-duration-ms; a Job
/// annotated `sim.kudo.dev/fail: "true"` fails). There is no OpenAPI document: pass
/// `--validate=false` to client-side `kubectl apply`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of simulated clusters.
    #[arg(long, default_value_t = 3, env = "KUDO_SIM_CLUSTERS")]
    pub clusters: usize,

    /// Address to listen on (each cluster gets its own free port).
    #[arg(long, default_value = "127.0.0.1", env = "KUDO_SIM_LISTEN")]
    pub listen: IpAddr,

    /// Where to write the kubeconfig (default: <temp dir>/kudo-sim/kubeconfig).
    #[arg(long, env = "KUDO_SIM_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Delay before Deployments, StatefulSets, Pods, ... report ready, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub ready_delay_ms: u64,

    /// How long simulated Jobs run, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub job_duration_ms: u64,

    /// Do not run the workload simulator (objects keep the status clients write).
    #[arg(long)]
    pub no_workloads: bool,

    /// Fault injection: latency added to every request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Fault injection: fraction of requests answered 503 ServiceUnavailable (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,

    /// Fault injection: delay before each watch event is delivered, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub watch_delay_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SimCliError {
    #[error("--clusters must be at least 1")]
    NoClusters,
    #[error("--error-rate must be between 0.0 and 1.0, got {0}")]
    ErrorRate(f64),
    #[error("cannot listen on {addr} for simulated cluster {cluster}: {source}")]
    Listen {
        addr: SocketAddr,
        cluster: String,
        source: std::io::Error,
    },
    #[error("cannot write kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub async fn run(args: Args) -> CliResult {
    if args.clusters == 0 {
        return Err(SimCliError::NoClusters.into());
    }
    if !(0.0..=1.0).contains(&args.error_rate) {
        return Err(SimCliError::ErrorRate(args.error_rate).into());
    }
    let cfg = workload::WorkloadConfig {
        ready_delay: Duration::from_millis(args.ready_delay_ms),
        job_duration: Duration::from_millis(args.job_duration_ms),
    };
    let mut servers = Vec::new();
    let mut workloads = Vec::new();
    let mut entries = Vec::new();
    for i in 1..=args.clusters {
        let name = format!("sim-{i}");
        let cluster = SimCluster::new(&name);
        cluster
            .faults()
            .set_latency(Duration::from_millis(args.latency_ms));
        cluster.faults().set_error_rate(args.error_rate);
        cluster
            .faults()
            .set_watch_delay(Duration::from_millis(args.watch_delay_ms));
        let addr = SocketAddr::new(args.listen, 0);
        let server = cluster
            .serve_http(addr)
            .await
            .map_err(|source| SimCliError::Listen {
                addr,
                cluster: name.clone(),
                source,
            })?;
        tracing::info!(cluster = %name, url = %server.url(), "simulated cluster serving");
        entries.push((name, server.url()));
        if !args.no_workloads {
            workloads.push(workload::spawn(cluster.client(), cfg.clone()));
        }
        servers.push((cluster, server));
    }
    let path = args
        .kubeconfig
        .unwrap_or_else(|| std::env::temp_dir().join("kudo-sim").join("kubeconfig"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SimCliError::Kubeconfig {
            path: path.clone(),
            source,
        })?;
    }
    std::fs::write(&path, kubeconfig(&entries)).map_err(|source| SimCliError::Kubeconfig {
        path: path.clone(),
        source,
    })?;
    // One write, and a closed stdout (a caller that read the path and went away) must not
    // take the served clusters down, as println! would by panicking on EPIPE.
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = write!(
            out,
            "{path}\nexport KUBECONFIG={path}\n",
            path = path.display()
        );
        let _ = out.flush();
    }
    tracing::info!(clusters = args.clusters, kubeconfig = %path.display(), "serving until Ctrl-C");
    // Ctrl-C (or SIGTERM's default) ends the process; servers stop when dropped.
    let _ = tokio::signal::ctrl_c().await;
    drop(workloads);
    drop(servers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zero_clusters_is_refused_with_the_flag_named() {
        let args = Args {
            clusters: 0,
            listen: "127.0.0.1".parse().expect("ip"),
            kubeconfig: None,
            ready_delay_ms: 1,
            job_duration_ms: 1,
            no_workloads: true,
            latency_ms: 0,
            error_rate: 0.0,
            watch_delay_ms: 0,
        };
        let err = run(args).await.expect_err("refused");
        assert_eq!(err.to_string(), "--clusters must be at least 1");
    }

    #[tokio::test]
    async fn error_rate_out_of_range_is_refused() {
        let args = Args {
            clusters: 1,
            listen: "127.0.0.1".parse().expect("ip"),
            kubeconfig: None,
            ready_delay_ms: 1,
            job_duration_ms: 1,
            no_workloads: true,
            latency_ms: 0,
            error_rate: 1.5,
            watch_delay_ms: 0,
        };
        let err = run(args).await.expect_err("refused");
        assert_eq!(
            err.to_string(),
            "--error-rate must be between 0.0 and 1.0, got 1.5"
        );
    }

    #[tokio::test]
    async fn unwritable_kubeconfig_names_the_path() {
        let args = Args {
            clusters: 1,
            listen: "127.0.0.1".parse().expect("ip"),
            kubeconfig: Some(PathBuf::from("/proc/kudo-sim-cannot-write/kubeconfig")),
            ready_delay_ms: 1,
            job_duration_ms: 1,
            no_workloads: true,
            latency_ms: 0,
            error_rate: 0.0,
            watch_delay_ms: 0,
        };
        let err = run(args).await.expect_err("refused");
        assert!(
            err.to_string()
                .starts_with("cannot write kubeconfig /proc/kudo-sim-cannot-write/kubeconfig"),
            "{err}"
        );
    }
}
