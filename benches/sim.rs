//! Simulated cluster costs: memory per cluster holding 50 objects (counted by a tracking
//! allocator) and requests per second one cluster serves through the tower path.
//! Run: `cargo bench --bench sim` (prints numbers; no pass/fail).
#![allow(unsafe_code)] // signals to child processes / a counting allocator; each site has a SAFETY comment

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kudo::sim::SimCluster;
use serde_json::{Value, json};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// 50 objects shaped like what a kudo operator renders: 10 each of Deployment, Service,
/// ConfigMap, Secret, and 5 each of StatefulSet and Job, labelled as kudo labels them.
fn fifty_objects() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let labels =
        json!({"heritage": "kudo", "kudo.dev/operator": "zookeeper", "kudo.dev/instance": "zk"});
    let pod = |n: &str| {
        json!({"metadata": {"labels": {"app": n, "heritage": "kudo"}},
        "spec": {"containers": [{"name": "main", "image": "zookeeper:3.9",
            "ports": [{"containerPort": 2181}, {"containerPort": 2888}],
            "env": [{"name": "ZOO_MY_ID", "value": "1"}, {"name": "ZOO_SERVERS", "value": "a,b,c"}],
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}]}})
    };
    let mut out = Vec::new();
    for i in 0..10 {
        let n = format!("app-{i}");
        out.push((
            "apps",
            "v1",
            "deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": n, "labels": labels, "annotations": {"kudo.dev/plan": "deploy"}},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": n}}, "template": pod(&n)}}),
        ));
        out.push((
            "",
            "v1",
            "services",
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": n, "labels": labels},
            "spec": {"selector": {"app": n}, "ports": [{"name": "client", "port": 2181}]}}),
        ));
        out.push(("", "v1", "configmaps", json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": n, "labels": labels},
            "data": {"zoo.cfg": "tickTime=2000\ndataDir=/data\nclientPort=2181\ninitLimit=5\nsyncLimit=2\n"}})));
        out.push((
            "",
            "v1",
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": n, "labels": labels}, "stringData": {"password": "s3cr3t-value"}}),
        ));
    }
    for i in 0..5 {
        let n = format!("db-{i}");
        out.push(("apps", "v1", "statefulsets", json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": n, "labels": labels},
            "spec": {"replicas": 3, "serviceName": n, "selector": {"matchLabels": {"app": n}}, "template": pod(&n)}})));
        out.push(("batch", "v1", "jobs", json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": n, "labels": labels},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "busybox:1"}]}}}})));
    }
    out
}

fn populate(c: &SimCluster) {
    c.with_store(|s| {
        for (g, v, plural, obj) in fifty_objects() {
            let t = s.target(g, v, plural, "default").expect("builtin kind");
            let name = obj["metadata"]["name"].as_str().expect("name").to_string();
            let body = serde_json::to_vec(&obj).expect("json");
            s.patch(
                &t,
                &name,
                kudo::sim::store::PatchKind::Apply { force: true },
                &body,
                false,
                Some("kudo"),
            )
            .expect("apply");
        }
    });
}

fn memory() {
    const N: usize = 100;
    let before = live();
    let empty: Vec<SimCluster> = (0..N).map(|i| SimCluster::new(&format!("e{i}"))).collect();
    let empty_cost = (live() - before) as f64 / N as f64;
    let before = live();
    let full: Vec<SimCluster> = (0..N).map(|i| SimCluster::new(&format!("f{i}"))).collect();
    for c in &full {
        populate(c);
    }
    let full_cost = (live() - before) as f64 / N as f64;
    let objects = full[0].with_store(|s| s.len());
    let json_bytes: usize = full[0].with_store(|s| {
        s.resources()
            .to_vec()
            .iter()
            .filter_map(|d| s.target(&d.group, &d.versions[0], &d.plural, "").ok())
            .filter_map(|t| {
                s.list(&t, &Default::default(), &Default::default(), None, None)
                    .ok()
            })
            .flat_map(|p| p.items)
            .map(|o| o.to_string().len())
            .sum()
    });
    println!(
        "memory: the stored objects serialize to {:.1} KiB of JSON",
        json_bytes as f64 / 1024.0
    );
    println!(
        "memory: empty simulated cluster {:.1} KiB; with 50 applied objects ({objects} stored incl. namespaces) {:.1} KiB per cluster (mean of {N}, heap bytes live)",
        empty_cost / 1024.0,
        full_cost / 1024.0
    );
    // Steady state: 300 status writes later the watch history (128 events) is full of old
    // object versions.
    let before = live();
    let busy: Vec<SimCluster> = (0..N).map(|i| SimCluster::new(&format!("b{i}"))).collect();
    for c in &busy {
        populate(c);
        c.with_store(|s| {
            let t = s
                .target("apps", "v1", "deployments", "default")
                .expect("deployments");
            for n in 0..300 {
                let name = format!("app-{}", n % 10);
                let body =
                    serde_json::to_vec(&json!({"status": {"observedGeneration": 1, "replicas": 3,
                    "readyReplicas": n % 4, "availableReplicas": n % 4}}))
                    .expect("json");
                s.patch(
                    &t,
                    &name,
                    kudo::sim::store::PatchKind::Merge,
                    &body,
                    true,
                    Some("sim"),
                )
                .expect("status write");
            }
        });
    }
    let busy_cost = (live() - before) as f64 / N as f64;
    println!(
        "memory: same cluster after 300 status writes (watch history full) {:.1} KiB per cluster",
        busy_cost / 1024.0
    );
    drop(empty);
    drop(full);
    drop(busy);
}

