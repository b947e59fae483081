//! Pure tests of CRD generation and of typed documents in a Git repository.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::crd::{CrdOptions, generate, typed_value};
use super::{CrdConfig, CrdTarget};
use crate::api::{OperatorVersionSpec, Parameter, ParameterType};
use crate::gitops::desired::load;
use crate::gitops::placement::ClusterInfo;
use crate::package::{DirTree, FileTree, MemTree, Package};

fn param(name: &str, t: ParameterType, default: Option<&str>) -> Parameter {
    Parameter {
        name: name.into(),
        declared_type: Some(t),
        default: default.map(str::to_string),
        required: Some(true),
        ..Default::default()
    }
}

fn ov(version: &str, parameters: Vec<Parameter>) -> OperatorVersionSpec {
    OperatorVersionSpec {
        version: version.into(),
        parameters,
        ..Default::default()
    }
}

fn target() -> CrdTarget {
    CrdTarget::for_operator(
        "zookeeper",
        Some(&CrdConfig {
            kind: "ZooKeeper".into(),
            group: "frameworks.kudo.dev".into(),
            plural: String::new(),
        }),
    )
}

fn spec_props<'a>(crd: &'a Value, version: &str) -> &'a Value {
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("no version {version} in {crd:#}"))
        .pointer("/schema/openAPIV3Schema/properties/spec")
        .expect("spec schema")
}

#[test]
fn one_typed_property_per_parameter() {
    let mut p = vec![
        param("NODE_COUNT", ParameterType::Integer, Some("3")),
        param("TLS", ParameterType::Boolean, Some("false")),
        param("RATIO", ParameterType::Number, Some("0.5")),
        param("DISK", ParameterType::String, None),
        param("ZONES", ParameterType::Array, Some("- a\n- b\n")),
        param("LABELS", ParameterType::Map, Some("null\n")),
        param("LEVEL", ParameterType::String, Some("info")),
    ];
    p[3].description = "Disk size".into();
    p[3].immutable = Some(true);
    p[6].r#enum = Some(vec!["debug".into(), "info".into()]);
    let crd = generate(&target(), &[&ov("0.3.0", p)], None, CrdOptions::default()).expect("crd");
    assert_eq!(crd["metadata"]["name"], "zookeepers.frameworks.kudo.dev");
    assert_eq!(crd["spec"]["names"]["kind"], "ZooKeeper");
    let spec = spec_props(&crd, "v1");
    let props = &spec["properties"];
    assert_eq!(props["nodeCount"]["type"], "integer");
    assert_eq!(props["nodeCount"]["default"], 3);
    assert_eq!(props["tls"]["default"], false);
    assert_eq!(props["ratio"]["default"], 0.5);
    assert_eq!(props["zones"]["type"], "array");
    assert_eq!(props["zones"]["default"], json!(["a", "b"]));
    assert_eq!(props["labels"]["type"], "object");
    assert!(
        props["labels"].get("default").is_none(),
        "null map default dropped"
    );
    assert_eq!(props["level"]["enum"], json!(["debug", "info"]));
    assert_eq!(props["version"]["default"], "0.3.0");
    assert!(
        props["disk"]["description"]
            .as_str()
            .expect("description")
            .starts_with("Disk size"),
        "{}",
        props["disk"]
    );
    // Required without a default: the API server demands it. LABELS has one (`null`, as
    // every array or map without a default has in KUDO), so it is optional.
    assert_eq!(spec["required"], json!(["disk"]));
    // No CEL unless asked for (1.20 refuses the field).
    assert!(props["disk"].get("x-kubernetes-validations").is_none());
    let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(columns, ["Version", "Plan", "Status", "Ready", "Age"]);
}

fn untyped(name: &str, default: Option<&str>) -> Parameter {
    Parameter {
        declared_type: None,
        ..param(name, ParameterType::String, default)
    }
}

