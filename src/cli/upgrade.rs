//! `kudo upgrade PKG --instance NAME`: installs the package's newer OperatorVersion and
//! points the instance at it (the manager runs upgrade, else update, else deploy).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::CliResult;
use super::install::{check_parameters, install_packages, load_verified};
use super::kube::{KUDO_API, KubeArgs, KudoCliError, get_instance, parse_params};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Package folder or .tgz of the new version.
    pub package: PathBuf,
    #[arg(long)]
    pub instance: String,
    /// Parameter value NAME=VALUE (repeatable), set together with the new version.
    #[arg(long = "parameter", short = 'p', value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    #[arg(long)]
    pub wait: bool,
    #[arg(long, default_value_t = 300)]
    pub wait_time: u64,
    #[command(flatten)]
    pub kube: KubeArgs,
}

pub async fn run(args: Args) -> CliResult {
    let all = load_verified(&args.package)?;
    let root = all
        .last()
        .expect("invariant: resolve returns the root package last");
    let values = parse_params(&args.parameters)?;
    let ns = &args.kube.namespace;
    let cluster = args.kube.connect().await?;
    let (_, inst) = get_instance(&cluster, ns, &args.instance).await?;
    let mut merged = inst.spec.parameters.clone();
    merged.extend(values.clone());
    check_parameters(root, &merged)?;
    let new_ov = root
        .resources
        .operator_version
        .metadata
        .name
        .clone()
        .unwrap_or_default();
    let current = inst.spec.operator_version.name.clone().unwrap_or_default();
    if current == new_ov {
        return Err(Box::new(KudoCliError::Refused {
            instance: args.instance,
            what: format!("already runs OperatorVersion {new_ov}; nothing to upgrade"),
        }));
    }
    let operator = root.package.operator.name.clone();
    let label = inst
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kudo.dev/operator"));
    if label.is_some_and(|l| l != &operator) {
        return Err(Box::new(KudoCliError::Refused {
            instance: args.instance,
            what: format!(
                "is an instance of operator {}, not {operator}",
                label.map(String::as_str).unwrap_or_default()
            ),
        }));
    }
    install_packages(&cluster, ns, &all).await?;
    let before = super::plan::plan_uids(&inst);
    let patch = json!({
        "apiVersion": KUDO_API,
        "kind": "Instance",
        "metadata": {"name": args.instance, "namespace": ns},
        "spec": {
            "operatorVersion": {"name": new_ov, "kind": "OperatorVersion", "namespace": null},
            "parameters": values,
        },
    });
    cluster.merge_patch(&patch).await?;
    println!(
        "instance {ns}/{} upgraded from {current} to {new_ov}",
        args.instance
    );
    if args.wait {
        let plan = super::plan::wait_new_run(
            &cluster,
            ns,
            &args.instance,
            &before,
            Duration::from_secs(args.wait_time),
        )
        .await?;
        println!("instance {ns}/{}: plan {plan} finished", args.instance);
    }
    Ok(())
}
