//! `kudo update --instance NAME -p K=V`: changes an instance's parameters (the manager runs
//! the parameters' trigger plan, else update, else deploy).

use std::time::Duration;

use serde_json::json;

use super::CliResult;
use super::kube::{
    KUDO_API, KubeArgs, KudoCliError, get_instance, get_operator_version, parse_params,
};
use crate::api::Parameter;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long)]
    pub instance: String,
    /// Parameter value NAME=VALUE (repeatable).
    #[arg(
        long = "parameter",
        short = 'p',
        value_name = "NAME=VALUE",
        required = true
    )]
    pub parameters: Vec<String>,
    /// Wait until the triggered plan has finished.
    #[arg(long)]
    pub wait: bool,
    #[arg(long, default_value_t = 300)]
    pub wait_time: u64,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The given names the OperatorVersion does not declare, or `None` when all are known.
pub fn unknown_parameters<'a>(
    declared: &[Parameter],
    given: impl IntoIterator<Item = &'a String>,
) -> Option<String> {
    let unknown: Vec<&str> = given
        .into_iter()
        .filter(|name| !declared.iter().any(|p| &p.name == *name))
        .map(String::as_str)
        .collect();
    (!unknown.is_empty()).then(|| {
        let known: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
        format!(
            "refused: unknown parameter(s) {} (the OperatorVersion declares: {})",
            unknown.join(", "),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )
    })
}

pub async fn run(args: Args) -> CliResult {
    let values = parse_params(&args.parameters)?;
    let ns = &args.kube.namespace;
    let cluster = args.kube.connect().await?;
    let (_, inst) = get_instance(&cluster, ns, &args.instance).await?;
    let ov = get_operator_version(&cluster, &inst).await?;
    if let Some(what) = unknown_parameters(&ov.spec.parameters, values.keys()) {
        return Err(Box::new(KudoCliError::Refused {
            instance: args.instance,
            what,
        }));
    }
    let before = super::plan::plan_uids(&inst);
    let patch = json!({
        "apiVersion": KUDO_API,
        "kind": "Instance",
        "metadata": {"name": args.instance, "namespace": ns},
        "spec": {"parameters": values},
    });
    cluster.merge_patch(&patch).await?;
    println!("instance {ns}/{} updated", args.instance);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_parameters_are_named_with_the_declared_ones() {
        let declared = vec![
            Parameter {
                name: "Param".into(),
                ..Parameter::default()
            },
            Parameter {
                name: "Replicas".into(),
                ..Parameter::default()
            },
        ];
        assert_eq!(unknown_parameters(&declared, &["Param".to_string()]), None);
        let msg = unknown_parameters(&declared, &["Parm".to_string(), "Param".to_string()])
            .expect("refused");
        assert!(msg.contains("unknown parameter(s) Parm "), "{msg}");
        assert!(msg.contains("declares: Param, Replicas"), "{msg}");
    }
}
