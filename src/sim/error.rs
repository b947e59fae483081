//! Errors of the simulated API, each rendered as the `Status` object the real API server
//! would return (same code, reason, message shape and `details.causes`).

use serde_json::{Value, json};

/// One field-level cause of a 422 Invalid (or a 409 apply conflict).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// e.g. `FieldValueRequired`, `FieldValueInvalid`, `FieldManagerConflict`.
    pub reason: &'static str,
    pub message: String,
    /// Path of the field, e.g. `metadata.name` or `spec.template.spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".to_string(),
            field: field.into(),
        }
    }

    pub fn invalid(field: impl Into<String>, value: &Value, why: impl AsRef<str>) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {}", display_value(value), why.as_ref()),
            field: field.into(),
        }
    }

    pub fn unsupported(field: impl Into<String>, value: &Value, allowed: &[&str]) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: {}",
                display_value(value),
                allowed.join(", ")
            ),
            field: field.into(),
        }
    }

    pub fn type_invalid(field: impl Into<String>, value: &Value, expected: &str) -> Self {
        Cause {
            reason: "FieldValueTypeInvalid",
            message: format!(
                "Invalid value: {}: {field_type} expected",
                display_value(value),
                field_type = expected
            ),
            field: field.into(),
        }
    }

    fn summary(&self) -> String {
        format!("{}: {}", self.field, self.message)
    }
}

fn display_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// An error answered by the simulated API server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("{}{resource} {name:?} not found", group_prefix(group))]
    NotFound {
        group: String,
        resource: String,
        name: String,
    },
    /// A path or resource type the server does not serve (what kubectl reports as
    /// "the server doesn't have a resource type").
    #[error("the server could not find the requested resource")]
    NoResource { path: String },
    #[error("{}{resource} {name:?} already exists", group_prefix(group))]
    AlreadyExists {
        group: String,
        resource: String,
        name: String,
    },
    #[error(
        "Operation cannot be fulfilled on {resource}{} {name:?}: {why}",
        group_suffix(group)
    )]
    Conflict {
        group: String,
        resource: String,
        name: String,
        why: String,
    },
    #[error("Apply failed with {} conflict{}: {}", conflicts.len(), if conflicts.len() == 1 { "" } else { "s" }, conflict_list(conflicts, api_version))]
    ApplyConflict {
        group: String,
        resource: String,
        name: String,
        api_version: String,
        /// (manager, field path)
        conflicts: Vec<(String, String)>,
    },
    #[error(
        "{kind}{} {name:?} is invalid: {}",
        group_suffix(group),
        causes_summary(causes)
    )]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<Cause>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("too old resource version: {requested} ({oldest})")]
    Gone { requested: u64, oldest: u64 },
    #[error("{0}")]
    Forbidden(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Internal(String),
    /// Injected by fault injection (error rate).
    #[error("the server is currently unable to handle the request ({0})")]
    Unavailable(String),
}

fn group_prefix(_group: &str) -> String {
    String::new()
}

fn group_suffix(group: &str) -> String {
    if group.is_empty() {
        String::new()
    } else {
        format!(".{group}")
    }
}

fn conflict_list(conflicts: &[(String, String)], api_version: &str) -> String {
    conflicts
        .iter()
        .map(|(m, f)| format!("conflict with {m:?} using {api_version}: {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn causes_summary(causes: &[Cause]) -> String {
    match causes {
        [one] => one.summary(),
        many => format!(
            "[{}]",
            many.iter()
                .map(Cause::summary)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl SimError {
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        SimError::NotFound {
            group: group.to_string(),
            resource: resource.to_string(),
            name: name.to_string(),
        }
    }

    pub fn code(&self) -> u16 {
        match self {
            SimError::NotFound { .. } | SimError::NoResource { .. } => 404,
            SimError::AlreadyExists { .. }
            | SimError::Conflict { .. }
            | SimError::ApplyConflict { .. } => 409,
            SimError::Invalid { .. } => 422,
            SimError::BadRequest(_) => 400,
            SimError::Gone { .. } => 410,
            SimError::Forbidden(_) => 403,
            SimError::MethodNotAllowed => 405,
            SimError::UnsupportedMediaType(_) => 415,
            SimError::Internal(_) => 500,
            SimError::Unavailable(_) => 503,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            SimError::NotFound { .. } | SimError::NoResource { .. } => "NotFound",
            SimError::AlreadyExists { .. } => "AlreadyExists",
            SimError::Conflict { .. } | SimError::ApplyConflict { .. } => "Conflict",
            SimError::Invalid { .. } => "Invalid",
            SimError::BadRequest(_) => "BadRequest",
            SimError::Gone { .. } => "Expired",
            SimError::Forbidden(_) => "Forbidden",
            SimError::MethodNotAllowed => "MethodNotAllowed",
            SimError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            SimError::Internal(_) => "InternalError",
            SimError::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// The `Status` object the real API server sends for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            SimError::NotFound {
                group,
                resource,
                name,
            }
            | SimError::AlreadyExists {
                group,
                resource,
                name,
            }
            | SimError::Conflict {
                group,
                resource,
                name,
                ..
            } => Some(json!({"name": name, "group": group, "kind": resource})),
            SimError::ApplyConflict {
                group,
                resource,
                name,
                conflicts,
                api_version,
            } => Some(json!({
                "name": name, "group": group, "kind": resource,
                "causes": conflicts.iter().map(|(m, f)| json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {m:?} using {api_version}"),
                    "field": f,
                })).collect::<Vec<_>>(),
            })),
            SimError::Invalid {
                group,
                kind,
                name,
                causes,
            } => Some(json!({
                "name": name, "group": group, "kind": kind,
                "causes": causes.iter().map(|c| json!({
                    "reason": c.reason, "message": c.message, "field": c.field,
                })).collect::<Vec<_>>(),
            })),
            SimError::NoResource { .. } => Some(json!({})),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}
