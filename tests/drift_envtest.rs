//! Drift detection and repair against a real Kubernetes API server (scripts/envtest):
//! a hand-edited Deployment replica count is reverted and counted as drift, a deleted
//! ConfigMap comes back, and with selfHeal off drift is only reported.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Namespace, apply_yaml, client, eventually, install_crds, make_workloads_ready};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kudo::api::{Condition, ExecutionStatus, Instance};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

const PACKAGE: &str = r#"
apiVersion: kudo.dev/v1beta1
kind: OperatorVersion
metadata: {name: drift-1}
spec:
  operator: {name: drift, kind: Operator}
  version: "1"
  tasks: [{name: app, kind: Apply, spec: {resources: [config.yaml, web.yaml]}}]
  plans:
    deploy: {phases: [{name: main, steps: [{name: app, tasks: [app]}]}]}
  templates:
    config.yaml: |
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: "{{ .Name }}-config"}
      data: {greeting: hello}
    web.yaml: |
      apiVersion: apps/v1
      kind: Deployment
      metadata: {name: "{{ .Name }}-web"}
      spec:
        replicas: 3
        selector: {matchLabels: {app: "{{ .Name }}"}}
        template:
          metadata: {labels: {app: "{{ .Name }}"}}
          spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: kudo.dev/v1beta1
kind: Instance
metadata: {name: healed, labels: {kudo.dev/operator: drift}}
spec: {operatorVersion: {name: drift-1}}
---
apiVersion: kudo.dev/v1beta1
kind: Instance
metadata:
  name: watched
  labels: {kudo.dev/operator: drift}
  annotations: {kudo.dev/self-heal: "false"}
spec: {operatorVersion: {name: drift-1}}
"#;

fn drift_condition(inst: &Instance) -> Option<Condition> {
    inst.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Drifted")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_are_reverted_and_counted_and_only_reported_without_self_heal() {
    let c = client("envtest-1").await;
    install_crds(&c).await;
    let ns = Namespace::create(&c, "drift").await;
    apply_yaml(&c, &ns.name, PACKAGE).await;

    let (registry, metrics) = kudo::metrics::registry_with_engine();
    let cluster = Arc::new(kudo::cluster::Cluster::from_client("envtest-1", c.clone()));
    let ctx = Arc::new(
        kudo::manager::reconcile::Context::with_metrics(
            cluster,
            Duration::from_millis(200),
            metrics,
        )
        // The periodic check is the fallback; the watches must do the work here.
        .with_drift_interval(Duration::from_secs(3600)),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(kudo::manager::controller::run_with(
        ctx,
        Some(ns.name.clone()),
        async move {
            let _ = stopped.await;
        },
    ));

    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    for name in ["healed", "watched"] {
        eventually("deploy complete", TIMEOUT, || async {
            make_workloads_ready(&c, &ns.name).await;
            let inst = instances.get(name).await.ok()?;
            let plan = inst.status?.plan_status.get("deploy")?.clone();
            (plan.status == Some(ExecutionStatus::Complete)).then_some(())
        })
        .await;
    }

    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let configmaps: Api<ConfigMap> = Api::namespaced(c.clone(), &ns.name);
    let person = PatchParams::default();
    // A person scales the Deployment and deletes the ConfigMap.
    deployments
        .patch(
            "healed-web",
            &person,
            &Patch::Merge(&json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("hand edit");
    configmaps
        .delete("healed-config", &Default::default())
        .await
        .expect("hand delete");

    eventually("replicas reverted and configmap back", TIMEOUT, || async {
        let d = deployments.get("healed-web").await.ok()?;
        let replicas = d.spec?.replicas;
        let cm = configmaps.get_opt("healed-config").await.ok()??;
        (replicas == Some(3) && cm.data?.get("greeting")? == "hello").then_some(())
    })
    .await;
    let cond = eventually("drift recorded", TIMEOUT, || async {
        drift_condition(&instances.get("healed").await.ok()?)
    })
    .await;
    assert_eq!(cond.reason, "DriftRepaired", "{cond:?}");
    assert!(
        cond.message.contains("spec.replicas") || cond.message.contains("deleted"),
        "{cond:?}"
    );
    // The repair is counted once its check finishes (just after the object is back).
    eventually("both repairs counted", TIMEOUT, || async {
        let text = kudo::metrics::encode(&registry);
        (metric(&text, "kudo_drift_repairs_total", "healed") >= 2.0).then_some(())
    })
    .await;

    // selfHeal off: the edit stays, drift is reported with the field path.
    configmaps
        .patch(
            "watched-config",
            &person,
            &Patch::Merge(&json!({"data": {"greeting": "edited by hand"}})),
        )
        .await
        .expect("hand edit");
    let cond = eventually("drift reported", TIMEOUT, || async {
        let cond = drift_condition(&instances.get("watched").await.ok()?)?;
        (cond.reason == "DriftDetected").then_some(cond)
    })
    .await;
    assert_eq!(cond.status, "True");
    assert!(
        cond.message.contains(&format!(
            "ConfigMap {}/watched-config: data.greeting",
            ns.name
        )),
        "{cond:?}"
    );
    let text = kudo::metrics::encode(&registry);
    assert_eq!(
        metric(&text, "kudo_drift_objects", "watched"),
        1.0,
        "{text}"
    );
    let cm = configmaps.get("watched-config").await.expect("configmap");
    assert_eq!(
        cm.data
            .unwrap_or_default()
            .get("greeting")
            .map(String::as_str),
        Some("edited by hand"),
        "selfHeal false never repairs"
    );
    let _ = stop.send(());
    ns.cleanup().await;
}

/// The value of `name`'s series for `instance` in OpenMetrics text (0 when absent).
fn metric(text: &str, name: &str, instance: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(&format!("instance=\"{instance}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
