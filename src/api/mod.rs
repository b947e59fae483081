//! The KUDO API, group `kudo.dev`, version `v1beta1`, unchanged so existing KUDO packages,
//! manifests and kuttl suites work against kudo.
//!
//! Every field is optional on the Rust side: kuttl assert files are partial objects and must
//! parse into these types too. Empty values are omitted when serialising, as Go's `omitempty`
//! does, so a round trip through these types is lossless for every field KUDO defines.

mod instance;
mod operator;
mod operator_version;

pub use instance::{
    AppliedObject, Condition, ExecutionStatus, Instance, InstanceSpec, InstanceStatus,
    LAST_APPLIED_ANNOTATION, PhaseStatus, PlanExecution, PlanStatus, Snapshot, StepStatus,
};
pub use operator::{Maintainer, Operator, OperatorSpec, OperatorStatus};
pub use operator_version::{
    OperatorVersion, OperatorVersionSpec, OperatorVersionStatus, Ordering, Parameter,
    ParameterType, Phase, PipeSpec, Plan, Step, Task, TaskKind, TaskSpec,
};

pub use k8s_openapi::api::core::v1::ObjectReference;

use kube::CustomResourceExt;
use serde::de::DeserializeOwned;

/// The API group of every kudo object.
pub const GROUP: &str = "kudo.dev";
/// The only served version.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "kudo.dev/v1beta1";

/// Errors from reading kudo API objects.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The document is not valid YAML, or a field has the wrong type.
    #[error("{source_name}: {kind} at {path}: {message}")]
    Parse {
        source_name: String,
        kind: &'static str,
        path: String,
        message: String,
    },
    #[error("{source_name}: CRD generation failed: {message}")]
    Crd {
        source_name: String,
        message: String,
    },
}

/// The three CustomResourceDefinitions, in a stable order (Operator, OperatorVersion, Instance).
///
/// `spec` is not required: KUDO's CRDs did not require it and its test suites create
/// Operators without one (e.g. `kind: Operator` with only a name).
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    let mut crds = vec![Operator::crd(), OperatorVersion::crd(), Instance::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            let root = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut());
            if let Some(root) = root {
                if let Some(required) = root.required.as_mut() {
                    required.retain(|r| r != "spec");
                }
                if root.required.as_ref().is_some_and(Vec::is_empty) {
                    root.required = None;
                }
            }
        }
    }
    crds
}

/// Renders the CRDs as one multi-document YAML stream, the content of `crds/`.
pub fn crds_yaml() -> Result<Vec<(String, String)>, ApiError> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let text = serde_saphyr::to_string(&crd).map_err(|e| ApiError::Crd {
                source_name: name.clone(),
                message: e.to_string(),
            })?;
            Ok((name, text))
        })
        .collect()
}

/// Parses one kudo object from YAML, naming the field path of a type error
/// (for example `spec.parameters: invalid type: sequence, expected a map`).
pub fn from_yaml<T: DeserializeOwned>(source_name: &str, text: &str) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_saphyr::from_str(text).map_err(|e| ApiError::Parse {
        source_name: source_name.to_string(),
        kind: "invalid YAML",
        path: "(document)".to_string(),
        message: e.to_string(),
    })?;
    from_value(source_name, value)
}

/// Converts a JSON value into a kudo object, naming the field path of a type error.
pub fn from_value<T: DeserializeOwned>(
    source_name: &str,
    mut value: serde_json::Value,
) -> Result<T, ApiError> {
    // kuttl asserts omit `spec` (e.g. status-only Instance asserts); Go reads that as the
    // zero spec, while the derived Rust type requires the key.
    if let Some(obj) = value.as_object_mut() {
        obj.entry("spec")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ApiError::Parse {
            source_name: source_name.to_string(),
            kind: "wrong type",
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Go's `omitempty`: empty strings, maps, lists, `false` and null are not written.
pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Splits a multi-document YAML stream into JSON values, dropping empty documents.
pub fn documents_from_yaml(
    source_name: &str,
    text: &str,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_str_multiple(text).map_err(|e| ApiError::Parse {
            source_name: source_name.to_string(),
            kind: "invalid YAML",
            path: "(stream)".to_string(),
            message: e.to_string(),
        })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}
