//! Health of a live object, as a pure function of its JSON (DESIGN §4).
//!
//! Rules, by kind:
//! - `CustomResourceDefinition`: condition `Established=True`.
//! - `Deployment`, `StatefulSet`: `status.observedGeneration >= metadata.generation`, and
//!   updated and available replicas equal `spec.replicas` (default 1). StatefulSets of
//!   servers that predate `status.availableReplicas` (< 1.22) use `readyReplicas`.
//! - `DaemonSet`: observedGeneration caught up, `updatedNumberScheduled` and `numberAvailable`
//!   equal `desiredNumberScheduled`.
//! - `Job`: condition `Complete=True` is healthy; `Failed=True` is [`Health::Failed`] (fatal).
//! - `Pod`: phase `Running` and condition `Ready=True` (as KUDO, a failed Pod is not fatal; only
//!   a failed Job is).
//! - `Namespace`: phase `Active`.
//! - `Service`: `type: LoadBalancer` needs `status.loadBalancer.ingress`; `ExternalName` is
//!   healthy; every other type needs a `spec.clusterIP` (headless `None` counts).
//! - KUDO `Instance` (kudo.dev): no plan running, i.e. no entry of `status.planStatus` is
//!   `PENDING` or `IN_PROGRESS`, and the plan named by `spec.planExecution.planName` (if any)
//!   has a terminal status (`COMPLETE`; `FATAL_ERROR` makes the child [`Health::Failed`]).
//!   A plan requested in `spec.planExecution` but absent from `status.planStatus` counts as
//!   running (the controller has not picked it up yet).
//! - Anything else is healthy once it exists.
//!
//! An object with `metadata.deletionTimestamp` is never healthy: it is on its way out.

use serde_json::Value;

use super::object::split_api_version;

/// The health of one live object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Not healthy yet; the message says what is awaited.
    Progressing(String),
    /// Will never become healthy (a failed Job, a child Instance whose plan failed fatally).
    Failed(String),
}

impl Health {
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

/// Evaluate the health of a live object.
pub fn evaluate(obj: &Value) -> Health {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        return Health::Progressing("being deleted".into());
    }
    let api_version = str_at(obj, "/apiVersion");
    let (group, _) = split_api_version(api_version);
    match (group, str_at(obj, "/kind")) {
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(obj),
        ("apps", "Deployment") => replicated(obj, "Deployment", "availableReplicas"),
        ("apps", "StatefulSet") => {
            let field = if obj.pointer("/status/availableReplicas").is_some() {
                "availableReplicas"
            } else {
                "readyReplicas"
            };
            replicated(obj, "StatefulSet", field)
        }
        ("apps", "DaemonSet") => daemon_set(obj),
        ("batch", "Job") => job(obj),
        ("", "Pod") => pod(obj),
        ("", "Namespace") => match str_at(obj, "/status/phase") {
            "Active" => Health::Healthy,
            "" => Health::Progressing("namespace has no phase yet".into()),
            other => Health::Progressing(format!("namespace is {other}")),
        },
        ("", "Service") => service(obj),
        ("kudo.dev", "Instance") => instance(obj),
        _ => Health::Healthy,
    }
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int_at(obj: &Value, pointer: &str) -> Option<i64> {
    obj.pointer(pointer).and_then(Value::as_i64)
}

/// Status of the condition of `type_`, if present ("True", "False", "Unknown").
fn condition<'a>(obj: &'a Value, type_: &str) -> Option<(&'a str, &'a str)> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
        .map(|c| (str_at(c, "/status"), str_at(c, "/message")))
}

fn generation_observed(obj: &Value, kind: &str) -> Result<(), Health> {
    let generation = int_at(obj, "/metadata/generation").unwrap_or(0);
    let observed = int_at(obj, "/status/observedGeneration").unwrap_or(0);
    if observed < generation {
        return Err(Health::Progressing(format!(
            "{kind} generation {generation} not yet observed (observed {observed})"
        )));
    }
    Ok(())
}

fn crd(obj: &Value) -> Health {
    match condition(obj, "Established") {
        Some(("True", _)) => Health::Healthy,
        Some((_, msg)) if !msg.is_empty() => Health::Progressing(format!("not established: {msg}")),
        _ => Health::Progressing("not established yet".into()),
    }
}

