//! Request budget of one plan (issue 19, "write only what changes"): a 3-phase × 2-step
//! plan with one Deployment per step, run by the engine on a simulated cluster, costs at
//! most one apply per object, no OperatorVersion read per pass and a bounded number of
//! Instance writes. Counts requests, not time.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{apply_yaml, eventually, install_crds};
use kube::api::Api;
use kudo::api::{ExecutionStatus, Instance};
use kudo::cluster::Cluster;
use kudo::sim::SimCluster;
use kudo::sim::workload::WorkloadConfig;

const TIMEOUT: Duration = Duration::from_secs(60);

fn operator_version() -> String {
    let mut tasks = String::new();
    let mut phases = String::new();
    let mut templates = String::new();
    for p in 1..=3 {
        phases.push_str(&format!("        - name: p{p}\n          steps:\n"));
        for s in 1..=2 {
            let n = (p - 1) * 2 + s;
            tasks.push_str(&format!(
                "    - {{name: d{n}, kind: Apply, spec: {{resources: [d{n}.yaml]}}}}\n"
            ));
            phases.push_str(&format!("            - {{name: s{n}, tasks: [d{n}]}}\n"));
            templates.push_str(&format!(
                "    d{n}.yaml: |\n      apiVersion: apps/v1\n      kind: Deployment\n      metadata: {{name: \"{{{{ .Name }}}}-d{n}\"}}\n      spec:\n        replicas: 1\n        selector: {{matchLabels: {{app: d{n}}}}}\n        template:\n          metadata: {{labels: {{app: d{n}}}}}\n          spec: {{containers: [{{name: c, image: nginx}}]}}\n"
            ));
        }
    }
    // A cleanup plan: the Instance holds kudo's finalizer from its first plan on.
    tasks.push_str("    - {name: noop, kind: Dummy, spec: {done: true}}\n");
    phases.push_str("    cleanup:\n      phases: [{name: c, steps: [{name: c, tasks: [noop]}]}]\n");
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: OperatorVersion\nmetadata: {{name: app-1}}\nspec:\n  operator: {{name: app, kind: Operator}}\n  version: \"1\"\n  tasks:\n{tasks}  plans:\n    deploy:\n      strategy: serial\n      phases:\n{phases}  templates:\n{templates}"
    )
}

fn instance(name: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata: {{name: {name}, labels: {{kudo.dev/operator: app}}}}\nspec:\n  operatorVersion: {{name: app-1}}\n"
    )
}

/// Every request the engine's client sends, as `VERB path?query`.
type Log = Arc<Mutex<Vec<String>>>;

fn recording(client: kube::Client, log: Log) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let client = client.clone();
        log.lock()
            .expect("log")
            .push(format!("{} {}", req.method(), req.uri()));
        async move { client.send(req).await }
    });
    kube::Client::new(service, namespace)
}

/// The request's class for the budget: what it reads or writes.
fn classify(line: &str) -> &'static str {
    let (method, uri) = line.split_once(' ').unwrap_or((line, ""));
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let dry_run = query.split('&').any(|p| p.starts_with("dryRun="));
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _, rest @ ..] | ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["namespaces", _, _, ..] => &rest[2..],
        other => other,
    };
    let resource = rest.first().copied().unwrap_or("");
    match (method, rest.len(), resource) {
        (_, 0, _) => "discovery",
        ("GET", _, _) if watch => "watch",
        ("GET", 1, _) => "list",
        ("GET", _, "operatorversions") => "get OperatorVersion",
        ("GET", _, "instances") => "get Instance",
        ("GET", _, _) => "get object",
        ("PATCH", 3, "instances") => "write Instance status",
        ("PATCH", _, "instances") => "write Instance",
        ("PATCH", _, _) if dry_run => "dry-run object",
        ("PATCH", _, _) => "apply object",
        _ => "other",
    }
}

fn breakdown(log: &[String]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for line in log {
        *out.entry(classify(line)).or_default() += 1;
    }
    out
}

async fn plan_status(client: &kube::Client, name: &str) -> Option<kudo::api::PlanStatus> {
    let api: Api<Instance> = Api::namespaced(client.clone(), "default");
    api.get(name)
        .await
        .ok()?
        .status?
        .plan_status
        .get("deploy")
        .cloned()
}

