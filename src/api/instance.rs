use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_default;

/// A deployment of one OperatorVersion with parameter values; its plans run on the cluster
/// it lives in and their progress is recorded in its status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kudo.dev",
    version = "v1beta1",
    kind = "Instance",
    namespaced,
    status = "InstanceStatus",
    category = "kudo",
    printcolumn = r#"{"name":"Operator Version","type":"string","jsonPath":".spec.operatorVersion.name"}"#,
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.planExecution.planName"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".spec.planExecution.status"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct InstanceSpec {
    #[serde(default, skip_serializing_if = "is_default")]
    pub operator_version: ObjectReference,
    /// Parameter values as strings, whatever the declared type (as in KUDO).
    #[serde(default, skip_serializing_if = "is_default")]
    pub parameters: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub plan_execution: PlanExecution,
}

/// The plan the instance is asked to run (a manual trigger sets it) and how that went.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanExecution {
    #[serde(default, skip_serializing_if = "is_default")]
    pub plan_name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "execution_status_schema")]
    pub status: Option<ExecutionStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    #[serde(default, skip_serializing_if = "is_default")]
    pub plan_status: BTreeMap<String, PlanStatus>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub conditions: Vec<Condition>,
    /// A kudo extension: every object kudo applied for this instance, in apply order. With
    /// kudo's labels this is what pruning may delete; nothing outside it is ever deleted.
    #[serde(default, skip_serializing_if = "is_default")]
    pub applied: Vec<AppliedObject>,
}

/// One object in an instance's inventory.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AppliedObject {
    pub api_version: String,
    pub kind: String,
    /// Empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "is_default")]
    pub namespace: String,
    pub name: String,
}

/// Status of one plan, as the tree `kudo plan status` shows.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "execution_status_schema")]
    pub status: Option<ExecutionStatus>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated_timestamp: Option<Time>,
    /// A kudo extension: when this run started (plan timeouts count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub phases: Vec<PhaseStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct PhaseStatus {
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "execution_status_schema")]
    pub status: Option<ExecutionStatus>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub message: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub steps: Vec<StepStatus>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "execution_status_schema")]
    pub status: Option<ExecutionStatus>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub message: String,
    /// A kudo extension: when the step first ran (step timeouts count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

/// A plain string enum: the derived schema of `Option<ExecutionStatus>` lists `null` among
/// the enum values, which Kubernetes 1.20's CRD validation rejects.
fn execution_status_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["NEVER_RUN", "PENDING", "IN_PROGRESS", "COMPLETE", "ERROR", "FATAL_ERROR", "CANCELLED"]
    })
}

/// KUDO's execution states. `ERROR` is transient (retried); `FATAL_ERROR` is terminal.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    NeverRun,
    Pending,
    InProgress,
    Complete,
    Error,
    FatalError,
    /// A kudo extension: the plan was cancelled (`kudo plan cancel`); terminal like
    /// FATAL_ERROR, and `kudo plan retry` resumes it from its first unfinished step.
    Cancelled,
}

impl ExecutionStatus {
    /// A plan in this state is still running (it blocks a new trigger of another plan).
    pub fn is_running(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Pending | ExecutionStatus::InProgress | ExecutionStatus::Error
        )
    }

    /// The plan will make no further progress without a new trigger.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Complete | ExecutionStatus::FatalError | ExecutionStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::NeverRun => "NEVER_RUN",
            ExecutionStatus::Pending => "PENDING",
            ExecutionStatus::InProgress => "IN_PROGRESS",
            ExecutionStatus::Complete => "COMPLETE",
            ExecutionStatus::Error => "ERROR",
            ExecutionStatus::FatalError => "FATAL_ERROR",
            ExecutionStatus::Cancelled => "CANCELLED",
        }
    }
}

impl std::fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `metav1.Condition` whose fields are all optional, so partial kuttl asserts parse.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type", default, skip_serializing_if = "is_default")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub status: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Annotation holding the JSON [`Snapshot`] of what the manager last acted on for an
/// Instance (KUDO's name). The engine writes it; health, the rollout view and redaction read it.
pub const LAST_APPLIED_ANNOTATION: &str = "kudo.dev/last-applied-instance-state";

/// What the manager last acted on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub operator_version: String,
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    /// The last plan run started (name and uid), so a manual trigger is seen once.
    #[serde(default)]
    pub plan: String,
    #[serde(default)]
    pub plan_uid: String,
}

impl Snapshot {
    /// The snapshot recording that `plan` (with `uid`) was started for `spec`.
    pub fn of(spec: &InstanceSpec, plan: &str, uid: &str) -> Self {
        Snapshot {
            operator_version: spec.operator_version.name.clone().unwrap_or_default(),
            parameters: spec.parameters.clone(),
            plan: plan.to_string(),
            plan_uid: uid.to_string(),
        }
    }
}
