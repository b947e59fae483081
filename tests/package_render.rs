//! `kudo render` and `kudo package` end to end through the real binary, including each bad
//! input of issue 3 that surfaces at render time.

use std::path::Path;
use std::process::{Command, Output};

const OPERATOR: &str = "apiVersion: kudo.dev/v1beta1
name: demo
operatorVersion: 0.1.0
appVersion: 1.2.3
tasks:
  - name: app
    kind: Apply
    spec:
      resources: [b.yaml, a.yaml]
plans:
  deploy:
    phases:
      - name: main
        steps:
          - name: everything
            tasks: [app]
";

const PARAMS: &str = "apiVersion: kudo.dev/v1beta1
parameters:
  - name: REPLICAS
    type: integer
    default: 1
  - name: MODE
    enum: [fast, slow]
    default: fast
  - name: NEEDED
";

fn kudo(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(args)
        .output()
        .expect("kudo runs")
}

fn package(dir: &Path, templates: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(dir.join("operator.yaml"), OPERATOR).expect("write");
    std::fs::write(dir.join("params.yaml"), PARAMS).expect("write");
    for (name, text) in templates {
        std::fs::write(dir.join("templates").join(name), text).expect("write");
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const PLAIN_A: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n";
const PLAIN_B: &str = "# leading comment document\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b1\n---\n\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: b2\n";

#[test]
fn renders_manifests_in_task_file_document_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    package(dir.path(), &[("a.yaml", PLAIN_A), ("b.yaml", PLAIN_B)]);
    let path = dir.path().to_str().expect("utf-8 path");
    let out = kudo(&["render", path, "-p", "NEEDED=x"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  name: "))
        .collect();
    assert_eq!(names, ["b1", "b2", "a"], "{stdout}");
    assert!(
        stdout.contains("# Source: b.yaml (task app, Apply)"),
        "{stdout}"
    );
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&stdout).expect("output is multi-document YAML");
    assert_eq!(docs.len(), 3);
}

#[test]
fn bad_parameters_are_all_listed() {
    let dir = tempfile::tempdir().expect("tempdir");
    package(dir.path(), &[("a.yaml", PLAIN_A)]);
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, "REPLICAS: many\n").expect("write");
    let path = dir.path().to_str().expect("utf-8 path");
    let out = kudo(&[
        "render",
        path,
        "-f",
        values.to_str().expect("utf-8"),
        "-p",
        "MODE=medium",
    ]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("parameter \"REPLICAS\"") && stderr.contains("\"integer\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("parameter \"MODE\"") && stderr.contains("allowed values"),
        "{stderr}"
    );
    assert!(
        stderr.contains("parameter \"NEEDED\"") && stderr.contains("required"),
        "{stderr}"
    );
}

#[test]
fn bad_yaml_in_template_output_names_template_document_line_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b1\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [b2\n";
    package(dir.path(), &[("a.yaml", PLAIN_A), ("b.yaml", broken)]);
    let path = dir.path().to_str().expect("utf-8 path");
    let out = kudo(&["render", path, "-p", "NEEDED=x"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("template b.yaml") && stderr.contains("document 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 9") || stderr.contains("line 10"),
        "{stderr}"
    );
    assert!(stderr.contains("column"), "{stderr}");
}

#[test]
fn bad_template_parse_error_names_path_line_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ if .Params.MODE }}\n";
    package(dir.path(), &[("a.yaml", PLAIN_A), ("b.yaml", broken)]);
    let path = dir.path().to_str().expect("utf-8 path");
    let out = kudo(&["render", path, "-p", "NEEDED=x"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    // Go: template: b.yaml:4: unexpected EOF — kudo adds the column.
    assert!(stderr.contains("b.yaml:"), "{stderr}");
    let loc = stderr.split("b.yaml:").nth(1).unwrap_or("");
    let mut parts = loc.split(':');
    let line: Option<u32> = parts.next().and_then(|l| l.trim().parse().ok());
    let column: Option<u32> = parts.next().and_then(|c| c.trim().parse().ok());
    assert!(line.is_some_and(|l| (4..=5).contains(&l)), "{stderr}");
    assert!(column.is_some(), "{stderr}");
    let verify = kudo(&["package", "verify", path]);
    assert!(!verify.status.success());
    assert!(
        text(&verify.stderr).contains("b.yaml does not parse"),
        "{}",
        text(&verify.stderr)
    );
}

#[test]
fn bad_missing_map_key_names_path_line_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broken =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  x: {{ .Params.NOPE }}\n";
    package(dir.path(), &[("a.yaml", broken), ("b.yaml", PLAIN_A)]);
    let path = dir.path().to_str().expect("utf-8 path");
    let out = kudo(&["render", path, "-p", "NEEDED=x"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("a.yaml:6:"), "{stderr}");
    assert!(stderr.contains("\"NOPE\""), "{stderr}");
    // --templates renders the others anyway and reports the failure in the JSON.
    let out = kudo(&[
        "render",
        path,
        "--templates",
        "-o",
        "json",
        "-p",
        "NEEDED=x",
    ]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["b.yaml"]["out"], PLAIN_A);
    assert!(
        json["a.yaml"]["err"]
            .as_str()
            .is_some_and(|e| e.contains("NOPE")),
        "{json}"
    );
}

#[test]
fn subdirectory_operator_renders_with_context() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/kudo-tests/integration/operator-with-subdirectory-resources/operator");
    let out = kudo(&[
        "render",
        dir.to_str().expect("utf-8"),
        "--instance",
        "subdirectory",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("image: nginx:1.7.9"), "{stdout}");
    assert!(stdout.contains("name: subdirectory"), "{stdout}");
    let first_deploy = stdout
        .find("kind: Deployment")
        .expect("deployment rendered");
    let first_service = stdout.find("kind: Service").expect("service rendered");
    assert!(
        first_deploy < first_service,
        "file order as listed in the task"
    );
}

#[test]
fn package_create_round_trips_through_tgz() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = dir.path().join("pkg");
    package(&pkg, &[("a.yaml", PLAIN_A), ("b.yaml", PLAIN_B)]);
    std::fs::write(pkg.join("README.md"), "not packaged").expect("write");
    let tgz = dir.path().join("demo.tgz");
    let out = kudo(&[
        "package",
        "create",
        pkg.to_str().expect("utf-8"),
        "-o",
        tgz.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let from_dir = kudo(&["render", pkg.to_str().expect("utf-8"), "-p", "NEEDED=x"]);
    let from_tgz = kudo(&["render", tgz.to_str().expect("utf-8"), "-p", "NEEDED=x"]);
    assert!(from_tgz.status.success(), "{}", text(&from_tgz.stderr));
    assert_eq!(text(&from_dir.stdout), text(&from_tgz.stdout));
}

#[test]
fn bad_package_missing_operator_yaml_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("params.yaml"), PARAMS).expect("write");
    let out = kudo(&["render", dir.path().to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("operator.yaml is missing"),
        "{}",
        text(&out.stderr)
    );
}

/// Array and map parameters with no value (`default:`, `null`, none), as Cassandra's
/// NODE_TOPOLOGY and EXTERNAL_SEED_NODES: verified, rendered, nil to the templates.
#[test]
fn array_and_map_parameters_without_a_value_verify_and_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pkg = dir.path();
    std::fs::create_dir_all(pkg.join("templates")).expect("mkdir");
    std::fs::write(
        pkg.join("operator.yaml"),
        OPERATOR.replace("[b.yaml, a.yaml]", "[cm.yaml]"),
    )
    .expect("write");
    std::fs::write(
        pkg.join("params.yaml"),
        "apiVersion: kudo.dev/v1beta1
parameters:
  - name: NODE_TOPOLOGY
    type: array
    default:
  - name: SEEDS
    type: array
  - name: LABELS
    type: map
    default: null
",
    )
    .expect("write");
    std::fs::write(
        pkg.join("templates/cm.yaml"),
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: topology
data:
  topology: {{ if .Params.NODE_TOPOLOGY }}custom{{ else }}default{{ end }}
  seeds: \"{{ range .Params.SEEDS }}{{ . }} {{ end }}\"
  labels: {{ if .Params.LABELS }}some{{ else }}none{{ end }}
",
    )
    .expect("write");
    let path = pkg.to_str().expect("utf-8 path");
    let out = kudo(&["package", "verify", path]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = kudo(&["render", path, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        docs[0]["data"],
        serde_json::json!({"topology": "default", "seeds": "", "labels": "none"}),
        "{docs}"
    );
    let out = kudo(&[
        "render",
        path,
        "-o",
        "json",
        "-p",
        "SEEDS=[10.0.0.1, 10.0.0.2]",
        "-p",
        "NODE_TOPOLOGY=- {datacenter: dc1}",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let docs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(docs[0]["data"]["topology"], "custom", "{docs}");
    assert_eq!(docs[0]["data"]["seeds"], "10.0.0.1 10.0.0.2 ", "{docs}");
}
