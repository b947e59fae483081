//! Parameter values: instance values over defaults, validated as KUDO's
//! `Parameter.ValidateValue` does (plus undeclared names and immutable changes), and the
//! `.Params` / full context value templates are rendered with.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use crate::api::{Parameter, ParameterType};

/// One offending parameter and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub parameter: String,
    pub reason: String,
}

/// Every parameter problem found, reported together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParamErrors(pub Vec<ParamError>);

impl fmt::Display for ParamErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} invalid parameter value(s):", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  parameter {:?}: {}", e.parameter, e.reason)?;
        }
        Ok(())
    }
}

/// Resolves each declared parameter's value (instance value, else default, else none) and
/// validates them all. `old` holds the instance's previous values, when it had any, for the
/// immutability check.
pub fn resolve_parameters(
    declared: &[Parameter],
    values: &BTreeMap<String, String>,
    old: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, Option<String>>, ParamErrors> {
    let mut errors = Vec::new();
    let mut push = |parameter: &str, reason: String| {
        errors.push(ParamError {
            parameter: parameter.to_string(),
            reason,
        })
    };
    for name in values.keys() {
        if !declared.iter().any(|p| &p.name == name) {
            push(
                name,
                "is not declared by the operator's params.yaml".to_string(),
            );
        }
    }
    let mut resolved = BTreeMap::new();
    for p in declared {
        let given = values.get(&p.name);
        let effective = given.cloned().or_else(|| p.default.clone());
        let required = p.required.unwrap_or(false);
        let value = given.map(String::as_str).unwrap_or("");
        if required && p.default.is_none() && value.is_empty() {
            push(&p.name, "is required but has no value set".to_string());
        }
        if let Some(reason) = effective.as_deref().and_then(|v| check_value(p, v)) {
            push(&p.name, reason);
        }
        if p.immutable == Some(true)
            && let Some(old) = old
        {
            let before = old.get(&p.name).cloned().or_else(|| p.default.clone());
            if before != effective {
                let reason = if p.is_sensitive() {
                    "is immutable and cannot change (sensitive, values not shown)".to_string()
                } else {
                    format!(
                        "is immutable and cannot change from {} to {}",
                        show(before.as_deref()),
                        show(effective.as_deref())
                    )
                };
                push(&p.name, reason);
            }
        }
        resolved.insert(p.name.clone(), effective);
    }
    if errors.is_empty() {
        Ok(resolved)
    } else {
        Err(ParamErrors(errors))
    }
}

/// Type and enum check of one non-empty value (empty values are "not set" for KUDO).
pub(crate) fn check_value(p: &Parameter, v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    if p.is_sensitive() {
        // Say what is wrong without repeating the secret.
        return match (check_type(p.value_type, v), &p.r#enum) {
            (Err(_), _) => Some(format!(
                "value (sensitive, not shown) is not a valid {}",
                p.value_type.as_str()
            )),
            (Ok(()), Some(allowed)) if !allowed.iter().any(|a| a == v) => {
                Some("value (sensitive, not shown) is not one of the allowed values".to_string())
            }
            _ => None,
        };
    }
    if let Err(reason) = check_type(p.value_type, v) {
        return Some(format!("value {v:?} is invalid: {reason}"));
    }
    match &p.r#enum {
        Some(allowed) if !allowed.iter().any(|a| a == v) => Some(format!(
            "value {v:?} is not one of the allowed values {allowed:?}"
        )),
        _ => None,
    }
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "no value".to_string(), |v| format!("{v:?}"))
}

/// Type checks as Go's strconv does for scalars; array and map values must be YAML of
/// that shape.
fn check_type(value_type: ParameterType, v: &str) -> Result<(), String> {
    let ok = match value_type {
        ParameterType::String => true,
        ParameterType::Integer => is_go_int(v),
        ParameterType::Number => is_go_float(v),
        ParameterType::Boolean => matches!(
            v,
            "1" | "t"
                | "T"
                | "TRUE"
                | "true"
                | "True"
                | "0"
                | "f"
                | "F"
                | "FALSE"
                | "false"
                | "False"
        ),
        ParameterType::Array => {
            return match parse_yaml_value(v) {
                Ok(Value::Array(_)) => Ok(()),
                Ok(other) => Err(format!(
                    "type is \"array\" but the YAML is {}",
                    kind(&other)
                )),
                Err(e) => Err(format!("type is \"array\" but it is not valid YAML: {e}")),
            };
        }
        ParameterType::Map => {
            return match parse_yaml_value(v) {
                Ok(Value::Object(_)) => Ok(()),
                Ok(other) => Err(format!("type is \"map\" but the YAML is {}", kind(&other))),
                Err(e) => Err(format!("type is \"map\" but it is not valid YAML: {e}")),
            };
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!("type is {:?}", value_type.as_str()))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "a mapping",
    }
}

