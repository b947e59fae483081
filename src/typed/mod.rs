//! Typed, per-framework custom resources: "creating a Framework creates its own CRD".
//!
//! For a framework (operator package) kudo generates a CRD whose `spec` has one typed
//! property per parameter ([`crd`]), so `kind: ZooKeeper` objects are validated by the API
//! server itself. A typed object is the source of truth; kudo mirrors it into a generic
//! `Instance` of the same name, owned by the typed object, which the unchanged plan engine
//! runs; the Instance's plan status is copied back into the typed object's status
//! ([`mirror`] is the pure mapping, [`controller`] the I/O). The Git control plane reads
//! typed documents in `instances/` through [`gitops`].
//!
//! Opt-in per package with `crd: {kind: ZooKeeper, group: frameworks.kudo.dev}` in
//! operator.yaml; without it, kind and group are derived ([`CrdTarget::for_operator`]):
//! that default applies to `kudo crds --framework` and to packages in a kudo Git repository.
//! A package's opt-in travels to clusters as the Operator annotation [`CRD_ANNOTATION`],
//! which `kudo manager` reads to install the CRDs and run their controllers.

pub mod controller;
pub mod crd;
pub mod gitops;
pub mod mirror;
pub mod names;

pub use crate::package::{CRD_ANNOTATION, CrdConfig};
pub use crd::{CrdOptions, generate};
pub use names::{PropertyMap, default_kind, parameter_name, property_name};

/// The group of typed objects when a package names none.
pub const DEFAULT_GROUP: &str = "frameworks.kudo.dev";
/// CRD annotation: CRD version name → fingerprint of its parameter schema, so a regenerated
/// CRD keeps the names of versions it already serves.
pub const VERSIONS_ANNOTATION: &str = "kudo.dev/crd-versions";
/// Label on a mirrored Instance naming the typed kind it mirrors.
pub const TYPED_KIND_LABEL: &str = "kudo.dev/typed-kind";
/// Field manager of the mirrored Instance's spec.
pub const MIRROR_MANAGER: &str = "kudo-typed";

/// Everything that names one framework's CRD.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CrdTarget {
    pub operator: String,
    pub group: String,
    pub kind: String,
    pub plural: String,
}

impl CrdTarget {
    /// The target for `operator` with its `crd:` block (or the defaults without one).
    pub fn for_operator(operator: &str, config: Option<&CrdConfig>) -> Self {
        let config = config.cloned().unwrap_or_default();
        let kind = if config.kind.is_empty() {
            default_kind(operator)
        } else {
            config.kind
        };
        let group = if config.group.is_empty() {
            DEFAULT_GROUP.to_string()
        } else {
            config.group
        };
        let plural = if config.plural.is_empty() {
            format!("{}s", kind.to_ascii_lowercase())
        } else {
            config.plural
        };
        CrdTarget {
            operator: operator.to_string(),
            group,
            kind,
            plural,
        }
    }

    /// The target an Operator object opted in to, from its [`CRD_ANNOTATION`].
    pub fn from_operator(op: &crate::api::Operator) -> Option<Result<Self, TypedError>> {
        use kube::ResourceExt;
        let text = op.annotations().get(CRD_ANNOTATION)?;
        let name = op.name_any();
        Some(
            serde_json::from_str::<CrdConfig>(text)
                .map(|c| Self::for_operator(&name, Some(&c)))
                .map_err(|e| TypedError::BadAnnotation {
                    operator: name,
                    message: e.to_string(),
                }),
        )
    }

    /// `<plural>.<group>`.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TypedError {
    #[error(
        "{what}: parameters {first} and {second} both map to the property spec.{property}; rename one of them"
    )]
    PropertyCollision {
        what: String,
        first: String,
        second: String,
        property: String,
    },
    #[error(
        "{what}: parameter {parameter} maps to spec.{property}, which kudo reserves (spec.version chooses the package version, spec.placement the clusters); rename the parameter"
    )]
    ReservedProperty {
        what: String,
        parameter: String,
        property: String,
    },
    #[error("framework {operator}: no package versions to generate a CRD from")]
    NoVersions { operator: String },
    #[error(
        "framework {operator}: kind {kind:?} is not a valid Kubernetes kind (an upper-case letter, then letters and digits)"
    )]
    BadKind { operator: String, kind: String },
    #[error(
        "framework {operator}: group {group:?} is not a valid API group (a DNS subdomain with at least one dot)"
    )]
    BadGroup { operator: String, group: String },
    #[error("operator {operator}: annotation {CRD_ANNOTATION} is not valid JSON: {message}")]
    BadAnnotation { operator: String, message: String },
}

/// The `spec` property of a typed document in Git that holds its placement.
pub const RESERVED_PLACEMENT: &str = "placement";

#[cfg(test)]
mod tests;
