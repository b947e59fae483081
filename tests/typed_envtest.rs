//! Typed per-framework custom resources on a real Kubernetes API server (scripts/envtest,
//! kube-apiserver 1.20: no CEL, so kudo itself refuses immutable changes): generated CRDs
//! install and are Established, typed objects run their plans through the mirrored
//! Instance, bad values are refused by the API server with the field path, and the
//! printer columns are served.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::envtest::unique;
use common::{Namespace, client, eventually, install_crds, make_workloads_ready};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kudo::api::{Instance, OperatorVersionSpec};
use kudo::cluster::{Cluster, ObjectRef};
use kudo::package::Package;
use kudo::typed::{CRD_ANNOTATION, CrdTarget, generate};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);

fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(path)
}

fn relay_package() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("repos-example/frameworks/relay/2.0.0")
}

fn crd_ref(name: &str) -> ObjectRef {
    ObjectRef::new(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        name,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_crds_of_every_corpus_package_are_accepted_and_established() {
    let c = client("envtest-1").await;
    let cluster = Cluster::from_client("envtest-1", c.clone());
    let opts = kudo::typed::controller::server_options(&cluster)
        .await
        .expect("server version");
    assert!(!opts.cel, "envtest's kube-apiserver 1.20 has no CEL");
    // One group per run, so parallel runs and leftovers never clash.
    let group = format!("{}.test.kudo.dev", unique("typed"));
    let mut packages: Vec<PathBuf> = std::fs::read_dir(shared("kudo-operators"))
        .expect("../shared/kudo-operators")
        .filter_map(|e| e.ok().map(|e| e.path().join("operator")))
        .filter(|p| p.join("operator.yaml").exists())
        .collect();
    packages.sort();
    assert!(packages.len() >= 7, "corpus packages: {packages:?}");
    packages.push(relay_package());
    let mut names = Vec::new();
    for path in &packages {
        let package = Package::load_path(path).expect("package");
        let ov = package.to_resources().expect("resources").operator_version;
        let mut target = CrdTarget::for_operator(&package.operator.name, None);
        target.group = group.clone();
        let crd = generate(&target, &[&ov.spec], None, opts)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        cluster
            .apply(&crd)
            .await
            .unwrap_or_else(|e| panic!("{}: CRD refused: {e}", path.display()));
        names.push((path.clone(), target.crd_name()));
    }
    for (path, name) in &names {
        let health = cluster
            .wait_healthy(&crd_ref(name), TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(health.is_healthy(), "{}: {health:?}", path.display());
    }
    for (_, name) in &names {
        cluster.delete(&crd_ref(name)).await.expect("delete CRD");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kudo_crds_framework_prints_the_typed_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["crds", "--framework"])
        .arg(shared("kudo-operators/zookeeper/operator"))
        .output()
        .expect("run kudo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let docs = kudo::api::documents_from_yaml("stdout", &text).expect("yaml");
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0]["metadata"]["name"],
        "zookeepers.frameworks.kudo.dev"
    );
    let props = &docs[0]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"];
    // Untyped `default: 3`: an integer or a string.
    assert_eq!(props["nodeCount"]["default"], 3, "{props:#}");
    assert_eq!(props["nodeCount"]["x-kubernetes-int-or-string"], true);
}

/// A package like the community ones (no parameter declares a type), opted in to a typed
/// CRD in `group`: its Operator and OperatorVersion objects in `ns`.
fn untyped_objects(group: &str, ns: &str) -> (Value, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        (
            "operator.yaml",
            "apiVersion: kudo.dev/v1beta1\nname: untyped\noperatorVersion: 0.1.0\ntasks:\n  - {name: app, kind: Apply, spec: {resources: [cm.yaml]}}\nplans:\n  deploy:\n    phases:\n      - name: main\n        steps:\n          - {name: everything, tasks: [app]}\n",
        ),
        (
            "params.yaml",
            "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: NODE_COUNT, default: 3}\n  - {name: TLS, default: false}\n  - {name: RATIO, default: 0.5}\n  - {name: LEVEL, default: \"1\", enum: [\"1\", \"2\"]}\n  - {name: PEERS, type: array}\n",
        ),
        (
            "templates/cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-conf\ndata:\n  nodes: \"{{ .Params.NODE_COUNT }}\"\n  tls: \"{{ .Params.TLS }}\"\n  ratio: \"{{ .Params.RATIO }}\"\n  level: \"{{ .Params.LEVEL }}\"\n  peers: \"{{ range .Params.PEERS }}{{ . }} {{ end }}\"\n",
        ),
    ];
    for (path, text) in files {
        let full = dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, text).expect("write");
    }
    let package = Package::load_path(dir.path()).expect("package");
    let mut r = package.to_resources().expect("resources");
    r.operator.metadata.annotations = Some(
        [(
            CRD_ANNOTATION.to_string(),
            json!({"kind": "Untyped", "group": group}).to_string(),
        )]
        .into(),
    );
    let mut op = serde_json::to_value(&r.operator).expect("operator");
    op["apiVersion"] = json!("kudo.dev/v1beta1");
    op["kind"] = json!("Operator");
    op["metadata"]["namespace"] = json!(ns);
    let mut ov = serde_json::to_value(&r.operator_version).expect("ov");
    ov["apiVersion"] = json!("kudo.dev/v1beta1");
    ov["kind"] = json!("OperatorVersion");
    ov["metadata"]["namespace"] = json!(ns);
    (op, ov)
}