/// `strconv.ParseInt(v, 10, 64)`: optional sign, decimal digits, fits in 64 bits.
fn is_go_int(v: &str) -> bool {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && v.parse::<i64>().is_ok()
}

/// `strconv.ParseFloat(v, 64)`, close enough: Rust accepts the same decimal and
/// inf/NaN spellings; Go's hex floats and `_` separators are not accepted.
fn is_go_float(v: &str) -> bool {
    v.parse::<f64>().is_ok()
}

/// Events YAML aliases may replay in one parameter value. saphyr's default (1,000,000)
/// lets a few hundred bytes of nested aliases take seconds to validate (found by
/// `tests/fuzz.rs`); parameter values are small and rarely use aliases at all.
pub const MAX_ALIAS_REPLAYED_EVENTS: usize = 10_000;

fn parse_yaml_value(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let options = serde_saphyr::options! {
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_REPLAYED_EVENTS,
        },
    };
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| e.to_string())
}

/// A value as Go's `json.Unmarshal` into `interface{}` leaves it: every number a float64,
/// maps with sorted keys (the order Go's templates and yaml.v2 see them in).
fn go_json_form(value: Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.into_iter().map(go_json_form).collect()),
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, go_json_form(v)))
                    .collect(),
            )
        }
        other => other,
    }
}

/// The `.Params` value (KUDO's `ParamsMap`): every declared parameter; scalars are strings
/// whatever their type, no value is `""`; array and map values are parsed from YAML, as
/// `sigs.k8s.io/yaml` does (numbers float64; no value gives an empty list / nil map).
pub fn params_value(
    declared: &[Parameter],
    resolved: &BTreeMap<String, Option<String>>,
) -> Result<Value, ParamErrors> {
    let mut params = Map::new();
    let mut errors = Vec::new();
    let mut names: Vec<&Parameter> = declared.iter().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    for p in names {
        let text = resolved
            .get(&p.name)
            .cloned()
            .unwrap_or_else(|| p.default.clone())
            .unwrap_or_default();
        let value = match p.value_type {
            ParameterType::Array | ParameterType::Map => match parse_yaml_value(&text) {
                Ok(Value::Null) if p.value_type == ParameterType::Array => Value::Array(vec![]),
                Ok(v @ (Value::Null | Value::Object(_))) if p.value_type == ParameterType::Map => {
                    go_json_form(v)
                }
                Ok(v @ Value::Array(_)) if p.value_type == ParameterType::Array => go_json_form(v),
                Ok(other) => {
                    errors.push(ParamError {
                        parameter: p.name.clone(),
                        reason: format!(
                            "type is {:?} but the YAML is {}",
                            p.value_type.as_str(),
                            kind(&other)
                        ),
                    });
                    continue;
                }
                Err(e) => {
                    let reason = if p.is_sensitive() {
                        "value (sensitive, not shown) is not valid YAML".to_string()
                    } else {
                        format!("value is not valid YAML: {e}")
                    };
                    errors.push(ParamError {
                        parameter: p.name.clone(),
                        reason,
                    });
                    continue;
                }
            },
            _ => Value::String(text),
        };
        params.insert(p.name.clone(), value);
    }
    if errors.is_empty() {
        Ok(Value::Object(params))
    } else {
        Err(ParamErrors(errors))
    }
}

/// Everything a template sees besides `.Params`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderContext {
    pub instance_name: String,
    pub namespace: String,
    pub operator_name: String,
    pub operator_version: String,
    pub app_version: String,
    pub plan_name: String,
    pub phase_name: String,
    pub step_name: String,
    pub pipes: BTreeMap<String, String>,
}