/// A parameter without `type` (a string to KUDO) takes the natural YAML type of its default
/// as well as a string; the schema default keeps the OperatorVersion's text when the typed
/// spelling would not give it back.
#[test]
fn untyped_parameters_accept_their_natural_type_or_a_string() {
    let mut level = untyped("LEVEL", Some("1"));
    level.r#enum = Some(vec!["1".into(), "2".into()]);
    let p = vec![
        untyped("NODE_COUNT", Some("3")),
        untyped("TLS", Some("false")),
        untyped("RATIO", Some("0.5")),
        untyped("HEAP", Some("1e+06")),
        untyped("ZIP", Some("007")),
        untyped("MEMORY", Some("1Gi")),
        untyped("NOTHING", None),
        param("NAME", ParameterType::String, Some("3")),
        level,
    ];
    let crd = generate(&target(), &[&ov("1.0.0", p)], None, CrdOptions::default()).expect("crd");
    let spec = spec_props(&crd, "v1");
    let props = &spec["properties"];
    let count = &props["nodeCount"];
    assert_eq!(count["x-kubernetes-int-or-string"], true, "{count}");
    assert!(count.get("type").is_none(), "{count}");
    assert_eq!(count["default"], 3);
    assert!(
        count["description"]
            .as_str()
            .expect("description")
            .ends_with("Accepts an integer or a string."),
        "{count}"
    );
    for (prop, default) in [("tls", json!(false)), ("ratio", json!(0.5))] {
        let s = &props[prop];
        assert_eq!(s["x-kubernetes-preserve-unknown-fields"], true, "{s}");
        assert!(s.get("type").is_none(), "{s}");
        assert_eq!(s["default"], default, "{s}");
    }
    // 1e+06 read as a number would come back as 1000000.0: the default stays text.
    assert_eq!(props["heap"]["default"], "1e+06");
    for prop in ["zip", "memory", "nothing", "name"] {
        assert_eq!(props[prop]["type"], "string", "{prop}: {}", props[prop]);
    }
    assert_eq!(props["level"]["enum"], json!([1, "1", 2, "2"]));
    assert_eq!(props["level"]["default"], 1);
    assert_eq!(spec["required"], json!(["nothing"]));
}

