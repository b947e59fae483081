use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_default;

/// One version of an operator package: its templates, tasks, parameters and plans.
/// Named `<operator>-<appVersion>-<version>` (appVersion part omitted when empty).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kudo.dev",
    version = "v1beta1",
    kind = "OperatorVersion",
    namespaced,
    status = "OperatorVersionStatus",
    category = "kudo",
    printcolumn = r#"{"name":"Operator","type":"string","jsonPath":".spec.operator.name"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.version"}"#,
    printcolumn = r#"{"name":"App Version","type":"string","jsonPath":".spec.appVersion"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OperatorVersionSpec {
    #[serde(default, skip_serializing_if = "is_default")]
    pub operator: ObjectReference,
    #[serde(default, skip_serializing_if = "is_default")]
    pub version: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub app_version: String,
    /// Template file (path below `templates/`) to its text.
    #[serde(default, skip_serializing_if = "is_default")]
    pub templates: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tasks: Vec<Task>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub parameters: Vec<Parameter>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub plans: BTreeMap<String, Plan>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub connection_string: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub upgradable_from: Vec<ObjectReference>,
}

/// KUDO defines no OperatorVersion status.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OperatorVersionStatus {}

/// A parameter as stored in an OperatorVersion. The package file's `type` is `value-type`
/// here, and `default` is always a string (array/map defaults hold their YAML text).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Parameter {
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub display_name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub description: String,
    /// `None` means KUDO's default for the context (true when read from a package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub trigger: String,
    // `None` when the package declares no `type`: a string to KUDO everywhere but in
    // `kudo package verify` (any YAML default) and typed CRDs (see `crate::typed::crd`).
    #[serde(
        rename = "value-type",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "value_type_schema")]
    pub declared_type: Option<ParameterType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#enum: Option<Vec<String>>,
    /// A kudo extension: the value is a secret, never logged, shown in errors or exported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensitive: Option<bool>,
}

impl Parameter {
    pub fn is_sensitive(&self) -> bool {
        self.sensitive == Some(true)
    }

    /// The type values are checked and passed to templates as (undeclared is `string`).
    pub fn value_type(&self) -> ParameterType {
        self.declared_type.unwrap_or_default()
    }
}

/// `value-type` as a plain string enum (the derived schema of an `Option` adds `null`).
fn value_type_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["string", "integer", "number", "boolean", "array", "map"]
    })
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    #[default]
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Map,
}

impl ParameterType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ParameterType::String => "string",
            ParameterType::Integer => "integer",
            ParameterType::Number => "number",
            ParameterType::Boolean => "boolean",
            ParameterType::Array => "array",
            ParameterType::Map => "map",
        }
    }
}

/// A named unit of work a step runs: `Apply`, `Delete`, `Toggle`, `Dummy`, `Pipe`,
/// `KudoOperator`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Task {
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    #[schemars(with = "String")]
    pub kind: TaskKind,
    #[serde(default, skip_serializing_if = "is_default")]
    pub spec: TaskSpec,
}

/// A task's kind, KUDO's names. Typed from the package to the executor so a kind is matched
/// by the compiler, not as a string in several files. A kind kudo does not know is kept as
/// written (round trips stay lossless) and refused by `kudo package verify`, package
/// loading and the engine.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    Apply,
    Delete,
    Toggle,
    Dummy,
    Pipe,
    KudoOperator,
    /// Anything else, as written (empty when the task names no kind).
    Other(String),
}

impl TaskKind {
    /// Every kind kudo runs.
    pub const KNOWN: [TaskKind; 6] = [
        TaskKind::Apply,
        TaskKind::Delete,
        TaskKind::Toggle,
        TaskKind::Dummy,
        TaskKind::Pipe,
        TaskKind::KudoOperator,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            TaskKind::Apply => "Apply",
            TaskKind::Delete => "Delete",
            TaskKind::Toggle => "Toggle",
            TaskKind::Dummy => "Dummy",
            TaskKind::Pipe => "Pipe",
            TaskKind::KudoOperator => "KudoOperator",
            TaskKind::Other(s) => s,
        }
    }

    pub fn parse(text: &str) -> TaskKind {
        Self::KNOWN
            .into_iter()
            .find(|k| k.as_str() == text)
            .unwrap_or_else(|| TaskKind::Other(text.to_string()))
    }

    pub fn is_known(&self) -> bool {
        !matches!(self, TaskKind::Other(_))
    }

    /// Kinds whose `resources` are templates rendered into objects.
    pub fn renders_resources(&self) -> bool {
        matches!(self, TaskKind::Apply | TaskKind::Delete | TaskKind::Toggle)
    }
}

impl Default for TaskKind {
    fn default() -> Self {
        TaskKind::Other(String::new())
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for TaskKind {
    fn from(text: &str) -> Self {
        TaskKind::parse(text)
    }
}

impl Serialize for TaskKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TaskKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| TaskKind::parse(&s))
    }
}

/// The union of every task kind's fields, as KUDO embeds them in one struct.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskSpec {
    /// Apply / Delete / Toggle: templates to render.
    #[serde(default, skip_serializing_if = "is_default")]
    pub resources: Vec<String>,
    /// Toggle: the boolean parameter that chooses Apply or Delete.
    #[serde(default, skip_serializing_if = "is_default")]
    pub parameter: String,
    /// Dummy: fail with a transient error.
    #[serde(default, skip_serializing_if = "is_default")]
    pub want_err: bool,
    /// Dummy: fail with a fatal error.
    #[serde(default, skip_serializing_if = "is_default")]
    pub fatal: bool,
    /// Dummy: report done.
    #[serde(default, skip_serializing_if = "is_default")]
    pub done: bool,
    /// Pipe: the pod template whose files are piped.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub pipe: Vec<PipeSpec>,
    /// KudoOperator: the child package.
    #[serde(default, skip_serializing_if = "is_default")]
    pub package: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub instance_name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub app_version: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub operator_version: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub parameter_file: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PipeSpec {
    #[serde(default, skip_serializing_if = "is_default")]
    pub file: String,
    /// `ConfigMap` or `Secret`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub key: String,
}

/// A plain string enum: the derived schema of `Option<Ordering>` lists `null` among the enum
/// values, which Kubernetes 1.20's CRD validation rejects.
fn ordering_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "serial (the default: each child starts when the previous is COMPLETE) or parallel",
        "type": "string",
        "enum": ["serial", "parallel"]
    })
}

/// How the children of a plan or phase are ordered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ordering {
    #[default]
    Serial,
    Parallel,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Plan {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ordering_schema")]
    pub strategy: Option<Ordering>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub phases: Vec<Phase>,
    /// A kudo extension: the plan ends FATAL_ERROR when not complete this long after it
    /// started (Go duration syntax, e.g. `30m`, `1h30m`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub timeout: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Phase {
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "ordering_schema")]
    pub strategy: Option<Ordering>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub steps: Vec<Step>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct Step {
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tasks: Vec<String>,
    /// A kudo extension: the step ends FATAL_ERROR, naming what is not healthy, when not
    /// done this long after it first ran (Go duration syntax, e.g. `10m`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub timeout: String,
}
