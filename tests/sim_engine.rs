//! The plan engine on simulated clusters: a multi-phase plan runs to COMPLETE on 100
//! simulated clusters in one process (each with its own engine controller and workload
//! simulator), and a Job the simulator fails makes the plan FATAL_ERROR.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{apply_yaml, eventually, install_crds};
use kube::api::Api;
use kudo::api::{ExecutionStatus, Instance};
use kudo::sim::SimCluster;
use kudo::sim::workload::WorkloadConfig;
use serde_json::json;

const CLUSTERS: usize = 100;
const TIMEOUT: Duration = Duration::from_secs(120);

const OPERATOR_VERSION: &str = r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata:
  name: shop-1.0.0
spec:
  operator: {name: shop, kind: Operator}
  version: "1.0.0"
  parameters:
    - {name: REPLICAS, default: "2", value-type: integer}
    - {name: FAIL_JOB, default: "false", value-type: boolean}
  tasks:
    - {name: config, kind: Apply, spec: {resources: [config.yaml]}}
    - {name: app, kind: Apply, spec: {resources: [app.yaml, svc.yaml]}}
    - {name: db, kind: Apply, spec: {resources: [db.yaml]}}
    - {name: migrate, kind: Apply, spec: {resources: [migrate.yaml]}}
  plans:
    deploy:
      strategy: serial
      phases:
        - name: base
          steps: [{name: config, tasks: [config]}]
        - name: workloads
          strategy: parallel
          steps:
            - {name: app, tasks: [app]}
            - {name: db, tasks: [db]}
        - name: finish
          steps: [{name: migrate, tasks: [migrate]}]
  templates:
    config.yaml: |
      apiVersion: v1
      kind: ConfigMap
      metadata:
        name: {{ .Name }}-config
      data:
        step: {{ .StepName }}
    app.yaml: |
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: {{ .Name }}-app
      spec:
        replicas: {{ .Params.REPLICAS }}
        selector: {matchLabels: {app: shop}}
        template:
          metadata: {labels: {app: shop}}
          spec:
            containers: [{name: app, image: "nginx:1.25", ports: [{containerPort: 80}]}]
    svc.yaml: |
      apiVersion: v1
      kind: Service
      metadata:
        name: {{ .Name }}-app
      spec:
        selector: {app: shop}
        ports: [{port: 80}]
    db.yaml: |
      apiVersion: apps/v1
      kind: StatefulSet
      metadata:
        name: {{ .Name }}-db
      spec:
        replicas: 1
        serviceName: db
        selector: {matchLabels: {app: db}}
        template:
          metadata: {labels: {app: db}}
          spec:
            containers: [{name: db, image: "postgres:16"}]
    migrate.yaml: |
      apiVersion: batch/v1
      kind: Job
      metadata:
        name: {{ .Name }}-migrate
        annotations:
          sim.kudo.dev/fail: {{ .Params.FAIL_JOB | quote }}
      spec:
        template:
          spec:
            restartPolicy: Never
            containers: [{name: migrate, image: "busybox"}]
"#;

fn instance_yaml(name: &str, params: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  labels: {{kudo.dev/operator: shop}}\nspec:\n  operatorVersion: {{name: shop-1.0.0}}\n  parameters: {params}\n"
    )
}

fn workloads() -> WorkloadConfig {
    WorkloadConfig {
        ready_delay: Duration::from_millis(20),
        job_duration: Duration::from_millis(30),
    }
}

/// A simulated cluster with CRDs, namespace `shop`, the OperatorVersion, the workload simulator
/// and the engine running; the returned sender stops the engine when dropped.
async fn prepared(
    name: &str,
) -> (
    SimCluster,
    kudo::sim::workload::Workloads,
    tokio::sync::oneshot::Sender<()>,
) {
    let sim = SimCluster::new(name);
    let workloads = sim.spawn_workloads(workloads());
    let client = sim.client();
    install_crds(&client).await;
    let cluster = kudo::cluster::Cluster::from_client(name, client.clone());
    cluster
        .apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}))
        .await
        .expect("namespace");
    apply_yaml(&client, "shop", OPERATOR_VERSION).await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kudo::manager::controller::run(
        Arc::new(cluster),
        Some("shop".to_string()),
        Duration::from_millis(200),
        async move {
            let _ = rx.await;
        },
    ));
    (sim, workloads, tx)
}

async fn deploy_status(client: &kube::Client, name: &str) -> Option<ExecutionStatus> {
    let api: Api<Instance> = Api::namespaced(client.clone(), "shop");
    api.get(name)
        .await
        .ok()?
        .status?
        .plan_status
        .get("deploy")?
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_plan_completes_on_a_hundred_simulated_clusters() {
    let mut clusters = Vec::new();
    for i in 0..CLUSTERS {
        clusters.push(prepared(&format!("sim-{i}")).await);
    }
    for (sim, _, _) in &clusters {
        apply_yaml(
            &sim.client(),
            "shop",
            &instance_yaml("shop", "{REPLICAS: \"3\"}"),
        )
        .await;
    }
    for (sim, _, _) in &clusters {
        let client = sim.client();
        let status = eventually(
            &format!("deploy COMPLETE on {}", sim.name()),
            TIMEOUT,
            || {
                let client = client.clone();
                async move {
                    match deploy_status(&client, "shop").await {
                        Some(s @ (ExecutionStatus::Complete | ExecutionStatus::FatalError)) => {
                            Some(s)
                        }
                        _ => None,
                    }
                }
            },
        )
        .await;
        assert_eq!(status, ExecutionStatus::Complete, "cluster {}", sim.name());
        let deploy: k8s_openapi::api::apps::v1::Deployment =
            Api::namespaced(client.clone(), "shop")
                .get("shop-app")
                .await
                .expect("deployment");
        assert_eq!(
            deploy.spec.and_then(|s| s.replicas),
            Some(3),
            "parameter rendered"
        );
        assert_eq!(deploy.status.and_then(|s| s.available_replicas), Some(3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failed_by_the_simulator_makes_the_plan_fatal() {
    let (sim, _w, _stop) = prepared("sim-fatal").await;
    let client = sim.client();
    apply_yaml(
        &client,
        "shop",
        &instance_yaml("shop", "{FAIL_JOB: \"true\"}"),
    )
    .await;
    let status = eventually("deploy finished", TIMEOUT, || {
        let client = client.clone();
        async move {
            match deploy_status(&client, "shop").await {
                Some(s @ (ExecutionStatus::Complete | ExecutionStatus::FatalError)) => Some(s),
                _ => None,
            }
        }
    })
    .await;
    assert_eq!(status, ExecutionStatus::FatalError);
}
