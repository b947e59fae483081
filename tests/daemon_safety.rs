//! `kudo serve` on simulated clusters, for the runtime half of issue 18: a panic inside one
//! reconcile is caught and reported on that Instance while the engine carries on, and the
//! values of `sensitive: true` parameters (and rendered Secrets) appear in no output: the
//! `--dry-run` status, `GET /api/v1/instances/{name}` and `kudo diff`.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use kudo::cluster::Cluster;
use kudo::gitops::config::Config;
use kudo::gitops::serve::{Daemon, Options, Shared};
use kudo::sim::SimCluster;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(90);
/// `abbrev` cuts at a byte offset: width 6 cuts after byte 3, inside the second `é`. (The
/// sprig fix cuts at the previous character boundary; the engine must survive either way.)
/// Multibyte text that made sprig's `abbrev` panic before it cut at character boundaries.
const PANICKING_TEXT: &str = "ééééééééé";

fn write(dir: &Path, file: &str, text: &str) {
    let p = dir.join(file);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// Framework `app`: a ConfigMap abbreviating TEXT and quoting PASSWORD inside a longer
/// value, and a Secret holding PASSWORD.
fn write_framework(repo: &Path) {
    let base = "frameworks/app/1.0.0";
    write(
        repo,
        &format!("{base}/operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: app\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {name: config, kind: Apply, spec: {resources: [config.yaml]}}\n  - {name: secret, kind: Apply, spec: {resources: [secret.yaml]}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - {name: config, tasks: [config]}\n          - {name: secret, tasks: [secret]}\n",
    );
    write(
        repo,
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: TEXT, default: plain}\n  - {name: PASSWORD, sensitive: true, default: default-SECRET-in-package}\n",
    );
    write(
        repo,
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  short: {{ abbrev 6 .Params.TEXT | quote }}\n  dsn: {{ printf \"postgres://app:%s@db\" .Params.PASSWORD | quote }}\n",
    );
    write(
        repo,
        &format!("{base}/templates/secret.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Name }}-secret\nstringData:\n  username: app\n  password: {{ .Params.PASSWORD | quote }}\n",
    );
}

fn instance_doc(name: &str, text: &str, password: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  framework: app\n  version: 1.0.0\n  parameters:\n    TEXT: \"{text}\"\n    PASSWORD: \"{password}\"\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: t}}\n"
    )
}

fn config(work: &Path, repo: &Path) -> Config {
    let text = format!(
        "cacheDir: {}\nrepositories:\n  - name: local\n    url: {}\n    interval: 1h\nclusters:\n  - name: c\n    sim: {{readyDelay: 50ms}}\n    labels: {{fleet: t}}\n",
        work.join("cache").display(),
        repo.display()
    );
    Config::parse("kudo.yaml", &text, work).expect("config")
}

fn options(sims: &[&SimCluster]) -> Options {
    Options {
        observe_interval: Duration::from_millis(200),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_millis(200),
        debounce: Duration::from_millis(100),
        sims: sims
            .iter()
            .map(|s| ("c".to_string(), (*s).clone()))
            .collect(),
        member: None,
    }
}

/// Polls `check` until it gives a value; panics with `what` and the last state on timeout.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last = match check() {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The live Instance `apps/{name}` on cluster `c`, as the instance API shows it.
fn live(shared: &Shared, name: &str) -> Result<serde_json::Value, String> {
    let detail = shared.instance_detail(Some("apps"), name)?;
    let v = serde_json::to_value(&detail).map_err(|e| e.to_string())?;
    let inst = v
        .pointer("/clusters/c/instance")
        .cloned()
        .unwrap_or_default();
    if inst.is_null() {
        return Err(format!("apps/{name} not applied yet: {v}"));
    }
    Ok(inst)
}

fn plan_status(inst: &serde_json::Value) -> Option<&str> {
    inst.pointer("/status/planStatus/deploy/status")?.as_str()
}

fn condition<'a>(inst: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    inst.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

async fn install_crds(cluster: &Cluster) {
    for crd in kudo::api::crds() {
        let value = serde_json::to_value(&crd).expect("crd json");
        cluster.apply(&value).await.expect("install CRD");
    }
    for crd in kudo::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let r = kudo::cluster::ObjectRef::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            name,
        );
        cluster
            .wait_healthy(&r, Duration::from_secs(10))
            .await
            .expect("CRD established");
    }
}

/// The live Instance `apps/{name}` read from the simulated cluster itself.
async fn instance_on(cluster: &Cluster, name: &str) -> Result<serde_json::Value, String> {
    let r = kudo::cluster::ObjectRef::new("kudo.dev/v1beta1", "Instance", Some("apps"), name);
    cluster
        .get_opt(&r)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("apps/{name} not there yet"))
}

