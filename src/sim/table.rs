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

/// A Table of `items` with `resource_version` in its list metadata.
pub fn table(def: &ResourceDef, items: &[&Value], resource_version: Option<String>) -> Value {
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
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": o.get("metadata").cloned().unwrap_or(json!({}))},
            })
        })
        .collect();
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
        let t = table(&def, &[&d], Some("7".into()));
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
}
