//! The workload simulator: plays the controllers a real cluster runs (deployment, statefulset,
//! daemonset, replicaset, job, kubelet, service load balancer, volume binder) by writing the
//! status they would write, after a configurable delay. It talks to any `kube::Client`, so it
//! drives the simulated API and a real API server (envtest, which has no controllers) alike.
//!
//! `desired_status` is the pure part: given a live object it says which status the controller
//! would write next; the runner watches each kind and writes that status via `/status`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// Annotation that makes a simulated Job fail instead of succeed.
pub const FAIL_ANNOTATION: &str = "sim.kudo.dev/fail";

/// Field manager of the simulator's status writes.
pub const MANAGER: &str = "kudo-sim-controllers";

/// Timing of the simulated controllers.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Delay before workloads, pods, services and volumes report ready.
    pub ready_delay: Duration,
    /// How long a Job runs before it succeeds (or fails).
    pub job_duration: Duration,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            ready_delay: Duration::from_millis(500),
            job_duration: Duration::from_secs(1),
        }
    }
}

/// The kinds the simulator plays a controller for.
pub const KINDS: &[(&str, &str, &str, &str)] = &[
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("batch", "v1", "Job", "jobs"),
    ("", "v1", "Pod", "pods"),
    ("", "v1", "Service", "services"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
];

/// What the controller does next for an object.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Wait this long before writing (the object may change meanwhile; it is re-read).
    pub delay: Duration,
    /// The complete status to write.
    pub status: Value,
}

fn i(obj: &Value, ptr: &str, default: i64) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(default)
}

fn cond(ty: &str, status: &str, reason: &str, message: &str, now: &str) -> Value {
    json!({"type": ty, "status": status, "lastUpdateTime": now, "lastTransitionTime": now,
           "reason": reason, "message": message})
}

/// Status fields that only change when something real changes (timestamps excluded), used to
/// decide whether a write is needed at all.
fn settled(status: Option<&Value>, want: &Value) -> bool {
    let Some(have) = status else { return false };
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            for k in [
                "conditions",
                "startTime",
                "completionTime",
                "containerStatuses",
            ] {
                m.shift_remove(k);
            }
        }
        v
    };
    strip(have) == strip(want)
}

