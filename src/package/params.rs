//! Parameter values: instance values over defaults, validated as KUDO's
//! `Parameter.ValidateValue` does (plus undeclared names and immutable changes), and the
//! `.Params` / full context value templates are rendered with.
//!
//! KUDO's typing, branch by branch (`ValidateParameterValueForType` and its callers in
//! `pkg/apis/kudo/v1beta1/parameter_types_helpers.go`, `convert/parameters.go`,
//! `util/convert/convert.go`, the instance webhook and `ParamsMap`):
//!
//! | type | no default / `default: null` | given value `""` | given value | reaches templates as |
//! |---|---|---|---|---|
//! | none, string | no default: required ones need a value | "not set" | anything | the string; no value is `""` |
//! | integer | as above | "not set" | `strconv.ParseInt` (`-3`, `+42`) | the string |
//! | number | as above | "not set" | `strconv.ParseFloat` (`1e5`, `.5`) | the string |
//! | boolean | as above | "not set" | `strconv.ParseBool` (`T`, `False`, `1`) | the string |
//! | array | default `null\n`: has a default, never "required" | "not set" | YAML null or sequence | parsed; null is nil (an empty list here) |
//! | map | default `null\n`: has a default, never "required" | "not set" | YAML null or mapping | parsed; null is nil |
//! | any, `enum` | | "not set" | one of the (stringified) enum values | |
//!
//! Only a value the instance gives is checked here, as KUDO's webhook does; defaults are
//! checked by `kudo package verify` on their YAML form ([`check_default`]). Every offending
//! parameter is reported, in KUDO's words: `parameter "X" has an invalid value "1.5": type
//! is "integer" but format of "1.5" is invalid: strconv.ParseInt: parsing "1.5": invalid
//! syntax`.

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
            write!(f, "\n  parameter {:?} {}", e.parameter, e.reason)?;
        }
        Ok(())
    }
}

/// Resolves each declared parameter's value (instance value, else default, else none) and
/// validates the instance's values. `old` holds the instance's previous values, when it had
/// any, for the immutability check.
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
        });
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
    let declared = marked_sensitive(declared);
    for p in declared.iter() {
        let given = values.get(&p.name);
        let effective = given.cloned().or_else(|| p.default.clone());
        let required = p.required.unwrap_or(false);
        let value = given.map(String::as_str).unwrap_or("");
        if required && p.default.is_none() && value.is_empty() {
            push(&p.name, "is required but has no value set".to_string());
        }
        if let Some(reason) = check_value(p, value) {
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

/// The declarations with every declaration of a name marked sensitive when any one is: a
/// value is a secret by its name, whichever declaration an error comes from.
fn marked_sensitive(declared: &[Parameter]) -> std::borrow::Cow<'_, [Parameter]> {
    let secret: std::collections::BTreeSet<&str> = declared
        .iter()
        .filter(|p| p.is_sensitive())
        .map(|p| p.name.as_str())
        .collect();
    if declared
        .iter()
        .all(|p| p.is_sensitive() || !secret.contains(p.name.as_str()))
    {
        return std::borrow::Cow::Borrowed(declared);
    }
    std::borrow::Cow::Owned(
        declared
            .iter()
            .map(|p| {
                let mut p = p.clone();
                if secret.contains(p.name.as_str()) {
                    p.sensitive = Some(true);
                }
                p
            })
            .collect(),
    )
}

/// KUDO's `ValidateValue` past the required check: the type and enum check of a value
/// (`""` is "not set" and passes), as the reason following `parameter "X"`.
pub(crate) fn check_value(p: &Parameter, v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let type_error = check_type(p.declared_type, v).err();
    let allowed = p.r#enum.as_ref().filter(|a| !a.iter().any(|a| a == v));
    if p.is_sensitive() {
        // Say what is wrong without repeating the secret.
        return match (type_error, allowed) {
            (Some(_), _) => Some(format!(
                "has an invalid value (sensitive, not shown): type is {:?} but the value is not one",
                p.value_type().as_str()
            )),
            (None, Some(_)) => Some(
                "has an invalid value (sensitive, not shown): it is not one of the allowed values"
                    .to_string(),
            ),
            (None, None) => None,
        };
    }
    if let Some(e) = type_error {
        return Some(format!("has an invalid value {v:?}: {e}"));
    }
    allowed.map(|allowed| {
        format!(
            "has an invalid value {v:?}: value is {v:?}, but only allowed values are [{}]",
            allowed.join(" ")
        )
    })
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "no value".to_string(), |v| format!("{v:?}"))
}

