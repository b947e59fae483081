//! Generating a framework's CRD from its OperatorVersions (pure).
//!
//! Versions: package versions whose parameter schemas are identical share one CRD version;
//! a package version that adds, removes or retypes parameters (or changes an enum, a
//! default, `required` or `immutable`) gets a new CRD version `v<N+1>`. Every earlier CRD
//! version stays served, the newest package version's CRD version is the storage version,
//! and conversion is `None` (the API server relabels objects; fields a version lacks are
//! pruned, missing ones defaulted). Given the live CRD, the names it already serves are kept
//! (matched by the fingerprint in [`VERSIONS_ANNOTATION`]), so regenerating is never an
//! in-place breaking change.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::names::PropertyMap;
use super::{CrdTarget, TYPED_KIND_LABEL, TypedError, VERSIONS_ANNOTATION};
use crate::api::{OperatorVersionSpec, Parameter, ParameterType};

/// What the target API server supports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrdOptions {
    /// Emit `x-kubernetes-validations` (CEL) transition rules for immutable parameters
    /// (Kubernetes ≥ 1.25; older servers reject the field, and kudo checks immutability).
    pub cel: bool,
}

impl CrdOptions {
    /// Options for a server of this `major.minor` version.
    pub fn for_server(major: &str, minor: &str) -> Self {
        let digits = |s: &str| -> u32 {
            s.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0)
        };
        let (major, minor) = (digits(major), digits(minor));
        CrdOptions {
            cel: major > 1 || (major == 1 && minor >= 25),
        }
    }
}

/// Package versions in semantic-version order (unparsable versions last, by text).
pub fn sorted_versions<'a>(versions: &[&'a OperatorVersionSpec]) -> Vec<&'a OperatorVersionSpec> {
    let mut out = versions.to_vec();
    out.sort_by(|a, b| {
        let pa = crate::template::semver::parse(&a.version);
        let pb = crate::template::semver::parse(&b.version);
        match (pa, pb) {
            (Ok(x), Ok(y)) => crate::template::semver::cmp(&x, &y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => a.version.cmp(&b.version),
        }
    });
    out.dedup_by(|a, b| a.version == b.version);
    out
}

fn check_names(target: &CrdTarget) -> Result<(), TypedError> {
    let kind_ok = target
        .kind
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase())
        && target.kind.chars().all(|c| c.is_ascii_alphanumeric());
    if !kind_ok {
        return Err(TypedError::BadKind {
            operator: target.operator.clone(),
            kind: target.kind.clone(),
        });
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !target.group.contains('.') || !target.group.split('.').all(label_ok) {
        return Err(TypedError::BadGroup {
            operator: target.operator.clone(),
            group: target.group.clone(),
        });
    }
    Ok(())
}

