//! The cluster layer against real kube-apiservers (scripts/envtest): the conformance suite,
//! several clusters at once, and the bad inputs of the cluster layer.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use kudo::cluster::{Cluster, ClusterError, ErrorKind, ObjectRef};
use serde_json::json;
use support::envtest;

async fn real_apiserver() -> Cluster {
    envtest::cluster(1).await
}

conformance_suite!(real_apiserver);

/// Bound on any single call below: reaching it means the call hung.
const HANG: Duration = Duration::from_secs(60);

fn write_kubeconfig(name: &str, text: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(envtest::unique(name));
    std::fs::write(&path, text).expect("write kubeconfig");
    path
}

fn kubeconfig_for(server: &str, token: &str, contexts: &[&str]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
         insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n"
    );
    for ctx in contexts {
        s.push_str(&format!(
            "- name: {ctx}\n  context:\n    cluster: c\n    user: u\n"
        ));
    }
    s.push_str(&format!("current-context: {}\n", contexts[0]));
    s
}

/// A loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

async fn dead_cluster() -> Cluster {
    let server = format!("https://127.0.0.1:{}", closed_port());
    let path = write_kubeconfig("dead", &kubeconfig_for(&server, "t", &["dead"]));
    Cluster::from_kubeconfig("dead-cluster", &path, Some("dead"))
        .await
        .expect("a kubeconfig for a closed port still loads")
}

#[tokio::test]
async fn unreachable_server_is_reported_promptly_and_names_the_cluster() {
    let c = dead_cluster().await;
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}});
    let err = tokio::time::timeout(HANG, c.apply(&cm))
        .await
        .expect("an unreachable server must give an error, not hang")
        .expect_err("nothing listens there");
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("dead-cluster"), "{err}");
    let err = tokio::time::timeout(
        HANG,
        c.get(&ObjectRef::new("v1", "ConfigMap", Some("default"), "x")),
    )
    .await
    .expect("no hang")
    .expect_err("unreachable");
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
}

#[tokio::test]
async fn blackholed_server_is_unreachable_after_the_connect_timeout() {
    // 192.0.2.0/24 is TEST-NET-1: never routed, so a connect either fails or times out.
    let path = write_kubeconfig(
        "blackhole",
        &kubeconfig_for("https://192.0.2.1:6443", "t", &["bh"]),
    );
    let c = Cluster::from_kubeconfig("blackhole", &path, None)
        .await
        .expect("load");
    let err = tokio::time::timeout(HANG, c.get(&ObjectRef::new("v1", "Namespace", None, "x")))
        .await
        .expect("the connect timeout must end the call")
        .expect_err("nothing answers there");
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("cluster blackhole"), "{err}");
}

#[tokio::test]
async fn kubeconfig_missing_context_names_it_and_lists_those_present() {
    let path = write_kubeconfig(
        "ctx",
        &kubeconfig_for("https://127.0.0.1:1", "t", &["staging", "prod-eu"]),
    );
    let err = Cluster::from_kubeconfig("edge", &path, Some("prod-us"))
        .await
        .expect_err("no such context");
    assert!(
        matches!(err, ClusterError::MissingContext { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("\"prod-us\""), "{msg}");
    assert!(msg.contains("staging, prod-eu"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[tokio::test]
async fn kubeconfig_missing_file_names_the_path() {
    let err = Cluster::from_kubeconfig(
        "edge",
        std::path::Path::new("/nonexistent/kubeconfig"),
        None,
    )
    .await
    .expect_err("no file");
    assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
}

#[tokio::test]
async fn object_without_api_version_or_kind_is_refused_before_any_request() {
    // The server is unreachable: had a request been made, the error would be `unreachable`.
    let c = dead_cluster().await;
    for (obj, missing) in [
        (
            json!({"kind": "ConfigMap", "metadata": {"name": "x"}}),
            "apiVersion",
        ),
        (
            json!({"apiVersion": "v1", "metadata": {"name": "x"}}),
            "kind",
        ),
        (
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}),
            "metadata.name",
        ),
    ] {
        let err = c.apply(&obj).await.expect_err("refused");
        assert!(matches!(err, ClusterError::BadObject { .. }), "{err:?}");
        assert_eq!(err.kind(), ErrorKind::Invalid);
        let msg = err.to_string();
        assert!(
            msg.contains(missing) && msg.contains("dead-cluster"),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn bad_token_is_unauthorized_and_unprivileged_user_is_forbidden() {
    let (server, nobody_token) = envtest::nobody();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "default"}});

    let path = write_kubeconfig(
        "badtoken",
        &kubeconfig_for(&server, "not-a-token", &["bad"]),
    );
    let c = Cluster::from_kubeconfig("bad-token", &path, None)
        .await
        .expect("load");
    let err = c.apply(&cm).await.expect_err("bad token");
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");

    let path = write_kubeconfig(
        "nobody",
        &kubeconfig_for(&server, &nobody_token, &["nobody"]),
    );
    let c = Cluster::from_kubeconfig("nobody", &path, None)
        .await
        .expect("load");
    let err = c.apply(&cm).await.expect_err("no permissions");
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(err.to_string().contains("ConfigMap default/x"), "{err}");
}

#[tokio::test]
async fn envtest_clusters_are_separate() {
    let one = envtest::cluster(1).await;
    let others = [envtest::cluster(2).await, envtest::cluster(3).await];
    let (one, others) = (&one, &others);
    envtest::in_namespace(one, "multi", |ns| async move {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "only-on-1", "namespace": ns}});
        one.apply(&cm).await.expect("apply on cluster 1");
        let r = ObjectRef::from_object(&cm).expect("ref");
        assert!(one.get_opt(&r).await.expect("get").is_some());
        for other in others {
            // The namespace itself exists only on cluster 1.
            let err = other.get(&r).await.expect_err("absent elsewhere");
            assert_eq!(err.kind(), ErrorKind::NotFound, "{}: {err}", other.name());
        }
    })
    .await;
}