/// `ValidateParameterValueForType` of a string: scalars as Go's strconv parses them; array
/// and map values are YAML that `sigs.k8s.io/yaml` reads into `[]interface{}` /
/// `map[string]interface{}` (so empty and `null` are fine). No declared type: no check.
pub(crate) fn check_type(value_type: Option<ParameterType>, v: &str) -> Result<(), String> {
    let Some(value_type) = value_type else {
        return Ok(());
    };
    let strconv = |func: &str, why: &str| {
        Err(format!(
            "type is {:?} but format of {v:?} is invalid: strconv.{func}: parsing {v:?}: {why}",
            value_type.as_str()
        ))
    };
    match value_type {
        ParameterType::String => Ok(()),
        ParameterType::Integer => match go_parse_int(v) {
            IntParse::Ok => Ok(()),
            IntParse::Range => strconv("ParseInt", "value out of range"),
            IntParse::Syntax => strconv("ParseInt", "invalid syntax"),
        },
        ParameterType::Number => match go_parse_float(v) {
            Some(f) if f.is_infinite() && !is_inf_spelling(v) => {
                strconv("ParseFloat", "value out of range")
            }
            Some(_) => Ok(()),
            None => strconv("ParseFloat", "invalid syntax"),
        },
        ParameterType::Boolean => {
            if GO_BOOLS.contains(&v) {
                Ok(())
            } else {
                strconv("ParseBool", "invalid syntax")
            }
        }
        ParameterType::Array | ParameterType::Map => {
            let why = match (value_type, parse_yaml_value(v)) {
                (ParameterType::Array, Ok(Value::Null | Value::Array(_)))
                | (ParameterType::Map, Ok(Value::Null | Value::Object(_))) => return Ok(()),
                (_, Ok(other)) => format!("the YAML is {}", kind(&other)),
                (_, Err(e)) => e,
            };
            // KUDO's sentence, then why (KUDO does not say).
            Err(format!(
                "type is {:?}, but format of {v} is invalid ({why})",
                value_type.as_str()
            ))
        }
    }
}

/// `strconv.ParseBool`'s spellings.
const GO_BOOLS: [&str; 12] = [
    "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False",
];

/// `ValidateParameterValueForType` of a default as params.yaml has it (any YAML value, read
/// as `sigs.k8s.io/yaml` does), for `kudo package verify`. One deliberate difference: Go's
/// integer cases never occur there (numbers decode as float64), so KUDO's verifier refuses
/// `type: integer` with `default: 3` (`format of %!s(float64=3) is invalid`) while its
/// install takes it; kudo accepts a whole number. A default is present unless null.
pub fn check_default(value_type: Option<ParameterType>, raw: &Value) -> Result<(), String> {
    let Some(value_type) = value_type else {
        return Ok(());
    };
    let shown = super::convert::go_value_string(raw);
    let format_err = || {
        Err(format!(
            "type is {:?} but format of {shown} is invalid",
            value_type.as_str()
        ))
    };
    match (value_type, raw) {
        (_, Value::String(s)) => check_type(Some(value_type), s),
        (ParameterType::String, _) => {
            Err(format!("type is \"string\" but format is invalid: {shown}"))
        }
        (ParameterType::Integer, Value::Number(n)) if whole(n) => Ok(()),
        (ParameterType::Number, Value::Number(_)) => Ok(()),
        (ParameterType::Boolean, Value::Bool(_)) => Ok(()),
        (ParameterType::Integer | ParameterType::Number | ParameterType::Boolean, _) => {
            format_err()
        }
        (ParameterType::Array, Value::Array(_)) => Ok(()),
        (ParameterType::Array, _) => Err(format!(
            "type is \"array\" but value {shown} is not an array"
        )),
        (ParameterType::Map, Value::Object(_)) => Ok(()),
        (ParameterType::Map, _) => Err(format!("type is \"map\" but value {shown} is not a map")),
    }
}