/// The next status write the real controller would make for `obj` of `kind`, if any.
pub fn desired_status(kind: &str, obj: &Value, cfg: &WorkloadConfig, now: &str) -> Option<Step> {
    let generation = i(obj, "/metadata/generation", 1);
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let current = obj.get("status");
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return None;
    }
    let ready = |status: Value| -> Option<Step> {
        if settled(current, &status) {
            None
        } else {
            Some(Step {
                delay: cfg.ready_delay,
                status,
            })
        }
    };
    match kind {
        "Deployment" => {
            let r = i(obj, "/spec/replicas", 1);
            ready(json!({
                "observedGeneration": generation, "replicas": r, "updatedReplicas": r,
                "readyReplicas": r, "availableReplicas": r,
                "conditions": [
                    cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", now),
                    cond("Progressing", "True", "NewReplicaSetAvailable", &format!("ReplicaSet \"{name}\" has successfully progressed."), now),
                ],
            }))
        }
        "StatefulSet" => {
            let r = i(obj, "/spec/replicas", 1);
            let rev = format!("{name}-{generation:x}");
            ready(json!({
                "observedGeneration": generation, "replicas": r, "readyReplicas": r,
                "currentReplicas": r, "updatedReplicas": r, "availableReplicas": r,
                "currentRevision": rev, "updateRevision": rev, "collisionCount": 0,
            }))
        }
        "DaemonSet" => ready(json!({
            "observedGeneration": generation, "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1, "updatedNumberScheduled": 1, "numberReady": 1,
            "numberAvailable": 1, "numberMisscheduled": 0,
        })),
        "ReplicaSet" => {
            let r = i(obj, "/spec/replicas", 1);
            ready(json!({
                "observedGeneration": generation, "replicas": r, "fullyLabeledReplicas": r,
                "readyReplicas": r, "availableReplicas": r,
            }))
        }
        "Job" => {
            let fail = obj
                .pointer(&format!(
                    "/metadata/annotations/{}",
                    FAIL_ANNOTATION.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                == Some("true");
            let started = current.and_then(|s| s.get("startTime")).cloned();
            let finished = current
                .and_then(|s| s.get("conditions"))
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Complete" || c["type"] == "Failed")
                });
            match (started, finished) {
                (_, true) => None,
                (None, false) => Some(Step {
                    delay: Duration::ZERO,
                    status: json!({"startTime": now, "active": 1, "ready": 0}),
                }),
                (Some(start), false) if fail => Some(Step {
                    delay: cfg.job_duration,
                    status: json!({"startTime": start, "failed": 1, "ready": 0, "conditions": [
                        cond("FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now),
                        cond("Failed", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now),
                    ]}),
                }),
                (Some(start), false) => Some(Step {
                    delay: cfg.job_duration,
                    status: json!({"startTime": start, "completionTime": now, "succeeded": 1, "ready": 0,
                    "conditions": [
                        cond("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods", now),
                        cond("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods", now),
                    ]}),
                }),
            }
        }
        "Pod" => {
            let containers: Vec<Value> = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .map(|c| {
                            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": true,
                                   "restartCount": 0, "started": true, "state": {"running": {"startedAt": now}}})
                        })
                        .collect()
                })
                .unwrap_or_default();
            let pod_cond =
                |ty: &str| json!({"type": ty, "status": "True", "lastTransitionTime": now});
            let status = json!({
                "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.244.0.10", "startTime": now,
                "qosClass": current.and_then(|s| s.get("qosClass")).cloned().unwrap_or(json!("BestEffort")),
                "conditions": [pod_cond("Initialized"), pod_cond("Ready"), pod_cond("ContainersReady"), pod_cond("PodScheduled")],
                "containerStatuses": containers,
            });
            let running = current.and_then(|s| s.get("phase")) == Some(&json!("Running"));
            if running {
                None
            } else {
                Some(Step {
                    delay: cfg.ready_delay,
                    status,
                })
            }
        }
        "Service" => {
            if obj.pointer("/spec/type") != Some(&json!("LoadBalancer")) {
                return None;
            }
            let has_ingress = current
                .and_then(|s| s.pointer("/loadBalancer/ingress"))
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if has_ingress {
                return None;
            }
            Some(Step {
                delay: cfg.ready_delay,
                status: json!({"loadBalancer": {"ingress": [{"ip": "172.18.255.200", "ipMode": "VIP"}]}}),
            })
        }
        "PersistentVolumeClaim" => {
            if current.and_then(|s| s.get("phase")) == Some(&json!("Bound")) {
                return None;
            }
            Some(Step {
                delay: cfg.ready_delay,
                status: json!({
                    "phase": "Bound",
                    "accessModes": obj.pointer("/spec/accessModes").cloned().unwrap_or(json!(["ReadWriteOnce"])),
                    "capacity": obj.pointer("/spec/resources/requests").cloned().unwrap_or(json!({"storage": "1Gi"})),
                }),
            })
        }
        _ => None,
    }
}

/// A running simulator; dropping it stops the controllers.
#[derive(Debug)]
pub struct Workloads {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Workloads {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts one simulated controller per kind against `client`, for all namespaces.
pub fn spawn(client: kube::Client, cfg: WorkloadConfig) -> Workloads {
    spawn_in(client, None, cfg)
}

/// Starts the simulated controllers for one namespace only (or all when `None`): on a shared
/// real API server they must not touch other tests' objects.
pub fn spawn_in(client: kube::Client, namespace: Option<&str>, cfg: WorkloadConfig) -> Workloads {
    let tasks = KINDS
        .iter()
        .map(|(g, v, k, plural)| {
            let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural);
            let api: Api<DynamicObject> = match namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
                None => Api::all_with(client.clone(), &ar),
            };
            tokio::spawn(control(client.clone(), ar, api, k.to_string(), cfg.clone()))
        })
        .collect();
    Workloads { tasks }
}

async fn control(
    client: kube::Client,
    ar: ApiResource,
    api: Api<DynamicObject>,
    kind: String,
    cfg: WorkloadConfig,
) {
    let pending: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(item) = stream.next().await {
        let obj = match item {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(kind, error = %e, "simulated controller watch error");
                continue;
            }
        };
        let ns = obj.metadata.namespace.clone().unwrap_or_default();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let Ok(value) = serde_json::to_value(&obj) else {
            continue;
        };
        if desired_status(&kind, &value, &cfg, &crate::sim::store::now()).is_none() {
            continue;
        }
        let key = (ns.clone(), name.clone());
        if !pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone())
        {
            continue;
        }
        let (client, ar, kind, cfg, pending) = (
            client.clone(),
            ar.clone(),
            kind.clone(),
            cfg.clone(),
            pending.clone(),
        );
        tokio::spawn(async move {
            let api: Api<DynamicObject> = if ns.is_empty() {
                Api::all_with(client, &ar)
            } else {
                Api::namespaced_with(client, &ns, &ar)
            };
            // Steps can chain (a Job starts, then finishes); re-read before each.
            for _ in 0..4 {
                let Some(step) = next_step(&api, &name, &kind, &cfg).await else {
                    break;
                };
                let step = if step.delay.is_zero() {
                    step
                } else {
                    tokio::time::sleep(step.delay).await;
                    // The spec may have changed while waiting: recompute from the fresh object.
                    let Some(step) = next_step(&api, &name, &kind, &cfg).await else {
                        break;
                    };
                    step
                };
                if let Err(e) = write_status(&api, &name, step.status).await {
                    // Retried from a fresh read (next_step waits out an unreachable cluster).
                    tracing::debug!(kind, name, error = %e, "simulated controller status write failed");
                    continue;
                }
            }
            pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(ns, name));
        });
    }
}

