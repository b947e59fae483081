//! `kudo workloads`: plays the workload controllers a cluster without them lacks (envtest,
//! which has no kubelet and no deployment/job controllers): Deployments, StatefulSets,
//! DaemonSets become ready, Jobs succeed (or fail when annotated `sim.kudo.dev/fail`), Pods
//! run, Services and PVCs settle. Used as a background command in kuttl suites.

use std::time::Duration;

use super::CliResult;
use super::kube::KubeArgs;
use crate::sim::workload::{WorkloadConfig, spawn_in};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Only simulate workloads in the --namespace given (default: all namespaces).
    #[arg(long)]
    pub only_namespace: bool,
    /// Delay before workloads report ready.
    #[arg(long, default_value = "500ms", value_parser = crate::util::duration::flag)]
    pub ready_delay: Duration,
    /// How long a Job runs before it succeeds (or fails).
    #[arg(long, default_value = "1s", value_parser = crate::util::duration::flag)]
    pub job_duration: Duration,
}

pub async fn run(args: Args) -> CliResult {
    let cluster = args.kube.connect().await?;
    let namespace = args.only_namespace.then_some(args.kube.namespace.as_str());
    let _workloads = spawn_in(
        cluster.client().clone(),
        namespace,
        WorkloadConfig {
            ready_delay: args.ready_delay,
            job_duration: args.job_duration,
        },
    );
    tracing::info!(
        cluster = cluster.name(),
        "simulating workload controllers until stopped"
    );
    let _ = tokio::signal::ctrl_c().await;
    Ok(())
}