fn whole(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// What kudo accepts in a default but is worth a word: a number reaches templates as Go's
/// `%v` of a float64 (`1000000` is `1e+06`); an array or map default written as a YAML
/// string is stored quoted, so templates never see a list or map (KUDO's renderer fails on
/// the array, the map is a string).
pub fn default_warnings(value_type: Option<ParameterType>, raw: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(t @ (ParameterType::Array | ParameterType::Map)), Value::String(s)) =
        (value_type, raw)
    {
        out.push(format!(
                "the default {s:?} is a YAML string, which is stored quoted: templates get {} (write the {} itself, or leave the default out for no value)",
                if t == ParameterType::Array {
                    "a render error instead of a list, as with KUDO"
                } else {
                    "that string, not a map"
                },
                if t == ParameterType::Array { "list" } else { "map" },
            ));
    }
    if let Value::Number(n) = raw
        && !matches!(value_type, Some(ParameterType::Array | ParameterType::Map))
    {
        let go = super::convert::go_value_string(raw);
        if go != n.to_string() {
            out.push(format!(
                "the YAML number {n} reaches templates as {go:?} (Go prints YAML numbers as floats); quote it to keep its digits"
            ));
        }
    }
    out
}

enum IntParse {
    Ok,
    Range,
    Syntax,
}

/// `strconv.ParseInt(v, 10, 64)`: optional sign, decimal digits, fits in 64 bits.
fn go_parse_int(v: &str) -> IntParse {
    let digits = v.strip_prefix(['+', '-']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        IntParse::Syntax
    } else if v.parse::<i64>().is_ok() {
        IntParse::Ok
    } else {
        IntParse::Range
    }
}

/// `strconv.ParseFloat(v, 64)`, close enough: Rust accepts the same decimal and
/// inf/NaN spellings; Go's hex floats and `_` separators are not accepted.
fn go_parse_float(v: &str) -> Option<f64> {
    v.parse::<f64>().ok()
}

