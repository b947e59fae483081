//! Issue 21: a `prometheus` rollout gate against a real Prometheus (Debian's, through
//! `scripts/prometheus`) scraping a test exporter whose value the test sets.

#[path = "support/gitfleet.rs"]
mod gitfleet;
#[path = "support/prom.rs"]
mod prom;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gitfleet::*;
use kudo::gitops::rollout::State;
use kudo::gitops::serve::Daemon;

/// Serves `/metrics` with `under_replicated{cluster="c1"} <value>`.
async fn exporter(value: Arc<AtomicU64>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let v = value.load(Ordering::SeqCst);
            async move {
                format!("# TYPE under_replicated gauge\nunder_replicated{{cluster=\"c1\"}} {v}\n")
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    port
}

fn gate_doc(name: &str, query: &str) -> String {
    instance_doc(
        name,
        "apps",
        &[],
        &format!(
            "    rollout:\n      stages:\n        - name: canary\n          clusters: [c1]\n          gates:\n            - prometheus: {{query: '{query}'}}\n        - name: prod\n          clusters: [c2]\n"
        ),
    )
}

fn rollout(daemon: &Daemon, name: &str) -> Option<State> {
    daemon
        .shared
        .status()
        .instances
        .into_iter()
        .find(|i| i.namespace == "apps" && i.name == name)
        .map(|i| i.rollout)
}

async fn wait_reason(daemon: &Daemon, name: &str, what: &str, part: &str) {
    wait_until(what, || async {
        match rollout(daemon, name) {
            Some(State::Waiting { gate, reason, .. })
                if gate == "prometheus" && reason.contains(part) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prometheus_gate_opens_when_its_query_is_all_non_zero() {
    prom::prometheus_bin();
    let dir = tempfile::tempdir().expect("tempdir");
    let value = Arc::new(AtomicU64::new(3));
    let port = exporter(value.clone()).await;
    let (_prometheus, url) = prom::start(
        dir.path(),
        &format!(
            "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        ),
    );
    let repo = Repo::new(dir.path(), "a");
    write_store(&repo);
    // True (1) once nothing is under-replicated on c1.
    repo.write(
        "instances/db.yaml",
        &gate_doc("db", "max(under_replicated{cluster=\"c1\"}) == bool 0"),
    );
    // A query Prometheus refuses keeps its gate closed with Prometheus's reason.
    repo.write(
        "instances/bad.yaml",
        &gate_doc("bad", "max(under_replicated"),
    );
    repo.commit("gated");
    let fleet = Fleet::new(&["c1", "c2"]);
    let daemon = Daemon::start(
        fleet.config(
            dir.path(),
            &format!("prometheus: {{url: '{url}'}}\n"),
            &[("a", repo.url(), "")],
        ),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&fleet.cluster("c1"), "apps", "db").await;
    // Until Prometheus has scraped, the query has no samples; then the sample is 0 (false).
    wait_reason(&daemon, "db", "the gate closed on the sample", "is 0").await;
    wait_reason(&daemon, "bad", "the bad query's reason", "bad_data").await;
    wait_passes(&daemon.shared, 5).await;
    assert!(
        get(&fleet.cluster("c2"), &instance_ref("apps", "db"))
            .await
            .is_none(),
        "prod reached while the gate was closed"
    );
    value.store(0, Ordering::SeqCst);
    wait_complete(&fleet.cluster("c2"), "apps", "db").await;
    wait_until("db complete", || async {
        match rollout(&daemon, "db") {
            Some(State::Complete) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // An opened gate stays open for this spec: the exporter turning bad again changes nothing.
    value.store(5, Ordering::SeqCst);
    wait_passes(&daemon.shared, 10).await;
    assert_eq!(rollout(&daemon, "db"), Some(State::Complete));
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_prometheus_keeps_the_gate_closed_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_store(&repo);
    repo.write("instances/db.yaml", &gate_doc("db", "vector(1)"));
    repo.commit("gated");
    let fleet = Fleet::new(&["c1", "c2"]);
    let nobody = format!("http://127.0.0.1:{}", prom::free_port());
    let daemon = Daemon::start(
        fleet.config(
            dir.path(),
            &format!("prometheus: {{url: '{nobody}'}}\n"),
            &[("a", repo.url(), "")],
        ),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&fleet.cluster("c1"), "apps", "db").await;
    wait_reason(
        &daemon,
        "db",
        "unreachable",
        &format!("prometheus at {nobody}/api/v1/query unreachable"),
    )
    .await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}
