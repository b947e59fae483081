//! Server-side printing (`meta.k8s.io/v1` Table), which `kubectl get` asks for: the usual
//! columns for the kinds kudo deploys, Name and Age for everything else.

use serde_json::{Value, json};

use super::resources::ResourceDef;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.split(',').any(|part| part.contains("as=Table")))
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn n(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

/// Age as kubectl prints it (`12s`, `5m`, `3h`, `2d`).
fn age(obj: &Value) -> String {
    let Ok(created) = s(obj, "/metadata/creationTimestamp").parse::<jiff::Timestamp>() else {
        return "<unknown>".to_string();
    };
    let secs = (jiff::Timestamp::now().as_second() - created.as_second()).max(0);
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn columns(def: &ResourceDef) -> Vec<&'static str> {
    match (def.group.as_str(), def.kind.as_str()) {
        ("", "Namespace") => vec!["Name", "Status", "Age"],
        ("", "Pod") => vec!["Name", "Ready", "Status", "Restarts", "Age"],
        ("", "Service") => vec![
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
        ],
        ("", "ConfigMap") => vec!["Name", "Data", "Age"],
        ("", "Secret") => vec!["Name", "Type", "Data", "Age"],
        ("", "PersistentVolumeClaim") => vec!["Name", "Status", "Capacity", "Access Modes", "Age"],
        ("apps", "Deployment") => vec!["Name", "Ready", "Up-to-date", "Available", "Age"],
        ("apps", "StatefulSet") => vec!["Name", "Ready", "Age"],
        ("apps", "ReplicaSet") => vec!["Name", "Desired", "Current", "Ready", "Age"],
        ("apps", "DaemonSet") => vec![
            "Name",
            "Desired",
            "Current",
            "Ready",
            "Up-to-date",
            "Available",
            "Age",
        ],
        ("batch", "Job") => vec!["Name", "Status", "Completions", "Age"],
        ("apiextensions.k8s.io", "CustomResourceDefinition") => vec!["Name", "Created At"],
        _ => vec!["Name", "Age"],
    }
}

fn cell(def: &ResourceDef, col: &str, o: &Value) -> Value {
    let count = |ptr: &str| {
        o.pointer(ptr)
            .and_then(Value::as_object)
            .map_or(0, |m| m.len())
    };
    match (def.kind.as_str(), col) {
        (_, "Name") => json!(s(o, "/metadata/name")),
        (_, "Age") => json!(age(o)),
        (_, "Created At") => json!(s(o, "/metadata/creationTimestamp")),
        ("Namespace", "Status") => json!(s(o, "/status/phase")),
        ("Pod", "Ready") => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map_or(0, |cs| cs.iter().filter(|c| c["ready"] == true).count());
            json!(format!("{ready}/{total}"))
        }
        ("Pod", "Status") => json!(s(o, "/status/phase")),
        ("Pod", "Restarts") => json!(0),
        ("Service", "Type") => json!(s(o, "/spec/type")),
        ("Service", "Cluster-IP") => json!(s(o, "/spec/clusterIP")),
        ("Service", "External-IP") => {
            let ips: Vec<&str> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|i| i["ip"].as_str()).collect())
                .unwrap_or_default();
            json!(if ips.is_empty() {
                "<none>".to_string()
            } else {
                ips.join(",")
            })
        }
        ("Service", "Port(s)") => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!(ports.join(","))
        }
        ("ConfigMap", "Data") => json!(count("/data") + count("/binaryData")),
        ("Secret", "Data") => json!(count("/data")),
        ("Secret", "Type") => json!(s(o, "/type")),
        ("PersistentVolumeClaim", "Status") => json!(s(o, "/status/phase")),
        ("PersistentVolumeClaim", "Capacity") => json!(s(o, "/status/capacity/storage")),
        ("PersistentVolumeClaim", "Access Modes") => json!(
            o.pointer("/spec/accessModes")
                .and_then(Value::as_array)
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default()
        ),
        ("Deployment" | "StatefulSet", "Ready") => json!(format!(
            "{}/{}",
            n(o, "/status/readyReplicas"),
            o.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        ("Deployment", "Up-to-date") => json!(n(o, "/status/updatedReplicas")),
        ("Deployment", "Available") => json!(n(o, "/status/availableReplicas")),
        ("ReplicaSet", "Desired") => json!(n(o, "/spec/replicas")),
        ("ReplicaSet", "Current") => json!(n(o, "/status/replicas")),
        ("ReplicaSet", "Ready") => json!(n(o, "/status/readyReplicas")),
        ("DaemonSet", "Desired") => json!(n(o, "/status/desiredNumberScheduled")),
        ("DaemonSet", "Current") => json!(n(o, "/status/currentNumberScheduled")),
        ("DaemonSet", "Ready") => json!(n(o, "/status/numberReady")),
        ("DaemonSet", "Up-to-date") => json!(n(o, "/status/updatedNumberScheduled")),
        ("DaemonSet", "Available") => json!(n(o, "/status/numberAvailable")),
        ("Job", "Status") => {
            let conds = o.pointer("/status/conditions").and_then(Value::as_array);
            let has = |t: &str| {
                conds.is_some_and(|cs| cs.iter().any(|c| c["type"] == t && c["status"] == "True"))
            };
            json!(if has("Complete") {
                "Complete"
            } else if has("Failed") {
                "Failed"
            } else {
                "Running"
            })
        }
        ("Job", "Completions") => json!(format!(
            "{}/{}",
            n(o, "/status/succeeded"),
            o.pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1)
        )),
        _ => json!(""),
    }
}

