//! Health of a live object, as a pure function of its JSON (DESIGN §4), kind by kind as KUDO's
//! `IsHealthy` (`pkg/kubernetes/status/health.go`, which uses kubectl's rollout status viewers).
//!
//! Rules, by kind:
//! - `CustomResourceDefinition`: condition `Established=True`.
//! - `Deployment` (kubectl's `DeploymentStatusViewer`): `status.observedGeneration >=
//!   metadata.generation`; `updatedReplicas >= spec.replicas` (default 1); no old replicas
//!   left (`status.replicas <= updatedReplicas`); `availableReplicas >= updatedReplicas`. A
//!   `Progressing` condition with reason `ProgressDeadlineExceeded` is reported, not fatal.
//! - `StatefulSet` (kubectl's `StatefulSetStatusViewer`): observedGeneration set and caught
//!   up; `readyReplicas >= spec.replicas`; with a `rollingUpdate` strategy,
//!   `updatedReplicas >= spec.replicas - partition`, else `updateRevision == currentRevision`.
//!   `OnDelete` StatefulSets are healthy once observed and ready (KUDO never calls them
//!   healthy, kubectl refuses to tell; pods only change when deleted, so nothing else to wait for).
//! - `DaemonSet`: observedGeneration caught up, `updatedNumberScheduled` and `numberAvailable`
//!   equal `desiredNumberScheduled` (past KUDO, which treats DaemonSets as healthy at once).
//! - `Job`: condition `Failed=True` is [`Health::Failed`] (fatal); condition `Complete=True`,
//!   or `status.succeeded` reaching `spec.completions` (default 1; KUDO: `succeeded == 1`), is healthy.
//! - `Pod`: phase `Running` and condition `Ready=True` (as KUDO, a failed Pod is not fatal; only
//!   a failed Job is).
//! - `Namespace`: phase `Active`.
//! - `Service`: `ExternalName` is healthy; every other type needs a `spec.clusterIP` (headless
//!   `None` counts); `LoadBalancer` also needs `spec.externalIPs` or `status.loadBalancer.ingress`.
//! - KUDO `Instance` (kudo.dev): healthy only when the plan its manager started for its current
//!   spec is `COMPLETE`. KUDO says "no plan scheduled" (`spec.planExecution.planName` empty);
//!   kudo keeps `planExecution` after a run, so it reads what its manager acted on instead: the
//!   snapshot annotation [`LAST_APPLIED_ANNOTATION`] (operator version, parameters, plan
//!   and uid) must match the spec, and that plan's status (same uid) must be `COMPLETE`.
//!   A fresh Instance (no snapshot yet), a pending manual trigger, a changed spec the manager
//!   has not acted on, or a plan still running is progressing; `FATAL_ERROR` (or a cancelled
//!   plan) makes the child [`Health::Failed`].
//! - Anything else is healthy once it exists.
//!
//! An object with `metadata.deletionTimestamp` is never healthy: it is on its way out.

use serde_json::Value;

use super::object::split_api_version;
use crate::api::LAST_APPLIED_ANNOTATION;

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
        ("apps", "Deployment") => deployment(obj),
        ("apps", "StatefulSet") => stateful_set(obj),
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

/// kubectl's `DeploymentStatusViewer`, as KUDO uses it.
fn deployment(obj: &Value) -> Health {
    if let Err(h) = generation_observed(obj, "Deployment") {
        return h;
    }
    if let Some(c) = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"))
        })
        && str_at(c, "/reason") == "ProgressDeadlineExceeded"
    {
        return Health::Progressing(format!(
            "Deployment: exceeded its progress deadline: {}",
            str_at(c, "/message")
        ));
    }
    let desired = int_at(obj, "/spec/replicas").unwrap_or(1);
    let replicas = int_at(obj, "/status/replicas").unwrap_or(0);
    let updated = int_at(obj, "/status/updatedReplicas").unwrap_or(0);
    let available = int_at(obj, "/status/availableReplicas").unwrap_or(0);
    if updated < desired {
        return Health::Progressing(format!(
            "Deployment: {updated} of {desired} replicas updated"
        ));
    }
    if replicas > updated {
        return Health::Progressing(format!(
            "Deployment: {} old replicas pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Health::Progressing(format!(
            "Deployment: {available} of {updated} replicas available"
        ));
    }
    Health::Healthy
}

