//! Admission of an object into the store: decoding built-in kinds through their typed
//! definitions (unknown fields pruned as the real server does), defaulting, validation with
//! field paths, and structural-schema validation and pruning for custom resources.

use serde_json::{Map, Value, json};

use super::error::{Cause, SimError};
use super::resources::ResourceDef;

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

pub use crate::util::dns::{is_dns_label, is_dns_subdomain};

fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
}

fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns_subdomain) && !name.is_empty() && is_label_value(name)
}

fn invalid(def: &ResourceDef, name: &str, causes: Vec<Cause>) -> SimError {
    SimError::Invalid {
        group: def.group.clone(),
        kind: def.kind.clone(),
        name: name.to_string(),
        causes,
    }
}

/// Decodes a built-in object through its k8s-openapi type and back, which rejects wrong types
/// (400, naming the field) and drops unknown fields, like the real server's decoder.
fn typed_roundtrip(def: &ResourceDef, obj: &Value) -> Result<Value, SimError> {
    fn rt<T: serde::de::DeserializeOwned + serde::Serialize>(
        kind: &str,
        obj: &Value,
    ) -> Result<Value, SimError> {
        let typed: T = serde_path_to_error::deserialize(obj).map_err(|e| {
            SimError::BadRequest(format!(
                "{kind} in version \"v1\" cannot be handled as a {kind}: {}: {}",
                e.path(),
                e.inner()
            ))
        })?;
        serde_json::to_value(typed).map_err(|e| SimError::Internal(e.to_string()))
    }
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, core::v1 as core};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let k = def.kind.as_str();
    match (def.group.as_str(), k) {
        ("", "Namespace") => rt::<core::Namespace>(k, obj),
        ("", "Pod") => rt::<core::Pod>(k, obj),
        ("", "Service") => rt::<core::Service>(k, obj),
        ("", "ConfigMap") => rt::<core::ConfigMap>(k, obj),
        ("", "Secret") => rt::<core::Secret>(k, obj),
        ("", "ServiceAccount") => rt::<core::ServiceAccount>(k, obj),
        ("", "PersistentVolumeClaim") => rt::<core::PersistentVolumeClaim>(k, obj),
        ("apps", "Deployment") => rt::<apps::Deployment>(k, obj),
        ("apps", "StatefulSet") => rt::<apps::StatefulSet>(k, obj),
        ("apps", "DaemonSet") => rt::<apps::DaemonSet>(k, obj),
        ("apps", "ReplicaSet") => rt::<apps::ReplicaSet>(k, obj),
        ("batch", "Job") => rt::<batch::Job>(k, obj),
        ("batch", "CronJob") => rt::<batch::CronJob>(k, obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            rt::<ext::CustomResourceDefinition>(k, obj)
        }
        _ => Ok(obj.clone()),
    }
}

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut()
        && !m.contains_key(key)
    {
        m.insert(key.to_string(), value);
    }
}

fn obj_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Value> {
    let mut cur = v;
    for p in path {
        let m = cur.as_object_mut()?;
        if !m.contains_key(*p) {
            m.insert(p.to_string(), json!({}));
        }
        cur = m.get_mut(*p)?;
    }
    Some(cur)
}