#[test]
fn typed_values_of_untyped_parameters_reach_the_instance_as_text() {
    use super::mirror::instance_parameters;
    use super::names::PropertyMap;
    let params = vec![
        untyped("NODE_COUNT", Some("3")),
        untyped("TLS", Some("false")),
        untyped("MEMORY", Some("1Gi")),
    ];
    let map = PropertyMap::new("t", params.iter().map(|p| p.name.as_str())).expect("map");
    for spec in [
        json!({"nodeCount": 5, "tls": true, "memory": "2Gi"}),
        json!({"nodeCount": "5", "tls": "true", "memory": "2Gi"}),
    ] {
        let got =
            instance_parameters(spec.as_object().expect("obj"), &params, &map).expect("accepted");
        assert_eq!(got["NODE_COUNT"], "5", "{spec}");
        assert_eq!(got["TLS"], "true", "{spec}");
        assert_eq!(got["MEMORY"], "2Gi", "{spec}");
    }
    // The API server lets any value through for TLS (no boolean-or-string schema exists):
    // kudo refuses what is neither, naming each property.
    let spec = json!({"tls": {"on": true}, "memory": 2, "nodeCount": [1]});
    let err = instance_parameters(spec.as_object().expect("obj"), &params, &map)
        .expect_err("wrong types");
    for needle in [
        "spec.tls (parameter TLS) must be of type boolean or string",
        "spec.memory (parameter MEMORY) must be of type string",
        "spec.nodeCount (parameter NODE_COUNT) must be of type integer or string",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}

#[test]
fn immutable_parameters_get_cel_rules_when_the_server_has_cel() {
    let mut p = param("DISK", ParameterType::String, Some("10Gi"));
    p.immutable = Some(true);
    let crd = generate(
        &target(),
        &[&ov("1.0.0", vec![p])],
        None,
        CrdOptions::for_server("1", "28"),
    )
    .expect("crd");
    let rule = &spec_props(&crd, "v1")["properties"]["disk"]["x-kubernetes-validations"][0];
    assert_eq!(rule["rule"], "self == oldSelf");
    assert!(rule["message"].as_str().expect("msg").contains("DISK"));
    assert!(!CrdOptions::for_server("1", "20").cel);
    assert!(CrdOptions::for_server("1", "25+").cel);
}

#[test]
fn defaults_that_do_not_fit_their_type_or_enum_are_left_out() {
    assert_eq!(typed_value("three", ParameterType::Integer), None);
    assert_eq!(typed_value(" 7 ", ParameterType::Integer), Some(json!(7)));
    assert_eq!(typed_value("yes", ParameterType::Boolean), None);
    let mut p = param("LEVEL", ParameterType::String, Some("trace"));
    p.r#enum = Some(vec!["debug".into(), "info".into()]);
    let crd = generate(
        &target(),
        &[&ov("1.0.0", vec![p])],
        None,
        CrdOptions::default(),
    )
    .expect("crd");
    assert!(
        spec_props(&crd, "v1")["properties"]["level"]
            .get("default")
            .is_none()
    );
}

#[test]
fn a_changed_parameter_schema_adds_a_served_version_and_moves_storage() {
    let a = ov(
        "0.1.0",
        vec![param("NODE_COUNT", ParameterType::String, Some("3"))],
    );
    let a2 = ov(
        "0.2.0",
        vec![param("NODE_COUNT", ParameterType::String, Some("3"))],
    );
    let b = ov(
        "0.10.0",
        vec![param("NODE_COUNT", ParameterType::Integer, Some("3"))],
    );
    let crd = generate(&target(), &[&b, &a, &a2], None, CrdOptions::default()).expect("crd");
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    let summary: Vec<(String, bool, bool)> = versions
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("name").to_string(),
                v["served"] == true,
                v["storage"] == true,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("v1".into(), true, false), ("v2".into(), true, true)],
        "semver order (0.10.0 is newest), one CRD version per parameter schema"
    );
    // Same-schema package versions share v1, which defaults to the newest of them.
    assert_eq!(
        spec_props(&crd, "v1")["properties"]["version"]["default"],
        "0.2.0"
    );
    assert_eq!(
        spec_props(&crd, "v2")["properties"]["nodeCount"]["type"],
        "integer"
    );

    // Regenerated against the live CRD after v1's packages are gone: v1 stays served with
    // its schema, names are kept, a new schema gets v3.
    let c = ov(
        "1.0.0",
        vec![param("SIZE", ParameterType::String, Some("1"))],
    );
    let next = generate(&target(), &[&b, &c], Some(&crd), CrdOptions::default()).expect("crd");
    let names: Vec<(&str, bool, bool)> = next["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("name"),
                v["served"] == true,
                v["storage"] == true,
            )
        })
        .collect();
    assert_eq!(
        names,
        [("v1", true, false), ("v2", true, false), ("v3", true, true)]
    );
    assert_eq!(spec_props(&next, "v1"), spec_props(&crd, "v1"));
    // Regenerating the same thing changes nothing.
    let again = generate(&target(), &[&b, &c], Some(&next), CrdOptions::default()).expect("crd");
    assert_eq!(again, next);
}

#[test]
fn colliding_parameter_names_refuse_the_crd_naming_both() {
    let spec = ov(
        "1.0.0",
        vec![
            param("NODE_COUNT", ParameterType::String, None),
            param("nodeCount", ParameterType::String, None),
        ],
    );
    let err = generate(&target(), &[&spec], None, CrdOptions::default()).expect_err("collision");
    let msg = err.to_string();
    assert!(
        msg.contains("NODE_COUNT") && msg.contains("nodeCount") && msg.contains("1.0.0"),
        "{msg}"
    );
}

#[test]
fn bad_kind_or_group_is_refused() {
    let mut t = target();
    t.kind = "zoo-keeper".into();
    let err = generate(&t, &[&ov("1", vec![])], None, CrdOptions::default()).expect_err("kind");
    assert!(err.to_string().contains("zoo-keeper"), "{err}");
    let mut t = target();
    t.group = "frameworks".into();
    let err = generate(&t, &[&ov("1", vec![])], None, CrdOptions::default()).expect_err("group");
    assert!(err.to_string().contains("\"frameworks\""), "{err}");
}

