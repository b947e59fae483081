//! A demo fleet on disk: a Git repository with one framework and M instances, and a
//! kudo.yaml declaring N simulated clusters. `kudo serve --config <out>/kudo.yaml` then runs
//! the console (and everything else) at that size; the console bench uses it too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::BenchError;

fn setup(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Setup {
        scenario: "demo-fleet",
        reason: reason.to_string(),
    }
}

fn write(root: &Path, rel: &str, text: &str) -> Result<(), BenchError> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| setup(format!("{}: {e}", parent.display())))?;
    }
    std::fs::write(&path, text).map_err(|e| setup(format!("{}: {e}", path.display())))
}

fn git(dir: &Path, args: &[&str]) -> Result<(), BenchError> {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=kudo demo",
            "-c",
            "user.email=demo@kudo.invalid",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| setup(format!("git {}: {e}", args.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(setup(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The framework: `deploy` waits for a Deployment, `smoke` runs a Job (both take the
/// clusters' `readyDelay`).
const OPERATOR: &str = "apiVersion: kudo.dev/v1beta1\nname: demo\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {name: app, kind: Apply, spec: {resources: [deployment.yaml]}}\n  - {name: smoke, kind: Apply, spec: {resources: [smoke.yaml]}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - {name: app, tasks: [app]}\n  smoke:\n    strategy: serial\n    phases:\n      - name: smoke\n        strategy: serial\n        steps:\n          - {name: smoke, tasks: [smoke]}\n";
const PARAMS: &str = "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: VERSION, default: \"1.27\"}\n  - {name: REPLICAS, default: \"2\"}\n  - {name: API_KEY, default: \"change-me\", sensitive: true}\n";
const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Name }}\nspec:\n  replicas: {{ .Params.REPLICAS }}\n  selector: {matchLabels: {app: {{ .Name }}}}\n  template:\n    metadata: {labels: {app: {{ .Name }}}}\n    spec:\n      containers:\n        - name: app\n          image: \"nginx:{{ .Params.VERSION }}\"\n          env:\n            - {name: API_KEY, value: {{ .Params.API_KEY | quote }}}\n";
const SMOKE: &str = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Name }}-smoke\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - {name: smoke, image: busybox, command: [\"true\"]}\n";

/// Writes `<out>/repo` (committed) and `<out>/kudo.yaml`; returns the kudo.yaml path.
pub fn write_demo_fleet(
    out: &Path,
    clusters: usize,
    instances: usize,
    ready_delay: Duration,
) -> Result<PathBuf, BenchError> {
    let repo = out.join("repo");
    if repo.exists() {
        return Err(setup(format!(
            "{} exists; choose an empty --out",
            repo.display()
        )));
    }
    std::fs::create_dir_all(&repo).map_err(|e| setup(format!("{}: {e}", repo.display())))?;
    git(&repo, &["init", "-q", "-b", "main"])?;
    let base = "frameworks/demo/1.0.0";
    write(&repo, &format!("{base}/operator.yaml"), OPERATOR)?;
    write(&repo, &format!("{base}/params.yaml"), PARAMS)?;
    write(
        &repo,
        &format!("{base}/templates/deployment.yaml"),
        DEPLOYMENT,
    )?;
    write(&repo, &format!("{base}/templates/smoke.yaml"), SMOKE)?;
    let teams = ["payments", "search", "platform"];
    for i in 0..instances {
        let ns = teams[i % teams.len()];
        write(
            &repo,
            &format!("instances/app-{i:02}.yaml"),
            &format!(
                "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: app-{i:02}\n  namespace: {ns}\nspec:\n  framework: demo\n  version: 1.0.0\n  parameters:\n    VERSION: \"1.27\"\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: demo}}\n"
            ),
        )?;
    }
    git(&repo, &["add", "-A"])?;
    git(&repo, &["commit", "-q", "-m", "demo fleet"])?;
    let envs = ["prod", "staging", "dev"];
    let mut yaml = format!(
        "# {clusters} simulated clusters × {instances} instances (kudo bench demo-fleet).\nlisten: 127.0.0.1:8080\ncacheDir: {}\nrepositories:\n  - {{name: demo, url: \"file://{}\", interval: 5s}}\nclusters:\n",
        out.join("cache").display(),
        repo.canonicalize().unwrap_or(repo.clone()).display()
    );
    for c in 0..clusters {
        yaml.push_str(&format!(
            "  - {{name: c{c:04}, sim: {{readyDelay: {}ms}}, labels: {{fleet: demo, env: {}, region: r{}}}}}\n",
            ready_delay.as_millis(),
            envs[c % envs.len()],
            c % 4
        ));
    }
    let config = out.join("kudo.yaml");
    write(out, "kudo.yaml", &yaml)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_fleet_is_a_valid_config_with_every_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config =
            write_demo_fleet(dir.path(), 12, 3, Duration::from_millis(100)).expect("demo fleet");
        let c = crate::gitops::config::Config::load(&config).expect("valid kudo.yaml");
        assert_eq!(c.clusters.len(), 12);
        assert!(
            write_demo_fleet(dir.path(), 1, 1, Duration::ZERO).is_err(),
            "never overwrites"
        );
    }
}
