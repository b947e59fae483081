//! Typed documents in a Git repository's `instances/`: a `kind: ZooKeeper` document is read
//! as the generic instance document it stands for, so everything after (validation,
//! placement, rollout) is shared.
//!
//! ```yaml
//! apiVersion: frameworks.kudo.dev/v1   # the framework's group; any version
//! kind: Zookeeper                      # the framework's kind (default: its name in PascalCase)
//! metadata: {name: zk, namespace: data}
//! spec:
//!   version: 0.3.0                     # required: frameworks/<name>/<version>/
//!   nodeCount: 3                       # one property per parameter, typed
//!   placement: {clusterSelector: {matchLabels: {env: prod}}}
//! ```

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::names::PropertyMap;
use super::{CrdTarget, RESERVED_PLACEMENT};
use crate::api::{Operator, OperatorVersionSpec};

/// A framework version as the typed reading needs it.
pub struct TypedFramework<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub operator: &'a Operator,
    pub spec: &'a OperatorVersionSpec,
}

/// The target of a framework in a Git repository: its `crd:` block, else the defaults
/// (typed documents are on by default there).
pub fn target_of(name: &str, operator: &Operator) -> CrdTarget {
    match CrdTarget::from_operator(operator) {
        Some(Ok(t)) => t,
        _ => CrdTarget::for_operator(name, None),
    }
}

/// A problem with a typed document: the key to point at (for the line) and why.
pub type TypedDocError = (String, String);

/// The generic instance document for a typed one; `None` when `doc` is not a typed document
/// of any framework (a generic `Instance`, or a kind no framework has).
pub fn to_generic(
    doc: &Value,
    frameworks: &[TypedFramework<'_>],
) -> Option<Result<Value, TypedDocError>> {
    let kind = doc.get("kind")?.as_str()?;
    if kind == "Instance" {
        return None;
    }
    let group = doc
        .get("apiVersion")?
        .as_str()?
        .split_once('/')
        .map(|(g, _)| g)?;
    let matching: Vec<&TypedFramework<'_>> = frameworks
        .iter()
        .filter(|f| {
            let t = target_of(f.name, f.operator);
            t.kind == kind && t.group == group
        })
        .collect();
    let name = matching.first()?.name;
    Some(convert(doc, name, kind, &matching))
}

fn convert(
    doc: &Value,
    framework: &str,
    kind: &str,
    versions: &[&TypedFramework<'_>],
) -> Result<Value, TypedDocError> {
    let empty = Map::new();
    let spec = doc.get("spec").and_then(Value::as_object).unwrap_or(&empty);
    let Some(version) = spec.get("version").and_then(Value::as_str) else {
        return Err((
            "spec".to_string(),
            format!(
                "{kind}: spec.version is required (a version of framework {framework} in frameworks/{framework}/)"
            ),
        ));
    };
    let mut parameters = BTreeMap::new();
    if let Some(fw) = versions.iter().find(|f| f.version == version) {
        let what = format!("framework {framework} version {version}");
        let map = PropertyMap::new(&what, fw.spec.parameters.iter().map(|p| p.name.as_str()))
            .map_err(|e| ("kind".to_string(), e.to_string()))?;
        for (property, value) in spec {
            if property == "version" || property == RESERVED_PLACEMENT {
                continue;
            }
            let Some(param) = map
                .parameter(property)
                .and_then(|n| fw.spec.parameters.iter().find(|p| p.name == n))
            else {
                return Err((
                    property.clone(),
                    format!(
                        "spec.{property} is not a parameter of {what} (its properties: {})",
                        map.properties().collect::<Vec<_>>().join(", ")
                    ),
                ));
            };
            if !super::crd::accepts(param, value) {
                return Err((
                    property.clone(),
                    format!(
                        "spec.{property} (parameter {}) must be of type {}, not {}",
                        param.name,
                        super::crd::accepted_types(param),
                        json_type(value)
                    ),
                ));
            }
            parameters.insert(param.name.clone(), value.clone());
        }
    }
    // A version with no package is reported by the generic reading (naming the versions).
    let mut generic_spec = json!({
        "framework": framework,
        "version": version,
        "parameters": parameters,
    });
    if let Some(placement) = spec.get(RESERVED_PLACEMENT) {
        generic_spec["placement"] = placement.clone();
    }
    Ok(json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "Instance",
        "metadata": doc.get("metadata").cloned().unwrap_or(Value::Null),
        "spec": generic_spec,
    }))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// [`to_generic`] of a YAML document's text; `None` also when it is not valid YAML (the
/// generic reading reports that, with its line).
pub fn read(text: &str, frameworks: &[TypedFramework<'_>]) -> Option<Result<Value, TypedDocError>> {
    let doc: Value = serde_saphyr::from_str(text).ok()?;
    to_generic(&doc, frameworks)
}

/// The framework and version a typed document names, for caching what its outcome
/// depends on.
pub fn reference(text: &str, frameworks: &[TypedFramework<'_>]) -> Option<(String, String)> {
    let generic = read(text, frameworks)?.ok()?;
    let spec = generic.get("spec")?;
    Some((
        spec.get("framework")?.as_str()?.to_string(),
        spec.get("version")?.as_str()?.to_string(),
    ))
}

/// A key that changes when any framework's kind or group changes (typed documents are read
/// through those).
pub fn targets_key(frameworks: &[TypedFramework<'_>]) -> String {
    let mut parts: Vec<String> = frameworks
        .iter()
        .map(|f| {
            let t = target_of(f.name, f.operator);
            format!("{}/{}/{}", t.group, t.kind, t.operator)
        })
        .collect();
    parts.sort();
    parts.dedup();
    parts.join(",")
}
