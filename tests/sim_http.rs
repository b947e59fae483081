//! The simulated API over real loopback HTTP (what kubectl talks to), and `kudo sim` itself.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kudo::sim::{SimCluster, kubeconfig};
use serde_json::{Value, json};

async fn client_for(path: &Path, context: &str) -> kube::Client {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig parses");
    let opts = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .expect("config from kubeconfig");
    kube::Client::try_from(config).expect("client")
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kudo-sim-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[tokio::test]
async fn kube_client_over_loopback_http() {
    let sim = SimCluster::new("http");
    let server = sim
        .serve_http("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let dir = temp_dir("http");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig(&[("http".to_string(), server.url())])).expect("write");
    let client = client_for(&path, "http").await;

    let nss: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .expect("list namespaces over HTTP")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(
        names,
        ["default", "kube-node-lease", "kube-public", "kube-system"]
    );

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}}))
    .expect("deployment");
    let live = deploys
        .patch("web", &PatchParams::apply("kubectl"), &Patch::Apply(&d))
        .await
        .expect("server-side apply over HTTP");
    assert_eq!(live.spec.and_then(|s| s.replicas), Some(1), "defaulted");

    sim.faults().set_partitioned(true);
    let err = nss
        .list(&ListParams::default())
        .await
        .expect_err("partitioned");
    assert!(
        !matches!(err, kube::Error::Api(_)),
        "no HTTP answer while partitioned: {err:?}"
    );
    sim.faults().set_partitioned(false);
    nss.list(&ListParams::default()).await.expect("healed");
    std::fs::remove_dir_all(&dir).ok();
}

/// kubectl checks server-side field validation support in /openapi/v3 before applying.
#[tokio::test]
async fn openapi_v3_advertises_field_validation_for_every_kind() {
    let sim = SimCluster::new("openapi");
    let client = sim.client();
    let get = |uri: &str| {
        let client = client.clone();
        let req = http::Request::get(uri).body(Vec::new()).expect("request");
        async move { client.request::<Value>(req).await }
    };
    let root = get("/openapi/v3").await.expect("root");
    let url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .expect("apps/v1 listed");
    let doc = get(url).await.expect("apps/v1 document");
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    assert!(
        patch["parameters"]
            .as_array()
            .expect("params")
            .iter()
            .any(|p| p["name"] == "fieldValidation"),
        "{patch}"
    );
    let err = get("/openapi/v3/apis/nothere.example.com/v1")
        .await
        .expect_err("unknown group");
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
}

/// `kudo sim --clusters 2` writes a kubeconfig with two contexts that serve separate clusters.
#[tokio::test]
async fn kudo_sim_command_serves_clusters_from_its_kubeconfig() {
    let dir = temp_dir("cmd");
    let path = dir.join("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args([
            "sim",
            "--clusters",
            "2",
            "--ready-delay-ms",
            "10",
            "--kubeconfig",
        ])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kudo sim");
    let stdout = child.stdout.take().expect("stdout");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("join")
    .expect("read the printed path");
    let outcome = async {
        assert_eq!(first.trim(), path.display().to_string());
        let one = client_for(&path, "sim-1").await;
        let two = client_for(&path, "sim-2").await;
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "only-on-one"}})).expect("ns");
        Api::<Namespace>::all(one.clone())
            .patch("only-on-one", &PatchParams::apply("t"), &Patch::Apply(&ns))
            .await
            .expect("apply on sim-1");
        let on_two = Api::<Namespace>::all(two)
            .get_opt("only-on-one")
            .await
            .expect("get on sim-2");
        assert!(on_two.is_none(), "clusters are separate");
        // The workload simulator runs behind the served clusters.
        let deploys: Api<Deployment> = Api::namespaced(one, "default");
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}}}}))
        .expect("deployment");
        deploys
            .patch("web", &PatchParams::apply("t"), &Patch::Apply(&d))
            .await
            .expect("apply");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let live = deploys.get("web").await.expect("get");
            if live.status.and_then(|s| s.available_replicas) == Some(2) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "deployment never became available"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let result = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(outcome)).await;
    child.kill().ok();
    child.wait().ok();
    std::fs::remove_dir_all(&dir).ok();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Protobuf bodies (kubectl's generators) are refused with 415 and a hint, not garbled.
#[tokio::test]
async fn protobuf_body_is_415_with_a_hint() {
    let sim = SimCluster::new("pb");
    let req = http::Request::post("/api/v1/namespaces")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(b"k8s\x00\x0a\x0f".to_vec())
        .expect("request");
    let err = sim.client().request::<Value>(req).await.expect_err("415");
    let kube::Error::Api(s) = err else {
        panic!("{err:?}")
    };
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
    assert!(s.message.contains("kubectl create -f"), "{}", s.message);
}