/// The CRD (as JSON) for `target` covering every OperatorVersion in `versions`. `existing`
/// is the live CRD, whose served versions are kept.
pub fn generate(
    target: &CrdTarget,
    versions: &[&OperatorVersionSpec],
    existing: Option<&Value>,
    opts: CrdOptions,
) -> Result<Value, TypedError> {
    check_names(target)?;
    let sorted = sorted_versions(versions);
    let Some(newest) = sorted.last() else {
        return Err(TypedError::NoVersions {
            operator: target.operator.clone(),
        });
    };
    // Fingerprint → (newest package version with that schema, its OperatorVersion).
    let mut groups: Vec<(String, &OperatorVersionSpec)> = Vec::new();
    for ov in &sorted {
        let what = format!("framework {} version {}", target.operator, ov.version);
        let map = PropertyMap::new(&what, ov.parameters.iter().map(|p| p.name.as_str()))?;
        let fp = fingerprint(&parameter_schema(
            &ov.parameters,
            &map,
            CrdOptions::default(),
        ));
        match groups.iter_mut().find(|(f, _)| *f == fp) {
            Some(g) => g.1 = ov,
            None => groups.push((fp, ov)),
        }
    }
    let newest_fp = groups
        .iter()
        .find(|(_, ov)| ov.version == newest.version)
        .map(|(f, _)| f.clone())
        .unwrap_or_default();

    // Names already served: fingerprint → name, and the live version objects.
    let known: BTreeMap<String, String> = existing
        .and_then(|crd| crd.pointer("/metadata/annotations"))
        .and_then(|a| a.get(VERSIONS_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<BTreeMap<String, String>>(s).ok())
        .unwrap_or_default();
    let live_versions: Vec<Value> = existing
        .and_then(|crd| crd.pointer("/spec/versions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut next = known
        .keys()
        .map(String::as_str)
        .chain(
            live_versions
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str)),
        )
        .filter_map(|name| name.strip_prefix('v').and_then(|n| n.parse::<u32>().ok()))
        .max()
        .unwrap_or(0)
        + 1;
    let mut names: BTreeMap<String, String> = known.clone();
    let mut out_versions: Vec<(u32, Value)> = Vec::new();
    let mut emitted = std::collections::BTreeSet::new();
    for (fp, ov) in &groups {
        let name = match known.iter().find(|(_, f)| *f == fp) {
            Some((name, _)) => name.clone(),
            None => {
                let name = format!("v{next}");
                next += 1;
                names.insert(name.clone(), fp.clone());
                name
            }
        };
        let what = format!("framework {} version {}", target.operator, ov.version);
        let map = PropertyMap::new(&what, ov.parameters.iter().map(|p| p.name.as_str()))?;
        let schema = version_schema(target, ov, &map, opts);
        emitted.insert(name.clone());
        out_versions.push((
            version_number(&name),
            json!({
                "name": name,
                "served": true,
                "storage": *fp == newest_fp,
                "schema": {"openAPIV3Schema": schema},
                "subresources": {"status": {}},
                "additionalPrinterColumns": printer_columns(),
            }),
        ));
    }
    // Versions the live CRD serves that no current package version has: still served.
    for v in live_versions {
        let Some(name) = v.get("name").and_then(Value::as_str) else {
            continue;
        };
        if emitted.contains(name) {
            continue;
        }
        let mut v = v.clone();
        v["storage"] = json!(false);
        v["served"] = json!(true);
        out_versions.push((version_number(name), v));
    }
    out_versions.sort_by_key(|(n, _)| *n);
    let versions: Vec<Value> = out_versions.into_iter().map(|(_, v)| v).collect();
    let annotation = serde_json::to_string(&names).expect("invariant: a string map serialises");
    Ok(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": target.crd_name(),
            "labels": {
                "heritage": "kudo",
                "kudo.dev/operator": target.operator,
                TYPED_KIND_LABEL: target.kind,
            },
            "annotations": {VERSIONS_ANNOTATION: annotation},
        },
        "spec": {
            "group": target.group,
            "names": {
                "kind": target.kind,
                "listKind": format!("{}List", target.kind),
                "plural": target.plural,
                "singular": target.kind.to_ascii_lowercase(),
                "categories": ["kudo"],
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    }))
}

fn version_number(name: &str) -> u32 {
    name.strip_prefix('v')
        .and_then(|n| n.parse().ok())
        .unwrap_or(u32::MAX)
}

fn fingerprint(schema: &Value) -> String {
    let text = serde_json::to_string(schema).expect("invariant: JSON serialises");
    hex::encode(&Sha256::digest(text.as_bytes())[..12])
}

fn printer_columns() -> Value {
    json!([
        {"name": "Version", "type": "string", "jsonPath": ".spec.version"},
        {"name": "Plan", "type": "string", "jsonPath": ".status.planExecution.planName"},
        {"name": "Status", "type": "string", "jsonPath": ".status.planExecution.status"},
        {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ])
}

/// The whole `openAPIV3Schema` of one CRD version.
fn version_schema(
    target: &CrdTarget,
    ov: &OperatorVersionSpec,
    map: &PropertyMap,
    opts: CrdOptions,
) -> Value {
    let params = parameter_schema(&ov.parameters, map, opts);
    let mut properties = params["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    properties.insert(
        "version".to_string(),
        json!({
            "type": "string",
            "description": format!(
                "The package version (OperatorVersion spec.version) of framework {} to run; changing it runs the upgrade plan.",
                target.operator
            ),
            "default": ov.version,
        }),
    );
    let mut spec = json!({
        "type": "object",
        "description": format!("Parameters of framework {}, one property per parameter.", target.operator),
        "default": {},
        "properties": properties,
    });
    if let Some(required) = params.get("required") {
        spec["required"] = required.clone();
    }
    json!({
        "type": "object",
        "description": format!(
            "{} is an instance of the kudo framework {}: kudo runs its plans as for a kudo.dev Instance (mirrored under the same name).",
            target.kind, target.operator
        ),
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status_schema(),
        },
    })
}