/// Text that used to panic in a template function (sprig `abbrev` on multibyte text) now
/// renders; a reconcile that panics goes through the engine's guard on the real Instance:
/// the `ReconcilePanicked` condition (sensitive values scrubbed) and a `panic` error in the
/// metrics, cleared by the next clean pass; the daemon's engine runs the GitOps instance's
/// next plan and stays ready meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_reconcile_is_reported_and_the_engine_carries_on() {
    let sim = SimCluster::new("c");
    let _workloads = sim.spawn_workloads(kudo::sim::workload::WorkloadConfig {
        ready_delay: Duration::from_millis(50),
        job_duration: Duration::from_millis(50),
    });
    let cluster = Cluster::from_client("c", sim.client());
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    write_framework(&repo);
    write(
        &repo,
        "instances/good.yaml",
        &instance_doc("good", "first text", "pw-good-1234"),
    );
    let daemon = Daemon::start(config(work.path(), &repo), options(&[&sim]))
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    let (addr, _http) = kudo::gitops::serve::serve_http(
        shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        std::future::pending(),
    )
    .await
    .expect("http");
    eventually("apps/good to complete", || {
        let inst = live(&shared, "good")?;
        (plan_status(&inst) == Some("COMPLETE"))
            .then_some(())
            .ok_or_else(|| inst.to_string())
    })
    .await;

    // Created with kubectl, say, beside the GitOps instance, on the OperatorVersion kudo
    // applied.
    let bad = |text: &str| {
        json!({"apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "bad", "namespace": "apps"},
            "spec": {"operatorVersion": {"name": "app-1.0.0"},
                "parameters": {"TEXT": text, "PASSWORD": "pw-bad-5678"}}})
    };
    cluster
        .apply_as(&bad(PANICKING_TEXT), "kubectl")
        .await
        .expect("bad instance");
    // Multibyte text that used to panic in `abbrev` (defect 6) now renders: the plan completes.
    let mut done = String::new();
    for _ in 0..(TIMEOUT.as_millis() / 50) {
        if let Ok(inst) = instance_on(&cluster, "bad").await {
            if plan_status(&inst) == Some("COMPLETE") {
                done.clear();
                break;
            }
            done = inst.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done.is_empty(), "apps/bad did not complete: {done}");

    // A reconcile that panics (no input is known to panic any more, so the attempt panics
    // itself) goes through the engine's real guard on the real Instance: reported on it,
    // sensitive values scrubbed, counted, and the engine's other work goes on.
    let (registry, engine_metrics) = kudo::metrics::registry_with_engine();
    let ctx = std::sync::Arc::new(kudo::manager::reconcile::Context::with_metrics(
        std::sync::Arc::new(Cluster::from_client("c", sim.client())),
        Duration::from_millis(200),
        engine_metrics,
    ));
    let panics = std::sync::Arc::new(kudo::manager::guard::Panics::default());
    let live: kudo::api::Instance =
        serde_json::from_value(instance_on(&cluster, "bad").await.expect("bad")).expect("instance");
    let live = std::sync::Arc::new(live);
    let outcome = kudo::manager::guard::guard(live.clone(), ctx.clone(), panics.clone(), async {
        panic!("byte index 5 is not a char boundary; text pw-bad-5678")
    })
    .await;
    assert!(outcome.is_err(), "a panic is an error outcome");
    let inst = instance_on(&cluster, "bad").await.expect("bad");
    let panicked = condition(&inst, "ReconcilePanicked")
        .cloned()
        .unwrap_or_default();
    assert_eq!(panicked["status"], "True", "{inst}");
    let message = panicked["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("reconcile panicked: ") && message.contains("char boundary"),
        "no panic reported on apps/bad: {panicked}"
    );
    assert!(!message.contains("pw-bad-5678"), "{panicked}");
    let metrics = kudo::metrics::encode(&registry);
    assert!(
        metrics.contains("kudo_reconcile_errors_total{cluster=\"c\",category=\"panic\"} 1"),
        "{metrics}"
    );
    assert!(
        kudo::metrics::suspicious_label_values(&metrics).is_empty(),
        "{metrics}"
    );

    // The engine carries on: a new revision of the GitOps instance runs its plan.
    write(
        &repo,
        "instances/good.yaml",
        &instance_doc("good", "second text", "pw-good-1234"),
    );
    shared.sync_now(None);
    let cm = kudo::cluster::ObjectRef::new("v1", "ConfigMap", Some("apps"), "good-config");
    let mut short = None;
    for _ in 0..(TIMEOUT.as_millis() / 50) {
        short = cluster
            .get_opt(&cm)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.pointer("/data/short").cloned());
        if short == Some(json!("sec...")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        short,
        Some(json!("sec...")),
        "the engine stopped after the panic"
    );
    assert!(shared.ready(), "{:?}", shared.not_ready_reason());
    assert_eq!(http_get(addr, "/readyz").0, 200);
    // A clean pass afterwards clears the condition.
    let live: kudo::api::Instance =
        serde_json::from_value(instance_on(&cluster, "bad").await.expect("bad")).expect("instance");
    let outcome = kudo::manager::guard::guard(std::sync::Arc::new(live), ctx, panics, async {
        Ok(kube::runtime::controller::Action::await_change())
    })
    .await;
    assert!(outcome.is_ok());
    let inst = instance_on(&cluster, "bad").await.expect("bad");
    assert_eq!(
        condition(&inst, "ReconcilePanicked").map(|c| c["status"].clone()),
        Some(json!("False")),
        "{inst}"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// `serve --dry-run` reports a changed sensitive parameter by name only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_status_masks_sensitive_parameters() {
    let old = "old-SECRET-value-1111";
    let new = "new-SECRET-value-2222";
    let sim = SimCluster::new("c");
    let cluster = Cluster::from_client("c", sim.client());
    install_crds(&cluster).await;
    cluster
        .apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}))
        .await
        .expect("namespace");
    cluster
        .apply_as(
            &json!({"apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
                "metadata": {"name": "db", "namespace": "apps",
                    "labels": {kudo::gitops::serve::MANAGED_LABEL: kudo::gitops::serve::FIELD_MANAGER}},
                "spec": {"operatorVersion": {"name": "app-1.0.0"},
                    "parameters": {"TEXT": "t", "PASSWORD": old}}}),
            kudo::gitops::serve::FIELD_MANAGER,
        )
        .await
        .expect("live instance");

    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    write_framework(&repo);
    write(&repo, "instances/db.yaml", &instance_doc("db", "t", new));
    let daemon = Daemon::start_dry_run(config(work.path(), &repo), options(&[&sim]))
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    let pending = eventually("the dry run to report the change", || {
        let doc = shared.status();
        let pending = doc
            .clusters
            .first()
            .map(|c| c.pending_changes.clone())
            .unwrap_or_default();
        (!pending.is_empty())
            .then(|| serde_json::to_string(&doc).unwrap_or_default())
            .ok_or_else(|| format!("{doc:?}"))
    })
    .await;
    for secret in [old, new] {
        assert!(!pending.contains(secret), "{secret} shown: {pending}");
    }
    assert!(
        pending.contains("parameter PASSWORD: changed (sensitive, not shown)"),
        "{pending}"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// `GET /api/v1/instances/{name}` masks sensitive parameters in the live Instance (spec and
/// the engine's snapshot annotation) and the OperatorVersion's default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_api_masks_sensitive_parameters() {
    let password = "pw-SECRET-api-3333";
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    write_framework(&repo);
    write(
        &repo,
        "instances/db.yaml",
        &instance_doc("db", "t", password),
    );
    let daemon = Daemon::start(config(work.path(), &repo), options(&[]))
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    let (addr, _http) = kudo::gitops::serve::serve_http(
        shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        std::future::pending(),
    )
    .await
    .expect("http");
    eventually("the plan to complete", || {
        let inst = live(&shared, "db")?;
        (plan_status(&inst) == Some("COMPLETE"))
            .then_some(())
            .ok_or_else(|| inst.to_string())
    })
    .await;
    let (code, body) = http_get(addr, "/api/v1/instances/db?namespace=apps");
    assert_eq!(code, 200, "{body}");
    for secret in [password, "default-SECRET-in-package"] {
        assert!(!body.contains(secret), "{secret} shown: {body}");
    }
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        v.pointer("/clusters/c/instance/spec/parameters/PASSWORD"),
        Some(&json!("(sensitive, not shown)")),
        "{body}"
    );
    assert_eq!(
        v.pointer("/clusters/c/instance/spec/parameters/TEXT"),
        Some(&json!("t")),
        "other parameters are shown: {body}"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// `kudo diff` against a cluster running the instance: a changed password shows as a
/// changed parameter without values, the Secret's keys with changed/unchanged markers, and
/// the ConfigMap that embeds it with the value scrubbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_masks_sensitive_parameters_and_secret_data() {
    use base64::Engine as _;
    let old = "old-SECRET-diff-4444";
    let new = "new-SECRET-diff-5555";
    let sim = SimCluster::new("c");
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    write_framework(&repo);
    write(&repo, "instances/db.yaml", &instance_doc("db", "t", old));
    let cfg = config(work.path(), &repo);
    let daemon = Daemon::start(cfg.clone(), options(&[&sim]))
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    eventually("the plan to complete", || {
        let inst = live(&shared, "db")?;
        (plan_status(&inst) == Some("COMPLETE"))
            .then_some(())
            .ok_or_else(|| inst.to_string())
    })
    .await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );

    write(&repo, "instances/db.yaml", &instance_doc("db", "t", new));
    let desired = kudo::gitops::diff::load_revision(&cfg, Some(&repo), None, None).expect("load");
    let cluster = Cluster::from_client("c", sim.client());
    let diff = kudo::gitops::diff::diff_cluster(&cluster, &desired).await;
    let text = kudo::gitops::diff::render(&[diff], &desired.revision, false);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for secret in [
        old.to_string(),
        new.to_string(),
        b64(old),
        b64(new),
        b64("app"),
    ] {
        assert!(!text.contains(&secret), "{secret} shown:\n{text}");
    }
    for needle in [
        "parameter PASSWORD: changed (sensitive, not shown)",
        "Secret apps/db-secret",
        "password: (sensitive, changed)",
        "username: (sensitive, unchanged)",
        "ConfigMap apps/db-config",
        "postgres://app:(sensitive, not shown)@db",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

/// The console's instance page masks sensitive parameters as the API does, and an open
/// event stream (a browser left on a page) never holds the daemon's shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_masks_secrets_and_an_open_event_stream_does_not_hold_shutdown() {
    use std::io::{Read, Write};
    let password = "pw-SECRET-console-6666";
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("repo");
    write_framework(&repo);
    write(
        &repo,
        "instances/db.yaml",
        &instance_doc("db", "t", password),
    );
    let daemon = Daemon::start(config(work.path(), &repo), options(&[]))
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, http) = kudo::gitops::serve::serve_http(
        shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        async move {
            let _ = stopped.await;
        },
    )
    .await
    .expect("http");
    eventually("the plan to complete", || {
        let inst = live(&shared, "db")?;
        (plan_status(&inst) == Some("COMPLETE"))
            .then_some(())
            .ok_or_else(|| inst.to_string())
    })
    .await;
    let (code, body) = http_get(addr, "/instances/apps/db");
    assert_eq!(code, 200, "{body}");
    for secret in [password, "default-SECRET-in-package"] {
        assert!(!body.contains(secret), "{secret} shown: {body}");
    }
    assert!(
        body.contains("PASSWORD") && body.contains("(sensitive, not shown)"),
        "{body}"
    );
    // A browser's event stream, left open.
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .expect("request");
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains("event: hello") {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let _ = stop_http.send(());
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    tokio::time::timeout(std::time::Duration::from_secs(10), http)
        .await
        .expect("the HTTP server stops although a stream was open")
        .expect("http task");
}
