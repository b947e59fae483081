//! 100 simulated clusters in one process, each driven through the cluster layer
//! (`kudo::cluster::Cluster`: server-side apply under `kudo`, health as DESIGN §4 defines it)
//! with its own workload simulator: a Deployment, a StatefulSet, a Service, a PVC and a Job
//! applied everywhere, then waited on until healthy. (The plan engine runs the same way.)

use std::time::Duration;

use kudo::cluster::{Cluster, Health, ObjectRef};
use kudo::sim::SimCluster;
use kudo::sim::workload::{self, FAIL_ANNOTATION, WorkloadConfig};
use serde_json::{Value, json};

const CLUSTERS: usize = 100;
const WAIT: Duration = Duration::from_secs(60);

fn objects(ns: &str) -> Vec<Value> {
    let pod = json!({"metadata": {"labels": {"app": "db"}},
        "spec": {"containers": [{"name": "db", "image": "postgres:16", "ports": [{"containerPort": 5432}]}]}});
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "db", "namespace": ns},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "db"}}, "template": pod}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": ns},
            "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}}, "template": pod}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": ns},
            "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate", "namespace": ns},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox:1"}]}}}}),
    ]
}

fn cfg() -> WorkloadConfig {
    WorkloadConfig {
        ready_delay: Duration::from_millis(20),
        job_duration: Duration::from_millis(30),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_clusters_apply_and_become_healthy() {
    let sims: Vec<SimCluster> = (0..CLUSTERS)
        .map(|i| SimCluster::new(&format!("sim-{i}")))
        .collect();
    let _workloads: Vec<_> = sims
        .iter()
        .map(|s| workload::spawn(s.client(), cfg()))
        .collect();

    let mut tasks = Vec::new();
    for sim in &sims {
        let cluster = Cluster::from_client(sim.name(), sim.client());
        tasks.push(tokio::spawn(async move {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "app"}});
            cluster.apply(&ns).await?;
            let mut refs = Vec::new();
            for obj in objects("app") {
                let live = cluster.apply(&obj).await?;
                assert!(live["metadata"]["uid"].is_string());
                refs.push(ObjectRef::from_object(&obj).expect("identity"));
            }
            let mut health = Vec::new();
            for r in &refs {
                health.push(cluster.wait_healthy(r, WAIT).await?);
            }
            Ok::<_, kudo::cluster::ClusterError>(health)
        }));
    }
    let mut healthy_clusters = 0;
    for t in tasks {
        let health = t.await.expect("task").expect("cluster converges");
        assert!(health.iter().all(|h| *h == Health::Healthy), "{health:?}");
        healthy_clusters += 1;
    }
    assert_eq!(healthy_clusters, CLUSTERS);
    for s in &sims {
        // 5 applied objects, 4 bootstrap namespaces + "app".
        assert_eq!(s.with_store(|st| st.len()), 10, "cluster {}", s.name());
    }
}

#[tokio::test]
async fn annotated_job_fails_and_spec_change_rolls_out_again() {
    let sim = SimCluster::new("sim-fail");
    let _w = workload::spawn(sim.client(), cfg());
    let cluster = Cluster::from_client(sim.name(), sim.client());
    let mut job = objects("default").remove(4);
    job["metadata"]["annotations"] = json!({FAIL_ANNOTATION: "true"});
    cluster.apply(&job).await.expect("apply job");
    let r = ObjectRef::from_object(&job).expect("identity");
    let h = cluster.wait_healthy(&r, WAIT).await.expect("settles");
    assert!(matches!(h, Health::Failed(_)), "{h:?}");

    let mut deploy = objects("default").remove(0);
    let r = ObjectRef::from_object(&deploy).expect("identity");
    cluster.apply(&deploy).await.expect("apply");
    assert_eq!(
        cluster.wait_healthy(&r, WAIT).await.expect("ready"),
        Health::Healthy
    );
    deploy["spec"]["replicas"] = json!(5);
    let live = cluster.apply(&deploy).await.expect("scale");
    assert_eq!(live["metadata"]["generation"], 2);
    assert_eq!(
        cluster.wait_healthy(&r, WAIT).await.expect("ready again"),
        Health::Healthy
    );
    let live = cluster.get(&r).await.expect("get");
    assert_eq!(live["status"]["observedGeneration"], 2);
    assert_eq!(live["status"]["availableReplicas"], 5);
}