/// Issue 20, item 4: `nodeCount: 3` and `nodeCount: "3"` are both accepted for an untyped
/// parameter whose default is 3, the API server fills typed defaults, and the Instance
/// gets the text KUDO would (`"5"`, `"true"`); an array without a default is optional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untyped_parameters_take_their_natural_type_or_a_string() {
    let c = client("envtest-1").await;
    install_crds(&c).await;
    let ns = Namespace::create(&c, "untyped").await;
    let cluster = Arc::new(Cluster::from_client("envtest-1", c.clone()));
    let group = format!("{}.test.kudo.dev", unique("untyped"));
    let (op, ov) = untyped_objects(&group, &ns.name);
    cluster.apply(&op).await.expect("operator");
    cluster.apply(&ov).await.expect("operator version");
    let _stop = start_manager(cluster.clone(), &ns.name);
    let crd_name = format!("untypeds.{group}");
    eventually("typed CRD established", TIMEOUT, || async {
        cluster
            .health(&crd_ref(&crd_name))
            .await
            .ok()
            .filter(kudo::cluster::Health::is_healthy)
    })
    .await;
    let gvk = GroupVersionKind::gvk(&group, "v1", "Untyped");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "untypeds");
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns.name, &ar);
    let object = |name: &str, spec: Value| {
        json!({
            "apiVersion": format!("{group}/v1"),
            "kind": "Untyped",
            "metadata": {"name": name, "namespace": ns.name},
            "spec": spec,
        })
    };

    // The API server: a number or a string for NODE_COUNT, nothing else; LEVEL's enum in
    // both spellings; defaults filled in their natural type.
    cluster
        .apply(&object(
            "as-string",
            json!({"nodeCount": "4", "level": "2"}),
        ))
        .await
        .expect("strings are accepted");
    let err = cluster
        .apply(&object("bad", json!({"nodeCount": [3]})))
        .await
        .expect_err("a list for an int-or-string")
        .to_string();
    assert!(err.contains("spec.nodeCount"), "{err}");
    let err = cluster
        .apply(&object("bad", json!({"level": 3})))
        .await
        .expect_err("outside the enum")
        .to_string();
    assert!(err.contains("spec.level"), "{err}");
    let stored = cluster
        .apply(&object("typed", json!({"nodeCount": 5, "tls": true})))
        .await
        .expect("natural types are accepted");
    assert_eq!(stored["spec"]["nodeCount"], 5, "{stored:#}");
    assert_eq!(stored["spec"]["ratio"], 0.5, "{stored:#}");
    assert_eq!(stored["spec"]["level"], 1, "{stored:#}");
    assert!(stored["spec"].get("peers").is_none(), "{stored:#}");

    // The mirrored Instances get the values' text and run deploy.
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    for (name, nodes, tls, level) in [
        ("typed", "5", "true", "1"),
        ("as-string", "4", "false", "2"),
    ] {
        wait_plan_complete(&c, &ns.name, &api, name, "deploy", "").await;
        let inst = instances.get(name).await.expect("mirrored Instance");
        assert_eq!(inst.spec.parameters["NODE_COUNT"], nodes, "{name}");
        assert_eq!(inst.spec.parameters["TLS"], tls, "{name}");
        assert_eq!(inst.spec.parameters["LEVEL"], level, "{name}");
        assert_eq!(inst.spec.parameters["RATIO"], "0.5", "{name}");
        let cm = cluster
            .get(&ObjectRef::new(
                "v1",
                "ConfigMap",
                Some(&ns.name),
                format!("{name}-conf"),
            ))
            .await
            .expect("config map");
        assert_eq!(cm["data"]["nodes"], nodes, "{cm:#}");
        assert_eq!(cm["data"]["peers"], "", "no PEERS: nil to the template");
    }

    // TLS takes any value on the API server (no boolean-or-string schema): kudo refuses
    // what is neither, by name, and the Instance keeps its value.
    api.patch(
        "typed",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"tls": {"on": true}}})),
    )
    .await
    .expect("the API server accepts it");
    let message = eventually("mistyped value refused", TIMEOUT, || async {
        let s = typed_status(&api, "typed").await;
        let ready = s["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (ready["reason"] == "InvalidParameters")
            .then(|| ready["message"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert!(
        message.contains("spec.tls (parameter TLS) must be of type boolean or string"),
        "{message}"
    );
    let inst = instances.get("typed").await.expect("mirrored Instance");
    assert_eq!(inst.spec.parameters["TLS"], "true");

    ns.cleanup().await;
    cluster
        .delete(&crd_ref(&crd_name))
        .await
        .expect("delete CRD");
}

/// A relay OperatorVersion (repos-example, typed parameters) with LOG_LEVEL made immutable,
/// and its Operator opted in to a typed CRD in `group`.
fn relay_objects(group: &str) -> (Value, Value, OperatorVersionSpec) {
    let package = Package::load_path(&relay_package()).expect("relay package");
    let mut r = package.to_resources().expect("resources");
    for p in &mut r.operator_version.spec.parameters {
        if p.name == "LOG_LEVEL" {
            p.immutable = Some(true);
        }
    }
    r.operator.metadata.annotations = Some(
        [(
            CRD_ANNOTATION.to_string(),
            json!({"kind": "Relay", "group": group}).to_string(),
        )]
        .into(),
    );
    let mut op = serde_json::to_value(&r.operator).expect("operator");
    op["apiVersion"] = json!("kudo.dev/v1beta1");
    op["kind"] = json!("Operator");
    let mut ov = serde_json::to_value(&r.operator_version).expect("ov");
    ov["apiVersion"] = json!("kudo.dev/v1beta1");
    ov["kind"] = json!("OperatorVersion");
    (op, ov, r.operator_version.spec)
}

/// Runs the engine and the typed controllers in-process for one namespace.
fn start_manager(cluster: Arc<Cluster>, ns: &str) -> tokio::sync::watch::Sender<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(kudo::manager::controller::run(
        cluster.clone(),
        Some(ns.to_string()),
        Duration::from_millis(200),
        stopped(rx.clone()),
    ));
    tokio::spawn(kudo::typed::controller::run_all(
        cluster,
        Some(ns.to_string()),
        Duration::from_millis(500),
        stopped(rx),
    ));
    tx
}

async fn typed_status(api: &Api<DynamicObject>, name: &str) -> Value {
    api.get(name)
        .await
        .ok()
        .and_then(|o| o.data.get("status").cloned())
        .unwrap_or(Value::Null)
}

/// Waits for the typed object's plan `plan` to reach COMPLETE with run id != `not_uid`,
/// playing the workload controllers envtest lacks.
async fn wait_plan_complete(
    c: &kube::Client,
    ns: &str,
    api: &Api<DynamicObject>,
    name: &str,
    plan: &str,
    not_uid: &str,
) -> String {
    eventually(
        &format!("{plan} COMPLETE on the typed object"),
        TIMEOUT,
        || async {
            make_workloads_ready(c, ns).await;
            let s = typed_status(api, name).await;
            let p = s.pointer(&format!("/planStatus/{plan}"))?;
            (p["status"] == "COMPLETE"
                && p["uid"] != not_uid
                && s["planExecution"]["planName"] == plan)
                .then(|| p["uid"].as_str().unwrap_or_default().to_string())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_objects_run_their_plans_and_bad_values_are_refused() {
    let c = client("envtest-1").await;
    install_crds(&c).await;
    let ns = Namespace::create(&c, "typed").await;
    let cluster = Arc::new(Cluster::from_client("envtest-1", c.clone()));
    let group = format!("{}.test.kudo.dev", unique("relay"));
    let (op, ov, _) = relay_objects(&group);
    let mut op = op;
    op["metadata"]["namespace"] = json!(ns.name);
    let mut ov = ov;
    ov["metadata"]["namespace"] = json!(ns.name);
    cluster.apply(&op).await.expect("operator");
    cluster.apply(&ov).await.expect("operator version");
    let _stop = start_manager(cluster.clone(), &ns.name);

    // The manager generates and installs the CRD.
    let crd_name = format!("relays.{group}");
    eventually("typed CRD established", TIMEOUT, || async {
        cluster
            .health(&crd_ref(&crd_name))
            .await
            .ok()
            .filter(kudo::cluster::Health::is_healthy)
    })
    .await;

    let gvk = GroupVersionKind::gvk(&group, "v1", "Relay");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "relays");
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns.name, &ar);
    let relay = |spec: Value| {
        json!({
            "apiVersion": format!("{group}/v1"),
            "kind": "Relay",
            "metadata": {"name": "edge", "namespace": ns.name},
            "spec": spec,
        })
    };

    // Bad input: refused by the API server's schema validation, naming the field.
    let err = cluster
        .apply(&relay(json!({"workers": "many"})))
        .await
        .expect_err("a string for an integer parameter")
        .to_string();
    assert!(err.contains("spec.workers"), "{err}");
    let err = cluster
        .apply(&relay(json!({"logLevel": "loud"})))
        .await
        .expect_err("a value outside the enum")
        .to_string();
    assert!(
        err.contains("spec.logLevel") && err.contains("\"warn\""),
        "{err}"
    );

    // A valid object runs deploy to COMPLETE through its mirrored Instance.
    cluster
        .apply(&relay(json!({"workers": 3, "logLevel": "warn"})))
        .await
        .expect("valid typed object");
    let deploy_uid = wait_plan_complete(&c, &ns.name, &api, "edge", "deploy", "").await;
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    let inst = instances.get("edge").await.expect("mirrored Instance");
    assert_eq!(inst.spec.parameters["WORKERS"], "3");
    assert_eq!(inst.spec.parameters["LOG_LEVEL"], "warn");
    assert_eq!(
        inst.spec.operator_version.name.as_deref(),
        Some("relay-2.0.0")
    );
    let owner = &inst.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Relay", "edge")
    );
    let deployment = cluster
        .get(&ObjectRef::new(
            "apps/v1",
            "Deployment",
            Some(&ns.name),
            "edge-worker",
        ))
        .await
        .expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let status = typed_status(&api, "edge").await;
    assert_eq!(status["operatorVersion"], "relay-2.0.0");
    assert_eq!(
        status["planStatus"]["deploy"]["phases"][0]["name"], "setup",
        "{status:#}"
    );

    // `kubectl get relays`: the Table API serves the printer columns.
    let req = http::Request::get(format!("/apis/{group}/v1/namespaces/{}/relays", ns.name))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .body(Vec::new())
        .expect("request");
    let table: Value =
        serde_json::from_str(&c.request_text(req).await.expect("table")).expect("json");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        columns,
        ["Name", "Version", "Plan", "Status", "Ready", "Age"],
        "{table:#}"
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[0], "edge");
    assert_eq!(cells[1], "2.0.0");
    assert_eq!(cells[2], "deploy");
    assert_eq!(cells[3], "COMPLETE");

    // A parameter change runs the parameter's plan (WORKERS has no trigger: update).
    api.patch(
        "edge",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"workers": 5}})),
    )
    .await
    .expect("change workers");
    wait_plan_complete(&c, &ns.name, &api, "edge", "update", &deploy_uid).await;
    let deployment = cluster
        .get(&ObjectRef::new(
            "apps/v1",
            "Deployment",
            Some(&ns.name),
            "edge-worker",
        ))
        .await
        .expect("deployment");
    assert_eq!(deployment["spec"]["replicas"], 5);

    // An immutable parameter change: 1.20 has no CEL, so kudo refuses it by name.
    api.patch(
        "edge",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"logLevel": "debug"}})),
    )
    .await
    .expect("the API server accepts it (no CEL)");
    let message = eventually("immutable change refused", TIMEOUT, || async {
        let s = typed_status(&api, "edge").await;
        let ready = s["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (ready["reason"] == "ImmutableParameterChanged")
            .then(|| ready["message"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert!(
        message.contains("spec.logLevel")
            && message.contains("LOG_LEVEL")
            && message.contains("debug"),
        "{message}"
    );
    let inst = instances.get("edge").await.expect("mirrored Instance");
    assert_eq!(
        inst.spec.parameters["LOG_LEVEL"], "warn",
        "the Instance keeps the old value"
    );

    // Cleanup: the typed object's deletion takes its Instance (garbage collection).
    api.delete("edge", &Default::default())
        .await
        .expect("delete");
    ns.cleanup().await;
    cluster
        .delete(&crd_ref(&crd_name))
        .await
        .expect("delete CRD");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_version_with_other_parameters_adds_a_served_crd_version() {
    let c = client("envtest-1").await;
    install_crds(&c).await;
    let ns = Namespace::create(&c, "typed-ver").await;
    let cluster = Cluster::from_client("envtest-1", c.clone());
    let group = format!("{}.test.kudo.dev", unique("relayv"));
    let (_, _, spec) = relay_objects(&group);
    let target = CrdTarget::for_operator(
        "relay",
        Some(&kudo::typed::CrdConfig {
            kind: "Relay".into(),
            group: group.clone(),
            plural: String::new(),
        }),
    );
    let v1 = kudo::typed::controller::install_crd(&cluster, &target, &[&spec])
        .await
        .expect("install v1");
    assert_eq!(v1, "v1");
    let typed_at = |version: &str, spec: Value| {
        json!({
            "apiVersion": format!("{group}/{version}"),
            "kind": "Relay",
            "metadata": {"name": "old", "namespace": ns.name},
            "spec": spec,
        })
    };
    cluster
        .apply(&typed_at("v1", json!({"workers": 2})))
        .await
        .expect("object at v1");

    // 2.1.0 retypes WORKERS to a string and adds REGION.
    let mut next = spec.clone();
    next.version = "2.1.0".into();
    for p in &mut next.parameters {
        if p.name == "WORKERS" {
            p.declared_type = Some(kudo::api::ParameterType::String);
        }
    }
    next.parameters.push(kudo::api::Parameter {
        name: "REGION".into(),
        default: Some("eu".into()),
        ..Default::default()
    });
    let v2 = kudo::typed::controller::install_crd(&cluster, &target, &[&spec, &next])
        .await
        .expect("install v2");
    assert_eq!(v2, "v2");
    let crd = cluster
        .get(&crd_ref(&target.crd_name()))
        .await
        .expect("crd");
    let versions: Vec<(String, bool, bool)> = crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default().to_string(),
                v["served"] == true,
                v["storage"] == true,
            )
        })
        .collect();
    assert_eq!(
        versions,
        [("v1".into(), true, false), ("v2".into(), true, true)]
    );
    // The old object is still served at v1 and at v2 (what v2 adds is defaulted when the
    // object is next written; until then the engine takes the package default).
    for version in ["v1", "v2"] {
        let obj = cluster
            .get(&ObjectRef::new(
                format!("{group}/{version}"),
                "Relay",
                Some(&ns.name),
                "old",
            ))
            .await
            .unwrap_or_else(|e| panic!("read at {version}: {e}"));
        assert_eq!(obj["spec"]["version"], "2.0.0", "{obj:#}");
        assert_eq!(obj["apiVersion"], format!("{group}/{version}"));
    }
    // New objects at v2 take its types; v1 keeps its own.
    let mut fresh = typed_at("v2", json!({"workers": "two", "version": "2.1.0"}));
    fresh["metadata"]["name"] = json!("new");
    let live = cluster
        .apply(&fresh)
        .await
        .expect("v2 object with a string WORKERS");
    assert_eq!(
        live["spec"]["region"], "eu",
        "v2 defaults what it adds: {live:#}"
    );
    let mut bad = typed_at("v1", json!({"workers": "two"}));
    bad["metadata"]["name"] = json!("bad");
    let err = cluster
        .apply(&bad)
        .await
        .expect_err("v1 keeps WORKERS an integer")
        .to_string();
    assert!(err.contains("spec.workers"), "{err}");
    ns.cleanup().await;
    cluster
        .delete(&crd_ref(&target.crd_name()))
        .await
        .expect("delete CRD");
}

/// Copies the relay package into a temp dir with a `crd:` block in its operator.yaml.
fn relay_with_crd_block(group: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = relay_package();
    std::fs::create_dir_all(dir.path().join("templates")).expect("mkdir");
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).expect("below package");
        std::fs::copy(&entry, dir.path().join(rel)).expect("copy");
    }
    let op = dir.path().join("operator.yaml");
    let text = std::fs::read_to_string(&op).expect("operator.yaml")
        + &format!("crd:\n  kind: Relay\n  group: {group}\n");
    std::fs::write(&op, text).expect("write operator.yaml");
    dir
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// The command-line path: `kudo install --skip-instance` of a package with a `crd:` block,
/// then `kudo manager` installs the CRD and runs a typed object to COMPLETE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kudo_manager_installs_the_crd_of_an_installed_package() {
    let c = client("envtest-1").await;
    install_crds(&c).await;
    let ns = Namespace::create(&c, "typed-cli").await;
    let group = format!("{}.test.kudo.dev", unique("relaycli"));
    let package = relay_with_crd_block(&group);
    let kubeconfig = common::envtest_kubeconfig();
    let kudo = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kudo"));
        cmd.args(args).arg("--kubeconfig").arg(&kubeconfig).args([
            "--context",
            "envtest-1",
            "--namespace",
            &ns.name,
        ]);
        cmd
    };
    let out = kudo(&["install", "--skip-instance"])
        .arg(package.path())
        .output()
        .expect("kudo install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let instances: Api<Instance> = Api::namespaced(c.clone(), &ns.name);
    assert!(
        instances
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "--skip-instance creates no Instance"
    );
    let _manager = KillOnDrop(
        kudo(&["manager", "--poll-interval", "200ms"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start kudo manager"),
    );
    let cluster = Cluster::from_client("envtest-1", c.clone());
    let crd_name = format!("relays.{group}");
    let established = eventually("typed CRD established", TIMEOUT, || async {
        cluster
            .health(&crd_ref(&crd_name))
            .await
            .ok()
            .filter(kudo::cluster::Health::is_healthy)
    })
    .await;
    assert!(established.is_healthy());
    cluster
        .apply(&json!({
            "apiVersion": format!("{group}/v1"),
            "kind": "Relay",
            "metadata": {"name": "cli", "namespace": ns.name},
            "spec": {"workers": 1},
        }))
        .await
        .expect("typed object");
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v1", "Relay"), "relays");
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns.name, &ar);
    let deploy_uid = wait_plan_complete(&c, &ns.name, &api, "cli", "deploy", "").await;

    // Package 2.1.0 adds REGION: the manager extends the CRD with v2 (the storage version)
    // and mirrors through it; moving the object to 2.1.0 runs the upgrade plan.
    let root = package.path();
    let op = std::fs::read_to_string(root.join("operator.yaml")).expect("operator.yaml");
    std::fs::write(
        root.join("operator.yaml"),
        op.replace("operatorVersion: 2.0.0", "operatorVersion: 2.1.0"),
    )
    .expect("write");
    let params = std::fs::read_to_string(root.join("params.yaml")).expect("params.yaml");
    std::fs::write(
        root.join("params.yaml"),
        params + "  - name: REGION\n    default: eu\n",
    )
    .expect("write");
    let workers = root.join("templates/workers.yaml");
    let text = std::fs::read_to_string(&workers).expect("workers.yaml");
    std::fs::write(
        &workers,
        text.replace(
            "      annotations:\n",
            "      annotations:\n        relay.example/region: {{ .Params.REGION | quote }}\n",
        ),
    )
    .expect("write");
    let out = kudo(&["install", "--skip-instance"])
        .arg(root)
        .output()
        .expect("kudo install 2.1.0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("CRD v2 is the storage version", TIMEOUT, || async {
        let crd = cluster.get(&crd_ref(&crd_name)).await.ok()?;
        (kudo::typed::controller::storage_version(&crd).as_deref() == Some("v2")).then_some(())
    })
    .await;
    let ar2 =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&group, "v2", "Relay"), "relays");
    let api2: Api<DynamicObject> = Api::namespaced_with(c.clone(), &ns.name, &ar2);
    api2.patch(
        "cli",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"version": "2.1.0", "region": "us"}})),
    )
    .await
    .expect("move to 2.1.0 through v2");
    wait_plan_complete(&c, &ns.name, &api2, "cli", "upgrade", &deploy_uid).await;
    let inst = instances.get("cli").await.expect("mirrored Instance");
    assert_eq!(
        inst.spec.operator_version.name.as_deref(),
        Some("relay-2.1.0")
    );
    assert_eq!(inst.spec.parameters["REGION"], "us");
    ns.cleanup().await;
    cluster
        .delete(&crd_ref(&crd_name))
        .await
        .expect("delete CRD");
}

/// Stops the manager process this test started, also when the test fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
