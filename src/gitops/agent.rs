//! Agent clusters (`agent: true` in kudo.yaml): the cluster runs kudo's engine itself
//! (`kudo manager --agent`) and pulls its desired state from the management cluster, so the
//! control plane needs no network path and no credentials into it (OCM's ManifestWork, in
//! kudo's terms).
//!
//! The exchange lives in the management cluster, namespace `kudo-agent-<cluster>`:
//! - one ConfigMap per Instance, labelled `kudo.dev/work=<controlPlane>` ("work"): the control
//!   plane writes `key` (namespace/name) and `objects` (what a push-mode worker would apply:
//!   namespace, Operator, OperatorVersion, Instance, in order), or `delete: "true"` once the
//!   planner decided the Instance goes (a tombstone: a missing work item deletes nothing);
//! - the agent writes back, into the same ConfigMap under its own field manager, `instance`
//!   (the live Instance with its status, what the planner reads) and `deleted`;
//! - the Lease `kudo-agent`: the agent's heartbeat. Older than its duration, the control
//!   plane shows the cluster as "agent not reporting".
//!
//! Guarantees:
//! - the agent applies with the control plane's field manager, so an Instance keeps one
//!   owner whether its cluster is driven by push or by its agent;
//! - it deletes a local Instance only on a tombstone, and only while the Instance still
//!   carries the control plane's ownership labels: a wiped namespace or a lost ConfigMap
//!   deletes nothing;
//! - its plans run on its own engine: they keep running while the control plane is away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;
use tracing::{info, warn};

use crate::cluster::{Cluster, ClusterError, ErrorKind, ObjectRef};

/// The label of work ConfigMaps (value: the control plane's name).
pub const WORK_LABEL: &str = "kudo.dev/work";
/// The heartbeat Lease in an agent's namespace.
pub const HEARTBEAT: &str = "kudo-agent";
/// The agent's field manager for what it writes back.
pub const AGENT_MANAGER: &str = "kudo-agent";

/// The work ConfigMap's name for Instance `key` (namespace/name): a hash, since the two
/// names together may exceed a ConfigMap name.
pub fn work_name(key: &str) -> String {
    let digest = hex::encode(sha2::Sha256::digest(key.as_bytes()));
    format!("work-{}", &digest[..16])
}

/// The work item telling an agent to apply `objects` for `key`.
pub fn work(namespace: &str, control_plane: &str, key: &str, objects: &[Value]) -> Value {
    work_item(
        namespace,
        control_plane,
        key,
        json!({"key": key, "objects": serde_json::to_string(objects).unwrap_or_default()}),
    )
}

/// The tombstone telling an agent to delete `key`'s Instance (it replaces the work item).
pub fn tombstone(namespace: &str, control_plane: &str, key: &str) -> Value {
    work_item(
        namespace,
        control_plane,
        key,
        json!({"key": key, "delete": "true"}),
    )
}

fn work_item(namespace: &str, control_plane: &str, key: &str, data: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": work_name(key),
            "namespace": namespace,
            "labels": {WORK_LABEL: control_plane},
        },
        "data": data,
    })
}

/// The Instances an agent reported, by key, from its namespace's work items.
pub fn reported(works: &[Value]) -> BTreeMap<String, crate::api::Instance> {
    works
        .iter()
        .filter(|w| w.pointer("/data/delete").and_then(Value::as_str) != Some("true"))
        .filter_map(|w| {
            let key = w.pointer("/data/key")?.as_str()?.to_string();
            let text = w.pointer("/data/instance")?.as_str()?;
            Some((key, serde_json::from_str(text).ok()?))
        })
        .collect()
}

/// Whether a heartbeat Lease renewed at `renewed` (RFC 3339) for `seconds` is stale at
/// `now`; the reason when it is (or when there is none).
pub fn silent(lease: Option<&Value>, now: jiff::Timestamp) -> Option<String> {
    let Some(lease) = lease else {
        return Some("agent not reporting: it never wrote its heartbeat".into());
    };
    let renewed = lease
        .pointer("/spec/renewTime")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let seconds = lease
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(15);
    let Some(renewed) = renewed else {
        return Some("agent not reporting: its heartbeat has no renewTime".into());
    };
    let age = now.as_second() - renewed.as_second();
    (age > seconds).then(|| {
        format!("agent not reporting: last heartbeat {age}s ago (lease {seconds}s); its plans may still run")
    })
}

/// What `kudo manager --agent` was told.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The cluster's name in the control plane's kudo.yaml.
    pub cluster: String,
    /// Its namespace in the management cluster.
    pub namespace: String,
    pub control_plane: String,
    pub interval: Duration,
    pub heartbeat: Duration,
}