fn is_inf_spelling(v: &str) -> bool {
    let t = v.strip_prefix(['+', '-']).unwrap_or(v).to_ascii_lowercase();
    t == "inf" || t == "infinity"
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
/// `sigs.k8s.io/yaml` does (numbers float64). An array with no value (none, `""` or `null`)
/// is nil to KUDO's templates: an empty list here prints `[]`, is false in `if` and empty in
/// `range` as nil is. A map value is any YAML (KUDO reads it into `interface{}`); none is nil.
/// An array value that is not a YAML sequence fails, as KUDO's `ToYAMLArray` does.
pub fn params_value(
    declared: &[Parameter],
    resolved: &BTreeMap<String, Option<String>>,
) -> Result<Value, ParamErrors> {
    let mut params = Map::new();
    let mut errors = Vec::new();
    let declared = marked_sensitive(declared);
    let mut names: Vec<&Parameter> = declared.iter().collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    for p in names {
        let text = resolved
            .get(&p.name)
            .cloned()
            .unwrap_or_else(|| p.default.clone())
            .unwrap_or_default();
        let value_type = p.value_type();
        let parsed = match value_type {
            ParameterType::Array | ParameterType::Map => parse_yaml_value(&text),
            _ => {
                params.insert(p.name.clone(), Value::String(text));
                continue;
            }
        };
        let reason = match (value_type, parsed) {
            (ParameterType::Array, Ok(Value::Null)) => {
                params.insert(p.name.clone(), Value::Array(vec![]));
                continue;
            }
            (ParameterType::Array, Ok(other)) if !other.is_array() => format!(
                "has a value KUDO's renderer cannot read as an array: the YAML is {}",
                kind(&other)
            ),
            (_, Ok(v)) => {
                params.insert(p.name.clone(), go_json_form(v));
                continue;
            }
            (_, Err(_)) if p.is_sensitive() => {
                "has a value (sensitive, not shown) that is not valid YAML".to_string()
            }
            (_, Err(e)) => format!("has a value that is not valid YAML: {e}"),
        };
        errors.push(ParamError {
            parameter: p.name.clone(),
            reason,
        });
    }
    if errors.is_empty() {
        Ok(Value::Object(params))
    } else {
        Err(ParamErrors(errors))
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
            declared_type: Some(ty),
            default: default.map(str::to_string),
            required: Some(true),
            ..Default::default()
        }
    }

    /// Found by `tests/fuzz.rs` (`fuzz_parameter_validation`): a name declared twice, once
    /// sensitive, showed its value in the other declaration's type error. `kudo package
    /// verify` refuses such a package, but the rule holds for any input.
    #[test]
    fn a_name_is_sensitive_if_any_declaration_of_it_is() {
        let secret = "[[not-an-int]]";
        let mut a = param("TOKEN", ParameterType::String, None);
        a.sensitive = Some(true);
        let b = param("TOKEN", ParameterType::Integer, None);
        let err = resolve_parameters(&[a.clone(), b.clone()], &values(&[("TOKEN", secret)]), None)
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("sensitive, not shown") && !err.contains(secret),
            "{err}"
        );
        let all = [("TOKEN".to_string(), Some(secret.to_string()))].into();
        if let Err(e) = params_value(&[b.clone(), a], &all) {
            assert!(!e.to_string().contains(secret), "{e}");
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
        // KUDO's words (`ValidateValue`), with why an array or map is not one appended.
        assert_eq!(
            by_name["INT"],
            r#"has an invalid value "1.5": type is "integer" but format of "1.5" is invalid: strconv.ParseInt: parsing "1.5": invalid syntax"#
        );
        assert_eq!(
            by_name["NUM"],
            r#"has an invalid value "many": type is "number" but format of "many" is invalid: strconv.ParseFloat: parsing "many": invalid syntax"#
        );
        assert_eq!(
            by_name["BOOL"],
            r#"has an invalid value "yes": type is "boolean" but format of "yes" is invalid: strconv.ParseBool: parsing "yes": invalid syntax"#
        );
        assert_eq!(
            by_name["ARR"],
            r#"has an invalid value "a: b": type is "array", but format of a: b is invalid (the YAML is a mapping)"#
        );
        assert_eq!(
            by_name["MAP"],
            r#"has an invalid value "[1, 2]": type is "map", but format of [1, 2] is invalid (the YAML is a sequence)"#
        );
        assert_eq!(
            by_name["ENUM"],
            r#"has an invalid value "c": value is "c", but only allowed values are [a b]"#
        );
        assert_eq!(by_name["NEEDED"], "is required but has no value set");
        assert!(by_name["FIXED"].contains("immutable"), "{errs}");
        assert!(by_name["UNKNOWN"].contains("not declared"), "{errs}");
        let text = errs.to_string();
        for name in [
            "INT", "NUM", "BOOL", "ARR", "MAP", "ENUM", "NEEDED", "FIXED", "UNKNOWN",
        ] {
            assert!(text.contains(&format!("parameter {name:?}")), "{text}");
        }
        assert!(
            text.contains("parameter \"NEEDED\" is required but has no value set"),
            "{text}"
        );
    }

    fn typed(name: &str, ty: Option<ParameterType>, default: Option<&str>) -> Parameter {
        Parameter {
            name: name.to_string(),
            declared_type: ty,
            default: default.map(str::to_string),
            required: Some(true),
            ..Default::default()
        }
    }

    /// (case, type, default as stored in the OperatorVersion, given value, outcome)
    type Row<'a> = (
        &'a str,
        Option<ParameterType>,
        Option<&'a str>,
        Option<&'a str>,
        Result<(), String>,
    );

    /// `ValidateValue` (instance webhook) case by case: type × {no default, `null`
    /// default, value `""`, scalar as string, wrong type, enum}. `Ok` rows must resolve;
    /// `Err` rows give exactly KUDO's reason.
    #[test]
    fn instance_values_are_validated_as_kudo_validates_them() {
        use ParameterType::{Array, Boolean, Integer, Map, Number};
        let string = Some(ParameterType::String);
        let too_big = "99999999999999999999";
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("untyped, no default, nothing given", None, None, None, Err("is required but has no value set".into())),
            ("untyped, no default, empty given", None, None, Some(""), Err("is required but has no value set".into())),
            ("untyped takes anything", None, None, Some("{[ not yaml"), Ok(())),
            ("string takes anything", string, None, Some("{["), Ok(())),
            ("string, empty default counts as a default", string, Some(""), None, Ok(())),
            ("integer as string", Some(Integer), None, Some("-3"), Ok(())),
            ("integer with a plus", Some(Integer), None, Some("+42"), Ok(())),
            ("integer, empty given is not set", Some(Integer), Some("3"), Some(""), Ok(())),
            ("integer, bad default is not checked here", Some(Integer), Some("abc"), None, Ok(())),
            ("integer, wrong", Some(Integer), None, Some("1.5"), Err(r#"has an invalid value "1.5": type is "integer" but format of "1.5" is invalid: strconv.ParseInt: parsing "1.5": invalid syntax"#.into())),
            ("integer, too big", Some(Integer), None, Some(too_big), Err(format!(r#"has an invalid value "{too_big}": type is "integer" but format of "{too_big}" is invalid: strconv.ParseInt: parsing "{too_big}": value out of range"#))),
            ("number as string", Some(Number), None, Some("1e5"), Ok(())),
            ("number, leading dot", Some(Number), None, Some(".5"), Ok(())),
            ("number, wrong", Some(Number), None, Some("1,5"), Err(r#"has an invalid value "1,5": type is "number" but format of "1,5" is invalid: strconv.ParseFloat: parsing "1,5": invalid syntax"#.into())),
            ("number, out of range", Some(Number), None, Some("1e400"), Err(r#"has an invalid value "1e400": type is "number" but format of "1e400" is invalid: strconv.ParseFloat: parsing "1e400": value out of range"#.into())),
            ("boolean as string", Some(Boolean), None, Some("True"), Ok(())),
            ("boolean as 0", Some(Boolean), None, Some("0"), Ok(())),
            ("boolean, wrong", Some(Boolean), None, Some("yes"), Err(r#"has an invalid value "yes": type is "boolean" but format of "yes" is invalid: strconv.ParseBool: parsing "yes": invalid syntax"#.into())),
            ("array, no default (converted to null)", Some(Array), Some("null\n"), None, Ok(())),
            ("array, empty given", Some(Array), Some("null\n"), Some(""), Ok(())),
            ("array, null given", Some(Array), Some("null\n"), Some("null"), Ok(())),
            ("array, ~ given", Some(Array), Some("null\n"), Some("~"), Ok(())),
            ("array, flow", Some(Array), None, Some("[80, 443]"), Ok(())),
            ("array, block", Some(Array), None, Some("- a\n- b\n"), Ok(())),
            ("array, a scalar", Some(Array), None, Some("foo"), Err(r#"has an invalid value "foo": type is "array", but format of foo is invalid (the YAML is a string)"#.into())),
            ("array, a mapping", Some(Array), None, Some("a: b"), Err(r#"has an invalid value "a: b": type is "array", but format of a: b is invalid (the YAML is a mapping)"#.into())),
            ("map, no default (converted to null)", Some(Map), Some("null\n"), None, Ok(())),
            ("map, null given", Some(Map), Some("null\n"), Some("null"), Ok(())),
            ("map, a mapping", Some(Map), None, Some("a: 1\nb: [x]"), Ok(())),
            ("map, a sequence", Some(Map), None, Some("[1]"), Err(r#"has an invalid value "[1]": type is "map", but format of [1] is invalid (the YAML is a sequence)"#.into())),
            ("map, a number", Some(Map), None, Some("3"), Err(r#"has an invalid value "3": type is "map", but format of 3 is invalid (the YAML is a number)"#.into())),
        ];
        for (case, ty, default, given, want) in rows {
            let p = typed("P", ty, default);
            let values: BTreeMap<String, String> = given
                .map(|g| BTreeMap::from([("P".to_string(), g.to_string())]))
                .unwrap_or_default();
            let got = resolve_parameters(std::slice::from_ref(&p), &values, None)
                .map(|_| ())
                .map_err(|e| {
                    assert_eq!(e.0.len(), 1, "{case}: {e}");
                    e.0[0].reason.clone()
                });
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn enum_values_are_compared_as_strings_after_the_type_check() {
        let allowed = Some(vec!["1".to_string(), "2".to_string()]);
        let p = Parameter {
            r#enum: allowed,
            ..typed("E", Some(ParameterType::Integer), Some("1"))
        };
        let check = |v: &str| {
            resolve_parameters(
                std::slice::from_ref(&p),
                &BTreeMap::from([("E".to_string(), v.to_string())]),
                None,
            )
            .map(|_| ())
            .map_err(|e| e.0[0].reason.clone())
        };
        assert_eq!(check("2"), Ok(()));
        assert_eq!(check(""), Ok(()), "empty is not set: the default applies");
        assert_eq!(
            check("3"),
            Err(
                r#"has an invalid value "3": value is "3", but only allowed values are [1 2]"#
                    .into()
            )
        );
        // The type check comes first, as in KUDO.
        assert!(check("x").expect_err("not an integer").contains("ParseInt"));
        // "02" parses as an integer but is not the string "2".
        assert!(check("02").is_err());
    }

    /// `ParamsMap` → `.Params`: what a template gets for each type with no value, an empty
    /// value and a value.
    #[test]
    fn templates_get_what_kudo_templates_get() {
        use ParameterType::*;
        use serde_json::json;
        #[rustfmt::skip]
        let rows: Vec<(&str, Option<ParameterType>, Option<&str>, Value)> = vec![
            ("untyped, none", None, None, json!("")),
            ("integer, as text", Some(Integer), Some("3"), json!("3")),
            ("boolean, as text", Some(Boolean), Some("true"), json!("true")),
            ("array, none", Some(Array), None, json!([])),
            ("array, empty", Some(Array), Some(""), json!([])),
            ("array, null (no default)", Some(Array), Some("null\n"), json!([])),
            ("array, values (numbers float64)", Some(Array), Some("[80, a]"), json!([80.0, "a"])),
            ("map, none", Some(Map), None, Value::Null),
            ("map, null (no default)", Some(Map), Some("null\n"), Value::Null),
            ("map, values", Some(Map), Some("b: 2\na: x\n"), json!({"a": "x", "b": 2.0})),
            // KUDO reads a map value into interface{}: any YAML passes through.
            ("map, a scalar", Some(Map), Some("foo"), json!("foo")),
        ];
        for (case, ty, text, want) in rows {
            let p = typed("P", ty, None);
            let resolved = BTreeMap::from([("P".to_string(), text.map(str::to_string))]);
            let params = params_value(std::slice::from_ref(&p), &resolved)
                .unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(params["P"], want, "{case}");
        }
        // An array default written as a YAML string (stored quoted) is not a list: KUDO's
        // renderer fails on it, and so does this.
        let p = typed("P", Some(Array), None);
        let resolved = BTreeMap::from([("P".to_string(), Some("''\n".to_string()))]);
        let e = params_value(std::slice::from_ref(&p), &resolved).expect_err("a string");
        assert!(e.0[0].reason.contains("the YAML is a string"), "{e}");
    }

    /// `ValidateDefault` on a default as params.yaml has it (numbers are float64 to KUDO).
    #[test]
    fn defaults_are_checked_on_their_yaml_form() {
        use ParameterType::{Array, Boolean, Integer, Map, Number};
        let string = Some(ParameterType::String);
        use serde_json::json;
        #[rustfmt::skip]
        let rows: Vec<(Option<ParameterType>, Value, Result<(), String>)> = vec![
            (None, json!(3), Ok(())),
            (None, json!([1]), Ok(())),
            (string, json!("x"), Ok(())),
            (string, json!(3), Err(r#"type is "string" but format is invalid: 3"#.into())),
            (Some(Integer), json!("3"), Ok(())),
            // KUDO refuses this (float64); kudo accepts a whole number and warns.
            (Some(Integer), json!(3), Ok(())),
            (Some(Integer), json!(3.5), Err(r#"type is "integer" but format of 3.5 is invalid"#.into())),
            (Some(Integer), json!(""), Err(r#"type is "integer" but format of "" is invalid: strconv.ParseInt: parsing "": invalid syntax"#.into())),
            (Some(Number), json!(0.5), Ok(())),
            (Some(Number), json!("0.5"), Ok(())),
            (Some(Number), json!(true), Err(r#"type is "number" but format of true is invalid"#.into())),
            (Some(Boolean), json!(true), Ok(())),
            (Some(Boolean), json!("false"), Ok(())),
            (Some(Boolean), json!(1), Err(r#"type is "boolean" but format of 1 is invalid"#.into())),
            (Some(Array), json!([80, 443]), Ok(())),
            (Some(Array), json!("[a, b]"), Ok(())),
            (Some(Array), json!(""), Ok(())),
            (Some(Array), json!({"a": 1}), Err(r#"type is "array" but value map[a:1] is not an array"#.into())),
            (Some(Array), json!("a: b"), Err(r#"type is "array", but format of a: b is invalid (the YAML is a mapping)"#.into())),
            (Some(Map), json!({"a": 1}), Ok(())),
            (Some(Map), json!([1]), Err(r#"type is "map" but value [1] is not a map"#.into())),
        ];
        for (ty, raw, want) in rows {
            assert_eq!(check_default(ty, &raw), want, "{ty:?} {raw}");
        }
        assert!(default_warnings(Some(Integer), &json!(3)).is_empty());
        let big = default_warnings(None, &json!(1000000));
        assert!(big.len() == 1 && big[0].contains("\"1e+06\""), "{big:?}");
        assert!(default_warnings(Some(Array), &json!("")).len() == 1);
        assert!(default_warnings(Some(Array), &Value::Null).is_empty());
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