/// The template data: `.Params .Name .Namespace .OperatorName .OperatorVersion .AppVersion
/// .PlanName .PhaseName .StepName .Pipes`.
pub fn context_value(ctx: &RenderContext, params: Value) -> Value {
    let pipes: Map<String, Value> = ctx
        .pipes
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "AppVersion": ctx.app_version,
        "Name": ctx.instance_name,
        "Namespace": ctx.namespace,
        "OperatorName": ctx.operator_name,
        "OperatorVersion": ctx.operator_version,
        "Params": params,
        "PhaseName": ctx.phase_name,
        "Pipes": pipes,
        "PlanName": ctx.plan_name,
        "StepName": ctx.step_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nested aliases ("billion laughs"): 10 × 10^4 elements from ~400 bytes.
    fn alias_bomb(levels: usize) -> String {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..=levels {
            let p = i - 1;
            let refs = vec![format!("*a{p}"); 10].join(", ");
            s.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        s
    }

    #[test]
    fn alias_amplification_in_a_value_is_refused() {
        let p = param("cfg", ParameterType::Map, None);
        let values = BTreeMap::from([("cfg".to_string(), alias_bomb(4))]);
        let errors = match resolve_parameters(std::slice::from_ref(&p), &values, None) {
            Ok(_) => panic!("an alias bomb was accepted"),
            Err(e) => e,
        };
        assert_eq!(errors.0.len(), 1);
        assert!(
            errors.0[0].reason.contains("alias"),
            "{}",
            errors.0[0].reason
        );
        // A few aliases stay fine.
        let values = BTreeMap::from([("cfg".to_string(), alias_bomb(1))]);
        assert!(resolve_parameters(std::slice::from_ref(&p), &values, None).is_ok());
    }

    fn param(name: &str, ty: ParameterType, default: Option<&str>) -> Parameter {
        Parameter {
            name: name.to_string(),
            value_type: ty,
            default: default.map(str::to_string),
            required: Some(true),
            ..Default::default()
        }
    }

    #[test]
    fn sensitive_values_never_appear_in_errors() {
        let secret = "s3cr3t-not-an-int";
        let mut p = param("TOKEN", ParameterType::Integer, None);
        p.sensitive = Some(true);
        p.immutable = Some(true);
        p.r#enum = Some(vec!["1".into()]);
        let old = values(&[("TOKEN", "old-secret-value")]);
        let err = resolve_parameters(&[p.clone()], &values(&[("TOKEN", secret)]), Some(&old))
            .expect_err("refused")
            .to_string();
        assert!(err.contains("parameter \"TOKEN\""), "{err}");
        assert!(err.contains("sensitive, not shown"), "{err}");
        assert!(
            !err.contains(secret) && !err.contains("old-secret-value"),
            "{err}"
        );
        // Without the mark, the value is shown (so the test above can fail).
        p.sensitive = None;
        let err = resolve_parameters(&[p], &values(&[("TOKEN", secret)]), None)
            .expect_err("refused")
            .to_string();
        assert!(err.contains(secret), "{err}");
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn instance_values_win_over_defaults() {
        let declared = vec![
            param("A", ParameterType::String, Some("a")),
            param("B", ParameterType::Integer, Some("1")),
            Parameter {
                required: Some(false),
                ..param("C", ParameterType::String, None)
            },
        ];
        let resolved = resolve_parameters(&declared, &values(&[("B", "7")]), None).expect("valid");
        assert_eq!(resolved["A"].as_deref(), Some("a"));
        assert_eq!(resolved["B"].as_deref(), Some("7"));
        assert_eq!(resolved["C"], None);
    }

    #[test]
    fn bad_parameters_are_all_listed_together() {
        let declared = vec![
            param("INT", ParameterType::Integer, Some("1")),
            param("NUM", ParameterType::Number, Some("1.5")),
            param("BOOL", ParameterType::Boolean, Some("true")),
            param("ARR", ParameterType::Array, Some("[]")),
            param("MAP", ParameterType::Map, Some("{}")),
            Parameter {
                r#enum: Some(vec!["a".to_string(), "b".to_string()]),
                ..param("ENUM", ParameterType::String, Some("a"))
            },
            param("NEEDED", ParameterType::String, None),
            Parameter {
                immutable: Some(true),
                ..param("FIXED", ParameterType::String, Some("one"))
            },
        ];
        let given = values(&[
            ("INT", "1.5"),
            ("NUM", "many"),
            ("BOOL", "yes"),
            ("ARR", "a: b"),
            ("MAP", "[1, 2]"),
            ("ENUM", "c"),
            ("FIXED", "two"),
            ("UNKNOWN", "x"),
        ]);
        let old = values(&[("FIXED", "one")]);
        let errs = resolve_parameters(&declared, &given, Some(&old)).expect_err("invalid");
        let by_name: BTreeMap<&str, &str> = errs
            .0
            .iter()
            .map(|e| (e.parameter.as_str(), e.reason.as_str()))
            .collect();
        assert_eq!(by_name.len(), 9, "{errs}");
        assert!(by_name["INT"].contains("\"integer\""), "{errs}");
        assert!(by_name["NUM"].contains("\"number\""), "{errs}");
        assert!(by_name["BOOL"].contains("\"boolean\""), "{errs}");
        assert!(by_name["ARR"].contains("\"array\"") && by_name["ARR"].contains("mapping"));
        assert!(by_name["MAP"].contains("\"map\"") && by_name["MAP"].contains("sequence"));
        assert!(
            by_name["ENUM"].contains("not one of the allowed values"),
            "{errs}"
        );
        assert!(by_name["NEEDED"].contains("required"), "{errs}");
        assert!(by_name["FIXED"].contains("immutable"), "{errs}");
        assert!(by_name["UNKNOWN"].contains("not declared"), "{errs}");
        let text = errs.to_string();
        for name in [
            "INT", "NUM", "BOOL", "ARR", "MAP", "ENUM", "NEEDED", "FIXED", "UNKNOWN",
        ] {
            assert!(text.contains(&format!("parameter {name:?}")), "{text}");
        }
    }

    #[test]
    fn go_scalar_spellings_are_accepted() {
        let declared = vec![
            param("I", ParameterType::Integer, None),
            param("N", ParameterType::Number, None),
            param("B", ParameterType::Boolean, None),
        ];
        for (i, n, b) in [("-3", "1e5", "T"), ("+42", ".5", "False"), ("0", "-2", "1")] {
            resolve_parameters(&declared, &values(&[("I", i), ("N", n), ("B", b)]), None)
                .expect("valid Go spellings");
        }
    }

    #[test]
    fn immutable_unchanged_is_fine() {
        let declared = vec![Parameter {
            immutable: Some(true),
            ..param("FIXED", ParameterType::String, Some("one"))
        }];
        let old = values(&[]);
        resolve_parameters(&declared, &values(&[("FIXED", "one")]), Some(&old))
            .expect("same effective value");
    }

    #[test]
    fn params_value_types() {
        let declared = vec![
            param("S", ParameterType::String, Some("x")),
            param("I", ParameterType::Integer, Some("3")),
            param("B", ParameterType::Boolean, Some("true")),
            param("ARR", ParameterType::Array, Some("[80, 443]")),
            param("MAP", ParameterType::Map, Some("b: 2\na: one\n")),
            param("NONE", ParameterType::String, None),
            param("NOARR", ParameterType::Array, None),
        ];
        let resolved = resolve_parameters(&declared, &values(&[("NONE", "")]), None);
        // NONE is required without default: resolution fails, .Params is still buildable.
        assert!(resolved.is_err());
        let resolved: BTreeMap<String, Option<String>> = declared
            .iter()
            .map(|p| (p.name.clone(), p.default.clone()))
            .collect();
        let params = params_value(&declared, &resolved).expect("builds");
        assert_eq!(params["S"], "x");
        assert_eq!(params["I"], "3");
        assert_eq!(params["B"], "true");
        assert_eq!(params["NONE"], "");
        assert_eq!(params["NOARR"], serde_json::json!([]));
        let ports = params["ARR"].as_array().expect("array");
        assert!(ports[0].is_f64(), "numbers are float64 as in Go: {ports:?}");
        assert_eq!(ports[1].as_f64(), Some(443.0));
        let keys: Vec<&String> = params["MAP"].as_object().expect("map").keys().collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn bad_array_value_in_params_value_names_parameter() {
        let declared = vec![param("ARR", ParameterType::Array, Some("a: b"))];
        let resolved = BTreeMap::from([("ARR".to_string(), Some("a: b".to_string()))]);
        let errs = params_value(&declared, &resolved).expect_err("not an array");
        assert_eq!(errs.0[0].parameter, "ARR");
    }

    #[test]
    fn context_has_every_variable() {
        let ctx = RenderContext {
            instance_name: "inst".into(),
            namespace: "default".into(),
            operator_name: "op".into(),
            operator_version: "0.1.0".into(),
            app_version: "1.0".into(),
            plan_name: "deploy".into(),
            phase_name: "main".into(),
            step_name: "everything".into(),
            pipes: BTreeMap::new(),
        };
        let v = context_value(&ctx, serde_json::json!({"A": "x"}));
        for (key, want) in [
            ("Name", "inst"),
            ("Namespace", "default"),
            ("OperatorName", "op"),
            ("OperatorVersion", "0.1.0"),
            ("AppVersion", "1.0"),
            ("PlanName", "deploy"),
            ("PhaseName", "main"),
            ("StepName", "everything"),
        ] {
            assert_eq!(v[key], want, "{key}");
        }
        assert_eq!(v["Params"]["A"], "x");
        assert_eq!(v["Pipes"], serde_json::json!({}));
    }
}
