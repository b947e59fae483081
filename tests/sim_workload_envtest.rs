//! The workload simulator against a real kube-apiserver (scripts/envtest, which runs no
//! controllers): the objects it plays a controller for become healthy there too, as the
//! cluster layer's health rules judge them.

mod common;

use std::time::Duration;

use common::{Namespace, client};
use kudo::cluster::{Cluster, Health, ObjectRef};
use kudo::sim::workload::{self, FAIL_ANNOTATION, WorkloadConfig};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_controllers_make_real_apiserver_workloads_healthy() {
    let c = client("envtest-1").await;
    let ns = Namespace::create(&c, "sim-workload").await;
    let _w = workload::spawn_in(
        c.clone(),
        Some(&ns.name),
        WorkloadConfig {
            ready_delay: Duration::from_millis(50),
            job_duration: Duration::from_millis(100),
        },
    );
    let cluster = Cluster::from_client("envtest-1", c.clone());
    let n = ns.name.as_str();
    let pod = json!({"metadata": {"labels": {"app": "w"}},
        "spec": {"containers": [{"name": "w", "image": "nginx:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}});
    let objects = [
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "namespace": n},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "w"}}, "template": pod}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "w", "namespace": n},
            "spec": {"replicas": 1, "serviceName": "w", "selector": {"matchLabels": {"app": "w"}}, "template": pod}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "ok", "namespace": n},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "j", "image": "busybox:1"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": n},
            "spec": {"containers": [{"name": "p", "image": "busybox:1"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": n},
            "spec": {"type": "LoadBalancer", "selector": {"app": "w"}, "ports": [{"port": 80, "protocol": "TCP"}]}}),
    ];
    let outcome = async {
        for obj in &objects {
            cluster.apply(obj).await.expect("apply");
        }
        for obj in &objects {
            let r = ObjectRef::from_object(obj).expect("identity");
            let h = cluster.wait_healthy(&r, WAIT).await.expect("settles");
            assert_eq!(h, Health::Healthy, "{r}");
        }
        let failing = json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "bad", "namespace": n, "annotations": {FAIL_ANNOTATION: "true"}},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "j", "image": "busybox:1"}]}}}});
        cluster.apply(&failing).await.expect("apply");
        let r = ObjectRef::from_object(&failing).expect("identity");
        let h = cluster.wait_healthy(&r, WAIT).await.expect("settles");
        assert!(matches!(h, Health::Failed(_)), "{h:?}");
    };
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    ns.cleanup().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}
