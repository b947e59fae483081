//! The control plane's side of an agent cluster (see [`crate::gitops::agent`]): instead of
//! applying to the cluster, the worker writes work items into the cluster's namespace of the
//! management cluster, reads the Instances the agent reports there, and judges the cluster up
//! by the agent's heartbeat. Same planner, same decisions, same leader gate on every write.

use std::sync::Arc;

use serde_json::Value;
use tracing::info;

use super::FIELD_MANAGER;
use super::state::{ClusterSlot, Seen, Shared, lock};
use super::worker::instance_objects;
use crate::cluster::{ClusterError, ErrorKind, ObjectRef};
use crate::gitops::agent;

/// One pass on an agent cluster whose exchange lives in `namespace` (which the control plane
/// does not create: deploy/agent-namespace/ does, with the agent's narrow Role).
pub(super) async fn work(
    shared: &Arc<Shared>,
    slot: &ClusterSlot,
    namespace: &str,
) -> Result<(), ClusterError> {
    let mgmt = &slot.cluster;
    let control_plane = shared.config().control_plane.clone();
    let desired = shared
        .desired
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some(d) = &desired
        && shared.is_leader()
    {
        let apply = lock(&slot.apply).clone();
        for key in apply {
            if let Some(inst) = d.instances.get(&key) {
                let objects = instance_objects(d, inst, &control_plane, None);
                mgmt.apply_as(
                    &agent::work(namespace, &control_plane, &key, &objects),
                    FIELD_MANAGER,
                )
                .await?;
            }
        }
        let reverts = lock(&slot.revert).clone();
        for (key, to) in reverts {
            if let Some(good) = to.state.instances.get(&key) {
                let objects = instance_objects(&to.state, good, &control_plane, to.plan.as_deref());
                mgmt.apply_as(
                    &agent::work(namespace, &control_plane, &key, &objects),
                    FIELD_MANAGER,
                )
                .await?;
            }
        }
        let picked = lock(&slot.delete).clone();
        let ours: Vec<String> = lock(&slot.seen)
            .iter()
            .flat_map(|seen| seen.iter())
            .filter(|(key, s)| {
                picked.contains(*key)
                    && matches!(s.owner, crate::gitops::ownership::Owner::Ours { .. })
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in ours {
            info!(cluster = %slot.info.name, instance = %key, "instance no longer declared here: tombstone for its agent");
            mgmt.apply_as(
                &agent::tombstone(namespace, &control_plane, &key),
                FIELD_MANAGER,
            )
            .await?;
        }
    }
    let selector = format!("{}={control_plane}", agent::WORK_LABEL);
    let works = mgmt
        .list(&[("v1", "ConfigMap")], Some(namespace), &selector)
        .await?;
    let fingerprint: u64 = works
        .iter()
        .filter_map(|w| {
            w.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
        })
        .fold(works.len() as u64, |h, rv| {
            h.wrapping_mul(31)
                .wrapping_add(rv.parse::<u64>().unwrap_or(7))
        });
    if *lock(&slot.observed_changes) != Some(fingerprint) {
        let seen = agent::reported(&works)
            .into_iter()
            .map(|(key, inst)| (key, Seen::new(inst, &control_plane)))
            .collect();
        *lock(&slot.seen) = Some(Arc::new(seen));
        *lock(&slot.observed_changes) = Some(fingerprint);
        shared
            .observations
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        shared.request_plan();
    }
    let lease = mgmt
        .get_opt(&ObjectRef::new(
            "coordination.k8s.io/v1",
            "Lease",
            Some(namespace),
            agent::HEARTBEAT,
        ))
        .await?;
    match agent::silent(lease.as_ref(), jiff::Timestamp::now()) {
        None => Ok(()),
        Some(why) => Err(ClusterError::request(
            &slot.info.name,
            "read heartbeat",
            format!("Lease {namespace}/{}", agent::HEARTBEAT),
            ErrorKind::AgentNotReporting,
            why,
        )),
    }
}
