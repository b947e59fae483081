//! Reading kuttl suites and test cases from disk: `TestSuite` files, test folders whose
//! `NN-*.yaml` files form steps, and the `TestStep`/`TestAssert` objects inside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::KuttlError;

pub const KUTTL_API_VERSION: &str = "kuttl.dev/v1beta1";

/// A kuttl `TestSuite` (kuttl.dev/v1beta1). Paths are relative to the suite file's folder.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TestSuite {
    pub test_dirs: Vec<String>,
    pub crd_dir: Option<String>,
    pub manifest_dirs: Vec<String>,
    pub commands: Vec<Command>,
    /// Seconds each step's asserts may take (kuttl's default: 30).
    pub timeout: u64,
    pub parallel: usize,
    pub namespace: Option<String>,
    pub skip_delete: bool,
    pub artifacts_dir: Option<String>,
    /// Start the project's real API server environment (scripts/envtest).
    pub start_control_plane: bool,
    /// Start `kudo manager` against the suite's cluster (KUDO's `startKUDO`).
    #[serde(rename = "startKUDO")]
    pub start_kudo: bool,
    /// Only run the test cases with these names (kuttl's `--test`).
    #[serde(skip)]
    pub only: Vec<String>,
}

impl Default for TestSuite {
    fn default() -> Self {
        TestSuite {
            test_dirs: Vec::new(),
            crd_dir: None,
            manifest_dirs: Vec::new(),
            commands: Vec::new(),
            timeout: 30,
            parallel: 8,
            namespace: None,
            skip_delete: false,
            artifacts_dir: None,
            start_control_plane: false,
            start_kudo: false,
            only: Vec::new(),
        }
    }
}

/// A command of a suite, step or assert.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Command {
    pub command: Option<String>,
    pub script: Option<String>,
    /// Append `--namespace <test namespace>` to the command.
    pub namespaced: bool,
    pub ignore_failure: bool,
    /// Start and leave running; stopped when the suite (or test) ends.
    pub background: bool,
    /// Seconds; 0 means the step's timeout.
    pub timeout: u64,
}

/// An object to delete in a `TestStep`: by name, or by labels when no name is given.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct DeleteRef {
    pub api_version: String,
    pub kind: String,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The `TestStep` object of a step file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct TestStepSpec {
    pub apply: Vec<String>,
    pub assert: Vec<String>,
    pub error: Vec<String>,
    pub delete: Vec<DeleteRef>,
    pub commands: Vec<Command>,
    pub timeout: u64,
}

/// The `TestAssert` object of an assert file.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct TestAssertSpec {
    pub timeout: u64,
    pub commands: Vec<Command>,
}

/// A Kubernetes object read from a step file, with the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    pub file: PathBuf,
    pub object: Value,
}

/// One step: every `NN-*.yaml` file sharing the index `NN`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Step {
    pub index: u32,
    /// The name part of the first apply file (`00-install.yaml` → `install`).
    pub name: String,
    pub apply: Vec<FileObject>,
    pub asserts: Vec<FileObject>,
    pub errors: Vec<FileObject>,
    pub test_step: TestStepSpec,
    pub test_assert: TestAssertSpec,
}

/// A test case: a folder of steps, run in index order.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub name: String,
    pub dir: PathBuf,
    pub steps: Vec<Step>,
}

/// Reads a suite file.
pub fn read_suite(path: &Path) -> Result<TestSuite, KuttlError> {
    let text = read(path)?;
    let docs = parse_docs(path, &text)?;
    let doc = docs
        .into_iter()
        .find(|d| d.get("kind").and_then(Value::as_str) == Some("TestSuite"))
        .ok_or_else(|| KuttlError::Invalid {
            file: path.to_path_buf(),
            reason: "no TestSuite object (kind: TestSuite, apiVersion: kuttl.dev/v1beta1)".into(),
        })?;
    typed(path, "TestSuite", doc)
}

/// Lists the test cases below each test dir (each subfolder is a case), sorted by name; the
/// first unreadable case is an error.
pub fn discover(test_dirs: &[PathBuf]) -> Result<Vec<TestCase>, KuttlError> {
    discover_each(test_dirs)?
        .into_iter()
        .map(|d| d.case)
        .collect()
}