#[test]
fn operator_yaml_crd_block_is_optional_and_travels_as_an_annotation() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("repos-example/frameworks/relay/2.0.0");
    let dir = DirTree::new(&root);
    let mut files = BTreeMap::new();
    for p in dir.paths().expect("list") {
        files.insert(p.clone(), dir.read(&p).expect("read"));
    }
    let plain = Package::load(&MemTree::new("relay", files.clone())).expect("load");
    let resources = plain.to_resources().expect("convert");
    assert!(CrdTarget::from_operator(&resources.operator).is_none());
    let text = String::from_utf8(files["operator.yaml"].clone()).expect("utf8")
        + "crd: {kind: Relay, group: messaging.example.com}\nsomethingNew: ignored\n";
    files.insert("operator.yaml".into(), text.into_bytes());
    let opted = Package::load(&MemTree::new("relay", files)).expect("load with crd");
    let resources = opted.to_resources().expect("convert");
    let t = CrdTarget::from_operator(&resources.operator)
        .expect("annotation")
        .expect("valid");
    assert_eq!(
        (t.kind.as_str(), t.group.as_str(), t.plural.as_str()),
        ("Relay", "messaging.example.com", "relays")
    );
}

// ---- typed documents in Git ----

fn clusters() -> Vec<ClusterInfo> {
    ["dev", "staging", "prod"]
        .iter()
        .map(|e| ClusterInfo {
            name: e.to_string(),
            labels: [("env".to_string(), e.to_string())].into(),
        })
        .collect()
}

fn repo_with(path: &str, doc: &str) -> MemTree {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("repos-example");
    let dir = DirTree::new(&root);
    let mut files = BTreeMap::new();
    for p in dir.paths().expect("list") {
        files.insert(p.clone(), dir.read(&p).expect("read"));
    }
    files.insert(path.to_string(), doc.as_bytes().to_vec());
    MemTree::new("repo", files)
}

const REV: &str = "0123456789abcdef0123456789abcdef01234567";

const TYPED_RELAY: &str = "apiVersion: frameworks.kudo.dev/v1
kind: Relay
metadata:
  name: typed-relay
  namespace: messaging
spec:
  version: 2.0.0
  workers: 4
  logLevel: warn
  routes:
    orders: https://orders.internal/ingest
  placement:
    clusterSelector: {matchLabels: {env: dev}}
";

#[test]
fn git_typed_documents_map_to_the_same_desired_instance() {
    let state = load(
        &repo_with("instances/dev/typed.yaml", TYPED_RELAY),
        REV,
        &clusters(),
    )
    .expect("valid revision");
    let inst = &state.instances["messaging/typed-relay"];
    assert_eq!(inst.framework, "relay");
    assert_eq!(inst.operator_version, "relay-2.0.0");
    assert_eq!(inst.parameters["WORKERS"], "4");
    assert_eq!(inst.parameters["LOG_LEVEL"], "warn");
    assert!(inst.parameters["ROUTES"].contains("orders"));
    assert_eq!(inst.targets, ["dev"]);
}

#[test]
fn git_typed_documents_with_bad_values_name_file_line_and_property() {
    let bad_type = TYPED_RELAY.replace("workers: 4", "workers: four");
    let err = load(
        &repo_with("instances/dev/typed.yaml", &bad_type),
        REV,
        &clusters(),
    )
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("instances/dev/typed.yaml:8:")
            && err.contains("spec.workers")
            && err.contains("WORKERS")
            && err.contains("integer"),
        "{err}"
    );
    let bad_enum = TYPED_RELAY.replace("logLevel: warn", "logLevel: loud");
    let err = load(
        &repo_with("instances/dev/typed.yaml", &bad_enum),
        REV,
        &clusters(),
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("LOG_LEVEL") && err.contains("loud"), "{err}");
    let unknown = TYPED_RELAY.replace("logLevel: warn", "colour: red");
    let err = load(
        &repo_with("instances/dev/typed.yaml", &unknown),
        REV,
        &clusters(),
    )
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("spec.colour") && err.contains("logLevel"),
        "{err}"
    );
    let no_version = TYPED_RELAY.replace("  version: 2.0.0\n", "");
    let err = load(
        &repo_with("instances/dev/typed.yaml", &no_version),
        REV,
        &clusters(),
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("spec.version is required"), "{err}");
    let missing_version = TYPED_RELAY.replace("version: 2.0.0", "version: 9.9.9");
    let err = load(
        &repo_with("instances/dev/typed.yaml", &missing_version),
        REV,
        &clusters(),
    )
    .expect_err("refused")
    .to_string();
    assert!(err.contains("9.9.9") && err.contains("2.0.0"), "{err}");
}