/// Evaluates the JSONPath subset CRD printer columns use: `.a.b`, `[n]`, `[?(@.k=="v")]`.
/// Returns every match.
fn json_path<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![v];
    let mut rest = path.trim().trim_start_matches('{').trim_end_matches('}');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            cur = cur.into_iter().filter_map(|c| c.get(field)).collect();
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Vec::new();
            };
            let sel = &r[..end];
            rest = &r[end + 1..];
            if let Some(filter) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let Some((key, want)) = filter.split_once("==") else {
                    return Vec::new();
                };
                let want = want.trim().trim_matches(['"', '\'']);
                cur = cur
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .filter(|item| {
                        item.get(key.trim()).is_some_and(|v| match v {
                            Value::String(s) => s == want,
                            other => *other == want,
                        })
                    })
                    .collect();
            } else if sel == "*" {
                cur = cur
                    .into_iter()
                    .filter_map(Value::as_array)
                    .flatten()
                    .collect();
            } else if let Ok(i) = sel.parse::<usize>() {
                cur = cur.into_iter().filter_map(|c| c.get(i)).collect();
            } else {
                return Vec::new();
            }
        } else {
            return Vec::new();
        }
    }
    cur
}

/// A custom resource's table from its CRD's `additionalPrinterColumns`.
fn printer_table(cols: &[Value], items: &[&Value]) -> (Vec<Value>, Vec<Vec<Value>>) {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}),
    ];
    for c in cols {
        defs.push(
            json!({"name": c["name"], "type": c.get("type").cloned().unwrap_or(json!("string")),
            "format": "", "description": c.get("description").cloned().unwrap_or(json!("")),
            "priority": c.get("priority").cloned().unwrap_or(json!(0))}),
        );
    }
    let rows = items
        .iter()
        .map(|o| {
            let mut cells = vec![json!(s(o, "/metadata/name"))];
            for c in cols {
                let path = c.get("jsonPath").and_then(Value::as_str).unwrap_or("");
                let found = json_path(o, path);
                cells.push(
                    match (c.get("type").and_then(Value::as_str), found.first()) {
                        (_, None) => Value::Null,
                        (Some("date"), Some(Value::String(ts))) => {
                            json!(age(&json!({"metadata": {"creationTimestamp": ts}})))
                        }
                        (_, Some(_)) if found.len() > 1 => json!(
                            found
                                .iter()
                                .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                        (_, Some(v)) => (*v).clone(),
                    },
                );
            }
            cells
        })
        .collect();
    (defs, rows)
}

/// A Table of `items` with `resource_version` in its list metadata.
pub fn table(
    def: &ResourceDef,
    version: &str,
    items: &[&Value],
    resource_version: Option<String>,
) -> Value {
    let printer = def.printer_columns(version);
    if def.custom && !printer.is_empty() {
        let (defs, cells) = printer_table(printer, items);
        let rows: Vec<Value> = items
            .iter()
            .zip(cells)
            .map(|(o, cells)| json!({"cells": cells, "object": partial(o)}))
            .collect();
        return finish(defs, rows, resource_version);
    }
    let cols = columns(def);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| {
            let ty = if matches!(*c, "Restarts" | "Data" | "Up-to-date" | "Available") {
                "integer"
            } else {
                "string"
            };
            let format = if *c == "Name" { "name" } else { "" };
            json!({"name": c, "type": ty, "format": format, "description": "", "priority": 0})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cols.iter().map(|c| cell(def, c, o)).collect::<Vec<_>>(),
                "object": partial(o),
            })
        })
        .collect();
    finish(defs, rows, resource_version)
}

fn partial(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": o.get("metadata").cloned().unwrap_or(json!({}))})
}

fn finish(defs: Vec<Value>, rows: Vec<Value>, resource_version: Option<String>) -> Value {
    let mut meta = json!({});
    if let Some(rv) = resource_version {
        meta["resourceVersion"] = json!(rv);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
           "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::resources::builtin_resources;

    #[test]
    fn deployment_rows_show_ready_and_available() {
        let def = builtin_resources()
            .into_iter()
            .find(|d| d.kind == "Deployment")
            .expect("builtin");
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"replicas": 3}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table(&def, "v1", &[&d], Some("7".into()));
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["web", "2/3", 3, 2, t["rows"][0]["cells"][4]])
        );
        assert!(
            t["rows"][0]["cells"][4]
                .as_str()
                .expect("age")
                .ends_with('d')
        );
        assert!(wants_table(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        )));
        assert!(!wants_table(Some("application/json")));
    }

    #[test]
    fn crd_printer_columns_follow_their_json_paths() {
        let crd = json!({"spec": {"group": "kudo.dev", "scope": "Namespaced",
            "names": {"kind": "Instance", "plural": "instances"},
            "versions": [{"name": "v1beta1", "served": true, "storage": true, "additionalPrinterColumns": [
                {"name": "Plan", "type": "string", "jsonPath": ".spec.planExecution.planName"},
                {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].status"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]}]}});
        let def = crate::sim::resources::from_crd(&crd).expect("crd");
        let inst = json!({"metadata": {"name": "zk", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"planExecution": {"planName": "deploy"}},
            "status": {"conditions": [{"type": "Other", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        let t = table(&def, "v1beta1", &[&inst], None);
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .expect("cols")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Name", "Plan", "Ready", "Age"]);
        let cells = &t["rows"][0]["cells"];
        assert_eq!(
            (&cells[0], &cells[1], &cells[2]),
            (&json!("zk"), &json!("deploy"), &json!("True"))
        );
        assert!(cells[3].as_str().expect("age").ends_with('d'));
    }
}
