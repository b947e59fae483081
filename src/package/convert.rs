//! Package → `Operator` + `OperatorVersion`, as KUDO's `convert.FilesToResources` does.

use k8s_openapi::api::core::v1::ObjectReference;
use serde_json::Value;

use super::{Package, PackageError, PackageParameter, Resources};
use crate::api::{
    Operator, OperatorSpec, OperatorVersion, OperatorVersionSpec, Parameter, ParameterType,
};

/// `<operator>-<appVersion>-<operatorVersion>`, the appVersion part omitted when empty.
pub fn operator_version_name(operator: &str, app_version: &str, operator_version: &str) -> String {
    if app_version.is_empty() {
        format!("{operator}-{operator_version}")
    } else {
        format!("{operator}-{app_version}-{operator_version}")
    }
}

pub(super) fn to_resources(package: &Package) -> Result<Resources, PackageError> {
    let file = &package.operator;
    let invalid = |message: String| PackageError::Invalid {
        package: package.source.clone(),
        file: super::OPERATOR_FILE.to_string(),
        message,
    };
    if file.name.is_empty() {
        return Err(invalid("`name` is empty".to_string()));
    }
    if file.operator_version.is_empty() {
        return Err(invalid("`operatorVersion` is empty".to_string()));
    }
    let mut operator = Operator::new(
        &file.name,
        OperatorSpec {
            description: file.description.clone(),
            kudo_version: file.kudo_version.clone(),
            kubernetes_version: file.kubernetes_version.clone(),
            maintainers: file.maintainers.clone(),
            url: file.url.clone(),
            namespace_manifest: file.namespace_manifest.clone(),
        },
    );
    // The typed-CRD opt-in travels to clusters with the Operator (read by `kudo manager`).
    if let Some(crd) = &file.crd {
        let text = serde_json::to_string(crd).map_err(|e| invalid(format!("crd: {e}")))?;
        operator.metadata.annotations = Some(
            [(super::CRD_ANNOTATION.to_string(), text)]
                .into_iter()
                .collect(),
        );
    }
    let parameters = package
        .params
        .parameters
        .iter()
        .map(to_crd_parameter)
        .collect();
    let name = operator_version_name(&file.name, &file.app_version, &file.operator_version);
    let operator_version = OperatorVersion::new(
        &name,
        OperatorVersionSpec {
            operator: ObjectReference {
                name: Some(file.name.clone()),
                kind: Some("Operator".to_string()),
                ..Default::default()
            },
            version: file.operator_version.clone(),
            app_version: file.app_version.clone(),
            templates: package.templates.clone(),
            tasks: file.tasks.clone(),
            parameters,
            plans: file.plans.clone(),
            connection_string: String::new(),
            upgradable_from: Vec::new(),
        },
    );
    Ok(Resources {
        operator,
        operator_version,
    })
}

/// KUDO's `ParametersToCRDType`: `required` defaults to true, defaults and enum values are
/// wrapped into strings.
fn to_crd_parameter(p: &PackageParameter) -> Parameter {
    Parameter {
        name: p.name.clone(),
        display_name: p.display_name.clone(),
        description: p.description.clone(),
        required: Some(p.required.unwrap_or(true)),
        default: wrap_param_value(p.default.as_ref(), p.value_type()),
        trigger: p.trigger.clone(),
        declared_type: p.declared_type,
        immutable: p.immutable,
        sensitive: p.sensitive,
        r#enum: p.r#enum.as_ref().map(|values| {
            values
                .iter()
                .filter_map(|v| wrap_param_value(Some(v), p.value_type()))
                .collect()
        }),
    }
}

/// KUDO's `WrapParamValue`: array and map values become their YAML text (sigs.k8s.io/yaml,
/// so even "no value" becomes `null\n`); every other type becomes Go's `%v` of the value
/// as `sigs.k8s.io/yaml` decoded it (numbers are float64: `1000000` becomes `1e+06`), and
/// no value stays no value.
pub fn wrap_param_value(value: Option<&Value>, value_type: ParameterType) -> Option<String> {
    match value_type {
        ParameterType::Array | ParameterType::Map => {
            let value = value.cloned().unwrap_or(Value::Null);
            Some(yaml_text(&json_number_form(&value)))
        }
        _ => match value {
            None | Some(Value::Null) => None,
            Some(v) => Some(go_value_string(v)),
        },
    }
}

