//! Errors of the cluster layer, mapped to a small fixed set of categories so that metrics
//! and retry decisions never depend on error strings.

use std::fmt;

/// The bounded category of a cluster error (used as a metric label and for retry decisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The API server could not be reached (connection refused, DNS, TLS, connect timeout).
    Unreachable,
    /// 401: the credentials were rejected.
    Unauthorized,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 404: the object (or its namespace) does not exist.
    NotFound,
    /// 409: stale resourceVersion, already exists, or a field-manager conflict.
    Conflict,
    /// 400/422, or an object refused locally before any request was made.
    Invalid,
    /// The apiVersion/kind is not served by the cluster, even after refreshing discovery.
    UnknownKind,
    /// A request or a wait did not finish within its deadline.
    Timeout,
    /// Anything else (5xx, undecodable responses, configuration problems).
    Other,
    /// An agent cluster whose agent has not renewed its heartbeat within its lease: its
    /// plans may well be running; the control plane cannot see them.
    AgentNotReporting,
}

impl ErrorKind {
    /// Every kind, so metric families can start every category at zero.
    pub const ALL: [ErrorKind; 10] = [
        ErrorKind::Unreachable,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Invalid,
        ErrorKind::UnknownKind,
        ErrorKind::Timeout,
        ErrorKind::Other,
        ErrorKind::AgentNotReporting,
    ];

    /// Every kind's label value.
    pub fn labels() -> [&'static str; 10] {
        Self::ALL.map(ErrorKind::as_str)
    }

    /// Stable lowercase name, suitable as a Prometheus label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Invalid => "invalid",
            ErrorKind::UnknownKind => "unknown-kind",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Other => "other",
            ErrorKind::AgentNotReporting => "agent-not-reporting",
        }
    }

    /// Whether retrying the same request later can succeed without changing the input.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Unreachable
                | ErrorKind::Timeout
                | ErrorKind::Conflict
                | ErrorKind::Other
                | ErrorKind::AgentNotReporting
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field-level cause of a 422 (or 400) response, as the API server reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCause {
    /// JSON path of the offending field, e.g. `spec.replicas`.
    pub field: String,
    /// Machine-readable reason, e.g. `FieldValueInvalid`.
    pub reason: String,
    pub message: String,
}

impl fmt::Display for FieldCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.field.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, "{}: {}", self.field, self.message),
            (false, true) => write!(f, "{}: {}", self.field, self.reason),
            _ => f.write_str(&self.message),
        }
    }
}

fn causes_suffix(causes: &[FieldCause]) -> String {
    if causes.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = causes.iter().map(ToString::to_string).collect();
    format!(" [{}]", parts.join("; "))
}

/// Errors of the cluster layer. Every variant names the cluster, and request errors name the
/// operation and the object.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster {cluster}: cannot read kubeconfig {path}: {reason}")]
    Kubeconfig {
        cluster: String,
        path: String,
        reason: String,
    },
    #[error(
        "cluster {cluster}: context {context:?} not found in kubeconfig {path}; contexts present: {}",
        if present.is_empty() { "(none)".to_string() } else { present.join(", ") }
    )]
    MissingContext {
        cluster: String,
        path: String,
        context: String,
        present: Vec<String>,
    },
    #[error("cluster {cluster}: invalid client configuration: {reason}")]
    Config { cluster: String, reason: String },
    /// The object was refused locally, before any request was sent.
    #[error("cluster {cluster}: object {object} refused before sending: {reason}")]
    BadObject {
        cluster: String,
        object: String,
        reason: String,
    },
    /// A request to the API server failed (or a wait for it timed out).
    #[error(
        "cluster {cluster}: {op} {object}: {kind}: {message}{}",
        causes_suffix(causes)
    )]
    Request {
        cluster: String,
        op: &'static str,
        object: String,
        kind: ErrorKind,
        /// HTTP status code when the server answered.
        code: Option<u16>,
        message: String,
        /// Field causes of 422/400 responses, kept for the user.
        causes: Vec<FieldCause>,
    },
}

impl ClusterError {
    /// The bounded category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClusterError::Kubeconfig { .. }
            | ClusterError::MissingContext { .. }
            | ClusterError::Config { .. } => ErrorKind::Other,
            ClusterError::BadObject { .. } => ErrorKind::Invalid,
            ClusterError::Request { kind, .. } => *kind,
        }
    }

    /// Field causes of a 422/400 response (empty for other errors).
    pub fn causes(&self) -> &[FieldCause] {
        match self {
            ClusterError::Request { causes, .. } => causes,
            _ => &[],
        }
    }

    /// The cluster this error happened on.
    pub fn cluster(&self) -> &str {
        match self {
            ClusterError::Kubeconfig { cluster, .. }
            | ClusterError::MissingContext { cluster, .. }
            | ClusterError::Config { cluster, .. }
            | ClusterError::BadObject { cluster, .. }
            | ClusterError::Request { cluster, .. } => cluster,
        }
    }

    pub(crate) fn request(
        cluster: &str,
        op: &'static str,
        object: impl fmt::Display,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> Self {
        ClusterError::Request {
            cluster: cluster.to_string(),
            op,
            object: object.to_string(),
            kind,
            code: None,
            message: message.into(),
            causes: Vec::new(),
        }
    }

    /// Map a kube client error for `op` on `object` to a categorised error.
    pub(crate) fn from_kube(
        cluster: &str,
        op: &'static str,
        object: impl fmt::Display,
        err: kube::Error,
    ) -> Self {
        let (kind, code, message, causes) = classify(&err);
        ClusterError::Request {
            cluster: cluster.to_string(),
            op,
            object: object.to_string(),
            kind,
            code,
            message,
            causes,
        }
    }
}

