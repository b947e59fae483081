//! `kudo uninstall --instance NAME`: deletes the instance (its objects go with it through
//! owner references; a cleanup plan runs first when the operator has one).

use std::time::Duration;

use super::CliResult;
use super::kube::{KubeArgs, KudoCliError, instance_ref};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: String,
    /// Wait until the instance is gone (after its cleanup plan, if any).
    #[arg(long)]
    pub wait: bool,
    #[arg(long, default_value_t = 300)]
    pub wait_time: u64,
    #[command(flatten)]
    pub kube: KubeArgs,
}

pub async fn run(args: Args) -> CliResult {
    let ns = &args.kube.namespace;
    let cluster = args.kube.connect().await?;
    let r = instance_ref(ns, &args.instance);
    let gone = if args.wait {
        if cluster.get_opt(&r).await?.is_none() {
            None
        } else {
            cluster
                .delete_and_wait(&r, Duration::from_secs(args.wait_time))
                .await?;
            Some(())
        }
    } else {
        cluster.delete(&r).await?.map(|_| ())
    };
    if gone.is_none() {
        return Err(Box::new(KudoCliError::NoInstance {
            name: args.instance,
            namespace: ns.clone(),
        }));
    }
    println!("instance {ns}/{} deleted", args.instance);
    Ok(())
}
