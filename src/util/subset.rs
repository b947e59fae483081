//! kuttl's partial-object match: an expected object matches a live one when every field it
//! names is present with an equal value. Maps are subsets; lists must have the same length
//! and match element by element (kuttl's `IsSubset`); numbers compare by value, so `2` in
//! YAML matches `2` from the API whatever its JSON representation.

use serde_json::Value;

/// Where and how a live object differs from the expectation.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// JSONPath-like location, e.g. `.status.planStatus.deploy.status`.
    pub path: String,
    pub expected: Value,
    /// `None` when the field is missing.
    pub actual: Option<Value>,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.actual {
            Some(actual) => write!(
                f,
                "{}: expected {}, got {}",
                self.path,
                compact(&self.expected),
                compact(actual)
            ),
            None => write!(
                f,
                "{}: expected {}, field missing",
                self.path,
                compact(&self.expected)
            ),
        }
    }
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        format!("{}…", &s[..s.floor_char_boundary(117)])
    } else {
        s
    }
}

/// Every difference between `expected` (a partial object) and `actual`.
pub fn mismatches(expected: &Value, actual: &Value) -> Vec<Mismatch> {
    let mut out = Vec::new();
    walk("", expected, actual, &mut out);
    out
}

/// `true` when `actual` satisfies the partial object `expected`.
pub fn is_subset(expected: &Value, actual: &Value) -> bool {
    mismatches(expected, actual).is_empty()
}

fn walk(path: &str, expected: &Value, actual: &Value, out: &mut Vec<Mismatch>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, ev) in e {
                let child = format!("{path}.{key}");
                match a.get(key) {
                    Some(av) => walk(&child, ev, av, out),
                    // kuttl treats an expected null as "absent or null".
                    None if ev.is_null() => {}
                    None => out.push(Mismatch {
                        path: child,
                        expected: ev.clone(),
                        actual: None,
                    }),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(Mismatch {
                    path: format!("{path} (length)"),
                    expected: Value::from(e.len()),
                    actual: Some(Value::from(a.len())),
                });
                return;
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                walk(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (Value::Number(e), Value::Number(a)) => {
            if e.as_f64() != a.as_f64() {
                out.push(mismatch(path, expected, actual));
            }
        }
        (e, a) => {
            if e != a {
                out.push(mismatch(path, expected, actual));
            }
        }
    }
}

fn mismatch(path: &str, expected: &Value, actual: &Value) -> Mismatch {
    Mismatch {
        path: if path.is_empty() {
            ".".into()
        } else {
            path.into()
        },
        expected: expected.clone(),
        actual: Some(actual.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_are_subsets() {
        let actual = json!({"metadata": {"name": "a", "uid": "x"}, "spec": {"replicas": 2}});
        assert!(is_subset(&json!({"spec": {"replicas": 2}}), &actual));
        assert!(is_subset(&json!({}), &actual));
        let m = mismatches(&json!({"spec": {"replicas": 3}}), &actual);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].path, ".spec.replicas");
        assert_eq!(m[0].to_string(), ".spec.replicas: expected 3, got 2");
        let m = mismatches(&json!({"status": {"ready": true}}), &actual);
        assert_eq!(
            m[0].to_string(),
            ".status: expected {\"ready\":true}, field missing"
        );
    }

    #[test]
    fn lists_match_element_by_element_with_equal_length() {
        let actual =
            json!({"ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443}]});
        assert!(is_subset(
            &json!({"ports": [{"containerPort": 80}, {"containerPort": 443}]}),
            &actual
        ));
        let m = mismatches(&json!({"ports": [{"containerPort": 80}]}), &actual);
        assert_eq!(m[0].path, ".ports (length)");
        let m = mismatches(
            &json!({"ports": [{"containerPort": 443}, {"containerPort": 80}]}),
            &actual,
        );
        assert_eq!(m[0].path, ".ports[0].containerPort");
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn numbers_compare_by_value_and_types_matter_otherwise() {
        assert!(is_subset(&json!({"n": 2}), &json!({"n": 2.0})));
        assert!(!is_subset(&json!({"n": "2"}), &json!({"n": 2})));
        assert!(!is_subset(&json!({"b": true}), &json!({"b": "true"})));
    }

    #[test]
    fn expected_null_matches_absent() {
        assert!(is_subset(&json!({"a": null}), &json!({})));
        assert!(!is_subset(&json!({"a": null}), &json!({"a": 1})));
    }
}
