//! Connection flags shared by the KUDO commands (`install`, `update`, `plan`, `get`, ...),
//! and the lookups they share (an Instance and its OperatorVersion).

use std::path::PathBuf;

use serde_json::Value;

use super::CliError;
use crate::api::{Instance, OperatorVersion};
use crate::cluster::{Cluster, ObjectRef};

pub const KUDO_API: &str = "kudo.dev/v1beta1";

#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file (the first of $KUBECONFIG's paths, else ~/.kube/config, else the
    /// in-cluster service account).
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<String>,
    /// Kubeconfig context (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace of the instance.
    #[arg(long, short = 'n', default_value = "default", global = true)]
    pub namespace: String,
}

impl KubeArgs {
    pub async fn connect(&self) -> Result<Cluster, CliError> {
        let path = self
            .kubeconfig
            .as_deref()
            .and_then(|k| std::env::split_paths(k).find(|p| !p.as_os_str().is_empty()))
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".kube/config"))
                    .filter(|p| p.exists())
            });
        let name = self.context.as_deref().unwrap_or("current");
        Ok(match path {
            Some(p) => Cluster::from_kubeconfig(name, &p, self.context.as_deref()).await?,
            None => Cluster::in_cluster("in-cluster")?,
        })
    }
}

/// Why a KUDO command refused or failed; each names the object.
#[derive(Debug, thiserror::Error)]
pub enum KudoCliError {
    #[error("instance {name} not found in namespace {namespace}")]
    NoInstance { name: String, namespace: String },
    #[error("instance {instance}: OperatorVersion {name} not found in namespace {namespace}")]
    NoOperatorVersion {
        instance: String,
        name: String,
        namespace: String,
    },
    #[error("instance {instance}: {what}")]
    Refused { instance: String, what: String },
    #[error("-p {given:?}: expected NAME=VALUE")]
    BadParam { given: String },
    #[error("instance {instance}: {what} did not finish within {seconds}s")]
    WaitTimeout {
        instance: String,
        what: String,
        seconds: u64,
    },
}

/// Parses repeated `-p NAME=VALUE` flags (the value may contain `=`).
pub fn parse_params(
    given: &[String],
) -> Result<std::collections::BTreeMap<String, String>, KudoCliError> {
    given
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(KudoCliError::BadParam { given: p.clone() }),
        })
        .collect()
}

pub fn instance_ref(namespace: &str, name: &str) -> ObjectRef {
    ObjectRef::new(KUDO_API, "Instance", Some(namespace), name)
}

/// The Instance as JSON and typed.
pub async fn get_instance(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
) -> Result<(Value, Instance), CliError> {
    let live = cluster
        .get_opt(&instance_ref(namespace, name))
        .await?
        .ok_or_else(|| KudoCliError::NoInstance {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })?;
    let typed: Instance = serde_json::from_value(live.clone())?;
    Ok((live, typed))
}

/// The OperatorVersion an Instance names (its `operatorVersion.namespace`, else the
/// instance's own namespace, as KUDO resolves it).
pub async fn get_operator_version(
    cluster: &Cluster,
    instance: &Instance,
) -> Result<OperatorVersion, CliError> {
    let inst_ns = instance.metadata.namespace.clone().unwrap_or_default();
    let ov_ref = &instance.spec.operator_version;
    let namespace = ov_ref
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or(inst_ns);
    let name = ov_ref.name.clone().unwrap_or_default();
    let r = ObjectRef::new(KUDO_API, "OperatorVersion", Some(&namespace), name.clone());
    let live = cluster
        .get_opt(&r)
        .await?
        .ok_or_else(|| KudoCliError::NoOperatorVersion {
            instance: instance.metadata.name.clone().unwrap_or_default(),
            name,
            namespace,
        })?;
    Ok(serde_json::from_value(live)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_split_on_the_first_equals() {
        let p = parse_params(&["a=1".into(), "url=http://x?y=z".into(), "e=".into()]).expect("ok");
        assert_eq!(p["a"], "1");
        assert_eq!(p["url"], "http://x?y=z");
        assert_eq!(p["e"], "");
        let err = parse_params(&["novalue".into()]).expect_err("bad");
        assert!(err.to_string().contains("novalue"), "{err}");
    }
}