async fn rate<F, Fut>(label: &str, concurrency: usize, dur: Duration, f: F)
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            while start.elapsed() < dur {
                f(w * 1_000_000 + n).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("bench task");
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "throughput: {label:<44} {:>8.0} req/s ({total} requests, {concurrency} concurrent)",
        total as f64 / secs
    );
}

async fn throughput() {
    let c = SimCluster::new("bench");
    populate(&c);
    let client = c.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let dur = Duration::from_secs(2);
    for conc in [1, 8] {
        let a = cms.clone();
        rate("GET configmap", conc, dur, move |_| {
            let a = a.clone();
            async move {
                a.get("app-1").await.expect("get");
            }
        })
        .await;
        let a = cms.clone();
        rate(
            "LIST configmaps by label (10 items)",
            conc,
            dur,
            move |_| {
                let a = a.clone();
                async move {
                    a.list(&ListParams::default().labels("heritage=kudo"))
                        .await
                        .expect("list");
                }
            },
        )
        .await;
        let a = cms.clone();
        rate("SSA configmap, no-op re-apply", conc, dur, move |_| {
            let a = a.clone();
            async move {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "v"}});
                a.patch("ssa", &PatchParams::apply("kudo").force(), &Patch::Apply(cm)).await.expect("apply");
            }
        })
        .await;
        let a = cms.clone();
        rate("SSA configmap, changed field", conc, dur, move |i| {
            let a = a.clone();
            async move {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": i.to_string()}});
                a.patch("ssa", &PatchParams::apply("kudo").force(), &Patch::Apply(cm)).await.expect("apply");
            }
        })
        .await;
    }
}

/// 1,000 clusters in one process, each with 50 objects and its workload simulator running:
/// time until every workload reports ready, and heap per cluster once settled.
async fn thousand() {
    const N: usize = 1000;
    let before = live();
    let start = Instant::now();
    let clusters: Vec<SimCluster> = (0..N).map(|i| SimCluster::new(&format!("k{i}"))).collect();
    for c in &clusters {
        populate(c);
    }
    let cfg = kudo::sim::workload::WorkloadConfig {
        ready_delay: Duration::from_millis(100),
        job_duration: Duration::from_millis(200),
    };
    let workloads: Vec<_> = clusters
        .iter()
        .map(|c| c.spawn_workloads(cfg.clone()))
        .collect();
    let settled = |c: &SimCluster| {
        c.with_store(|s| {
            let count = |g: &str, plural: &str, ptr: &str| {
                let t = s.target(g, "v1", plural, "default").expect("builtin");
                s.list(&t, &Default::default(), &Default::default(), None, None)
                    .expect("list")
                    .items
                    .iter()
                    .filter(|o| o.pointer(ptr).is_some())
                    .count()
            };
            count("apps", "deployments", "/status/availableReplicas") == 10
                && count("apps", "statefulsets", "/status/readyReplicas") == 5
                && count("batch", "jobs", "/status/succeeded") == 5
        })
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    // Check only clusters not yet settled, so the measurement does not eat the CPU it measures.
    let mut pending: Vec<&SimCluster> = clusters.iter().collect();
    loop {
        pending.retain(|c| !settled(c));
        if pending.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "1,000 clusters did not settle in 300 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let took = start.elapsed();
    let heap = (live() - before) as f64 / N as f64;
    println!(
        "scale: {N} clusters x 50 objects + workload simulators settled in {:.1} s; heap {:.0} KiB per cluster ({:.0} MiB total)",
        took.as_secs_f64(),
        heap / 1024.0,
        heap * N as f64 / 1024.0 / 1024.0
    );
    drop(workloads);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too, so keep it short there.
    memory();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(throughput());
    rt.block_on(thousand());
}
