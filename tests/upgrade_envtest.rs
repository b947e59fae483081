//! Upgrading from the format before ownership labels, on a real API server (scripts/envtest):
//! Instances labelled only `kudo.dev/managed-by` and objects labelled only heritage,
//! operator and instance are taken over without deleting, re-creating or re-running
//! anything; a legacy Instance that no repository declares is kept and reported.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kudo::cluster::{Cluster, ObjectRef};
use kudo::gitops::config::Config;
use kudo::gitops::serve::{Daemon, Options, Shared};
use serde_json::{Value, json};
use support::envtest;

const TIMEOUT: Duration = Duration::from_secs(120);

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kudo-test",
            "-c",
            "user.email=test@kudo.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(root: &Path, file: &str, text: &str) {
    let p = root.join(file);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

fn instance_doc(name: &str, ns: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  framework: plain\n  version: 1.0.0\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: upgrade}}\n"
    )
}

async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match condition().await {
            Ok(()) => return,
            Err(state) => assert!(Instant::now() < deadline, "timed out: {what}: {state}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(cluster: &Cluster, r: &ObjectRef) -> Option<Value> {
    cluster.get_opt(r).await.expect("get")
}

async fn wait_passes(shared: &Shared, n: u64) {
    let target = shared.passes() + n;
    wait_until("planner passes", || async {
        if shared.passes() >= target {
            Ok(())
        } else {
            Err(shared.passes().to_string())
        }
    })
    .await;
}

/// Strips what the ownership release added, leaving the format kudo wrote before it.
async fn make_legacy(cluster: &Cluster, obj: &ObjectRef) {
    let live = get(cluster, obj).await.expect("object");
    let mut patch = json!({
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": {
            "name": live["metadata"]["name"],
            "labels": {
                "kudo.dev/control-plane": null,
                "kudo.dev/repository": null,
                "kudo.dev/instance-uid": null,
                "kudo.dev/instance-key": null,
            },
            "annotations": {
                "kudo.dev/instance-namespace": null,
                "kudo.dev/instance-name": null,
                "kudo.dev/deletion-protection": null,
            },
        },
    });
    if let Some(ns) = live["metadata"]["namespace"].as_str() {
        patch["metadata"]["namespace"] = json!(ns);
    }
    cluster.merge_patch(&patch).await.expect("strip");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn todays_format_is_taken_over_without_deleting_or_rerunning_anything() {
    let kubeconfig = envtest::kubeconfig().to_path_buf();
    let cluster = envtest::cluster(1).await;
    let ns = envtest::unique("upgrade");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    let base = "frameworks/plain/1.0.0";
    write(
        &repo,
        &format!("{base}/operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: plain\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {name: main, kind: Apply, spec: {resources: [config.yaml]}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - {name: main, tasks: [main]}\n",
    );
    write(
        &repo,
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters: []\n",
    );
    write(
        &repo,
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  k: v\n",
    );
    write(&repo, "instances/db.yaml", &instance_doc("db", &ns));
    write(&repo, "instances/old.yaml", &instance_doc("old", &ns));
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "two instances"]);
    let config_text = format!(
        "cacheDir: {}\nrepositories:\n  - name: upgrade\n    url: file://{}\n    interval: 1h\nclusters:\n  - name: c1\n    kubeconfig: {}\n    context: envtest-1\n    labels: {{fleet: upgrade}}\n",
        dir.path().join("cache").display(),
        repo.display(),
        kubeconfig.display()
    );
    let config = Config::parse("kudo.yaml", &config_text, dir.path()).expect("config");
    let options = || Options {
        observe_interval: Duration::from_millis(300),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_millis(300),
        debounce: Duration::from_millis(100),
        ..Default::default()
    };
    let db = ObjectRef::new("kudo.dev/v1beta1", "Instance", Some(&ns), "db");
    let old = ObjectRef::new("kudo.dev/v1beta1", "Instance", Some(&ns), "old");
    let cm = ObjectRef::new("v1", "ConfigMap", Some(&ns), "db-config");
    let complete = |r: ObjectRef| {
        let cluster = &cluster;
        async move {
            wait_until(&format!("{r} COMPLETE"), || async {
                let s = get(cluster, &r)
                    .await
                    .and_then(|v| v.pointer("/status/planStatus/deploy/status").cloned());
                if s == Some(json!("COMPLETE")) {
                    Ok(())
                } else {
                    Err(format!("{s:?}"))
                }
            })
            .await;
        }
    };

    let daemon = Daemon::start(config.clone(), options())
        .await
        .expect("daemon");
    complete(db.clone()).await;
    complete(old.clone()).await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    for r in [&db, &old, &cm] {
        make_legacy(&cluster, r).await;
    }
    let before_db = get(&cluster, &db).await.expect("db");
    let before_cm = get(&cluster, &cm).await.expect("cm");
    assert!(
        before_db["metadata"]["labels"]
            .get("kudo.dev/control-plane")
            .is_none()
    );
    assert_eq!(
        before_db["metadata"]["labels"]["kudo.dev/managed-by"],
        "kudo-gitops"
    );

    // The new release starts on today's format; `old` was removed from Git meanwhile.
    std::fs::remove_file(repo.join("instances/old.yaml")).expect("rm");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "old goes"]);
    let daemon = Daemon::start(config, options()).await.expect("daemon");
    let shared = daemon.shared.clone();
    wait_until("db taken over", || async {
        let v = get(&cluster, &db).await.expect("db");
        match v["metadata"]["labels"]["kudo.dev/control-plane"].as_str() {
            Some("kudo") if v["metadata"]["labels"]["kudo.dev/repository"] == "upgrade" => Ok(()),
            _ => Err(v["metadata"]["labels"].to_string()),
        }
    })
    .await;
    wait_until("old reported", || async {
        let kept = shared.status().clusters[0].kept_instances.join("\n");
        if kept.contains(&format!("{ns}/old: applied before ownership labels")) {
            Ok(())
        } else {
            Err(kept)
        }
    })
    .await;
    wait_passes(&shared, 5).await;
    let after_db = get(&cluster, &db).await.expect("db survives");
    assert_eq!(
        after_db["metadata"]["uid"], before_db["metadata"]["uid"],
        "not re-created"
    );
    assert_eq!(
        after_db["status"]["planStatus"]["deploy"], before_db["status"]["planStatus"]["deploy"],
        "no plan re-ran"
    );
    assert_eq!(after_db["spec"], before_db["spec"]);
    let after_cm = get(&cluster, &cm).await.expect("configmap survives");
    assert_eq!(after_cm["metadata"]["uid"], before_cm["metadata"]["uid"]);
    assert!(
        get(&cluster, &old).await.is_some(),
        "a legacy instance is never deleted"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    for r in [&db, &old] {
        let _ = cluster.delete(r).await;
    }
}