/// kubectl's `StatefulSetStatusViewer`, as KUDO uses it (except for `OnDelete`, see the
/// module doc).
fn stateful_set(obj: &Value) -> Health {
    let generation = int_at(obj, "/metadata/generation").unwrap_or(0);
    let observed = int_at(obj, "/status/observedGeneration").unwrap_or(0);
    if observed == 0 || observed < generation {
        return Health::Progressing(format!(
            "StatefulSet generation {generation} not yet observed (observed {observed})"
        ));
    }
    let desired = int_at(obj, "/spec/replicas").unwrap_or(1);
    let ready = int_at(obj, "/status/readyReplicas").unwrap_or(0);
    if ready < desired {
        return Health::Progressing(format!("StatefulSet: {ready} of {desired} replicas ready"));
    }
    let strategy = str_at(obj, "/spec/updateStrategy/type");
    if strategy == "OnDelete" {
        return Health::Healthy;
    }
    let updated = int_at(obj, "/status/updatedReplicas").unwrap_or(0);
    if obj.pointer("/spec/updateStrategy/rollingUpdate").is_some() {
        if let Some(partition) = int_at(obj, "/spec/updateStrategy/rollingUpdate/partition") {
            let wanted = desired - partition;
            if updated < wanted {
                return Health::Progressing(format!(
                    "StatefulSet: {updated} of {wanted} replicas updated (partition {partition})"
                ));
            }
        }
        return Health::Healthy;
    }
    let (current, update) = (
        str_at(obj, "/status/currentRevision"),
        str_at(obj, "/status/updateRevision"),
    );
    if current != update {
        return Health::Progressing(format!(
            "StatefulSet: rolling update to revision {update}: {updated} replicas updated"
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
    let succeeded = int_at(obj, "/status/succeeded").unwrap_or(0);
    let completions = int_at(obj, "/spec/completions").unwrap_or(1).max(1);
    match condition(obj, "Complete") {
        Some(("True", _)) => Health::Healthy,
        _ if succeeded >= completions => Health::Healthy,
        _ => Health::Progressing(format!(
            "Job not complete ({succeeded} succeeded, {} active)",
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

/// KUDO's `isServiceHealthy` (adapted from Helm's wait).
fn service(obj: &Value) -> Health {
    if str_at(obj, "/spec/type") == "ExternalName" {
        return Health::Healthy;
    }
    if str_at(obj, "/spec/clusterIP").is_empty() {
        return Health::Progressing("Service has no clusterIP yet".into());
    }
    if str_at(obj, "/spec/type") == "LoadBalancer" {
        let non_empty = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        };
        if !non_empty("/spec/externalIPs") && !non_empty("/status/loadBalancer/ingress") {
            return Health::Progressing("LoadBalancer has no ingress yet".into());
        }
    }
    Health::Healthy
}

/// An Instance is healthy when the plan its manager started for its current spec is
/// COMPLETE (see the module doc).
fn instance(obj: &Value) -> Health {
    let manual = str_at(obj, "/spec/planExecution/planName");
    if !manual.is_empty() && str_at(obj, "/spec/planExecution/uid").is_empty() {
        return Health::Progressing(format!("plan {manual} requested, not started yet"));
    }
    let snapshot: Option<Value> = obj
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok());
    let Some(snapshot) = snapshot else {
        return Health::Progressing(with_refusal(obj, "no plan started yet".into()));
    };
    let spec_version = str_at(obj, "/spec/operatorVersion/name");
    let acted_version = str_at(&snapshot, "/operatorVersion");
    if spec_version != acted_version {
        return Health::Progressing(with_refusal(
            obj,
            format!(
                "operator version {spec_version} not acted on yet (last plan ran for {acted_version})"
            ),
        ));
    }
    let empty = serde_json::Map::new();
    let params = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_object)
            .unwrap_or(&empty)
            .clone()
    };
    if params(obj, "/spec/parameters") != params(&snapshot, "/parameters") {
        return Health::Progressing(with_refusal(
            obj,
            "parameters changed, no plan started for them yet".into(),
        ));
    }
    let plan = str_at(&snapshot, "/plan");
    let uid = str_at(&snapshot, "/planUid");
    let Some(status) = obj
        .pointer("/status/planStatus")
        .and_then(|p| p.get(plan))
        .filter(|p| str_at(p, "/uid") == uid)
    else {
        return Health::Progressing(format!("plan {plan} not started yet"));
    };
    let message = str_at(status, "/message");
    match str_at(status, "/status") {
        "COMPLETE" => Health::Healthy,
        "FATAL_ERROR" => Health::Failed(
            format!("plan {plan} failed: {message}")
                .trim_end()
                .to_string(),
        ),
        "CANCELLED" => Health::Failed(format!("plan {plan} was cancelled")),
        "" | "NEVER_RUN" => Health::Progressing(format!("plan {plan} not started yet")),
        other => Health::Progressing(format!("plan {plan} is {other}")),
    }
}

/// Appends why the manager refused to act on the spec (its `Ready` condition), if it did.
fn with_refusal(obj: &Value, why: String) -> String {
    match condition(obj, "Ready") {
        Some(("False", message)) if !message.is_empty() => {
            let reason = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| {
                    cs.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                })
                .map(|c| str_at(c, "/reason"))
                .unwrap_or("");
            if matches!(
                reason,
                "ChangeRejected" | "InvalidParameters" | "OperatorVersionNotFound" | "InvalidSpec"
            ) {
                format!("{why} ({reason}: {message})")
            } else {
                why
            }
        }
        _ => why,
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

    /// kubectl's viewer, which KUDO uses: old replicas still terminating are waited for, a
    /// scale-down whose new pods are all updated is not, and a passed progress deadline is
    /// reported (not fatal).
    #[test]
    fn deployment_follows_kubectl_rollout_status() {
        let mut surge = deployment(2, 2, 3, 3, 3);
        surge["status"]["replicas"] = json!(4);
        assert_progressing(evaluate(&surge), "1 old replicas pending termination");
        let scaling_down = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generation": 3}, "spec": {"replicas": 1},
            "status": {"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3,
                "availableReplicas": 3}});
        assert_eq!(evaluate(&scaling_down), Health::Healthy);
        let mut stuck = deployment(2, 2, 3, 1, 1);
        stuck["status"]["conditions"] = json!([{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"web-5d8\" has timed out progressing."}]);
        assert_progressing(evaluate(&stuck), "exceeded its progress deadline");
    }

    fn stateful_set(spec: Value, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "zk", "namespace": "n", "generation": 2},
            "spec": spec, "status": status})
    }

    #[test]
    fn statefulset_follows_kubectl_rollout_status() {
        let rolling = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
        // Kubernetes 1.20 reports readyReplicas only; ready is what kubectl reads on any server.
        let done = stateful_set(
            json!({"replicas": 3, "updateStrategy": rolling}),
            json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                "currentReplicas": 3, "updatedReplicas": 3,
                "currentRevision": "zk-5d8", "updateRevision": "zk-5d8"}),
        );
        assert_eq!(evaluate(&done), Health::Healthy);
        let not_ready = stateful_set(
            json!({"replicas": 3, "updateStrategy": rolling}),
            json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 2,
                "availableReplicas": 2, "updatedReplicas": 3}),
        );
        assert_progressing(evaluate(&not_ready), "2 of 3 replicas ready");
        let rolling_out = stateful_set(
            json!({"replicas": 3, "updateStrategy": rolling}),
            json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                "updatedReplicas": 1, "currentRevision": "zk-5d8", "updateRevision": "zk-7f1"}),
        );
        assert_progressing(evaluate(&rolling_out), "1 of 3 replicas updated");
        // A partition keeps the pods below it on the old revision: done once the rest are.
        let partitioned = stateful_set(
            json!({"replicas": 3, "updateStrategy":
                {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
            json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                "updatedReplicas": 1, "currentRevision": "zk-5d8", "updateRevision": "zk-7f1"}),
        );
        assert_eq!(evaluate(&partitioned), Health::Healthy);
        // Without a rollingUpdate block, the revisions must agree.
        let unrevised = stateful_set(
            json!({"replicas": 3}),
            json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                "updatedReplicas": 3, "currentRevision": "zk-5d8", "updateRevision": "zk-7f1"}),
        );
        assert_progressing(evaluate(&unrevised), "revision zk-7f1");
        let on_delete = stateful_set(
            json!({"replicas": 3, "updateStrategy": {"type": "OnDelete"}}),
            json!({"observedGeneration": 2, "replicas": 3, "readyReplicas": 3,
                "updatedReplicas": 0, "currentRevision": "zk-5d8", "updateRevision": "zk-7f1"}),
        );
        assert_eq!(evaluate(&on_delete), Health::Healthy);
        let unobserved = stateful_set(json!({"replicas": 0}), json!({}));
        assert_progressing(evaluate(&unobserved), "not yet observed");
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
        // KUDO reads `succeeded`: healthy before the Complete condition is written.
        let succeeded = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup"},
            "spec": {"backoffLimit": 6}, "status": {"succeeded": 1}});
        assert_eq!(evaluate(&succeeded), Health::Healthy);
        let one_of_three = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup"},
            "spec": {"completions": 3}, "status": {"succeeded": 1, "active": 1}});
        assert_progressing(evaluate(&one_of_three), "1 succeeded");
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
        // KUDO: a LoadBalancer needs its clusterIP too, and external IPs stand for an ingress.
        let lb_no_ip = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}});
        assert_progressing(evaluate(&lb_no_ip), "no clusterIP");
        let lb_external = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.14",
                "externalIPs": ["198.51.100.3"]}, "status": {"loadBalancer": {}}});
        assert_eq!(evaluate(&lb_external), Health::Healthy);
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

    /// A child Instance as its manager leaves it: spec `{version, parameters}`, the snapshot
    /// of what it acted on, and the plan statuses.
    fn instance(spec_params: Value, snapshot: Option<Value>, plan_status: Value) -> Value {
        let mut obj = json!({"apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "zk", "namespace": "n"},
            "spec": {"operatorVersion": {"name": "zookeeper-3.4.14-0.3.0"},
                "parameters": spec_params},
            "status": {"planStatus": plan_status}});
        if let Some(snap) = snapshot {
            obj["metadata"]["annotations"] = json!({LAST_APPLIED_ANNOTATION: snap.to_string()});
            obj["spec"]["planExecution"] = json!({"planName": snap["plan"],
                "uid": snap["planUid"], "status": "IN_PROGRESS"});
        }
        obj
    }

    fn snap(params: Value, plan: &str, uid: &str) -> Option<Value> {
        Some(
            json!({"operatorVersion": "zookeeper-3.4.14-0.3.0", "parameters": params,
            "plan": plan, "planUid": uid}),
        )
    }

    /// Right after an Apply task creates it, a child Instance has no status and no snapshot:
    /// KUDO's rule (no plan scheduled) would call it healthy; it is not.
    #[test]
    fn fresh_child_instance_is_progressing() {
        let fresh = json!({"apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "zk", "namespace": "n"},
            "spec": {"operatorVersion": {"name": "zookeeper-3.4.14-0.3.0"},
                "parameters": {"SIZE": "3"}}});
        assert_progressing(evaluate(&fresh), "no plan started yet");
    }

    #[test]
    fn instance_healthy_only_when_the_plan_for_its_current_spec_is_complete() {
        let p = json!({"SIZE": "3"});
        let complete = instance(
            p.clone(),
            snap(p.clone(), "deploy", "u1"),
            json!({"deploy": {"name": "deploy", "status": "COMPLETE", "uid": "u1", "phases": []},
                   "backup": {"name": "backup", "status": "NEVER_RUN", "phases": []}}),
        );
        assert_eq!(evaluate(&complete), Health::Healthy);
        let running = instance(
            p.clone(),
            snap(p.clone(), "deploy", "u1"),
            json!({"deploy": {"name": "deploy", "status": "IN_PROGRESS", "uid": "u1"}}),
        );
        assert_progressing(evaluate(&running), "deploy is IN_PROGRESS");
        let errored = instance(
            p.clone(),
            snap(p.clone(), "deploy", "u1"),
            json!({"deploy": {"name": "deploy", "status": "ERROR", "uid": "u1", "message": "retrying"}}),
        );
        assert_progressing(evaluate(&errored), "deploy is ERROR");
        // The snapshot names a new run whose status tree is not written yet: the COMPLETE
        // status belongs to the previous run.
        let restarted = instance(
            p.clone(),
            snap(p.clone(), "deploy", "u2"),
            json!({"deploy": {"name": "deploy", "status": "COMPLETE", "uid": "u1"}}),
        );
        assert_progressing(evaluate(&restarted), "deploy not started yet");
        // The parent changed the parameters; the child's manager has not acted on them.
        let changed = instance(
            json!({"SIZE": "5"}),
            snap(p.clone(), "deploy", "u1"),
            json!({"deploy": {"name": "deploy", "status": "COMPLETE", "uid": "u1"}}),
        );
        assert_progressing(evaluate(&changed), "parameters changed");
        let mut upgraded = complete.clone();
        upgraded["spec"]["operatorVersion"]["name"] = json!("zookeeper-3.4.14-0.4.0");
        assert_progressing(evaluate(&upgraded), "0.4.0 not acted on yet");
        let mut manual = complete.clone();
        manual["spec"]["planExecution"] = json!({"planName": "backup"});
        assert_progressing(evaluate(&manual), "plan backup requested");
    }

    #[test]
    fn instance_whose_plan_failed_or_was_cancelled_is_failed() {
        let p = json!({});
        let fatal = instance(
            p.clone(),
            snap(p.clone(), "deploy", "u1"),
            json!({"deploy": {"name": "deploy", "status": "FATAL_ERROR", "uid": "u1", "message": "job failed"}}),
        );
        assert_eq!(
            evaluate(&fatal),
            Health::Failed("plan deploy failed: job failed".into())
        );
        let cancelled = instance(
            p.clone(),
            snap(p.clone(), "deploy", "u1"),
            json!({"deploy": {"name": "deploy", "status": "CANCELLED", "uid": "u1"}}),
        );
        assert_eq!(
            evaluate(&cancelled),
            Health::Failed("plan deploy was cancelled".into())
        );
    }

    /// A change the child's manager refused is still waited for (it may be reverted), and the
    /// message says why it is not acted on.
    #[test]
    fn refused_change_is_named_in_the_wait() {
        let mut refused = instance(
            json!({"SIZE": "5"}),
            snap(json!({"SIZE": "3"}), "deploy", "u1"),
            json!({"deploy": {"name": "deploy", "status": "COMPLETE", "uid": "u1"}}),
        );
        refused["status"]["conditions"] = json!([{"type": "Ready", "status": "False",
            "reason": "ChangeRejected", "message": "immutable parameters cannot change: SIZE"}]);
        assert_progressing(
            evaluate(&refused),
            "(ChangeRejected: immutable parameters cannot change: SIZE)",
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
