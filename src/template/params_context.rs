//! How KUDO builds `.Params`: every declared parameter present; scalar values are strings
//! (a non-string default is converted with Go's `%v` after sigs.k8s.io/yaml decoding, so
//! numbers are float64: `10000` stays "10000", `1000000` becomes "1e+06"); `array`/`map`
//! values are YAML-decoded the same way (numbers float64); no value means "".

use super::gofmt;
use super::value::Value;
use std::collections::BTreeMap;

/// One declared parameter, as read from params.yaml.
#[derive(Clone, Copy, Debug)]
pub struct ParamDecl<'a> {
    pub name: &'a str,
    /// The package `type`: string (default), integer, number, boolean, array, map.
    pub kind: &'a str,
    pub default: Option<&'a serde_json::Value>,
}

#[derive(thiserror::Error, Debug, PartialEq)]
pub enum ParamsError {
    #[error("parameter {name}: value of type {kind} is not valid YAML: {reason}")]
    BadYaml { name: String, kind: String, reason: String },
    #[error("parameter {name}: value of type {kind} must be a YAML {kind}, got: {value}")]
    WrongShape { name: String, kind: String, value: String },
}

/// JSON numbers become float64, as json.Unmarshal into interface{} does.
fn floatify(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Number(n) => serde_json::Number::from_f64(n.as_f64().unwrap_or(0.0)).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(floatify).collect()),
        serde_json::Value::Object(o) => serde_json::Value::Object(o.into_iter().map(|(k, v)| (k, floatify(v))).collect()),
        other => other,
    }
}

/// KUDO's WrapParamValue: the string form a default takes in the OperatorVersion.
pub fn wrap_default(kind: &str, default: &serde_json::Value) -> Option<String> {
    match (kind, default) {
        (_, serde_json::Value::Null) => None,
        ("array" | "map", v) => Some(super::to_yaml(v)),
        (_, serde_json::Value::String(s)) => Some(s.clone()),
        (_, v) => Some(gofmt::value_v(&Value::from_json(&floatify(v.clone())))),
    }
}

fn unwrap(name: &str, kind: &str, text: &str) -> Result<serde_json::Value, ParamsError> {
    let parsed: serde_json::Value = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_saphyr::from_str(text).map_err(|e| ParamsError::BadYaml { name: name.into(), kind: kind.into(), reason: e.to_string() })?
    };
    let parsed = floatify(parsed);
    match (kind, parsed) {
        ("map", serde_json::Value::Null) => Ok(serde_json::Value::Object(Default::default())),
        ("array", serde_json::Value::Null) => Ok(serde_json::Value::Array(vec![])),
        ("map", v @ serde_json::Value::Object(_)) | ("array", v @ serde_json::Value::Array(_)) => Ok(v),
        (_, _) => Err(ParamsError::WrongShape { name: name.into(), kind: kind.into(), value: text.into() }),
    }
}

/// Builds the `.Params` map from declarations and instance values (strings, as in
/// `Instance.spec.parameters`); instance values win over defaults.
pub fn params_value(decls: &[ParamDecl<'_>], values: &BTreeMap<String, String>) -> Result<serde_json::Value, ParamsError> {
    let mut out = serde_json::Map::new();
    for (k, v) in values {
        out.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    for d in decls {
        let wrapped = match values.get(d.name) {
            Some(v) => Some(v.clone()),
            None => d.default.and_then(|def| wrap_default(d.kind, def)),
        };
        let v = match d.kind {
            "array" | "map" => unwrap(d.name, d.kind, wrapped.as_deref().unwrap_or(""))?,
            _ => serde_json::Value::String(wrapped.unwrap_or_default()),
        };
        out.insert(d.name.to_string(), v);
    }
    Ok(serde_json::Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_become_strings_like_kudo() {
        let (d1, d2, d3) = (json!(10000), json!(1000000), json!(true));
        let decls = [
            ParamDecl { name: "A", kind: "integer", default: Some(&d1) },
            ParamDecl { name: "B", kind: "integer", default: Some(&d2) },
            ParamDecl { name: "C", kind: "boolean", default: Some(&d3) },
            ParamDecl { name: "D", kind: "string", default: None },
        ];
        let v = params_value(&decls, &BTreeMap::new()).expect("valid");
        assert_eq!(v, json!({"A": "10000", "B": "1e+06", "C": "true", "D": ""}));
    }

    #[test]
    fn arrays_and_maps_are_yaml_decoded() {
        let d = json!([1, "x"]);
        let decls = [ParamDecl { name: "L", kind: "array", default: Some(&d) }, ParamDecl { name: "M", kind: "map", default: None }];
        let mut vals = BTreeMap::new();
        vals.insert("M".to_string(), "a: 1\nb: [x]\n".to_string());
        let v = params_value(&decls, &vals).expect("valid");
        assert_eq!(v, json!({"L": [1.0, "x"], "M": {"a": 1.0, "b": ["x"]}}));
        vals.insert("M".to_string(), "- not a map".to_string());
        let e = params_value(&decls, &vals).expect_err("wrong shape");
        assert!(e.to_string().contains("parameter M"), "{e}");
    }
}
