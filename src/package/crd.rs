//! The `crd:` block of operator.yaml: a package's opt-in to a typed CRD (see the `typed` module,
//! which builds the CRD; the block itself is package format, so it lives here).

use serde::{Deserialize, Serialize};

/// Operator annotation carrying the package's `crd:` block (JSON), set by package conversion.
pub const CRD_ANNOTATION: &str = "kudo.dev/crd";

/// The `crd:` block of operator.yaml.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CrdConfig {
    /// The typed kind, e.g. `ZooKeeper` (default: the operator name in PascalCase).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The API group (default `typed::DEFAULT_GROUP`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The plural resource name (default: the kind in lower case plus `s`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plural: String,
}
