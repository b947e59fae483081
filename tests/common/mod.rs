//! Shared helpers for integration tests against the real API servers of `scripts/envtest`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

/// The shared envtest environment (started or reused once per test process).
#[path = "../support/envtest.rs"]
pub mod envtest;

/// The kubeconfig of the shared envtest environment (contexts envtest-1..3).
pub fn envtest_kubeconfig() -> PathBuf {
    envtest::kubeconfig().to_path_buf()
}

/// A client for `envtest-N`.
pub async fn client(context: &str) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(envtest_kubeconfig()).expect("kubeconfig");
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// A fresh namespace named after the test; deleted by [`Namespace::cleanup`].
pub struct Namespace {
    pub name: String,
    client: kube::Client,
}

impl Namespace {
    pub async fn create(client: &kube::Client, prefix: &str) -> Namespace {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().to_string()[..8]);
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        let ns = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
        api.create(&Default::default(), &ns)
            .await
            .expect("create namespace");
        Namespace {
            name,
            client: client.clone(),
        }
    }

    pub async fn cleanup(self) {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client);
        let _ = api.delete(&self.name, &Default::default()).await;
    }
}

/// Installs kudo's CRDs (server-side apply of `crds/`) and waits until they are served.
pub async fn install_crds(client: &kube::Client) {
    let cluster = kudo::cluster::Cluster::from_client("test", client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).expect("crds/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read crd");
        for doc in kudo::api::documents_from_yaml(&path.display().to_string(), &text).expect("yaml")
        {
            names.push(
                doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            cluster.apply(&doc).await.expect("apply CRD");
        }
    }
    for name in names {
        let r = kudo::cluster::ObjectRef::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            name,
        );
        let health = cluster
            .wait_healthy(&r, Duration::from_secs(30))
            .await
            .expect("CRD established");
        assert!(health.is_healthy(), "{health:?}");
    }
}

/// Applies YAML documents into a namespace (server-side, field manager `test`).
pub async fn apply_yaml(client: &kube::Client, namespace: &str, yaml: &str) {
    let cluster = kudo::cluster::Cluster::from_client("test", client.clone());
    for mut doc in kudo::api::documents_from_yaml("test", yaml).expect("yaml") {
        doc["metadata"]["namespace"] = json!(namespace);
        cluster.apply(&doc).await.expect("apply");
    }
}

/// Plays the workload controllers envtest lacks: marks every Deployment, StatefulSet and
/// Job in `namespace` ready/succeeded, as their controllers would once pods run. Jobs
/// annotated `test.kudo.dev/fail: "true"` fail instead. Returns how many it changed.
pub async fn make_workloads_ready(client: &kube::Client, namespace: &str) -> usize {
    let mut changed = 0;
    for (api_version, kind, plural) in [
        ("apps/v1", "Deployment", "deployments"),
        ("apps/v1", "StatefulSet", "statefulsets"),
        ("batch/v1", "Job", "jobs"),
    ] {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list workloads");
        for obj in list.items {
            let name = obj.metadata.name.clone().unwrap_or_default();
            let generation = obj.metadata.generation.unwrap_or(1);
            let status = if kind == "Job" {
                let fail = obj
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("test.kudo.dev/fail"))
                    .is_some_and(|v| v == "true");
                let (cond, counts) = if fail {
                    ("Failed", json!({"failed": 1}))
                } else {
                    ("Complete", json!({"succeeded": 1}))
                };
                let mut s = counts;
                s["conditions"] = json!([{"type": cond, "status": "True"}]);
                s
            } else {
                let replicas = obj.data["spec"]["replicas"].as_i64().unwrap_or(1);
                json!({
                    "observedGeneration": generation,
                    "replicas": replicas,
                    "updatedReplicas": replicas,
                    "readyReplicas": replicas,
                    "availableReplicas": replicas,
                    "currentReplicas": replicas,
                })
            };
            if obj
                .data
                .get("status")
                .is_some_and(|s| is_subset(&status, s))
            {
                continue;
            }
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .expect("patch workload status");
            changed += 1;
        }
    }
    changed
}

fn is_subset(expected: &Value, actual: &Value) -> bool {
    kudo::util::subset::is_subset(expected, actual)
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
