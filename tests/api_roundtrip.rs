//! Every Operator, OperatorVersion and Instance in KUDO's own test suite parses into kudo's
//! types, and serialising it back loses no field KUDO defines.

use std::path::{Path, PathBuf};

use kudo::api::{self, Instance, Operator, OperatorVersion};
use serde_json::Value;

fn kudo_tests_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-tests")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            // Package templates are Go templates, not API objects.
            if path.file_name().is_some_and(|n| n == "templates") {
                continue;
            }
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// Leaves of a JSON value as (path, value), treating Go's empty values as absent.
fn leaves(prefix: &str, v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                leaves(&format!("{prefix}.{k}"), v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                leaves(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::Bool(false) => {}
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// Fields present in KUDO's test data that KUDO's API does not define, so dropping them is
/// what KUDO itself does: a misspelt `stategy` in step-delete's OperatorVersion, and a `type`
/// key inside an ObjectReference (not a field of corev1.ObjectReference) in
/// rendering-error-plan-failed.
const NOT_KUDO_FIELDS: &[&str] = &[".stategy", ".operatorVersion.type"];

fn roundtrip<T>(source: &str, doc: &Value) -> Vec<String>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = api::from_value(source, doc.clone())
        .unwrap_or_else(|e| panic!("{source}: does not parse: {e}"));
    let back = serde_json::to_value(&typed).expect("serialise");
    let mut before = Vec::new();
    leaves("", doc, &mut before);
    let mut after = Vec::new();
    leaves("", &back, &mut after);
    before
        .into_iter()
        .filter(|(p, _)| !NOT_KUDO_FIELDS.iter().any(|f| p.ends_with(f)))
        .filter(|leaf| !after.contains(leaf))
        .map(|(p, v)| format!("{source}: lost {p} = {v}"))
        .collect()
}

#[test]
fn every_kudo_object_in_kudo_tests_roundtrips() {
    let mut files = Vec::new();
    yaml_files(&kudo_tests_dir(), &mut files);
    assert!(
        files.len() > 40,
        "expected KUDO's test suite, found {} files",
        files.len()
    );
    let mut counts = [0usize; 3];
    let mut lost = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let source = file.display().to_string();
        let docs = api::documents_from_yaml(&source, &text).unwrap_or_else(|e| panic!("{e}"));
        for doc in docs {
            if doc.get("apiVersion").and_then(Value::as_str) != Some(api::API_VERSION) {
                continue;
            }
            match doc.get("kind").and_then(Value::as_str) {
                Some("Operator") => {
                    counts[0] += 1;
                    lost.extend(roundtrip::<Operator>(&source, &doc));
                }
                Some("OperatorVersion") => {
                    counts[1] += 1;
                    lost.extend(roundtrip::<OperatorVersion>(&source, &doc));
                }
                Some("Instance") => {
                    counts[2] += 1;
                    lost.extend(roundtrip::<Instance>(&source, &doc));
                }
                // Package files (operator.yaml) carry the apiVersion but no kind.
                None => continue,
                other => panic!("{source}: unexpected kudo.dev kind {other:?}"),
            }
        }
    }
    assert!(
        lost.is_empty(),
        "fields lost in round trip:\n{}",
        lost.join("\n")
    );
    assert!(
        counts.iter().all(|&c| c > 0),
        "each kind must be covered: {counts:?}"
    );
    eprintln!("round-tripped {counts:?} Operator/OperatorVersion/Instance documents");
}

#[test]
fn wrongly_typed_field_names_its_path() {
    let text = "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: x\nspec:\n  parameters: [a]\n";
    let err = api::from_yaml::<Instance>("bad.yaml", text).expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("bad.yaml"), "{msg}");
    assert!(msg.contains("spec.parameters"), "{msg}");
}

#[test]
fn wrong_status_value_names_its_path() {
    let text = "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: x\nstatus:\n  planStatus:\n    deploy:\n      status: DONE\n";
    let err = api::from_yaml::<Instance>("bad.yaml", text).expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("status.planStatus.deploy.status"), "{msg}");
}
