//! Identity of an object: what we need to address it, extracted (purely) from its JSON.

use std::fmt;

use serde_json::Value;

/// Names one object on a cluster: apiVersion, kind, namespace (for namespaced kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn new(
        api_version: impl Into<String>,
        kind: impl Into<String>,
        namespace: Option<&str>,
        name: impl Into<String>,
    ) -> Self {
        ObjectRef {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    /// Read apiVersion, kind, metadata.name and metadata.namespace from an object. Refuses
    /// objects that lack any of the first three, naming what is missing.
    pub fn from_object(obj: &Value) -> Result<Self, String> {
        let field = |v: Option<&Value>, what: &str| -> Result<String, String> {
            match v {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::String(_)) | None | Some(Value::Null) => {
                    Err(format!("{what} is missing"))
                }
                Some(other) => Err(format!("{what} must be a string, got {other}")),
            }
        };
        if !obj.is_object() {
            return Err(format!("expected a JSON object, got {obj}"));
        }
        let api_version = field(obj.get("apiVersion"), "apiVersion")?;
        let kind = field(obj.get("kind"), "kind")?;
        let meta = obj.get("metadata");
        let name = field(meta.and_then(|m| m.get("name")), "metadata.name")?;
        let namespace = match meta.and_then(|m| m.get("namespace")) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        Ok(ObjectRef {
            api_version,
            kind,
            namespace,
            name,
        })
    }

    /// (group, version) of the apiVersion; the core group is "".
    pub fn group_version(&self) -> (&str, &str) {
        split_api_version(&self.api_version)
    }
}

/// Fills key fields that server-side apply needs but whose defaults the API server (1.20)
/// does not know: a Service port without `protocol` is refused with "associative list with
/// keys has an element that omits key field \"protocol\"" (a 500), while client-side
/// apply, which KUDO used, defaulted it to TCP. kudo sets that default before applying.
pub fn default_apply_keys(obj: &mut Value) {
    let is_service = obj.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && obj.get("kind").and_then(Value::as_str) == Some("Service");
    if !is_service {
        return;
    }
    let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return;
    };
    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
        port.entry("protocol")
            .or_insert_with(|| Value::String("TCP".into()));
    }
}

/// Split `apps/v1` into ("apps", "v1") and `v1` into ("", "v1").
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// Best-effort description of an object for error messages, even when it is malformed.
pub fn describe(obj: &Value) -> String {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
    let (av, kind, ns, name) = (
        s("/apiVersion"),
        s("/kind"),
        s("/metadata/namespace"),
        s("/metadata/name"),
    );
    let who = match (ns.is_empty(), name.is_empty()) {
        (_, true) => "<unnamed>".to_string(),
        (true, false) => name.to_string(),
        (false, false) => format!("{ns}/{name}"),
    };
    let what = [av, kind]
        .iter()
        .filter(|x| !x.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    if what.is_empty() {
        who
    } else {
        format!("{what} {who}")
    }
}

/// Fill in `protocol: TCP` (the API default) on Service ports and container ports that omit
/// it. Kubernetes 1.20's server-side apply refuses such lists ("associative list with keys has
/// an element that omits key field \"protocol\""), and many packages omit it; filling in the
/// default changes nothing on servers that would default it themselves.
pub fn default_port_protocols(obj: &mut Value) {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let (group, _) = split_api_version(api_version);
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let pod_spec = match (group, kind) {
        ("", "Service") => {
            if let Some(ports) = obj.pointer_mut("/spec/ports") {
                default_protocol(ports);
            }
            return;
        }
        ("", "Pod") => "/spec",
        ("", "PodTemplate") => "/template/spec",
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => "/spec/template/spec",
        ("batch", "CronJob") => "/spec/jobTemplate/spec/template/spec",
        _ => return,
    };
    let Some(spec) = obj.pointer_mut(pod_spec) else {
        return;
    };
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for c in containers {
                if let Some(ports) = c.get_mut("ports") {
                    default_protocol(ports);
                }
            }
        }
    }
}

fn default_protocol(ports: &mut Value) {
    if let Value::Array(ports) = ports {
        for port in ports.iter_mut().filter_map(Value::as_object_mut) {
            port.entry("protocol")
                .or_insert_with(|| Value::String("TCP".into()));
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {} {}/{}", self.api_version, self.kind, ns, self.name),
            None => write!(f, "{} {} {}", self.api_version, self.kind, self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_identity() {
        let r = ObjectRef::from_object(&json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"}
        }))
        .expect("valid");
        assert_eq!(r.group_version(), ("apps", "v1"));
        assert_eq!(r.to_string(), "apps/v1 Deployment shop/web");
        let core = ObjectRef::new("v1", "Namespace", None, "shop");
        assert_eq!(core.group_version(), ("", "v1"));
        assert_eq!(core.to_string(), "v1 Namespace shop");
    }

    #[test]
    fn names_what_is_missing() {
        let e = ObjectRef::from_object(&json!({"kind": "ConfigMap", "metadata": {"name": "x"}}))
            .expect_err("no apiVersion");
        assert!(e.contains("apiVersion"), "{e}");
        let e = ObjectRef::from_object(&json!({"apiVersion": "v1", "metadata": {"name": "x"}}))
            .expect_err("no kind");
        assert!(e.contains("kind"), "{e}");
        let e = ObjectRef::from_object(&json!({"apiVersion": "v1", "kind": "ConfigMap"}))
            .expect_err("no name");
        assert!(e.contains("metadata.name"), "{e}");
        let e = ObjectRef::from_object(&json!({"apiVersion": 1, "kind": "ConfigMap"}))
            .expect_err("bad type");
        assert!(e.contains("must be a string"), "{e}");
    }

    #[test]
    fn fills_default_port_protocols_on_builtin_kinds_only() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        default_port_protocols(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "UDP");

        let mut deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {
                "initContainers": [{"name": "i", "ports": [{"containerPort": 1}]}],
                "containers": [{"name": "c", "ports": [{"containerPort": 8080}]}, {"name": "n"}]}}}});
        default_port_protocols(&mut deploy);
        let spec = &deploy["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["initContainers"][0]["ports"][0]["protocol"], "TCP");
        assert!(spec["containers"][1].get("ports").is_none());

        let mut cron = json!({"apiVersion": "batch/v1beta1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {
                "containers": [{"name": "c", "ports": [{"containerPort": 9}]}]}}}}}});
        default_port_protocols(&mut cron);
        assert_eq!(
            cron.pointer("/spec/jobTemplate/spec/template/spec/containers/0/ports/0/protocol"),
            Some(&json!("TCP"))
        );

        // Custom resources are left exactly as rendered.
        let cr = json!({"apiVersion": "example.com/v1", "kind": "Service",
            "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}});
        let mut same = cr.clone();
        default_port_protocols(&mut same);
        assert_eq!(same, cr);
    }

    #[test]
    fn describes_malformed_objects() {
        assert_eq!(describe(&json!({"metadata": {"name": "x"}})), "x");
        assert_eq!(
            describe(&json!({"kind": "Pod", "metadata": {"namespace": "a", "name": "x"}})),
            "Pod a/x"
        );
    }
}

#[cfg(test)]
mod apply_key_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn service_ports_get_the_tcp_default_and_others_are_untouched() {
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [
            {"port": 80}, {"port": 53, "protocol": "UDP"}]}});
        default_apply_keys(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["ports"][1]["protocol"], "UDP");
        let mut cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "spec": {"ports": [{"port": 1}]}});
        default_apply_keys(&mut cm);
        assert!(cm["spec"]["ports"][0].get("protocol").is_none());
    }
}
