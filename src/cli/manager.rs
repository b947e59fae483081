//! `kudo manager`: KUDO's manager — runs the plan engine for every Instance on the given
//! clusters until interrupted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::CliResult;
use crate::cluster::Cluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig file; without it, $KUBECONFIG, ~/.kube/config, then in-cluster config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Context to manage; repeat for several clusters (one controller each). Default: the
    /// kubeconfig's current context.
    #[arg(long = "context", value_name = "CONTEXT")]
    pub contexts: Vec<String>,
    /// Only manage Instances in this namespace (default: all namespaces).
    #[arg(long, short = 'n', env = "KUDO_NAMESPACE")]
    pub namespace: Option<String>,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:8080).
    #[arg(long, env = "KUDO_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// How often a running plan is re-checked when no watch event wakes it.
    #[arg(long, default_value = "2s", value_parser = crate::util::duration::flag, env = "KUDO_POLL_INTERVAL")]
    pub poll_interval: Duration,
    /// How often every object of a completed plan is re-verified for drift, kinds no watch
    /// keeps included (jittered ±10 %); watched kinds are checked on their events.
    #[arg(long, default_value = "30m", value_parser = crate::util::duration::flag, env = "KUDO_DRIFT_INTERVAL")]
    pub drift_interval: Duration,
    /// Do not install typed CRDs for Operators that opted in (operator.yaml `crd:`), nor
    /// mirror their typed objects into Instances.
    #[arg(long, env = "KUDO_NO_TYPED")]
    pub no_typed: bool,
    /// The control plane whose Instances this manager runs (`controlPlane:` in kudo.yaml):
    /// Instances labelled for another one are never touched.
    #[arg(long, default_value = crate::engine::objects::DEFAULT_CONTROL_PLANE, env = "KUDO_CONTROL_PLANE")]
    pub control_plane: String,
    /// Agent mode (a cluster with `agent: true` in kudo.yaml): also pull this cluster's
    /// desired state from the management cluster, report its Instances and a heartbeat
    /// there. Needs --cluster and --management-kubeconfig.
    #[arg(long, env = "KUDO_AGENT")]
    pub agent: bool,
    /// Agent mode: this cluster's name in the control plane's kudo.yaml.
    #[arg(long, env = "KUDO_AGENT_CLUSTER")]
    pub cluster: Option<String>,
    /// Agent mode: a kubeconfig for the management cluster, limited to this cluster's
    /// namespace there (kudo-agent-<cluster>).
    #[arg(long, env = "KUDO_MANAGEMENT_KUBECONFIG")]
    pub management_kubeconfig: Option<PathBuf>,
    /// Agent mode: the management kubeconfig's context (default: its current one).
    #[arg(long, env = "KUDO_MANAGEMENT_CONTEXT")]
    pub management_context: Option<String>,
    /// Agent mode: how often to pull, report and renew the heartbeat.
    #[arg(long, default_value = "2s", value_parser = crate::util::duration::flag, env = "KUDO_AGENT_INTERVAL")]
    pub agent_interval: Duration,
    /// Agent mode: the heartbeat's lease; older, the control plane shows "agent not reporting".
    #[arg(long, default_value = "15s", value_parser = crate::util::duration::flag, env = "KUDO_AGENT_HEARTBEAT")]
    pub heartbeat: Duration,
}

/// How often the manager looks for new typed frameworks and package versions.
const TYPED_DISCOVERY_INTERVAL: Duration = Duration::from_secs(5);

pub async fn run(args: Args) -> CliResult {
    let agent = match (&args.agent, &args.cluster, &args.management_kubeconfig) {
        (false, _, _) => None,
        (true, Some(cluster), Some(kubeconfig)) => {
            if !crate::util::dns::is_dns_label(&format!("kudo-agent-{cluster}")) {
                return Err(format!("--cluster {cluster:?}: kudo-agent-{cluster} must be a DNS label (the cluster's namespace in the management cluster)").into());
            }
            let management = Cluster::from_kubeconfig(
                "management",
                kubeconfig,
                args.management_context.as_deref(),
            )
            .await?;
            Some((
                Arc::new(management),
                crate::gitops::agent::AgentConfig {
                    cluster: cluster.clone(),
                    namespace: crate::gitops::config::ClusterAccess::agent_namespace(cluster),
                    control_plane: args.control_plane.clone(),
                    interval: args.agent_interval,
                    heartbeat: args.heartbeat,
                },
            ))
        }
        (true, _, _) => {
            return Err(
                "--agent needs --cluster (its name in kudo.yaml) and --management-kubeconfig"
                    .into(),
            );
        }
    };
    let mut clusters = Vec::new();
    match (&args.kubeconfig, args.contexts.is_empty()) {
        (Some(path), true) => clusters.push(Cluster::from_kubeconfig("default", path, None).await?),
        (Some(path), false) => {
            for ctx in &args.contexts {
                clusters.push(Cluster::from_kubeconfig(ctx, path, Some(ctx)).await?);
            }
        }
        (None, _) => clusters.push(Cluster::in_cluster("in-cluster")?),
    }
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let (registry, metrics) = crate::metrics::registry_with_engine();
    let mut tasks = Vec::new();
    if let Some(addr) = args.metrics_addr {
        let listener = crate::metrics::server::serve(addr, Arc::new(registry), stopped(rx.clone()));
        tasks.push(tokio::spawn(async move {
            if let Err(error) = listener.await {
                tracing::error!(%error, "metrics server stopped");
            }
        }));
    }
    for cluster in clusters {
        let cluster = Arc::new(cluster);
        info!(cluster = cluster.name(), "managing instances");
        if !args.no_typed {
            tasks.push(tokio::spawn(crate::typed::controller::run_all(
                cluster.clone(),
                args.namespace.clone(),
                TYPED_DISCOVERY_INTERVAL,
                stopped(rx.clone()),
            )));
        }
        let ctx = Arc::new(
            crate::manager::reconcile::Context::with_metrics(
                cluster,
                args.poll_interval,
                metrics.clone(),
            )
            .with_drift_interval(args.drift_interval)
            .with_control_plane(&args.control_plane),
        );
        if let Some((management, config)) = &agent {
            tasks.push(tokio::spawn(crate::gitops::agent::run(
                ctx.cluster.clone(),
                management.clone(),
                config.clone(),
                rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::manager::controller::run_with(
            ctx,
            args.namespace.clone(),
            stopped(rx.clone()),
        )));
    }
    shutdown_signal().await;
    info!("shutting down");
    let _ = tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