/// The next status to write, re-reading the object. A failed read (the cluster is away) is
/// retried with backoff for up to a minute, so a controller that saw an object before a
/// partition still finishes it afterwards; a deleted object ends the chain.
async fn next_step(
    api: &Api<DynamicObject>,
    name: &str,
    kind: &str,
    cfg: &WorkloadConfig,
) -> Option<Step> {
    let mut delay = std::time::Duration::from_millis(100);
    for _ in 0..20 {
        match api.get_opt(name).await {
            Ok(Some(live)) => {
                let value = serde_json::to_value(&live).ok()?;
                return desired_status(kind, &value, cfg, &crate::sim::store::now());
            }
            Ok(None) => return None,
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
        }
    }
    None
}

async fn write_status(api: &Api<DynamicObject>, name: &str, status: Value) -> kube::Result<()> {
    let pp = PatchParams {
        field_manager: Some(MANAGER.to_string()),
        ..Default::default()
    };
    api.patch_status(name, &pp, &Patch::Merge(json!({"status": status})))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WorkloadConfig {
        WorkloadConfig {
            ready_delay: Duration::from_millis(7),
            job_duration: Duration::from_millis(9),
        }
    }

    #[test]
    fn deployment_reports_rollout_for_current_generation() {
        let d = json!({"metadata": {"name": "web", "generation": 3}, "spec": {"replicas": 2}});
        let step = desired_status("Deployment", &d, &cfg(), "t").expect("needs status");
        assert_eq!(step.delay, Duration::from_millis(7));
        assert_eq!(step.status["observedGeneration"], 3);
        assert_eq!(step.status["availableReplicas"], 2);
        let mut done = d.clone();
        done["status"] = step.status;
        assert!(
            desired_status("Deployment", &done, &cfg(), "t2").is_none(),
            "settled"
        );
        done["metadata"]["generation"] = json!(4);
        assert!(
            desired_status("Deployment", &done, &cfg(), "t2").is_some(),
            "new generation"
        );
    }

    #[test]
    fn job_starts_then_succeeds_or_fails_when_annotated() {
        let j = json!({"metadata": {"name": "j"}});
        let start = desired_status("Job", &j, &cfg(), "t0").expect("start");
        assert_eq!(
            (start.delay, start.status["active"].clone()),
            (Duration::ZERO, json!(1))
        );
        let mut running = j.clone();
        running["status"] = start.status;
        let end = desired_status("Job", &running, &cfg(), "t1").expect("end");
        assert_eq!(end.delay, Duration::from_millis(9));
        assert_eq!(end.status["conditions"][1]["type"], "Complete");
        running["metadata"]["annotations"] = json!({FAIL_ANNOTATION: "true"});
        let failed = desired_status("Job", &running, &cfg(), "t1").expect("fail");
        assert_eq!(failed.status["conditions"][1]["type"], "Failed");
        running["status"] = failed.status;
        assert!(desired_status("Job", &running, &cfg(), "t2").is_none());
    }

    #[test]
    fn pods_run_pvcs_bind_load_balancers_get_ingress() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}, "status": {"phase": "Pending"}});
        let s = desired_status("Pod", &pod, &cfg(), "t")
            .expect("pod")
            .status;
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["ready"], true);
        let pvc = json!({"metadata": {"name": "v"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}});
        assert_eq!(
            desired_status("PersistentVolumeClaim", &pvc, &cfg(), "t")
                .expect("pvc")
                .status["capacity"]["storage"],
            "5Gi"
        );
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}});
        assert!(desired_status("Service", &svc, &cfg(), "t").is_none());
        let lb = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}});
        assert!(desired_status("Service", &lb, &cfg(), "t").is_some());
    }
}
