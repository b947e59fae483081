//! `kudo init`: installs kudo's CRDs (Operator, OperatorVersion, Instance) into a cluster;
//! `--dry-run` prints them instead. The plan engine runs as `kudo manager`.

use std::time::Duration;

use super::CliResult;
use super::kube::KubeArgs;
use crate::cluster::ObjectRef;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the CRDs instead of installing them.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

pub async fn run(args: Args) -> CliResult {
    let crds = crate::api::crds_yaml()?;
    if args.dry_run {
        for (_, text) in &crds {
            print!("---\n{text}");
        }
        return Ok(());
    }
    let cluster = args.kube.connect().await?;
    for crd in crate::api::crds() {
        let obj = serde_json::to_value(&crd)?;
        cluster.apply(&obj).await?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        let r = ObjectRef::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            name.clone(),
        );
        let health = cluster.wait_healthy(&r, Duration::from_secs(60)).await?;
        if !health.is_healthy() {
            return Err(format!("CRD {name} not established: {health:?}").into());
        }
        println!("crd {name} installed");
    }
    println!("kudo CRDs installed; run `kudo manager` to run plans");
    Ok(())
}