/// The YAML text of a value, as the JSON → yaml.v2 round trip writes it.
fn yaml_text(value: &Value) -> String {
    if value.is_null() {
        return "null\n".to_string();
    }
    let text = crate::template::to_yaml(value);
    if text.ends_with('\n') {
        text
    } else {
        format!("{text}\n")
    }
}

/// Numbers as `json.Marshal` of a float64 and yaml.v2's re-read give them: integral values
/// below 1e21 become integers, others stay floats. Map keys sorted, as Go maps are.
fn json_number_form(value: &Value) -> Value {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e21 && f.abs() < i64::MAX as f64 => {
                Value::from(f as i64)
            }
            _ => value.clone(),
        },
        Value::Array(items) => Value::Array(items.iter().map(json_number_form).collect()),
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), json_number_form(v)))
                    .collect(),
            )
        }
        _ => value.clone(),
    }
}

/// Go's `fmt.Sprintf("%v", v)` of a value decoded by `sigs.k8s.io/yaml` (numbers float64,
/// maps `map[string]interface{}` printed with sorted keys).
pub fn go_value_string(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => go_float_v(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_value_string).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = entries
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", go_value_string(v)))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// Go's `%v` of a float64: shortest digits, exponent form when the exponent is below -4 or
/// at least 6 (`strconv.FormatFloat(f, 'g', -1, 64)`).
fn go_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes an integer exponent");
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_formatting_matches_fmt_v() {
        let cases = [
            (1.0, "1"),
            (8083.0, "8083"),
            (100000.0, "100000"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.25, "0.25"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (1e21, "1e+21"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float_v(f), want, "formatting {f}");
        }
    }

    #[test]
    fn scalar_defaults_become_go_strings() {
        let v = |s: &str| -> Value { serde_saphyr::from_str(s).expect("yaml") };
        assert_eq!(
            wrap_param_value(Some(&v("3")), ParameterType::Integer).as_deref(),
            Some("3")
        );
        assert_eq!(
            wrap_param_value(Some(&v("true")), ParameterType::Boolean).as_deref(),
            Some("true")
        );
        assert_eq!(
            wrap_param_value(Some(&v("2000000")), ParameterType::String).as_deref(),
            Some("2e+06")
        );
        assert_eq!(
            wrap_param_value(Some(&v("\"1Gi\"")), ParameterType::String).as_deref(),
            Some("1Gi")
        );
        assert_eq!(wrap_param_value(None, ParameterType::String), None);
        assert_eq!(
            wrap_param_value(Some(&v("{b: 1, a: [x, z]}")), ParameterType::String).as_deref(),
            Some("map[a:[x z] b:1]")
        );
    }

    #[test]
    fn array_and_map_defaults_become_yaml_text() {
        let v = |s: &str| -> Value { serde_saphyr::from_str(s).expect("yaml") };
        let arr =
            wrap_param_value(Some(&v("[80, 443]")), ParameterType::Array).expect("array default");
        let back: Value = serde_saphyr::from_str(&arr).expect("wrapped array is YAML");
        assert_eq!(back, serde_json::json!([80, 443]));
        let map =
            wrap_param_value(Some(&v("{b: x, a: 1}")), ParameterType::Map).expect("map default");
        assert!(map.find("a:") < map.find("b:"), "keys sorted: {map}");
        assert_eq!(
            wrap_param_value(None, ParameterType::Map).as_deref(),
            Some("null\n")
        );
    }

    #[test]
    fn version_name_omits_empty_app_version() {
        assert_eq!(
            operator_version_name("kafka", "2.5.1", "1.3.3"),
            "kafka-2.5.1-1.3.3"
        );
        assert_eq!(operator_version_name("zk", "", "0.1.0"), "zk-0.1.0");
    }
}