fn default_pod_spec(spec: &mut Value, job: bool) {
    if !job {
        set_default(spec, "restartPolicy", json!("Always"));
    }
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c.get("image").and_then(Value::as_str).unwrap_or_default();
                let tag = image.rsplit('/').next().unwrap_or_default();
                let policy = if !tag.contains(':') || tag.ends_with(":latest") {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                set_default(c, "imagePullPolicy", json!(policy));
                set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
                set_default(c, "terminationMessagePolicy", json!("File"));
                set_default(c, "resources", json!({}));
                if let Some(ps) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ps {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// Applies the server-side defaults of built-in kinds.
fn apply_defaults(def: &ResourceDef, obj: &mut Value, uid: &str) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => {
            if let Some(labels) = obj_at(obj, &["metadata", "labels"]) {
                set_default(labels, "kubernetes.io/metadata.name", json!(name));
            }
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "finalizers", json!(["kubernetes"]));
            }
            if let Some(status) = obj_at(obj, &["status"]) {
                set_default(status, "phase", json!("Active"));
            }
        }
        ("", "Pod") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                default_pod_spec(spec, false);
            }
            if let Some(status) = obj_at(obj, &["status"]) {
                set_default(status, "phase", json!("Pending"));
                set_default(status, "qosClass", json!("BestEffort"));
            }
        }
        ("", "Secret") => {
            set_default(obj, "type", json!("Opaque"));
            // stringData is write-only: the server folds it into data (base64) and drops it.
            if let Some(Value::Object(string_data)) = obj
                .as_object_mut()
                .and_then(|m| m.shift_remove("stringData"))
            {
                use base64::Engine as _;
                if let Some(data) = obj_at(obj, &["data"]).and_then(Value::as_object_mut) {
                    for (k, v) in string_data {
                        let text = v.as_str().unwrap_or_default();
                        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                        data.insert(k, json!(encoded));
                    }
                }
            }
        }
        ("", "PersistentVolumeClaim") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "volumeMode", json!("Filesystem"));
            }
            if let Some(status) = obj_at(obj, &["status"]) {
                set_default(status, "phase", json!("Pending"));
            }
        }
        ("", "Service") => {
            if let Some(spec) = obj_at(obj, &["spec"]) {
                set_default(spec, "type", json!("ClusterIP"));
                set_default(spec, "sessionAffinity", json!("None"));
                if spec.get("type") != Some(&json!("ExternalName")) {
                    set_default(spec, "ipFamilies", json!(["IPv4"]));
                    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
                    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
                }
                if let Some(ps) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ps {
                        set_default(p, "protocol", json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            set_default(p, "targetPort", port);
                        }
                    }
                }
            }
            if let Some(status) = obj_at(obj, &["status"]) {
                set_default(status, "loadBalancer", json!({}));
            }
        }
        ("apps", kind @ ("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")) => {
            let Some(spec) = obj_at(obj, &["spec"]) else {
                return;
            };
            if kind != "DaemonSet" {
                set_default(spec, "replicas", json!(1));
            }
            match kind {
                "Deployment" => {
                    set_default(spec, "revisionHistoryLimit", json!(10));
                    set_default(spec, "progressDeadlineSeconds", json!(600));
                    set_default(
                        spec,
                        "strategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
                    );
                }
                "StatefulSet" => {
                    set_default(spec, "revisionHistoryLimit", json!(10));
                    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
                    set_default(
                        spec,
                        "updateStrategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                    );
                    set_default(
                        spec,
                        "persistentVolumeClaimRetentionPolicy",
                        json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
                    );
                }
                "DaemonSet" => {
                    set_default(spec, "revisionHistoryLimit", json!(10));
                    set_default(
                        spec,
                        "updateStrategy",
                        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}),
                    );
                }
                _ => {}
            }
            if let Some(pod) = obj_at(spec, &["template", "spec"]) {
                default_pod_spec(pod, false);
            }
        }
        ("batch", "Job") => {
            let Some(spec) = obj_at(obj, &["spec"]) else {
                return;
            };
            set_default(spec, "parallelism", json!(1));
            set_default(spec, "completions", json!(1));
            set_default(spec, "backoffLimit", json!(6));
            set_default(spec, "completionMode", json!("NonIndexed"));
            set_default(spec, "suspend", json!(false));
            if spec.get("manualSelector") != Some(&json!(true)) && !uid.is_empty() {
                set_default(
                    spec,
                    "selector",
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
                if let Some(labels) = obj_at(spec, &["template", "metadata", "labels"]) {
                    set_default(labels, "batch.kubernetes.io/controller-uid", json!(uid));
                    set_default(labels, "batch.kubernetes.io/job-name", json!(name));
                    set_default(labels, "controller-uid", json!(uid));
                    set_default(labels, "job-name", json!(name));
                }
            }
            if let Some(pod) = obj_at(spec, &["template", "spec"]) {
                default_pod_spec(pod, true);
            }
        }
        _ => {}
    }
}

