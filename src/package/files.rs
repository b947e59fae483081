//! The package file formats, `operator.yaml` and `params.yaml`, as KUDO's `packages` types
//! define them. They differ from the CRD types where a package is friendlier to write:
//! the parameter key is `type`, and `default`/`enum` values may be any YAML value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{Maintainer, ParameterType, Plan, Task};

/// `operator.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperatorFile {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub operator_version: String,
    #[serde(default)]
    pub app_version: String,
    #[serde(default, rename = "kudoVersion")]
    pub kudo_version: String,
    #[serde(default)]
    pub kubernetes_version: String,
    #[serde(default, deserialize_with = "nullable")]
    pub maintainers: Vec<Maintainer>,
    #[serde(default)]
    pub url: String,
    #[serde(default, deserialize_with = "nullable")]
    pub tasks: Vec<Task>,
    #[serde(default, deserialize_with = "nullable")]
    pub plans: BTreeMap<String, Plan>,
    #[serde(default)]
    pub namespace_manifest: String,
    /// A kudo extension: opt in to a typed CRD for this framework
    /// (`crd: {kind: ZooKeeper, group: frameworks.kudo.dev}`; see the `typed` module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crd: Option<super::CrdConfig>,
}

/// `params.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParamsFile {
    #[serde(default)]
    pub api_version: String,
    #[serde(default, deserialize_with = "nullable")]
    pub groups: Vec<Group>,
    #[serde(default, deserialize_with = "nullable")]
    pub parameters: Vec<PackageParameter>,
}

/// A parameter as written in `params.yaml`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PackageParameter {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    /// KUDO's package reader turns an absent `required` into `true`.
    #[serde(default)]
    pub required: Option<bool>,
    /// Any YAML value; `null` and absent both mean "no default".
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    #[serde(default)]
    pub trigger: String,
    /// `None` when params.yaml gives no `type` (KUDO then checks no type at all).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub declared_type: Option<ParameterType>,
    #[serde(default)]
    pub immutable: Option<bool>,
    #[serde(default)]
    pub r#enum: Option<Vec<serde_json::Value>>,
    /// Descriptive only (installers group and hide parameters); not part of the CRD.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub advanced: Option<bool>,
    #[serde(default)]
    pub hint: String,
    /// A kudo extension: the value is a secret (see `api::Parameter::sensitive`).
    #[serde(default)]
    pub sensitive: Option<bool>,
}

impl PackageParameter {
    /// The type values are checked and passed to templates as (undeclared is `string`).
    pub fn value_type(&self) -> ParameterType {
        self.declared_type.unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, rename = "prio")]
    pub priority: i64,
}

/// `key:` with nothing after it is null in YAML; Go's decoder reads it as the empty value.
fn nullable<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