fn replicated(obj: &Value, kind: &str, available_field: &str) -> Health {
    if let Err(h) = generation_observed(obj, kind) {
        return h;
    }
    let desired = int_at(obj, "/spec/replicas").unwrap_or(1);
    let updated = int_at(obj, "/status/updatedReplicas").unwrap_or(0);
    let available = int_at(obj, &format!("/status/{available_field}")).unwrap_or(0);
    if updated != desired {
        return Health::Progressing(format!("{kind}: {updated} of {desired} replicas updated"));
    }
    if available != desired {
        return Health::Progressing(format!(
            "{kind}: {available} of {desired} replicas available"
        ));
    }
    Health::Healthy
}

fn daemon_set(obj: &Value) -> Health {
    if let Err(h) = generation_observed(obj, "DaemonSet") {
        return h;
    }
    let desired = int_at(obj, "/status/desiredNumberScheduled").unwrap_or(0);
    let updated = int_at(obj, "/status/updatedNumberScheduled").unwrap_or(0);
    let available = int_at(obj, "/status/numberAvailable").unwrap_or(0);
    if updated != desired {
        return Health::Progressing(format!("DaemonSet: {updated} of {desired} pods updated"));
    }
    if available != desired {
        return Health::Progressing(format!(
            "DaemonSet: {available} of {desired} pods available"
        ));
    }
    Health::Healthy
}

fn job(obj: &Value) -> Health {
    if let Some(("True", msg)) = condition(obj, "Failed") {
        let reason = obj
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.get("type").and_then(Value::as_str) == Some("Failed"))
            })
            .map(|c| str_at(c, "/reason"))
            .unwrap_or("");
        return Health::Failed(format!("Job failed: {reason} {msg}").trim_end().to_string());
    }
    match condition(obj, "Complete") {
        Some(("True", _)) => Health::Healthy,
        _ => Health::Progressing(format!(
            "Job not complete ({} succeeded, {} active)",
            int_at(obj, "/status/succeeded").unwrap_or(0),
            int_at(obj, "/status/active").unwrap_or(0)
        )),
    }
}

fn pod(obj: &Value) -> Health {
    let phase = str_at(obj, "/status/phase");
    if phase != "Running" {
        let phase = if phase.is_empty() { "unknown" } else { phase };
        return Health::Progressing(format!("Pod phase is {phase}"));
    }
    match condition(obj, "Ready") {
        Some(("True", _)) => Health::Healthy,
        _ => Health::Progressing("Pod is running but not ready".into()),
    }
}

fn service(obj: &Value) -> Health {
    match str_at(obj, "/spec/type") {
        "ExternalName" => Health::Healthy,
        "LoadBalancer" => {
            let has_ingress = obj
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if has_ingress {
                Health::Healthy
            } else {
                Health::Progressing("LoadBalancer has no ingress yet".into())
            }
        }
        _ => {
            if str_at(obj, "/spec/clusterIP").is_empty() {
                Health::Progressing("Service has no clusterIP yet".into())
            } else {
                Health::Healthy
            }
        }
    }
}