fn validate_metadata(def: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str);
    match name {
        None | Some("") => causes.push(Cause {
            reason: "FieldValueRequired",
            message: "Required value: name or generateName is required".to_string(),
            field: "metadata.name".to_string(),
        }),
        Some(n) => {
            let label_only = matches!(def.kind.as_str(), "Namespace" | "Service") && !def.custom;
            if label_only && !is_dns_label(n) {
                causes.push(Cause::invalid(
                    "metadata.name",
                    &json!(n),
                    DNS1123_LABEL_MSG,
                ));
            } else if !label_only && !is_dns_subdomain(n) {
                causes.push(Cause::invalid(
                    "metadata.name",
                    &json!(n),
                    DNS1123_SUBDOMAIN_MSG,
                ));
            }
        }
    }
    for (field, value_rule) in [("labels", true), ("annotations", false)] {
        if let Some(m) = obj
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        {
            for (k, v) in m {
                if !is_qualified_name(k) {
                    causes.push(Cause::invalid(
                        format!("metadata.{field}"),
                        &json!(k),
                        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    ));
                }
                if value_rule && !v.as_str().is_some_and(is_label_value) {
                    causes.push(Cause::invalid(
                        "metadata.labels".to_string(),
                        v,
                        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    ));
                }
            }
        }
    }
}

fn validate_pod_spec(spec: Option<&Value>, path: &str, job: bool, causes: &mut Vec<Cause>) {
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) if cs.is_empty() => causes.push(Cause::required(format!("{path}.containers"))),
        Some(cs) => {
            for (i, c) in cs.iter().enumerate() {
                let p = format!("{path}.containers[{i}]");
                match c.get("name").and_then(Value::as_str) {
                    None | Some("") => causes.push(Cause::required(format!("{p}.name"))),
                    Some(n) if !is_dns_label(n) => causes.push(Cause::invalid(
                        format!("{p}.name"),
                        &json!(n),
                        DNS1123_LABEL_MSG,
                    )),
                    _ => {}
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(format!("{p}.image")));
                }
            }
        }
    }
    if job {
        let rp = spec.and_then(|s| s.get("restartPolicy"));
        if !matches!(rp.and_then(Value::as_str), Some("OnFailure" | "Never")) {
            causes.push(match rp {
                None => Cause {
                    reason: "FieldValueRequired",
                    message: "Required value: valid values: \"OnFailure\", \"Never\"".to_string(),
                    field: format!("{path}.restartPolicy"),
                },
                Some(v) => {
                    Cause::unsupported(format!("{path}.restartPolicy"), v, &["OnFailure", "Never"])
                }
            });
        }
    }
}

fn selector_matches_labels(selector: &Value, labels: &Value) -> bool {
    let ml = selector.get("matchLabels").and_then(Value::as_object);
    let ok_labels = ml.is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let ok_exprs = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|exprs| {
            exprs.iter().all(|e| {
                let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
                let values: Vec<&Value> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().collect())
                    .unwrap_or_default();
                let have = labels.get(key);
                match e.get("operator").and_then(Value::as_str) {
                    Some("In") => have.is_some_and(|h| values.contains(&h)),
                    Some("NotIn") => have.is_none_or(|h| !values.contains(&h)),
                    Some("Exists") => have.is_some(),
                    Some("DoesNotExist") => have.is_none(),
                    _ => false,
                }
            })
        });
    ok_labels && ok_exprs
}

