//! 100 simulated clusters in one process, each driven by its own `kube::Client` and workload
//! simulator: apply a Deployment, a StatefulSet, a Job and a PVC everywhere, wait until every
//! one is healthy. (The plan engine will run the same way once it lands.)

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams};
use kudo::sim::SimCluster;
use kudo::sim::workload::{self, WorkloadConfig};
use serde_json::{Value, json};

const CLUSTERS: usize = 100;

fn objects() -> Vec<(&'static str, Value)> {
    let pod = json!({"metadata": {"labels": {"app": "db"}},
        "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}});
    vec![
        ("deployments", json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "db"}}, "template": pod}})),
        ("statefulsets", json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": pod}})),
        ("jobs", json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox:1"}]}}}})),
        ("persistentvolumeclaims", json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})),
    ]
}

async fn healthy(client: &kube::Client) -> kube::Result<bool> {
    let d: Deployment = Api::namespaced(client.clone(), "default").get("db").await?;
    let s: StatefulSet = Api::namespaced(client.clone(), "default").get("db").await?;
    let j: Job = Api::namespaced(client.clone(), "default").get("migrate").await?;
    let p: PersistentVolumeClaim = Api::namespaced(client.clone(), "default").get("data").await?;
    let d_ok = d.status.as_ref().is_some_and(|st| {
        st.observed_generation == d.metadata.generation
            && st.updated_replicas == Some(3)
            && st.available_replicas == Some(3)
    });
    let s_ok = s
        .status
        .as_ref()
        .is_some_and(|st| st.observed_generation == s.metadata.generation && st.ready_replicas == Some(2));
    let j_ok = j.status.as_ref().is_some_and(|st| st.succeeded == Some(1));
    let p_ok = p.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Bound");
    Ok(d_ok && s_ok && j_ok && p_ok)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clusters_apply_and_become_ready() {
    let cfg = WorkloadConfig {
        ready_delay: Duration::from_millis(20),
        job_duration: Duration::from_millis(30),
    };
    let clusters: Vec<SimCluster> = (0..CLUSTERS).map(|i| SimCluster::new(&format!("sim-{i}"))).collect();
    let _workloads: Vec<_> = clusters.iter().map(|c| workload::spawn(c.client(), cfg.clone())).collect();

    let mut tasks = Vec::new();
    for c in &clusters {
        let client = c.client();
        tasks.push(tokio::spawn(async move {
            for (plural, obj) in objects() {
                let (group, version) = match obj["apiVersion"].as_str().and_then(|a| a.split_once('/')) {
                    Some((g, v)) => (g.to_string(), v.to_string()),
                    None => (String::new(), "v1".to_string()),
                };
                let gvk = kube::core::GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap_or_default());
                let ar = kube::core::ApiResource::from_gvk_with_plural(&gvk, plural);
                let api: Api<kube::core::DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
                let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
                api.patch(&name, &PatchParams::apply("kudo").force(), &Patch::Apply(obj)).await?;
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while !healthy(&client).await? {
                assert!(tokio::time::Instant::now() < deadline, "cluster never became healthy");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, kube::Error>(())
        }));
    }
    let mut ready = 0;
    for t in tasks {
        t.await.expect("task").expect("cluster converges");
        ready += 1;
    }
    assert_eq!(ready, CLUSTERS);
    // Each cluster holds its own state: 4 applied objects plus 4 bootstrap namespaces.
    for c in &clusters {
        assert_eq!(c.with_store(|s| s.len()), 8, "cluster {}", c.name());
    }
}
