//! The pure mapping between a typed object and the Instance that mirrors it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::names::PropertyMap;
use super::{CrdTarget, MIRROR_MANAGER, TYPED_KIND_LABEL};
use crate::api::{Instance, Parameter, ParameterType};

/// A parameter's Instance value (a string, as KUDO keeps them) from its typed JSON value:
/// strings as they are, numbers and booleans as their JSON text, arrays and maps as YAML
/// (what the engine parses for `.Params`).
pub fn value_string(value: &Value, value_type: ParameterType) -> String {
    match (value, value_type) {
        (Value::String(s), _) => s.clone(),
        (_, ParameterType::Array | ParameterType::Map) => {
            crate::package::wrap_param_value(Some(value), value_type).unwrap_or_default()
        }
        (Value::Null, _) => String::new(),
        (other, _) => other.to_string(),
    }
}

/// The Instance parameters for a typed `spec` (every property but `version`), against the
/// parameters of the OperatorVersion it names. Errors name the offending properties.
pub fn instance_parameters(
    spec: &Map<String, Value>,
    parameters: &[Parameter],
    map: &PropertyMap,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut mistyped = Vec::new();
    for (property, value) in spec {
        if super::names::RESERVED.contains(&property.as_str()) {
            continue;
        }
        let Some(name) = map.parameter(property) else {
            unknown.push(format!("spec.{property}"));
            continue;
        };
        let Some(param) = parameters.iter().find(|p| p.name == name) else {
            unknown.push(format!("spec.{property}"));
            continue;
        };
        // The API server checks declared types; an untyped parameter's boolean or number
        // property takes any value there (see `crd::natural_type`).
        if !value.is_null() && !super::crd::accepts(param, value) {
            mistyped.push(format!(
                "spec.{property} (parameter {}) must be of type {}",
                param.name,
                super::crd::accepted_types(param)
            ));
            continue;
        }
        out.insert(name.to_string(), value_string(value, param.value_type()));
    }
    let mut problems = mistyped;
    if !unknown.is_empty() {
        problems.push(format!(
            "{} not parameters of this package version (its properties: {})",
            unknown.join(", "),
            map.properties().collect::<Vec<_>>().join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("; "))
    }
}

/// Immutable parameters whose value would change, as one message naming each (property and
/// parameter, old and new value); `None` when the change is allowed.
pub fn immutable_violation(
    parameters: &[Parameter],
    map: &PropertyMap,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Option<String> {
    let offenders: Vec<String> = parameters
        .iter()
        .filter(|p| p.immutable == Some(true))
        .filter_map(|p| {
            let old = before.get(&p.name).or(p.default.as_ref());
            let new = after.get(&p.name).or(p.default.as_ref());
            (old != new).then(|| {
                format!(
                    "spec.{} (parameter {}) is immutable: it is {:?} and cannot become {:?}",
                    map.property(&p.name).unwrap_or(&p.name),
                    p.name,
                    old.map(String::as_str).unwrap_or(""),
                    new.map(String::as_str).unwrap_or("")
                )
            })
        })
        .collect();
    (!offenders.is_empty()).then(|| format!("change refused, revert it: {}", offenders.join("; ")))
}

/// The typed object's identity, as the mirror needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// The Instance (apply body) mirroring a typed object: same name and namespace, owned by it
/// (so it is deleted with it, running `cleanup` as any Instance does).
pub fn mirrored_instance(
    owner: &Owner,
    target: &CrdTarget,
    operator_version: &str,
    parameters: &BTreeMap<String, String>,
) -> Value {
    json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "Instance",
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": {
                "kudo.dev/operator": target.operator,
                TYPED_KIND_LABEL: target.kind,
            },
            "annotations": {"kudo.dev/managed-by": MIRROR_MANAGER},
            "ownerReferences": [{
                "apiVersion": owner.api_version,
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "operatorVersion": {"name": operator_version},
            "parameters": parameters,
        },
    })
}

/// Whether `instance` is the mirror of `owner` (a controller owner reference with its uid).
pub fn is_mirror_of(instance: &Instance, owner: &Owner) -> bool {
    instance
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.uid == owner.uid && r.controller == Some(true))
}

