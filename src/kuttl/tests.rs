use std::path::{Path, PathBuf};

use super::KuttlError;
use super::case::{discover, read_case, read_suite};

fn shared() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-tests")
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kudo-kuttl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

#[test]
fn every_kudo_integration_case_is_read() {
    let cases = discover(&[shared().join("integration")]).expect("KUDO's cases parse");
    assert!(cases.len() == 13, "found {}", cases.len());
    let first = cases
        .iter()
        .find(|c| c.name == "first-operator-test")
        .expect("first-operator-test");
    assert_eq!(first.steps.len(), 2);
    assert_eq!(first.steps[0].name, "install");
    let cmd = &first.steps[0].test_step.commands[0];
    assert_eq!(
        cmd.command.as_deref(),
        Some("kubectl kudo install --instance first-operator ./first-operator")
    );
    assert!(cmd.namespaced);
    assert!(!first.steps[0].asserts.is_empty());
    assert!(
        !first.steps[1].errors.is_empty(),
        "01-errors.yaml is read as errors"
    );
    // Package folders inside a case are not steps.
    for case in &cases {
        for step in &case.steps {
            for fo in step.apply.iter().chain(&step.asserts).chain(&step.errors) {
                assert_eq!(fo.file.parent(), Some(case.dir.as_path()));
            }
        }
    }
}

#[test]
fn folder_without_steps_is_reported() {
    let dir = tempdir("nosteps");
    let case = dir.join("empty-case");
    std::fs::create_dir_all(&case).expect("mkdir");
    std::fs::write(case.join("README.md"), "no steps here").expect("write");
    let err = read_case(&case).expect_err("must fail");
    assert!(matches!(err, KuttlError::NoSteps { .. }));
    assert!(err.to_string().contains("empty-case"), "{err}");
}

#[test]
fn invalid_yaml_names_file_and_line() {
    let dir = tempdir("badyaml");
    let case = dir.join("bad");
    std::fs::create_dir_all(&case).expect("mkdir");
    std::fs::write(
        case.join("00-install.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [unclosed\n",
    )
    .expect("write");
    let err = read_case(&case).expect_err("must fail");
    let msg = err.to_string();
    assert!(msg.contains("00-install.yaml"), "{msg}");
    assert!(msg.contains("line"), "{msg}");
}

#[test]
fn suite_file_is_read_with_defaults() {
    let dir = tempdir("suite");
    let file = dir.join("kuttl-test.yaml");
    std::fs::write(
        &file,
        "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\ntestDirs: [./integration]\nstartControlPlane: true\nstartKUDO: true\ncommands:\n  - command: kudo manager\n    background: true\n",
    )
    .expect("write");
    let suite = read_suite(&file).expect("suite");
    assert_eq!(suite.timeout, 30);
    assert_eq!(suite.test_dirs, ["./integration"]);
    assert!(suite.start_control_plane && suite.start_kudo);
    assert!(suite.commands[0].background);
    std::fs::write(
        &file,
        "apiVersion: kuttl.dev/v1beta1\nkind: TestSuite\ntimeout: soon\n",
    )
    .expect("write");
    let msg = read_suite(&file).expect_err("bad").to_string();
    assert!(msg.contains("timeout"), "{msg}");
}

#[test]
fn empty_strings_stay_strings() {
    let docs = super::case::parse_docs(Path::new("x.yaml"), "a: \"\"\nb: ''\nc:\n").expect("yaml");
    assert_eq!(docs[0]["a"], serde_json::json!(""));
    assert_eq!(docs[0]["b"], serde_json::json!(""));
    assert!(docs[0]["c"].is_null());
}

#[test]
fn toy_manifest_keeps_empty_connection_string() {
    let path = shared().join("manifests/toy-operator.yaml");
    let text = std::fs::read_to_string(&path).expect("read");
    let docs = super::case::parse_docs(&path, &text).expect("yaml");
    assert_eq!(docs[1]["spec"]["connectionString"], serde_json::json!(""));
}