/// `{properties, required}` for the parameters: what decides whether two package versions
/// can share a CRD version.
fn parameter_schema(parameters: &[Parameter], map: &PropertyMap, opts: CrdOptions) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for p in parameters {
        let Some(property) = map.property(&p.name) else {
            continue;
        };
        let natural = natural_type(p);
        let mut schema = match natural {
            Some(t) => untyped_schema(t),
            None => type_schema(p.value_type()),
        };
        let mut description = if p.description.is_empty() {
            p.display_name.clone()
        } else {
            p.description.clone()
        };
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!("Parameter {}.", p.name));
        if p.immutable == Some(true) {
            description.push_str(" Immutable.");
        }
        if !p.trigger.is_empty() {
            description.push_str(&format!(" A change runs plan {}.", p.trigger));
        }
        if let Some(t) = natural {
            description.push_str(&format!(
                " Accepts a{} {} or a string.",
                if t == ParameterType::Integer { "n" } else { "" },
                t.as_str()
            ));
        }
        schema.insert("description".into(), Value::String(description));
        if let Some(values) = &p.r#enum {
            let values: Vec<Value> = match natural {
                // Both spellings of each value: `1` and `"1"`.
                Some(t) => values
                    .iter()
                    .flat_map(|v| [typed_value(v, t), Some(Value::String(v.clone()))])
                    .flatten()
                    .collect(),
                None => values
                    .iter()
                    .filter_map(|v| typed_value(v, p.value_type()))
                    .collect(),
            };
            if !values.is_empty() {
                schema.insert("enum".into(), Value::Array(values));
            }
        }
        let default = p
            .default
            .as_deref()
            .and_then(|d| match natural {
                // The typed spelling only when the Instance gets the very same text back.
                Some(t) => Some(
                    typed_value(d, t)
                        .filter(|v| json_text(v) == d)
                        .unwrap_or_else(|| Value::String(d.to_string())),
                ),
                None => typed_value(d, p.value_type()),
            })
            .filter(|d| {
                // A default outside the enum would make the API server refuse the CRD.
                schema
                    .get("enum")
                    .and_then(Value::as_array)
                    .is_none_or(|e| e.contains(d))
            });
        match default {
            Some(d) => {
                schema.insert("default".into(), d);
            }
            // As KUDO: required when there is no default at all (an array or map has
            // `null`, one that does not fit the schema still applies through the Instance).
            None if p.required.unwrap_or(false) && p.default.is_none() => {
                required.push(Value::String(property.into()));
            }
            None => {}
        }
        // CEL has no type to compare an untyped (preserve-unknown-fields) value with.
        let cel_typed = !matches!(
            natural,
            Some(ParameterType::Boolean | ParameterType::Number)
        );
        if opts.cel && p.immutable == Some(true) && cel_typed {
            schema.insert(
                "x-kubernetes-validations".into(),
                json!([{"rule": "self == oldSelf", "message": format!("parameter {} is immutable", p.name)}]),
            );
        }
        properties.insert(property.to_string(), Value::Object(schema));
    }
    let mut out = json!({"properties": properties});
    if !required.is_empty() {
        out["required"] = Value::Array(required);
    }
    out
}

fn type_schema(t: ParameterType) -> Map<String, Value> {
    let v = match t {
        ParameterType::String => json!({"type": "string"}),
        ParameterType::Integer => json!({"type": "integer"}),
        ParameterType::Number => json!({"type": "number"}),
        ParameterType::Boolean => json!({"type": "boolean"}),
        ParameterType::Array => json!({
            "type": "array",
            "items": {"x-kubernetes-preserve-unknown-fields": true},
        }),
        ParameterType::Map => json!({
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true,
        }),
    };
    v.as_object().cloned().unwrap_or_default()
}