/// Pulls work from `management` into `local` every interval until `stop`, renewing the
/// heartbeat and reporting each Instance back. (The engine runs beside it, on `local`.)
pub async fn run(
    local: Arc<Cluster>,
    management: Arc<Cluster>,
    config: AgentConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut state = Pulled::default();
    let mut logged: Option<String> = None;
    info!(cluster = %config.cluster, namespace = %config.namespace, "agent: pulling desired state from the management cluster");
    loop {
        match pass(&local, &management, &config, &mut state).await {
            Ok(()) => logged = None,
            Err(e) => {
                let text = e.to_string();
                if logged.as_deref() != Some(text.as_str()) {
                    warn!(error = %text, "agent: pass failed; retrying (the local engine keeps running)");
                    logged = Some(text);
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// What the agent applied and reported, so unchanged work costs no write.
#[derive(Default)]
struct Pulled {
    /// kudo's CRDs are installed on the local cluster (the control plane cannot do it).
    crds: bool,
    applied: BTreeMap<String, String>,
    reported: BTreeMap<String, String>,
}

async fn pass(
    local: &Cluster,
    management: &Cluster,
    config: &AgentConfig,
    state: &mut Pulled,
) -> Result<(), ClusterError> {
    if !state.crds {
        crate::gitops::daemon::install_crds(local).await?;
        state.crds = true;
    }
    let seconds = config.heartbeat.as_secs().max(1);
    management
        .apply_as(
            &json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": HEARTBEAT, "namespace": config.namespace},
                "spec": {
                    "holderIdentity": config.cluster,
                    "leaseDurationSeconds": seconds,
                    "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                },
            }),
            AGENT_MANAGER,
        )
        .await?;
    let selector = format!("{WORK_LABEL}={}", config.control_plane);
    let works = management
        .list(&[("v1", "ConfigMap")], Some(&config.namespace), &selector)
        .await?;
    for w in &works {
        let (Some(name), Some(key)) = (
            w.pointer("/metadata/name").and_then(Value::as_str),
            w.pointer("/data/key").and_then(Value::as_str),
        ) else {
            continue;
        };
        let Some((ns, inst)) = key.split_once('/') else {
            continue;
        };
        let r = ObjectRef::new(crate::api::API_VERSION, "Instance", Some(ns), inst);
        if w.pointer("/data/delete").and_then(Value::as_str) == Some("true") {
            if w.pointer("/data/deleted").and_then(Value::as_str) == Some("true") {
                continue;
            }
            delete_if_ours(local, &r, &config.control_plane).await?;
            report(
                management,
                config,
                name,
                json!({"deleted": "true", "instance": null}),
            )
            .await?;
            state.applied.remove(name);
            state.reported.remove(name);
            continue;
        }
        let objects = w
            .pointer("/data/objects")
            .and_then(Value::as_str)
            .unwrap_or("[]");
        if state.applied.get(name).map(String::as_str) != Some(objects) {
            let list: Vec<Value> = serde_json::from_str(objects).map_err(|e| {
                ClusterError::request(
                    management.name(),
                    "read work",
                    format!("ConfigMap {}/{name}", config.namespace),
                    ErrorKind::Invalid,
                    format!("objects are not a JSON list: {e}"),
                )
            })?;
            for obj in &list {
                local
                    .apply_as(obj, crate::gitops::serve::FIELD_MANAGER)
                    .await?;
            }
            info!(instance = %key, "agent: applied the desired spec");
            state.applied.insert(name.to_string(), objects.to_string());
        }
        if let Some(mut live) = local.get_opt(&r).await? {
            if let Some(meta) = live.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
            let text = live.to_string();
            if state.reported.get(name) != Some(&text) {
                report(
                    management,
                    config,
                    name,
                    json!({"instance": text, "deleted": null}),
                )
                .await?;
                state.reported.insert(name.to_string(), text);
            }
        }
    }
    Ok(())
}

/// Writes the agent's keys of a work item (its own field manager: the control plane's keys
/// stay the control plane's).
async fn report(
    management: &Cluster,
    config: &AgentConfig,
    name: &str,
    data: Value,
) -> Result<(), ClusterError> {
    let data: serde_json::Map<String, Value> = data
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    management
        .apply_as(
            &json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": config.namespace},
                "data": data,
            }),
            AGENT_MANAGER,
        )
        .await
        .map(|_| ())
}

/// Deletes a local Instance the tombstone names, only while it is still the control
/// plane's (its ownership labels) and not deletion-protected.
async fn delete_if_ours(
    local: &Cluster,
    r: &ObjectRef,
    control_plane: &str,
) -> Result<(), ClusterError> {
    let Some(live) = local.get_opt(r).await? else {
        return Ok(());
    };
    let labels: BTreeMap<String, String> = live
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let ours = matches!(
        crate::gitops::ownership::owner_of(&labels, control_plane),
        crate::gitops::ownership::Owner::Ours { .. }
    );
    let protected = live
        .pointer(&format!(
            "/metadata/annotations/{}",
            crate::gitops::ownership::DELETION_PROTECTION_ANNOTATION.replace('/', "~1")
        ))
        .and_then(Value::as_str)
        == Some("true");
    if !ours || protected {
        warn!(instance = %r, "agent: not deleting: the Instance is not the control plane's (or is protected)");
        return Ok(());
    }
    let uid = live
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    info!(instance = %r, "agent: deleting the Instance its control plane no longer declares here");
    local.delete_uid(r, uid.as_deref()).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: on a cluster without kudo's CRDs (a fresh one: the control plane never
    /// reaches it to install them) the agent's apply failed with "unknown kind" forever.
    /// One pass installs them, applies the work item and reports the Instance back; a
    /// tombstone deletes it; a work item that vanished deletes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pass_installs_the_crds_applies_reports_and_deletes_only_on_a_tombstone() {
        let local = crate::sim::SimCluster::new("edge");
        let mgmt = crate::sim::SimCluster::new("mgmt");
        let (local_c, mgmt_c) = (
            Cluster::from_client("edge", local.client()),
            Cluster::from_client("management", mgmt.client()),
        );
        let config = AgentConfig {
            cluster: "edge".into(),
            namespace: "kudo-agent-edge".into(),
            control_plane: "kudo".into(),
            interval: Duration::from_millis(100),
            heartbeat: Duration::from_secs(15),
        };
        mgmt_c
            .apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": config.namespace}}))
            .await
            .expect("namespace");
        let instance = json!({"apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "db", "namespace": "prod", "labels": {
                "kudo.dev/managed-by": "kudo-gitops", "kudo.dev/control-plane": "kudo"}},
            "spec": {"operatorVersion": {"name": "db-1.0.0"}}});
        let objects = [
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod"}}),
            instance,
        ];
        mgmt_c
            .apply_as(
                &work(&config.namespace, "kudo", "prod/db", &objects),
                "kudo-gitops",
            )
            .await
            .expect("work item");
        let mut state = Pulled::default();
        pass(&local_c, &mgmt_c, &config, &mut state)
            .await
            .expect("a pass");
        let r = ObjectRef::new(crate::api::API_VERSION, "Instance", Some("prod"), "db");
        assert!(
            local_c.get_opt(&r).await.expect("read").is_some(),
            "applied"
        );
        let works = mgmt_c
            .list(
                &[("v1", "ConfigMap")],
                Some(&config.namespace),
                "kudo.dev/work=kudo",
            )
            .await
            .expect("list");
        assert_eq!(reported(&works).keys().collect::<Vec<_>>(), vec!["prod/db"]);
        let beat = mgmt_c
            .get_opt(&ObjectRef::new(
                "coordination.k8s.io/v1",
                "Lease",
                Some(&config.namespace),
                HEARTBEAT,
            ))
            .await
            .expect("read");
        assert_eq!(
            silent(beat.as_ref(), jiff::Timestamp::now()),
            None,
            "heartbeat written"
        );

        // The work item vanishes (a wiped namespace): nothing is deleted.
        mgmt_c
            .delete(&ObjectRef::new(
                "v1",
                "ConfigMap",
                Some(&config.namespace),
                work_name("prod/db"),
            ))
            .await
            .expect("delete the work item");
        pass(&local_c, &mgmt_c, &config, &mut state)
            .await
            .expect("a pass");
        assert!(local_c.get_opt(&r).await.expect("read").is_some(), "kept");
        // A tombstone: deleted.
        mgmt_c
            .apply_as(
                &tombstone(&config.namespace, "kudo", "prod/db"),
                "kudo-gitops",
            )
            .await
            .expect("tombstone");
        pass(&local_c, &mgmt_c, &config, &mut state)
            .await
            .expect("a pass");
        let gone = local_c.get_opt(&r).await.expect("read");
        assert!(
            gone.is_none()
                || gone.is_some_and(|i| i.pointer("/metadata/deletionTimestamp").is_some()),
            "deleted on the tombstone"
        );
    }

    #[test]
    fn a_heartbeat_older_than_its_lease_is_silence() {
        let now: jiff::Timestamp = "2026-12-03T12:00:30Z".parse().expect("time");
        let lease = |t: &str| json!({"spec": {"renewTime": t, "leaseDurationSeconds": 15}});
        assert_eq!(
            silent(Some(&lease("2026-12-03T12:00:20.123456Z")), now),
            None
        );
        let why = silent(Some(&lease("2026-12-03T12:00:00Z")), now).expect("stale");
        assert!(
            why.starts_with("agent not reporting: last heartbeat 30s ago"),
            "{why}"
        );
        assert!(silent(None, now).is_some_and(|w| w.contains("never")));
    }

    #[test]
    fn reports_are_read_by_key_and_tombstones_are_not_reports() {
        let inst = json!({"apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": {"operatorVersion": {"name": "x-1.0.0"}}});
        let mut w = work(
            "kudo-agent-edge",
            "kudo",
            "prod/db",
            std::slice::from_ref(&inst),
        );
        w["data"]["instance"] = json!(inst.to_string());
        let gone = tombstone("kudo-agent-edge", "kudo", "prod/old");
        let seen = reported(&[w.clone(), gone]);
        assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["prod/db"]);
        assert_ne!(work_name("prod/db"), work_name("prod/dc"));
        assert_eq!(
            w.pointer("/metadata/name"),
            tombstone("n", "kudo", "prod/db").pointer("/metadata/name"),
            "a tombstone replaces its work item"
        );
    }
}
