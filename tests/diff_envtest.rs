//! `kudo diff` and `kudo serve --dry-run` against a real Kubernetes API server
//! (scripts/envtest): a parameter change is shown as the expected diff (instance line,
//! triggered plan, object diff from a server-side apply dry run), an unreachable cluster
//! gets its own section, and a dry-run daemon leaves the cluster untouched.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{client, envtest_kubeconfig, eventually, install_crds, make_workloads_ready};
use kube::api::Api;
use kudo::api::{ExecutionStatus, Instance};
use kudo::gitops::config::Config;
use kudo::gitops::placement::ClusterInfo;
use kudo::gitops::serve::{Daemon, Options};
use kudo::package::DirTree;

const TIMEOUT: Duration = Duration::from_secs(60);

fn write(root: &Path, file: &str, text: &str) {
    let path = root.join(file);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A repository folder: framework `probe` (a ConfigMap holding MESSAGE; `update` runs on a
/// parameter change) and one instance of it in `namespace`.
fn write_repo(root: &Path, namespace: &str, message: &str) {
    let base = "frameworks/probe/1.0.0";
    write(
        root,
        &format!("{base}/operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: probe\noperatorVersion: 1.0.0\ntasks:\n  - {name: config, kind: Apply, spec: {resources: [config.yaml]}}\nplans:\n  deploy:\n    phases: [{name: main, steps: [{name: config, tasks: [config]}]}]\n  update:\n    phases: [{name: main, steps: [{name: config, tasks: [config]}]}]\n",
    );
    write(
        root,
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: MESSAGE, default: hello}\n",
    );
    write(
        root,
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  message: {{ .Params.MESSAGE | quote }}\n  size: small\n",
    );
    write(
        root,
        "instances/probe.yaml",
        &format!(
            "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: probe\n  namespace: {namespace}\nspec:\n  framework: probe\n  version: 1.0.0\n  parameters:\n    MESSAGE: {message}\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: test}}\n"
        ),
    );
}

/// kudo.yaml: the repository folder, envtest-1 as `c1`, and optionally a cluster nothing
/// listens for.
fn write_config(work: &Path, repo: &Path, with_unreachable: bool) -> std::path::PathBuf {
    let mut clusters = format!(
        "  - name: c1\n    kubeconfig: {}\n    context: envtest-1\n    labels: {{fleet: test}}\n",
        envtest_kubeconfig().display()
    );
    if with_unreachable {
        write(
            work,
            "gone-kubeconfig",
            "apiVersion: v1\nkind: Config\nclusters: [{name: gone, cluster: {server: \"https://127.0.0.1:1\", insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: x}}]\ncontexts: [{name: gone, context: {cluster: gone, user: u}}]\ncurrent-context: gone\n",
        );
        clusters.push_str(
            "  - name: gone\n    kubeconfig: gone-kubeconfig\n    labels: {fleet: test}\n",
        );
    }
    let path = work.join("kudo.yaml");
    write(
        work,
        "kudo.yaml",
        &format!(
            "listen: 127.0.0.1:0\ncacheDir: {}\nrepositories:\n  - name: local\n    url: {}\n    interval: 1h\nclusters:\n{clusters}",
            work.join("cache").display(),
            repo.display()
        ),
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_of_a_parameter_change_against_the_live_cluster() {
    let c = client("envtest-1").await;
    install_crds(&c).await;
    let ns = format!("diff-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    let work = tempfile::tempdir().expect("tempdir");
    let old = work.path().join("old");
    write_repo(&old, &ns, "one");
    let config_path = write_config(work.path(), &old, true);

    // The live state `kudo serve` would have made from the old revision, run by a manager
    // for that namespace only.
    let clusters = [ClusterInfo {
        name: "c1".into(),
        labels: [("fleet".to_string(), "test".to_string())].into(),
    }];
    let desired =
        kudo::gitops::desired::load(&DirTree::new(old.clone()), "old", &clusters).expect("load");
    let cluster = kudo::cluster::Cluster::from_client("c1", c.clone());
    kudo::gitops::serve::apply_instance(
        &cluster,
        &desired,
        &desired.instances[&format!("{ns}/probe")],
    )
    .await
    .expect("apply instance");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kudo::manager::controller::run(
        Arc::new(cluster),
        Some(ns.clone()),
        Duration::from_millis(200),
        async move {
            let _ = stopped.await;
        },
    ));
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns);
    let live = eventually("deploy complete", TIMEOUT, || async {
        make_workloads_ready(&c, &ns).await;
        let inst = instances.get("probe").await.ok()?;
        let plan = inst.status.as_ref()?.plan_status.get("deploy")?;
        (plan.status == Some(ExecutionStatus::Complete)).then_some(inst.clone())
    })
    .await;
    let _ = stop.send(());
    let uid = live.metadata.uid.clone().expect("uid");

    let kudo = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kudo"))
            .arg("diff")
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .output()
            .expect("run kudo diff")
    };

    // The revision the cluster runs: no changes on c1; the unreachable cluster says so.
    let out = kudo(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "unreachable counts: {stdout}");
    assert!(stdout.contains("=== cluster c1 "), "{stdout}");
    // (Other tests' instances on this shared server may show up; this one must not.)
    let c1 = section(&stdout, "c1");
    assert!(!c1.contains(&format!("instance {ns}/")), "{stdout}");
    let gone = section(&stdout, "gone");
    assert!(gone.contains("\nunreachable: "), "{stdout}");

    // A folder with MESSAGE changed.
    let new = work.path().join("new");
    write_repo(&new, &ns, "two");
    let out = kudo(&["--dir", new.to_str().expect("utf-8"), "--colour", "never"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let revision =
        kudo::gitops::git::content_revision(&DirTree::new(new.clone())).expect("revision");
    let c1 = section(&stdout, "c1");
    assert!(
        c1.starts_with(&format!(
            "=== cluster c1 (revision {})\n",
            kudo::gitops::desired::short(&revision)
        )),
        "{stdout}"
    );
    let got = instance_block(&c1, &format!("{ns}/probe"))
        .replace(&ns, "NS")
        .replace(&uid, "UID")
        .replace(kudo::gitops::desired::short(&revision), "REV");
    let expected = r#"instance NS/probe: changed; plan update would run (parameters changed: MESSAGE)
  parameter MESSAGE: "one" -> "two"
--- live/ConfigMap NS/probe-config
+++ revision/ConfigMap NS/probe-config
@@ -25,5 +25,5 @@
   namespace: NS
   name: probe-config
 data:
-  message: one
+  message: two
   size: small
"#;
    pretty_assertions::assert_eq!(got, expected, "full output:\n{stdout}");
    assert!(
        section(&stdout, "gone").contains("unreachable: "),
        "{stdout}"
    );

    // Leave no managed Instance behind for other tests' control planes.
    let _ = instances.delete("probe", &Default::default()).await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    let _ = namespaces.delete(&ns, &Default::default()).await;
}

/// The lines about instance `key` in a cluster section.
fn instance_block(section: &str, key: &str) -> String {
    let head = format!("instance {key}: ");
    let mut out = String::new();
    let mut inside = false;
    for line in section.lines() {
        if line.starts_with("instance ") || line.starts_with("=== cluster ") {
            inside = line.starts_with(&head);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The lines of `cluster`'s section of a diff report, headline included.
fn section(report: &str, cluster: &str) -> String {
    let head = format!("=== cluster {cluster} ");
    let mut out = String::new();
    let mut inside = false;
    for line in report.lines() {
        if line.starts_with("=== cluster ") {
            inside = line.starts_with(&head);
        }
        if inside {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dry_run_reports_and_leaves_the_cluster_untouched() {
    let c = client("envtest-1").await;
    let ns = format!("dryrun-{}", &uuid::Uuid::new_v4().to_string()[..8]);
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    write_repo(&repo, &ns, "one");
    let config_path = write_config(work.path(), &repo, false);
    let config = Config::load(&config_path).expect("config");
    let options = Options {
        observe_interval: Duration::from_millis(100),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_millis(100),
        debounce: Duration::from_millis(50),
        ..Default::default()
    };
    let daemon = Daemon::start_dry_run(config, options)
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    let pending = eventually("pending changes reported", TIMEOUT, || async {
        let status = shared.status();
        let c1 = status.clusters.iter().find(|c| c.name == "c1")?;
        (!c1.pending_changes.is_empty()).then(|| c1.pending_changes.clone())
    })
    .await;
    // (Instances other tests left on this shared server show up as removals.)
    let ours =
        format!("instance {ns}/probe: added (probe 1.0.0); plan deploy would run (new instance)");
    assert!(pending.contains(&ours), "{pending:?}");
    // Several more passes, each of which would have applied in a real run.
    let passes = shared.passes();
    eventually("more passes", TIMEOUT, || async {
        (shared.passes() >= passes + 5).then_some(())
    })
    .await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    assert!(
        namespaces.get_opt(&ns).await.expect("get").is_none(),
        "dry run created the namespace"
    );
    let all: Api<Instance> = Api::all(c.clone());
    let written = all
        .list(&Default::default())
        .await
        .map(|l| {
            l.items
                .iter()
                .any(|i| i.metadata.namespace.as_deref() == Some(ns.as_str()))
        })
        .unwrap_or(false);
    assert!(!written, "dry run wrote an Instance");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}