fn validate_kind(def: &ResourceDef, obj: &Value, causes: &mut Vec<Cause>) {
    let spec = obj.get("spec");
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Pod") => validate_pod_spec(spec, "spec", false, causes),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") | ("batch", "Job") => {
            let job = def.kind == "Job";
            if let Some(r) = spec.and_then(|s| s.get("replicas"))
                && r.as_i64().is_some_and(|r| r < 0)
            {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    r,
                    "must be greater than or equal to 0",
                ));
            }
            // The typed decode turns a missing selector into `{}`; both are "required".
            let selector = spec
                .and_then(|s| s.get("selector"))
                .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
            let labels = spec
                .and_then(|s| s.pointer("/template/metadata/labels"))
                .cloned()
                .unwrap_or(json!({}));
            match selector {
                None if !job => causes.push(Cause::required("spec.selector")),
                Some(sel) if !selector_matches_labels(sel, &labels) => {
                    let shown: Vec<String> = labels
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}:{}", v.as_str().unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default();
                    causes.push(Cause {
                        reason: "FieldValueInvalid",
                        message: format!(
                            "Invalid value: \"map[{}]\": `selector` does not match template `labels`",
                            shown.join(" ")
                        ),
                        field: "spec.template.metadata.labels".to_string(),
                    });
                }
                _ => {}
            }
            validate_pod_spec(
                spec.and_then(|s| s.pointer("/template/spec")),
                "spec.template.spec",
                job,
                causes,
            );
        }
        ("", "Service") => {
            let ty = spec
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("ClusterIP");
            let headless = spec.and_then(|s| s.get("clusterIP")) == Some(&json!("None"));
            let ports = spec.and_then(|s| s.get("ports")).and_then(Value::as_array);
            if ports.is_none_or(Vec::is_empty) && ty != "ExternalName" && !headless {
                causes.push(Cause::required("spec.ports"));
            }
            for (i, p) in ports.into_iter().flatten().enumerate() {
                let port = p.get("port");
                if !port
                    .and_then(Value::as_i64)
                    .is_some_and(|n| (1..=65535).contains(&n))
                {
                    causes.push(Cause::invalid(
                        format!("spec.ports[{i}].port"),
                        port.unwrap_or(&Value::Null),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        ("", "ConfigMap" | "Secret") => {
            for field in ["data", "binaryData", "stringData"] {
                for k in obj
                    .get(field)
                    .and_then(Value::as_object)
                    .map(|m| m.keys().collect::<Vec<_>>())
                    .unwrap_or_default()
                {
                    let ok = !k.is_empty()
                        && k.len() <= 253
                        && k.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'
                        });
                    if !ok {
                        causes.push(Cause::invalid(
                            format!("{field}[{k}]"),
                            &json!(k),
                            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                        ));
                    }
                }
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => validate_crd(obj, causes),
        _ => {}
    }
}

fn validate_crd(obj: &Value, causes: &mut Vec<Cause>) {
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
    let group = s("/spec/group");
    let plural = s("/spec/names/plural");
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    } else if !group.contains('.') {
        causes.push(Cause::invalid(
            "spec.group",
            &json!(group),
            "should be a domain with at least one dot",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural"));
    }
    if s("/spec/names/kind").is_empty() {
        causes.push(Cause::required("spec.names.kind"));
    }
    let name = s("/metadata/name");
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            &json!(name),
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if !matches!(s("/spec/scope"), "Namespaced" | "Cluster") {
        causes.push(Cause::unsupported(
            "spec.scope",
            obj.pointer("/spec/scope").unwrap_or(&Value::Null),
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause::invalid(
            "spec.versions",
            &json!([]),
            "must have exactly one version marked as storage version",
        ));
    } else if versions
        .iter()
        .filter(|v| v.get("storage") == Some(&json!(true)))
        .count()
        != 1
    {
        causes.push(Cause::invalid(
            "spec.versions",
            &Value::Array(versions.clone()),
            "must have exactly one version marked as storage version",
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if v.pointer("/schema/openAPIV3Schema").is_none() {
            causes.push(Cause::required(format!(
                "spec.versions[{i}].schema.openAPIV3Schema"
            )));
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Validates `v` against a structural schema and prunes fields the schema does not declare.
fn check_schema(v: &mut Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    if v.is_null() {
        if schema.get("nullable") != Some(&json!(true)) && schema.get("type").is_some() {
            causes.push(Cause::type_invalid(
                path,
                v,
                schema["type"].as_str().unwrap_or("value"),
            ));
        }
        return;
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            causes.push(Cause::type_invalid(path, v, "integer or string"));
        }
        return;
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let actual = type_name(v);
        let ok = actual == ty || (ty == "number" && actual == "integer");
        if !ok {
            causes.push(Cause::type_invalid(path, v, &format!("\"{ty}\"")));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|a| a.as_str().map(str::to_string).unwrap_or(a.to_string()))
            .collect();
        let refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
        causes.push(Cause::unsupported(path, v, &refs));
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for req in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !m.contains_key(req) {
                    causes.push(Cause::required(join(path, req)));
                }
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let child_path = join(path, &k);
                let sub = props.and_then(|p| p.get(&k)).or(match additional {
                    Some(a) if a.is_object() => Some(a),
                    _ => None,
                });
                match sub {
                    Some(sub) => {
                        if let Some(child) = m.get_mut(&k) {
                            check_schema(child, sub, &child_path, causes);
                        }
                    }
                    None if preserve || additional == Some(&json!(true)) => {}
                    None if path.is_empty()
                        && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") => {}
                    None => {
                        m.shift_remove(&k);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check_schema(item, item_schema, &format!("{path}[{i}]"), causes);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

/// Admits `obj` (already carrying apiVersion, kind and metadata) for `def` at `version`:
/// returns the object as it is stored, or the 400/422 error the real server would give.
pub fn admit(def: &ResourceDef, version: &str, obj: Value, uid: &str) -> Result<Value, SimError> {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut causes = Vec::new();
    validate_metadata(def, &obj, &mut causes);
    let mut obj = if def.custom {
        let mut obj = obj;
        if let Some(schema) = def.schema(version) {
            check_schema(&mut obj, schema, "", &mut causes);
        }
        obj
    } else {
        typed_roundtrip(def, &obj)?
    };
    if !def.custom {
        apply_defaults(def, &mut obj, uid);
        validate_kind(def, &obj, &mut causes);
    }
    if causes.is_empty() {
        Ok(obj)
    } else {
        Err(invalid(def, &name, causes))
    }
}

/// Strips keys whose value is an empty object under `metadata` that the typed round trip
/// may leave (kept for symmetry with what the server returns).
pub fn tidy_metadata(obj: &mut Value) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let empties: Vec<String> = meta
            .iter()
            .filter(|(_, v)| v.as_object().is_some_and(Map::is_empty))
            .map(|(k, _)| k.clone())
            .collect();
        for k in empties {
            meta.shift_remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::resources::builtin_resources;

    fn def(kind: &str) -> ResourceDef {
        builtin_resources()
            .into_iter()
            .find(|d| d.kind == kind)
            .expect("builtin")
    }

    #[test]
    fn deployment_without_selector_names_the_field() {
        let err = admit(
            &def("Deployment"),
            "v1",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"template": {"spec": {"containers": [{"name": "web"}]}}}}),
            "u",
        )
        .expect_err("invalid");
        let SimError::Invalid { causes, .. } = &err else {
            panic!("{err:?}")
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.selector", "spec.template.spec.containers[0].image"]
        );
        assert!(
            err.to_string()
                .starts_with("Deployment.apps \"web\" is invalid: [")
        );
    }

    #[test]
    fn secret_string_data_is_folded_into_data() {
        let s = admit(
            &def("Secret"),
            "v1",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                   "data": {"a": "eA=="}, "stringData": {"b": "hi"}}),
            "u",
        )
        .expect("valid");
        assert_eq!(s["data"], json!({"a": "eA==", "b": "aGk="}));
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn bad_name_and_wrong_type_are_refused() {
        let err = admit(
            &def("ConfigMap"),
            "v1",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}}),
            "u",
        )
        .expect_err("invalid");
        assert_eq!(err.code(), 422);
        assert!(
            err.to_string()
                .contains("metadata.name: Invalid value: \"Bad_Name\""),
            "{err}"
        );
        let err = admit(
            &def("Deployment"),
            "v1",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "three"}}),
            "u",
        )
        .expect_err("bad type");
        assert_eq!(err.code(), 400);
        assert!(err.to_string().contains("spec.replicas"), "{err}");
    }

    #[test]
    fn custom_resources_are_checked_and_pruned_by_schema() {
        let crd = json!({"spec": {"group": "e.x", "names": {"kind": "W", "plural": "ws"}, "scope": "Namespaced",
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "required": ["size"],
                    "properties": {"size": {"type": "integer"}, "mode": {"type": "string", "enum": ["a", "b"]}}}}}}}]}});
        let def = crate::sim::resources::from_crd(&crd).expect("crd");
        let ok = admit(&def, "v1", json!({"apiVersion": "e.x/v1", "kind": "W", "metadata": {"name": "w"}, "spec": {"size": 1, "junk": 2}}), "u")
            .expect("valid");
        assert_eq!(ok["spec"], json!({"size": 1}), "unknown field pruned");
        let err = admit(&def, "v1", json!({"apiVersion": "e.x/v1", "kind": "W", "metadata": {"name": "w"}, "spec": {"mode": "c"}}), "u")
            .expect_err("invalid");
        let SimError::Invalid { causes, .. } = &err else {
            panic!("{err:?}")
        };
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.size", "spec.mode"]);
    }
}
