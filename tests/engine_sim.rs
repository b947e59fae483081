//! The plan engine on a simulated cluster that goes away mid-plan (100 clusters in one
//! process: tests/sim_engine.rs).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use kube::api::Api;
use kudo::api::{ExecutionStatus, Instance};
use kudo::cluster::Cluster;
use kudo::sim::SimCluster;
use kudo::sim::workload::WorkloadConfig;

const TIMEOUT: Duration = Duration::from_secs(60);

const PACKAGE: &str = r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: app-1, namespace: default}
spec:
  operator: {name: app, kind: Operator}
  version: "1"
  tasks:
    - {name: config, kind: Apply, spec: {resources: [config.yaml]}}
    - {name: web, kind: Apply, spec: {resources: [web.yaml]}}
  plans:
    deploy:
      strategy: serial
      phases:
        - {name: base, steps: [{name: config, tasks: [config]}]}
        - {name: workloads, steps: [{name: web, tasks: [web]}]}
  templates:
    config.yaml: |
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: "{{ .Name }}-config"}
      data: {a: b}
    web.yaml: |
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: "{{ .Name }}-web"}
      spec:
        replicas: 2
        selector: {matchLabels: {app: web}}
        template:
          metadata: {labels: {app: web}}
          spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: kudo.dev/v1beta1
kind: Instance
metadata: {name: app, namespace: default, labels: {kudo.dev/operator: app}}
spec:
  operatorVersion: {name: app-1}
"#;

/// CRDs, then the package and instance, on one simulated cluster.
async fn install(cluster: &Cluster) {
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
    for doc in kudo::api::documents_from_yaml("package", PACKAGE).expect("yaml") {
        cluster.apply(&doc).await.expect("apply");
    }
}

fn start_engine(cluster: Arc<Cluster>) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kudo::manager::controller::run(
        cluster,
        Some("default".into()),
        Duration::from_millis(100),
        async move {
            let _ = rx.await;
        },
    ));
    tx
}

async fn deploy_status(client: &kube::Client) -> Option<kudo::api::PlanStatus> {
    let api: Api<Instance> = Api::namespaced(client.clone(), "default");
    api.get("app")
        .await
        .ok()?
        .status?
        .plan_status
        .get("deploy")
        .cloned()
}

/// Reads the Instance from the simulated store itself, past any partition.
fn stored_plan(sim: &SimCluster) -> Option<kudo::api::PlanStatus> {
    let obj = sim.with_store(|s| {
        let target = s
            .target("kudo.dev", "v1beta1", "instances", "default")
            .ok()?;
        s.get(&target, "app").ok()
    })?;
    let inst: Instance = serde_json::from_value((*obj).clone()).ok()?;
    inst.status?.plan_status.get("deploy").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_goes_away_mid_plan_finishes_when_it_returns() {
    let sim = SimCluster::new("flaky");
    let cluster = Arc::new(Cluster::from_client("flaky", sim.client()));
    install(&cluster).await;
    let workloads_config = WorkloadConfig {
        ready_delay: Duration::from_millis(300),
        ..WorkloadConfig::default()
    };
    let _stop = start_engine(cluster.clone());
    let client = sim.client();
    eventually("config done, web waiting", TIMEOUT, || async {
        let p = deploy_status(&client).await?;
        let steps: Vec<_> = p.phases.iter().flat_map(|ph| &ph.steps).collect();
        (steps[0].status == Some(ExecutionStatus::Complete)
            && steps[1].status == Some(ExecutionStatus::InProgress))
        .then_some(())
    })
    .await;

    // Workloads become ready 300 ms after they are seen; the cluster goes away before that
    // can be reported to the engine.
    let _workloads = sim.spawn_workloads(workloads_config);
    sim.faults().set_partitioned(true);
    let refused_at_start = sim.faults().refused();
    eventually(
        "the engine has tried the partitioned cluster",
        TIMEOUT,
        || async { (sim.faults().refused() >= refused_at_start + 10).then_some(()) },
    )
    .await;
    let during = stored_plan(&sim).expect("stored status");
    assert_ne!(
        during.status,
        Some(ExecutionStatus::Complete),
        "nothing completes while away"
    );
    assert_ne!(
        during.status,
        Some(ExecutionStatus::FatalError),
        "a partition is not fatal"
    );

    sim.faults().set_partitioned(false);
    let back = std::time::Instant::now();
    let done = eventually(
        "plan completes once the cluster is back",
        TIMEOUT,
        || async {
            let p = deploy_status(&client).await?;
            (p.status == Some(ExecutionStatus::Complete)).then_some(p)
        },
    )
    .await;
    eprintln!(
        "plan COMPLETE {:.2}s after the partition ended",
        back.elapsed().as_secs_f64()
    );
    assert_eq!(done.uid, during.uid, "the same plan run finished");
}
