//! `kudo install PKG`: verifies a package (folder or .tgz), then creates its Operator and
//! OperatorVersion (and those of its local KudoOperator dependencies) and an Instance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::kube::{KUDO_API, KubeArgs, instance_ref, parse_params};
use super::{CliError, CliResult};
use crate::cluster::{Cluster, ErrorKind};
use crate::package::dependencies::{Resolved, resolve};
use crate::package::{Package, resolve_parameters, verify};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Package folder or .tgz, or the name of a package in a repository (`kudo repo add`).
    pub package: PathBuf,
    /// Install from this repository only (default: the first configured one that has it).
    #[arg(long)]
    pub repo: Option<String>,
    /// Operator version wanted from the repository: exact or a semver requirement (`^1.2`);
    /// default the newest.
    #[arg(long)]
    pub operator_version: Option<String>,
    /// App version wanted from the repository: exact or a semver requirement.
    #[arg(long)]
    pub app_version: Option<String>,
    #[command(flatten)]
    pub home: super::repo::Home,
    /// Instance name (default: `<operator>-instance`, as KUDO).
    #[arg(long)]
    pub instance: Option<String>,
    /// Parameter value NAME=VALUE (repeatable).
    #[arg(long = "parameter", short = 'p', value_name = "NAME=VALUE")]
    pub parameters: Vec<String>,
    /// Wait until the deploy plan has finished.
    #[arg(long)]
    pub wait: bool,
    /// Seconds to wait at most.
    #[arg(long, default_value_t = 300)]
    pub wait_time: u64,
    /// Only install the Operator and OperatorVersion (KUDO's flag); for a package with a
    /// typed CRD, create its typed objects instead (`kudo manager` installs the CRD).
    #[arg(long)]
    pub skip_instance: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Why a package is refused before anything is created.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(
        "{package}: refused, the package fails verification ({count} error(s)); nothing was created:\n  {list}"
    )]
    Verify {
        package: String,
        count: usize,
        list: String,
    },
    #[error("{package}: refused, nothing was created: {errors}")]
    Parameters { package: String, errors: String },
    #[error(
        "instance {name} already exists in namespace {namespace}; use `kudo update` or `kudo upgrade`"
    )]
    InstanceExists { name: String, namespace: String },
}

/// Loads the package and its local dependencies, refusing any that fails `package verify`.
pub fn load_verified(path: &Path) -> Result<Vec<Resolved>, CliError> {
    let root = Package::load_path(path)?;
    check(&root)?;
    let all = resolve(path)?;
    for r in &all {
        check(&r.package)?;
    }
    Ok(all)
}

fn check(pkg: &Package) -> Result<(), InstallError> {
    let report = verify(pkg);
    for w in &report.warnings {
        eprintln!("warning: {}: {w}", pkg.source);
    }
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(InstallError::Verify {
            package: pkg.source.clone(),
            count: report.errors.len(),
            list: report.errors.join("\n  "),
        })
    }
}

/// Checks the `-p` values against the OperatorVersion's parameters (unknown names, types,
/// required ones without a value), before anything is created.
pub fn check_parameters(
    resolved: &Resolved,
    values: &BTreeMap<String, String>,
) -> Result<(), InstallError> {
    resolve_parameters(
        &resolved.resources.operator_version.spec.parameters,
        values,
        None,
    )
    .map(|_| ())
    .map_err(|e| InstallError::Parameters {
        package: resolved.package.source.clone(),
        errors: e.to_string(),
    })
}

/// Creates an object unless one with its name exists; returns whether it created it.
pub async fn create_if_missing(cluster: &Cluster, obj: &Value) -> Result<bool, CliError> {
    match cluster.create(obj).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ErrorKind::Conflict => Ok(false),
        Err(e) => Err(Box::new(e)),
    }
}

/// Creates the Operator and OperatorVersion of each package (dependencies first).
pub async fn install_packages(
    cluster: &Cluster,
    namespace: &str,
    all: &[Resolved],
) -> Result<(), CliError> {
    for r in all {
        let mut op = serde_json::to_value(&r.resources.operator)?;
        op["metadata"]["namespace"] = json!(namespace);
        let created = create_if_missing(cluster, &op).await?;
        let op_name = r
            .resources
            .operator
            .metadata
            .name
            .clone()
            .unwrap_or_default();
        if created {
            println!("operator {namespace}/{op_name} created");
        }
        let mut ov = serde_json::to_value(&r.resources.operator_version)?;
        ov["metadata"]["namespace"] = json!(namespace);
        let ov_name = r
            .resources
            .operator_version
            .metadata
            .name
            .clone()
            .unwrap_or_default();
        if create_if_missing(cluster, &ov).await? {
            println!("operatorversion {namespace}/{ov_name} created");
        } else {
            println!("operatorversion {namespace}/{ov_name} already installed");
        }
    }
    Ok(())
}

pub async fn run(args: Args) -> CliResult {
    let package = package_path(&args).await?;
    let all = load_verified(&package)?;
    let root = all
        .last()
        .expect("invariant: resolve returns the root package last");
    let values = parse_params(&args.parameters)?;
    check_parameters(root, &values)?;
    let operator = root.package.operator.name.clone();
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("{operator}-instance"));
    let ns = &args.kube.namespace;
    let cluster = args.kube.connect().await?;
    if args.skip_instance {
        return install_packages(&cluster, ns, &all).await;
    }
    if cluster
        .get_opt(&instance_ref(ns, &instance))
        .await?
        .is_some()
    {
        return Err(Box::new(InstallError::InstanceExists {
            name: instance,
            namespace: ns.clone(),
        }));
    }
    install_packages(&cluster, ns, &all).await?;
    let ov_name = root
        .resources
        .operator_version
        .metadata
        .name
        .clone()
        .unwrap_or_default();
    let obj = json!({
        "apiVersion": KUDO_API,
        "kind": "Instance",
        "metadata": {
            "name": instance,
            "namespace": ns,
            "labels": {"kudo.dev/operator": operator},
        },
        "spec": {
            "operatorVersion": {"name": ov_name, "kind": "OperatorVersion"},
            "parameters": values,
        },
    });
    cluster.create(&obj).await?;
    println!("instance {ns}/{instance} created");
    if args.wait {
        let plan = super::plan::wait_new_run(
            &cluster,
            ns,
            &instance,
            &BTreeMap::new(),
            Duration::from_secs(args.wait_time),
        )
        .await?;
        println!("instance {ns}/{instance}: plan {plan} finished");
    }
    Ok(())
}

/// The package on disk: the given path, or (for a name that is no file or folder, or with a
/// repository flag) the verified download from a package repository.
async fn package_path(args: &Args) -> Result<PathBuf, CliError> {
    let from_repo =
        args.repo.is_some() || args.operator_version.is_some() || args.app_version.is_some();
    if !from_repo && args.package.exists() {
        return Ok(args.package.clone());
    }
    let name = args.package.to_string_lossy().to_string();
    let wanted = super::repo::Wanted {
        repo: args.repo.clone(),
        operator_version: args.operator_version.clone(),
        app_version: args.app_version.clone(),
    };
    super::repo::fetch_package(&args.home.path(), &name, &wanted).await
}
