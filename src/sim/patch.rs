//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge
//! patch for the core kinds kudo touches (lists merged by their patch merge key).

use serde_json::Value;

use super::error::SimError;

/// JSON merge patch: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// JSON patch (a list of operations).
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), SimError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| SimError::BadRequest(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops)
        .map_err(|e| SimError::Internal(format!("JSON patch failed: {e}")))
}

/// The patch merge key of a list field of a built-in kind (None: the list is replaced).
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    let has = |k: &str| items.iter().any(|i| i.get(k).is_some());
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => Some("name"),
        "ports" if has("containerPort") => Some("containerPort"),
        "ports" if has("port") => Some("port"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "ownerReferences" => Some("uid"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        _ => None,
    }
}

/// Strategic merge patch. Supports `$patch: delete|replace` on maps and list items,
/// `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` (order ignored),
/// and merge keys as the built-in kinds declare them; custom resources fall back to merge patch.
pub fn strategic_merge(target: &mut Value, patch: &Value, builtin: bool) -> Result<(), SimError> {
    if !builtin {
        return Err(SimError::UnsupportedMediaType(
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for custom resources)".to_string(),
        ));
    }
    smp(target, patch, "");
    Ok(())
}

fn smp(target: &mut Value, patch: &Value, field: &str) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut p = p.clone();
                p.shift_remove("$patch");
                *t = p;
                return;
            }
            for (k, pv) in p {
                if k == "$patch" || k.starts_with("$setElementOrder/") || k == "$retainKeys" {
                    continue;
                }
                if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(items)), Some(del)) = (t.get_mut(list), pv.as_array())
                    {
                        items.retain(|i| !del.contains(i));
                    }
                    continue;
                }
                if pv.is_null()
                    || pv.get("$patch").and_then(Value::as_str) == Some("delete") && pv.is_object()
                {
                    t.shift_remove(k);
                    continue;
                }
                match t.get_mut(k) {
                    Some(tv) if tv.is_object() && pv.is_object() => smp(tv, pv, k),
                    Some(tv) if tv.is_array() && pv.is_array() => smp(tv, pv, k),
                    _ => {
                        let mut clean = pv.clone();
                        strip_directives(&mut clean);
                        t.insert(k.clone(), clean);
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(p)) => {
            if field == "finalizers" {
                for item in p {
                    if !t.contains(item) {
                        t.push(item.clone());
                    }
                }
                return;
            }
            let Some(key) = merge_key(field, p).or_else(|| merge_key(field, t)) else {
                *t = p.clone();
                return;
            };
            for item in p {
                let id = item.get(key);
                let pos = t.iter().position(|i| id.is_some() && i.get(key) == id);
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        t.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => smp(&mut t[i], item, ""),
                    (None, false) => {
                        let mut clean = item.clone();
                        strip_directives(&mut clean);
                        t.push(clean);
                    }
                }
            }
        }
        (t, p) => {
            let mut clean = p.clone();
            strip_directives(&mut clean);
            *t = clean;
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_merge_by_name_and_ports_by_container_port() {
        let mut t = json!({"spec": {"containers": [
            {"name": "a", "image": "x:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}]},
            {"name": "b", "image": "y:1"}
        ]}});
        let p = json!({"spec": {"containers": [
            {"name": "a", "image": "x:2", "ports": [{"containerPort": 81}], "env": [{"name": "A", "value": "2"}]},
        ]}});
        strategic_merge(&mut t, &p, true).expect("builtin");
        assert_eq!(t["spec"]["containers"][0]["image"], "x:2");
        assert_eq!(t["spec"]["containers"][1]["name"], "b", "b kept");
        assert_eq!(
            t["spec"]["containers"][0]["ports"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            t["spec"]["containers"][0]["env"],
            json!([{"name": "A", "value": "2"}])
        );
    }

    #[test]
    fn delete_directive_removes_item_and_null_removes_key() {
        let mut t = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let p = json!({"metadata": {"labels": {"a": null}}, "spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        strategic_merge(&mut t, &p, true).expect("builtin");
        assert_eq!(
            t,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"containers": [{"name": "b"}]}})
        );
    }

    #[test]
    fn custom_resources_refuse_strategic_merge() {
        let err = strategic_merge(&mut json!({}), &json!({}), false).expect_err("415");
        assert_eq!(err.code(), 415);
        assert!(err.to_string().contains("custom resources"));
    }
}