/// A framework like the community ones: no parameter declares a type.
fn repo_with_untyped(doc: &str) -> MemTree {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("repos-example");
    let dir = DirTree::new(&root);
    let mut files = BTreeMap::new();
    for p in dir.paths().expect("list") {
        files.insert(p.clone(), dir.read(&p).expect("read"));
    }
    let fw = "frameworks/zk/0.1.0/";
    let operator = "apiVersion: kudo.dev/v1beta1\nname: zk\noperatorVersion: 0.1.0\ntasks:\n  - {name: app, kind: Apply, spec: {resources: [cm.yaml]}}\nplans:\n  deploy:\n    phases:\n      - name: main\n        steps:\n          - {name: everything, tasks: [app]}\n";
    let params = "apiVersion: kudo.dev/v1beta1\nparameters:\n  - name: NODE_COUNT\n    default: 3\n  - name: TLS\n    default: false\n";
    let template = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: zk\ndata:\n  nodes: \"{{ .Params.NODE_COUNT }}\"\n  tls: \"{{ .Params.TLS }}\"\n";
    for (path, text) in [
        ("operator.yaml", operator),
        ("params.yaml", params),
        ("templates/cm.yaml", template),
    ] {
        files.insert(format!("{fw}{path}"), text.as_bytes().to_vec());
    }
    files.insert("instances/dev/zk.yaml".into(), doc.as_bytes().to_vec());
    MemTree::new("repo", files)
}

#[test]
fn git_typed_documents_give_untyped_parameters_numbers_or_strings() {
    let doc = |count: &str, tls: &str| {
        format!(
            "apiVersion: frameworks.kudo.dev/v1\nkind: Zk\nmetadata:\n  name: zk\n  namespace: data\nspec:\n  version: 0.1.0\n  nodeCount: {count}\n  tls: {tls}\n  placement:\n    clusterSelector: {{matchLabels: {{env: dev}}}}\n"
        )
    };
    for (count, tls) in [("5", "true"), ("\"5\"", "\"true\"")] {
        let state = load(&repo_with_untyped(&doc(count, tls)), REV, &clusters())
            .unwrap_or_else(|e| panic!("nodeCount: {count}: {e}"));
        let inst = &state.instances["data/zk"];
        assert_eq!(inst.parameters["NODE_COUNT"], "5", "nodeCount: {count}");
        assert_eq!(inst.parameters["TLS"], "true", "tls: {tls}");
    }
    let err = load(&repo_with_untyped(&doc("[5]", "true")), REV, &clusters())
        .expect_err("a list is neither")
        .to_string();
    assert!(
        err.contains("instances/dev/zk.yaml:8:")
            && err.contains(
                "spec.nodeCount (parameter NODE_COUNT) must be of type integer or string, not array"
            ),
        "{err}"
    );
}

#[test]
fn kudo_crds_refuses_packages_of_different_frameworks() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-operators");
    let err = crate::cli::crds::typed_crd(
        &[
            corpus.join("zookeeper/operator"),
            corpus.join("kafka/operator"),
        ],
        false,
    )
    .expect_err("two frameworks")
    .to_string();
    assert!(err.contains("zookeeper") && err.contains("kafka"), "{err}");
    let err = crate::cli::crds::typed_crd(&[corpus.join("no-such-package")], false)
        .expect_err("missing")
        .to_string();
    assert!(err.contains("no-such-package"), "{err}");
}