fn instance(obj: &Value) -> Health {
    let plans = obj.pointer("/status/planStatus").and_then(Value::as_object);
    if let Some(plans) = plans {
        for (name, plan) in plans {
            let status = str_at(plan, "/status");
            if status == "PENDING" || status == "IN_PROGRESS" {
                return Health::Progressing(format!("plan {name} is {status}"));
            }
        }
    }
    let requested = str_at(obj, "/spec/planExecution/planName");
    if requested.is_empty() {
        return Health::Healthy;
    }
    let status = plans
        .and_then(|p| p.get(requested))
        .map(|p| str_at(p, "/status"))
        .unwrap_or("");
    match status {
        "COMPLETE" => Health::Healthy,
        "FATAL_ERROR" => {
            let msg = plans
                .and_then(|p| p.get(requested))
                .map(|p| str_at(p, "/message"))
                .unwrap_or("");
            Health::Failed(
                format!("plan {requested} failed: {msg}")
                    .trim_end()
                    .to_string(),
            )
        }
        "" | "NEVER_RUN" => Health::Progressing(format!("plan {requested} not started yet")),
        other => Health::Progressing(format!("plan {requested} is {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn assert_progressing(h: Health, needle: &str) {
        match h {
            Health::Progressing(m) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("expected progressing ({needle}), got {other:?}"),
        }
    }

    fn deployment(
        generation: i64,
        observed: i64,
        replicas: i64,
        updated: i64,
        available: i64,
    ) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "generation": generation},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
            "status": {
                "observedGeneration": observed, "replicas": replicas,
                "updatedReplicas": updated, "readyReplicas": available,
                "availableReplicas": available,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]
            }
        })
    }

    #[test]
    fn deployment_rollout() {
        assert_eq!(evaluate(&deployment(2, 2, 3, 3, 3)), Health::Healthy);
        assert_progressing(
            evaluate(&deployment(3, 2, 3, 3, 3)),
            "generation 3 not yet observed",
        );
        assert_progressing(
            evaluate(&deployment(2, 2, 3, 1, 3)),
            "1 of 3 replicas updated",
        );
        assert_progressing(
            evaluate(&deployment(2, 2, 3, 3, 2)),
            "2 of 3 replicas available",
        );
        // A freshly created Deployment: no status at all.
        let fresh = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 1}, "spec": {"replicas": 1}});
        assert_progressing(evaluate(&fresh), "not yet observed");
        // Scaled to zero is healthy once observed.
        let zero = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 4}, "spec": {"replicas": 0},
            "status": {"observedGeneration": 4}});
        assert_eq!(evaluate(&zero), Health::Healthy);
    }

    #[test]
    fn statefulset_rollout_old_and_new_servers() {
        // Kubernetes 1.20 reports readyReplicas only.
        let old = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "zk", "generation": 1}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3,
                "currentReplicas": 3, "updatedReplicas": 3,
                "currentRevision": "zk-5d8", "updateRevision": "zk-5d8"}});
        assert_eq!(evaluate(&old), Health::Healthy);
        let rolling = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "zk", "generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                "availableReplicas": 2, "updatedReplicas": 1,
                "currentRevision": "zk-5d8", "updateRevision": "zk-7f1"}});
        assert_progressing(evaluate(&rolling), "1 of 3 replicas updated");
        let unavailable = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "zk", "generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                "availableReplicas": 2, "updatedReplicas": 3}});
        assert_progressing(evaluate(&unavailable), "2 of 3 replicas available");
    }

    #[test]
    fn daemonset_rollout() {
        let ds = |observed: i64, updated: i64, available: i64| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": {"name": "agent", "generation": 2},
                "status": {"observedGeneration": observed, "desiredNumberScheduled": 4,
                    "currentNumberScheduled": 4, "numberReady": available,
                    "updatedNumberScheduled": updated, "numberAvailable": available,
                    "numberMisscheduled": 0}})
        };
        assert_eq!(evaluate(&ds(2, 4, 4)), Health::Healthy);
        assert_progressing(evaluate(&ds(1, 4, 4)), "not yet observed");
        assert_progressing(evaluate(&ds(2, 3, 4)), "3 of 4 pods updated");
        assert_progressing(evaluate(&ds(2, 4, 1)), "1 of 4 pods available");
    }

    #[test]
    fn job_succeeded_running_failed() {
        let done = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup"},
            "status": {"succeeded": 1, "startTime": "2024-01-01T00:00:00Z",
                "completionTime": "2024-01-01T00:01:00Z",
                "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(evaluate(&done), Health::Healthy);
        let running = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup"},
            "status": {"active": 1, "startTime": "2024-01-01T00:00:00Z"}});
        assert_progressing(evaluate(&running), "1 active");
        let failed = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup"},
            "status": {"failed": 7, "conditions": [{"type": "Failed", "status": "True",
                "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]}});
        match evaluate(&failed) {
            Health::Failed(m) => assert!(m.contains("BackoffLimitExceeded"), "{m}"),
            other => panic!("failed job must be fatal, got {other:?}"),
        }
    }

    #[test]
    fn pod_ready() {
        let pod = |phase: &str, ready: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
                "status": {"phase": phase, "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": ready},
                    {"type": "ContainersReady", "status": ready},
                    {"type": "PodScheduled", "status": "True"}]}})
        };
        assert_eq!(evaluate(&pod("Running", "True")), Health::Healthy);
        assert_progressing(evaluate(&pod("Running", "False")), "not ready");
        assert_progressing(evaluate(&pod("Pending", "False")), "Pending");
        assert_progressing(evaluate(&pod("Failed", "False")), "Failed");
    }

    #[test]
    fn namespace_active() {
        let ns = |phase: &str| {
            json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "shop"}, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": phase}})
        };
        assert_eq!(evaluate(&ns("Active")), Health::Healthy);
        assert_progressing(evaluate(&ns("Terminating")), "Terminating");
    }

    #[test]
    fn service_cluster_ip_and_load_balancer() {
        let cip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.12", "ports": [{"port": 80}]}});
        assert_eq!(evaluate(&cip), Health::Healthy);
        let headless = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"clusterIP": "None"}});
        assert_eq!(evaluate(&headless), Health::Healthy);
        let pending_ip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "ClusterIP"}});
        assert_progressing(evaluate(&pending_ip), "no clusterIP");
        let lb = |ingress: Value| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.13"},
            "status": {"loadBalancer": ingress}})
        };
        assert_progressing(evaluate(&lb(json!({}))), "no ingress");
        assert_eq!(
            evaluate(&lb(json!({"ingress": [{"ip": "203.0.113.7"}]}))),
            Health::Healthy
        );
        let ext = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(evaluate(&ext), Health::Healthy);
    }

    #[test]
    fn crd_established() {
        let crd = |status: &str| {
            json!({"apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition", "metadata": {"name": "instances.kudo.dev"},
            "status": {"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": status, "reason": "InitialNamesAccepted"}]}})
        };
        assert_eq!(evaluate(&crd("True")), Health::Healthy);
        assert_progressing(evaluate(&crd("False")), "not established");
        let fresh = json!({"apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition", "metadata": {"name": "instances.kudo.dev"}});
        assert_progressing(evaluate(&fresh), "not established");
    }

    fn instance(plan_execution: Value, plan_status: Value) -> Value {
        json!({"apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "zk", "namespace": "n"},
            "spec": {"operatorVersion": {"name": "zookeeper-3.4.14-0.3.0"},
                "planExecution": plan_execution},
            "status": {"planStatus": plan_status}})
    }

    #[test]
    fn kudo_instance_without_running_plan() {
        let complete = instance(
            json!({"planName": "deploy", "uid": "u1", "status": "COMPLETE"}),
            json!({"deploy": {"name": "deploy", "status": "COMPLETE", "uid": "u1", "phases": []},
                   "backup": {"name": "backup", "status": "NEVER_RUN", "phases": []}}),
        );
        assert_eq!(evaluate(&complete), Health::Healthy);
        let idle = instance(
            json!({}),
            json!({"deploy": {"name": "deploy", "status": "COMPLETE"}}),
        );
        assert_eq!(evaluate(&idle), Health::Healthy);
        let running = instance(
            json!({"planName": "deploy", "uid": "u1"}),
            json!({"deploy": {"name": "deploy", "status": "IN_PROGRESS", "uid": "u1"}}),
        );
        assert_progressing(evaluate(&running), "deploy is IN_PROGRESS");
        let pending = instance(
            json!({}),
            json!({"update": {"name": "update", "status": "PENDING"}}),
        );
        assert_progressing(evaluate(&pending), "update is PENDING");
        let not_picked_up = instance(json!({"planName": "deploy", "uid": "u2"}), json!({}));
        assert_progressing(evaluate(&not_picked_up), "not started");
        let errored = instance(
            json!({"planName": "deploy", "uid": "u1"}),
            json!({"deploy": {"name": "deploy", "status": "ERROR", "message": "retrying"}}),
        );
        assert_progressing(evaluate(&errored), "deploy is ERROR");
        let fatal = instance(
            json!({"planName": "deploy", "uid": "u1"}),
            json!({"deploy": {"name": "deploy", "status": "FATAL_ERROR", "message": "job failed"}}),
        );
        assert_eq!(
            evaluate(&fatal),
            Health::Failed("plan deploy failed: job failed".into())
        );
    }

    #[test]
    fn other_kinds_are_healthy_once_they_exist_unless_deleting() {
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {}});
        assert_eq!(evaluate(&cm), Health::Healthy);
        let deleting = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "deletionTimestamp": "2024-01-01T00:00:00Z"}});
        assert_progressing(evaluate(&deleting), "being deleted");
    }
}