/// Runs `name`'s plan to COMPLETE and returns the engine's requests from its creation until
/// the engine has been quiet for a second.
async fn one_plan(client: &kube::Client, log: &Log, name: &str) -> Vec<String> {
    log.lock().expect("log").clear();
    apply_yaml(client, "default", &instance(name)).await;
    eventually(&format!("plan of {name} completes"), TIMEOUT, || async {
        let p = plan_status(client, name).await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(())
    })
    .await;
    // Quiet: no new request for a second (the passes a completion wakes have run).
    let mut seen = usize::MAX;
    eventually("the engine goes quiet", TIMEOUT, || {
        let now = log.lock().expect("log").len();
        let quiet = now == seen;
        seen = now;
        async move {
            if !quiet {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            quiet.then_some(())
        }
    })
    .await;
    log.lock().expect("log").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_plan_applies_each_object_once_and_reads_no_operator_version_per_pass() {
    let sim = SimCluster::new("budget");
    let client = sim.client();
    install_crds(&client).await;
    apply_yaml(&client, "default", &operator_version()).await;
    let _workloads = sim.spawn_workloads(WorkloadConfig {
        ready_delay: Duration::from_millis(300),
        ..WorkloadConfig::default()
    });
    let log: Log = Arc::default();
    let engine = Arc::new(Cluster::from_client(
        "budget",
        recording(sim.client(), log.clone()),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kudo::manager::controller::run(
        engine,
        Some("default".into()),
        Duration::from_millis(200),
        async move {
            let _ = stopped.await;
        },
    ));
    // The first plan warms discovery; the second is what every further plan costs.
    one_plan(&client, &log, "warm").await;
    let requests = one_plan(&client, &log, "app").await;
    let counts = breakdown(&requests);
    eprintln!("requests of one plan (3 phases × 2 steps, 6 Deployments): {counts:?}");
    for line in &requests {
        eprintln!("  {line}");
    }
    let n = |class: &str| counts.get(class).copied().unwrap_or(0);
    assert!(
        n("apply object") <= 6,
        "each of the 6 objects is applied once: {counts:?}"
    );
    assert_eq!(
        n("get OperatorVersion"),
        0,
        "OperatorVersions come from the watch: {counts:?}"
    );
    assert_eq!(
        n("dry-run object"),
        0,
        "the drift check after completion finds the cached objects as applied: {counts:?}"
    );
    assert_eq!(
        n("list"),
        0,
        "objects with the instance's labels are looked for in the watches: {counts:?}"
    );
    assert!(
        n("write Instance") <= 2,
        "plan start (already IN_PROGRESS, with the finalizer) and completion: {counts:?}"
    );
    assert!(
        n("write Instance status") <= 7,
        "one status write per step transition and the completion: {counts:?}"
    );
    let api: Api<Instance> = Api::namespaced(client.clone(), "default");
    let app = api.get("app").await.expect("instance");
    assert!(
        kube::ResourceExt::finalizers(&app)
            .iter()
            .any(|f| f == kudo::manager::reconcile::CLEANUP_FINALIZER),
        "the finalizer came with the plan start: {:?}",
        app.metadata.finalizers
    );
    let _ = stop.send(());
}

fn start_engine(
    sim: &SimCluster,
    log: &Log,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let engine = Arc::new(Cluster::from_client(
        "budget",
        recording(sim.client(), log.clone()),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(kudo::manager::controller::run(
        engine,
        Some("default".into()),
        Duration::from_millis(200),
        async move {
            let _ = stopped.await;
        },
    ));
    (stop, handle)
}

fn step_status(p: &kudo::api::PlanStatus, step: &str) -> Option<ExecutionStatus> {
    p.phases
        .iter()
        .flat_map(|ph| &ph.steps)
        .find(|s| s.name == step)
        .and_then(|s| s.status)
}

/// A manager stopped after applying a step's object but before writing the Instance status
/// (emulated by erasing the status): the next manager finds the object carrying kudo's hash,
/// does not apply it again on every pass, and finishes the same plan run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_between_apply_and_status_write_does_not_apply_again() {
    let sim = SimCluster::new("restart");
    let client = sim.client();
    install_crds(&client).await;
    apply_yaml(&client, "default", &operator_version()).await;
    let first: Log = Arc::default();
    let (stop, handle) = start_engine(&sim, &first);
    apply_yaml(&client, "default", &instance("app")).await;
    // No workload simulator yet: app-d1 never becomes ready, the plan waits on step s1.
    let waiting = eventually("step s1 waits for app-d1", TIMEOUT, || async {
        let p = plan_status(&client, "app").await?;
        (step_status(&p, "s1") == Some(ExecutionStatus::InProgress)).then_some(p)
    })
    .await;
    let _ = stop.send(());
    handle.await.expect("first engine stops");
    let api: Api<Instance> = Api::namespaced(client.clone(), "default");
    api.patch_status(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(
            serde_json::json!({"status": {"planStatus": null, "applied": null}}),
        ),
    )
    .await
    .expect("erase status");

    let second: Log = Arc::default();
    let (stop, handle) = start_engine(&sim, &second);
    eventually("the new manager resumes step s1", TIMEOUT, || async {
        let p = plan_status(&client, "app").await?;
        (step_status(&p, "s1") == Some(ExecutionStatus::InProgress)).then_some(())
    })
    .await;
    // Several polls (200 ms) of the waiting step.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let applies_of_d1 = |log: &Log| {
        log.lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains("/deployments/app-d1?") && classify(l) == "apply object")
            .count()
    };
    let resumed = applies_of_d1(&second);
    let _workloads = sim.spawn_workloads(WorkloadConfig {
        ready_delay: Duration::from_millis(50),
        ..WorkloadConfig::default()
    });
    let done = eventually("the plan completes", TIMEOUT, || async {
        let p = plan_status(&client, "app").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(p)
    })
    .await;
    assert_eq!(done.uid, waiting.uid, "the same plan run finished");
    assert!(
        resumed <= 1,
        "app-d1 applied {resumed} times by the restarted manager while its step waited: {:?}",
        second.lock().expect("log")
    );
    let _ = stop.send(());
    handle.await.expect("second engine stops");
}

const ROLE_PACKAGE: &str = r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: rbac-1}
spec:
  operator: {name: rbac, kind: Operator}
  version: "1"
  tasks: [{name: app, kind: Apply, spec: {resources: [config.yaml, role.yaml]}}]
  plans:
    deploy: {phases: [{name: main, steps: [{name: app, tasks: [app]}]}]}
  templates:
    config.yaml: |
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: "{{ .Name }}-config"}
      data: {a: b}
    role.yaml: |
      apiVersion: rbac.authorization.k8s.io/v1
      kind: Role
      metadata: {name: "{{ .Name }}-reader"}
      rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
