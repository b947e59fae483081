use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::is_default;

/// An operator package's identity: what it is, who maintains it, which KUDO and Kubernetes
/// versions it needs. Versions of the package are `OperatorVersion`s.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "kudo.dev",
    version = "v1beta1",
    kind = "Operator",
    namespaced,
    status = "OperatorStatus",
    category = "kudo",
    printcolumn = r#"{"name":"Description","type":"string","jsonPath":".spec.description","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct OperatorSpec {
    #[serde(default, skip_serializing_if = "is_default")]
    pub description: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub kudo_version: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub kubernetes_version: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub maintainers: Vec<Maintainer>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub url: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub namespace_manifest: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct Maintainer {
    #[serde(default, skip_serializing_if = "is_default")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub email: String,
}

/// KUDO defines no Operator status; kept so the CRD has the subresource like KUDO's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct OperatorStatus {}
