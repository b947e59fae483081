//! KudoOperator dependencies, resolved as `kubectl kudo install` did: a task's `package`
//! that names a local folder or .tgz (relative to the parent package's folder) is loaded and
//! installed before its parent, and the task is rewritten to name the child operator.

use std::path::{Path, PathBuf};

use super::{Package, PackageError, Resources};

/// One package to install, dependencies before dependents.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub path: PathBuf,
    pub package: Package,
    pub resources: Resources,
}

#[derive(Debug, thiserror::Error)]
pub enum DependencyError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("dependency cycle: {}", chain.join(" -> "))]
    Cycle { chain: Vec<String> },
    #[error(
        "{parent}: task {task:?} (KudoOperator) names package {package:?}, which is neither a local package ({}) nor resolvable without a repository",
        tried.display()
    )]
    Unresolvable {
        parent: String,
        task: String,
        package: String,
        tried: PathBuf,
    },
}

/// The package at `path` and every local KudoOperator dependency below it, children first.
/// Each parent's KudoOperator task gets `package: <child operator name>` and, when it named
/// none, the child's `operatorVersion`.
pub fn resolve(path: &Path) -> Result<Vec<Resolved>, DependencyError> {
    let mut out = Vec::new();
    let mut chain = Vec::new();
    visit(path, &mut chain, &mut out)?;
    Ok(out)
}

fn visit(
    path: &Path,
    chain: &mut Vec<PathBuf>,
    out: &mut Vec<Resolved>,
) -> Result<String, DependencyError> {
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if chain.contains(&canonical) {
        let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        names.push(canonical.display().to_string());
        return Err(DependencyError::Cycle { chain: names });
    }
    let package = Package::load_path(path)?;
    let mut resources = package.to_resources()?;
    let base = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    chain.push(canonical);
    for task in &mut resources.operator_version.spec.tasks {
        if task.kind != crate::api::TaskKind::KudoOperator {
            continue;
        }
        let child_path = base.join(&task.spec.package);
        if !child_path.exists() {
            // A name for a repository lookup: left as is (no repository here).
            if task.spec.package.contains('/') || task.spec.package.ends_with(".tgz") {
                return Err(DependencyError::Unresolvable {
                    parent: package.source.clone(),
                    task: task.name.clone(),
                    package: task.spec.package.clone(),
                    tried: child_path,
                });
            }
            continue;
        }
        let already = out.len();
        let child_name = visit(&child_path, chain, out)?;
        let child_version = out
            .get(already..)
            .and_then(|added| added.last())
            .map(|r| r.resources.operator_version.spec.version.clone())
            .unwrap_or_default();
        task.spec.package = child_name;
        if task.spec.operator_version.is_empty() {
            task.spec.operator_version = child_version;
        }
    }
    chain.pop();
    let name = package.operator.name.clone();
    // The same dependency reached twice is installed once.
    if !out.iter().any(|r| {
        r.resources.operator_version.metadata.name == resources.operator_version.metadata.name
    }) {
        out.push(Resolved {
            path: path.to_path_buf(),
            package,
            resources,
        });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-tests/integration")
    }

    #[test]
    fn kudo_operator_children_come_first_and_tasks_name_them() {
        let root = shared().join("operator-with-dependencies/parent-operator");
        let all = resolve(&root).expect("resolves");
        let names: Vec<String> = all
            .iter()
            .map(|r| {
                r.resources
                    .operator_version
                    .metadata
                    .name
                    .clone()
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["child-3.2.1-0.0.1", "parent-0.1.0"]);
        let task = &all[1].resources.operator_version.spec.tasks[0];
        assert_eq!(task.spec.package, "child");
        assert_eq!(task.spec.operator_version, "0.0.1");
    }

    #[test]
    fn a_missing_local_dependency_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let pkg = dir.path().join("p");
        std::fs::create_dir_all(&pkg).expect("mkdir");
        std::fs::write(
            pkg.join("operator.yaml"),
            "apiVersion: kudo.dev/v1beta1\nname: p\noperatorVersion: 0.1.0\ntasks:\n  - name: dep\n    kind: KudoOperator\n    spec:\n      package: ../missing-child\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - name: s\n            tasks: [dep]\n",
        )
        .expect("write");
        std::fs::write(
            pkg.join("params.yaml"),
            "apiVersion: kudo.dev/v1beta1\nparameters: []\n",
        )
        .expect("write");
        let err = resolve(&pkg).expect_err("missing").to_string();
        assert!(
            err.contains("../missing-child") && err.contains("\"dep\""),
            "{err}"
        );
    }
}