---
apiVersion: kudo.dev/v1beta1
kind: Instance
metadata: {name: rb, labels: {kudo.dev/operator: rbac}}
spec:
  operatorVersion: {name: rbac-1}
"#;

/// Passes woken by events check the watched kinds from the cache only; a kind no watch keeps
/// (a Role) is re-verified on the drift interval, and a hand edit of it is repaired then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwatched_kinds_are_verified_on_the_interval_not_on_every_pass() {
    let sim = SimCluster::new("interval");
    let client = sim.client();
    install_crds(&client).await;
    let log: Log = Arc::default();
    let engine = Arc::new(Cluster::from_client(
        "interval",
        recording(sim.client(), log.clone()),
    ));
    let interval = Duration::from_secs(10);
    let ctx = Arc::new(
        kudo::manager::reconcile::Context::new(engine, Duration::from_millis(200))
            .with_drift_interval(interval),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(kudo::manager::controller::run_with(
        ctx.clone(),
        Some("default".into()),
        async move {
            let _ = stopped.await;
        },
    ));
    apply_yaml(&client, "default", ROLE_PACKAGE).await;
    eventually("plan of rb completes", TIMEOUT, || async {
        let p = plan_status(&client, "rb").await?;
        (p.status == Some(ExecutionStatus::Complete)).then_some(())
    })
    .await;

    let reconciles = || {
        ctx.metrics
            .reconciles
            .get_or_create(&kudo::metrics::engine::ReconcileLabels {
                cluster: "interval".into(),
                result: kudo::metrics::engine::ReconcileResult::ok,
            })
            .get()
    };
    let setup = Cluster::from_client("setup", client.clone());
    log.lock().expect("log").clear();
    let window = std::time::Instant::now();
    let before = reconciles();
    for i in 0..10 {
        setup
            .merge_patch(&serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "rb-config", "namespace": "default",
                    "labels": {"touched": i.to_string()}}}))
            .await
            .expect("touch the ConfigMap");
    }
    eventually("the touches woke the instance", TIMEOUT, || async {
        (reconciles() >= before + 5).then_some(())
    })
    .await;
    let role_reads = log
        .lock()
        .expect("log")
        .iter()
        .filter(|l| l.contains("/roles/rb-reader"))
        .count();
    let passes = reconciles() - before;
    assert!(
        role_reads <= 2,
        "{passes} passes sent {role_reads} requests for the Role (one full check, a GET and a dry run, fits the window): {:?}",
        log.lock().expect("log")
    );
    assert!(
        window.elapsed() < interval.mul_f64(0.9),
        "the window stays inside one period"
    );

    // A hand edit of the unwatched Role wakes nothing; the periodic full check repairs it.
    setup
        .merge_patch(
            &serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role", "metadata": {"name": "rb-reader", "namespace": "default"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]}),
        )
        .await
        .expect("edit the Role");
    let role = kudo::cluster::ObjectRef::new(
        "rbac.authorization.k8s.io/v1",
        "Role",
        Some("default"),
        "rb-reader",
    );
    eventually("the Role is repaired", TIMEOUT, || async {
        let live = setup.get(&role).await.ok()?;
        (live.pointer("/rules/0/verbs") == Some(&serde_json::json!(["get"]))).then_some(())
    })
    .await;
    let _ = stop.send(());
    handle.await.expect("engine stops");
}