/// The typed object's status: the Instance's plan status, conditions and plan execution,
/// with a problem of the typed object itself (`(reason, message)`) as its Ready condition.
pub fn typed_status(
    instance: Option<&Instance>,
    operator_version: &str,
    problem: Option<(&str, &str)>,
    generation: Option<i64>,
) -> Value {
    let mut status = Map::new();
    if let Some(inst) = instance {
        let s = inst.status.clone().unwrap_or_default();
        if let Ok(Value::Object(m)) = serde_json::to_value(&s) {
            status.extend(m);
        }
        status.remove("applied");
        if let Ok(pe) = serde_json::to_value(&inst.spec.plan_execution) {
            status.insert("planExecution".into(), pe);
        }
        status.insert(
            "instance".into(),
            Value::String(inst.metadata.name.clone().unwrap_or_default()),
        );
    }
    if !operator_version.is_empty() {
        status.insert(
            "operatorVersion".into(),
            Value::String(operator_version.to_string()),
        );
    }
    if let Some((reason, message)) = problem {
        let mut conditions: Vec<Value> = status
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Ready"));
        conditions.push(json!({
            "type": "Ready",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        }));
        status.insert("conditions".into(), Value::Array(conditions));
    }
    if let Some(g) = generation {
        status.insert("observedGeneration".into(), json!(g));
    }
    Value::Object(status)
}

/// Status equality ignoring condition timestamps, so an unchanged problem is not rewritten.
pub fn same_status(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(conds) = v.get_mut("conditions").and_then(Value::as_array_mut) {
            for c in conds {
                if let Some(m) = c.as_object_mut() {
                    m.remove("lastTransitionTime");
                }
            }
        }
        v
    }
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, t: ParameterType, immutable: bool) -> Parameter {
        Parameter {
            name: name.into(),
            declared_type: Some(t),
            immutable: immutable.then_some(true),
            default: Some("1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn typed_values_become_instance_strings() {
        let params = vec![
            param("NODE_COUNT", ParameterType::Integer, false),
            param("ENABLED", ParameterType::Boolean, false),
            param("LISTS", ParameterType::Array, false),
            param("NAME", ParameterType::String, false),
        ];
        let map = PropertyMap::new("t", params.iter().map(|p| p.name.as_str())).expect("map");
        let spec = json!({"version": "1.0.0", "nodeCount": 3, "enabled": true, "lists": ["a", "b"], "name": "x"});
        let got = instance_parameters(spec.as_object().expect("obj"), &params, &map).expect("ok");
        assert_eq!(got["NODE_COUNT"], "3");
        assert_eq!(got["ENABLED"], "true");
        assert_eq!(got["LISTS"], "- a\n- b\n");
        assert_eq!(got["NAME"], "x");
        assert!(!got.contains_key("version"));
    }

    #[test]
    fn unknown_properties_are_named() {
        let params = vec![param("NODE_COUNT", ParameterType::Integer, false)];
        let map = PropertyMap::new("t", ["NODE_COUNT"]).expect("map");
        let spec = json!({"nodeCount": 3, "replicas": 2});
        let err = instance_parameters(spec.as_object().expect("obj"), &params, &map)
            .expect_err("unknown");
        assert!(
            err.contains("spec.replicas") && err.contains("nodeCount"),
            "{err}"
        );
    }

    #[test]
    fn immutable_changes_name_property_and_parameter() {
        let params = vec![param("DISK_SIZE", ParameterType::String, true)];
        let map = PropertyMap::new("t", ["DISK_SIZE"]).expect("map");
        let before = BTreeMap::from([("DISK_SIZE".to_string(), "10Gi".to_string())]);
        let after = BTreeMap::from([("DISK_SIZE".to_string(), "20Gi".to_string())]);
        let msg = immutable_violation(&params, &map, &before, &after).expect("violation");
        assert!(
            msg.contains("spec.diskSize") && msg.contains("DISK_SIZE"),
            "{msg}"
        );
        assert!(msg.contains("10Gi") && msg.contains("20Gi"), "{msg}");
        assert_eq!(immutable_violation(&params, &map, &before, &before), None);
    }
}