/// A test folder found below a test dir, read or not: a runner reports an unreadable case
/// (no steps, bad YAML) as failed and still runs the others.
#[derive(Debug)]
pub struct Discovered {
    pub name: String,
    pub dir: PathBuf,
    pub case: Result<TestCase, KuttlError>,
}

/// Every test folder below each test dir, sorted by name within a dir. Only an unreadable
/// test dir itself is an error.
pub fn discover_each(test_dirs: &[PathBuf]) -> Result<Vec<Discovered>, KuttlError> {
    let mut cases = Vec::new();
    for dir in test_dirs {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| KuttlError::Io {
                path: dir.clone(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        entries.sort();
        for case_dir in entries {
            cases.push(Discovered {
                name: case_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                case: read_case(&case_dir),
                dir: case_dir,
            });
        }
    }
    Ok(cases)
}

/// Reads one test case folder. A folder with no step files is an error, not a pass.
pub fn read_case(dir: &Path) -> Result<TestCase, KuttlError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| KuttlError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut steps: BTreeMap<u32, Step> = BTreeMap::new();
    for file in files {
        let Some((index, rest)) = step_file_name(&file) else {
            continue;
        };
        let text = read(&file)?;
        let docs = parse_docs(&file, &text)?;
        let step = steps.entry(index).or_insert_with(|| Step {
            index,
            ..Step::default()
        });
        let role = if rest == "assert" || rest.starts_with("assert-") || rest.ends_with("-assert") {
            Role::Assert
        } else if rest == "errors" || rest.starts_with("errors-") || rest.ends_with("-errors") {
            Role::Errors
        } else {
            if step.name.is_empty() {
                step.name = rest.clone();
            }
            Role::Apply
        };
        for doc in docs {
            let is_kuttl = doc.get("apiVersion").and_then(Value::as_str) == Some(KUTTL_API_VERSION);
            match (is_kuttl, doc.get("kind").and_then(Value::as_str), role) {
                (true, Some("TestStep"), Role::Apply) => {
                    step.test_step = typed(&file, "TestStep", doc)?;
                }
                (true, Some("TestAssert"), Role::Assert) => {
                    step.test_assert = typed(&file, "TestAssert", doc)?;
                }
                (true, kind, _) => {
                    return Err(KuttlError::Invalid {
                        file: file.clone(),
                        reason: format!(
                            "kuttl kind {} is not valid in a {} file",
                            kind.unwrap_or("(none)"),
                            role.as_str()
                        ),
                    });
                }
                (false, _, role) => {
                    let fo = FileObject {
                        file: file.clone(),
                        object: doc,
                    };
                    match role {
                        Role::Apply => step.apply.push(fo),
                        Role::Assert => step.asserts.push(fo),
                        Role::Errors => step.errors.push(fo),
                    }
                }
            }
        }
    }
    if steps.is_empty() {
        return Err(KuttlError::NoSteps {
            case: name,
            dir: dir.to_path_buf(),
        });
    }
    Ok(TestCase {
        name,
        dir: dir.to_path_buf(),
        steps: steps.into_values().collect(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Apply,
    Assert,
    Errors,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Apply => "step",
            Role::Assert => "assert",
            Role::Errors => "errors",
        }
    }
}

/// `00-install.yaml` → (0, "install"); files without an index prefix are not steps.
fn step_file_name(path: &Path) -> Option<(u32, String)> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))?;
    let (index, rest) = stem.split_once('-')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((index.parse().ok()?, rest.to_string()))
}

fn read(path: &Path) -> Result<String, KuttlError> {
    std::fs::read_to_string(path).map_err(|source| KuttlError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a multi-document YAML file; errors name the file and the line.
pub fn parse_docs(path: &Path, text: &str) -> Result<Vec<Value>, KuttlError> {
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(text).map_err(|e| KuttlError::Yaml {
        file: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn typed<T: serde::de::DeserializeOwned>(
    file: &Path,
    kind: &str,
    doc: Value,
) -> Result<T, KuttlError> {
    serde_path_to_error::deserialize(doc).map_err(|e| KuttlError::Invalid {
        file: file.to_path_buf(),
        reason: format!("{kind} field {}: {}", e.path(), e.inner()),
    })
}