/// Category of an HTTP status code returned by the API server.
pub fn kind_of_status(code: u16, reason: &str) -> ErrorKind {
    match code {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        400 | 422 => ErrorKind::Invalid,
        408 | 504 => ErrorKind::Timeout,
        500 if reason == "Timeout" => ErrorKind::Timeout,
        _ => ErrorKind::Other,
    }
}

fn classify(err: &kube::Error) -> (ErrorKind, Option<u16>, String, Vec<FieldCause>) {
    match err {
        kube::Error::Api(status) => {
            let causes = status
                .details
                .as_ref()
                .map(|d| {
                    d.causes
                        .iter()
                        .map(|c| FieldCause {
                            field: c.field.clone(),
                            reason: c.reason.clone(),
                            message: c.message.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let message = if status.message.is_empty() {
                format!("HTTP {} {}", status.code, status.reason)
            } else {
                status.message.clone()
            };
            (
                kind_of_status(status.code, &status.reason),
                Some(status.code),
                message,
                causes,
            )
        }
        kube::Error::Auth(e) => (ErrorKind::Unauthorized, None, e.to_string(), Vec::new()),
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::RustlsTls(_) => {
            let chain = error_chain(err);
            let kind = if is_transport_timeout(err) && !chain.contains("onnect") {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unreachable
            };
            (kind, None, chain, Vec::new())
        }
        kube::Error::Discovery(e) => (ErrorKind::UnknownKind, None, e.to_string(), Vec::new()),
        other => (ErrorKind::Other, None, error_chain(other), Vec::new()),
    }
}

/// All messages of an error's source chain, deduplicated, joined with ": ".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

fn is_transport_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if e.to_string().contains("elapsed") {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::{Status, response::StatusCause, response::StatusDetails};

    #[test]
    fn status_codes_map_to_categories() {
        assert_eq!(kind_of_status(401, ""), ErrorKind::Unauthorized);
        assert_eq!(kind_of_status(403, ""), ErrorKind::Forbidden);
        assert_eq!(kind_of_status(404, ""), ErrorKind::NotFound);
        assert_eq!(kind_of_status(409, ""), ErrorKind::Conflict);
        assert_eq!(kind_of_status(422, ""), ErrorKind::Invalid);
        assert_eq!(kind_of_status(504, ""), ErrorKind::Timeout);
        assert_eq!(kind_of_status(500, "Timeout"), ErrorKind::Timeout);
        assert_eq!(kind_of_status(503, ""), ErrorKind::Other);
    }

    #[test]
    fn invalid_response_keeps_field_causes_and_names_object_and_cluster() {
        let status = Status {
            code: 422,
            reason: "Invalid".into(),
            message: "Deployment.apps \"web\" is invalid".into(),
            details: Some(StatusDetails {
                causes: vec![StatusCause {
                    reason: "FieldValueInvalid".into(),
                    message: "Invalid value: -1".into(),
                    field: "spec.replicas".into(),
                }],
                name: "web".into(),
                group: "apps".into(),
                kind: "deployments".into(),
                uid: String::new(),
                retry_after_seconds: 0,
            }),
            ..Default::default()
        };
        let err = ClusterError::from_kube(
            "prod-eu",
            "apply",
            "apps/v1 Deployment ns/web",
            kube::Error::Api(Box::new(status)),
        );
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert_eq!(err.causes()[0].field, "spec.replicas");
        let msg = err.to_string();
        assert!(msg.contains("prod-eu"), "{msg}");
        assert!(msg.contains("Deployment ns/web"), "{msg}");
        assert!(msg.contains("spec.replicas: Invalid value: -1"), "{msg}");
    }

    #[test]
    fn missing_context_lists_present_contexts() {
        let err = ClusterError::MissingContext {
            cluster: "c1".into(),
            path: "/tmp/kc".into(),
            context: "nope".into(),
            present: vec!["a".into(), "b".into()],
        };
        let msg = err.to_string();
        assert!(msg.contains("\"nope\"") && msg.contains("a, b"), "{msg}");
    }
}