/// For a parameter without a declared type (a string to KUDO): the type its default and enum
/// values all naturally have as YAML, spelled as JSON numbers or `true`/`false` (`3`, `0.5`,
/// `true`; not `007` or `1Gi`). Its typed property then accepts that type as well as a
/// string, and the Instance gets the value's text either way (`3` and `"3"` are `3`).
pub fn natural_type(p: &Parameter) -> Option<ParameterType> {
    if p.declared_type.is_some() {
        return None;
    }
    let texts: Vec<&str> = p
        .default
        .iter()
        .chain(p.r#enum.iter().flatten())
        .map(String::as_str)
        .collect();
    if texts.is_empty() {
        return None;
    }
    [
        ParameterType::Integer,
        ParameterType::Boolean,
        ParameterType::Number,
    ]
    .into_iter()
    .find(|t| texts.iter().all(|s| is_natural(s, *t)))
}

/// A value's JSON text, which is what the Instance gets for it (see `mirror::value_string`).
fn json_text(v: &Value) -> String {
    v.to_string()
}

fn is_natural(text: &str, t: ParameterType) -> bool {
    let json_number = |s: &str| {
        let s = s.strip_prefix('-').unwrap_or(s);
        let (int, rest) = s.split_at(s.find(['.', 'e', 'E']).unwrap_or(s.len()));
        let int_ok = int == "0"
            || (!int.is_empty()
                && !int.starts_with('0')
                && int.bytes().all(|b| b.is_ascii_digit()));
        let (frac, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let frac_ok = frac.is_empty()
            || frac
                .strip_prefix('.')
                .is_some_and(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
        let exp_ok = exp.is_none_or(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        });
        int_ok && frac_ok && exp_ok
    };
    match t {
        ParameterType::Integer => {
            json_number(text) && !text.contains(['.', 'e', 'E']) && text.parse::<i64>().is_ok()
        }
        ParameterType::Number => json_number(text) && text.parse::<f64>().is_ok_and(f64::is_finite),
        ParameterType::Boolean => text == "true" || text == "false",
        _ => false,
    }
}

/// Whether a typed property's value is one its parameter takes: the declared type, or for
/// an untyped parameter a string or its [`natural_type`].
pub fn accepts(p: &Parameter, value: &Value) -> bool {
    match natural_type(p) {
        Some(t) => value.is_string() || is_of_type(value, t),
        None => is_of_type(value, p.value_type()),
    }
}

fn is_of_type(value: &Value, t: ParameterType) -> bool {
    match t {
        ParameterType::String => value.is_string(),
        ParameterType::Integer => value.is_i64() || value.is_u64(),
        ParameterType::Number => value.is_number(),
        ParameterType::Boolean => value.is_boolean(),
        ParameterType::Array => value.is_array(),
        ParameterType::Map => value.is_object(),
    }
}

/// The schema name of what [`accepts`] takes, for messages (`integer or string`).
pub fn accepted_types(p: &Parameter) -> String {
    let name = |t: ParameterType| match t {
        ParameterType::Map => "object",
        other => other.as_str(),
    };
    match natural_type(p) {
        Some(t) => format!("{} or string", name(t)),
        None => name(p.value_type()).to_string(),
    }
}

/// An untyped parameter's property: an integer or a string is `int-or-string`; a structural
/// schema has no boolean-or-string or number-or-string, so those take any value here and
/// kudo checks the type ([`accepts`]) before it reaches the Instance.
fn untyped_schema(natural: ParameterType) -> Map<String, Value> {
    let v = match natural {
        ParameterType::Integer => json!({"x-kubernetes-int-or-string": true}),
        _ => json!({"x-kubernetes-preserve-unknown-fields": true}),
    };
    v.as_object().cloned().unwrap_or_default()
}

/// A parameter value as stored in an OperatorVersion (always a string) as the JSON value of
/// its declared type; `None` when it is not one (such a default is left out of the schema,
/// and the engine's own validation reports it).
pub fn typed_value(text: &str, t: ParameterType) -> Option<Value> {
    match t {
        ParameterType::String => Some(Value::String(text.to_string())),
        ParameterType::Integer => text.trim().parse::<i64>().ok().map(Value::from),
        ParameterType::Number => {
            let t = text.trim();
            t.parse::<i64>().ok().map(Value::from).or_else(|| {
                t.parse::<f64>()
                    .ok()
                    .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
            })
        }
        ParameterType::Boolean => match text.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        ParameterType::Array => serde_saphyr::from_str::<Value>(text)
            .ok()
            .filter(Value::is_array),
        ParameterType::Map => serde_saphyr::from_str::<Value>(text)
            .ok()
            .filter(Value::is_object),
    }
}

/// The Instance status schema, plus what only a typed object's status has.
fn status_schema() -> Value {
    let instance = crate::api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "Instance")
        .and_then(|c| serde_json::to_value(c).ok())
        .unwrap_or(Value::Null);
    let root = instance.pointer("/spec/versions/0/schema/openAPIV3Schema");
    let mut status = root
        .and_then(|r| r.pointer("/properties/status"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let plan_execution = root
        .and_then(|r| r.pointer("/properties/spec/properties/planExecution"))
        .cloned()
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    if let Some(props) = status.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("planExecution".into(), plan_execution);
        props.insert(
            "operatorVersion".into(),
            json!({"type": "string", "description": "The OperatorVersion the mirrored Instance runs."}),
        );
        props.insert(
            "instance".into(),
            json!({"type": "string", "description": "The kudo.dev Instance mirroring this object."}),
        );
        props.insert("observedGeneration".into(), json!({"type": "integer"}));
    }
    status
}
