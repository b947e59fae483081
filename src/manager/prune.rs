//! Pruning's requests: deleting what an instance owns and finding objects with its labels
//! that kudo never applied (the rules are in [`crate::engine::prune`]).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::api::AppliedObject;
use crate::cluster::{Cluster, ObjectRef};
use crate::engine::objects::applied_object;
use crate::engine::prune::{Claim, listed_elsewhere, prunable};

/// Deletes inventory objects, newest first, that are still labelled for the instance and
/// managed by kudo, and (cluster-scoped ones) listed in no other Instance's inventory;
/// anything else is reported, not deleted. Returns (deleted, reported).
pub async fn delete_owned(
    cluster: &Cluster,
    owner: &Claim<'_>,
    entries: &[AppliedObject],
) -> Result<(Vec<AppliedObject>, Vec<String>), String> {
    let (operator, instance) = (owner.operator, owner.instance);
    let mut deleted = Vec::new();
    let mut reported = Vec::new();
    // Listed once, only when a cluster-scoped object is among the entries.
    let mut instances: Option<Vec<Value>> = None;
    for entry in entries.iter().rev() {
        let r = ObjectRef::new(
            entry.api_version.clone(),
            entry.kind.clone(),
            (!entry.namespace.is_empty()).then_some(entry.namespace.as_str()),
            entry.name.clone(),
        );
        let live = match cluster.get_opt(&r).await {
            Ok(Some(live)) => live,
            Ok(None) => continue,
            Err(e) => return Err(e.to_string()),
        };
        if entry.namespace.is_empty() {
            if instances.is_none() {
                instances = Some(
                    cluster
                        .list(&[(crate::api::API_VERSION, "Instance")], None, "")
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let others = listed_elsewhere(
                instances.as_deref().unwrap_or_default(),
                owner.uid,
                &format!("{}/{}", owner.namespace, instance),
                entry,
            );
            if !others.is_empty() {
                reported.push(format!(
                    "{r}: also applied by instance {}; left in place",
                    others.join(", ")
                ));
                continue;
            }
        }
        match prunable(&live, operator, instance) {
            Ok(()) => {
                cluster.delete(&r).await.map_err(|e| e.to_string())?;
                deleted.push(entry.clone());
            }
            Err(why) => reported.push(format!("{r}: {why}")),
        }
    }
    Ok((deleted, reported))
}

/// Objects labelled for the instance, of the kinds in its inventory, that kudo never applied
/// (a person's objects with kudo's labels): never deleted, reported as `Kind ns/name`.
pub async fn unclaimed(
    cluster: &Cluster,
    namespace: &str,
    selector: &str,
    inventory: &[AppliedObject],
) -> Result<Vec<String>, String> {
    let kinds: BTreeSet<(&str, &str)> = inventory
        .iter()
        .map(|o| (o.api_version.as_str(), o.kind.as_str()))
        .collect();
    // Kinds a watch keeps are listed from its store; the rest from the API.
    let mut live = Vec::new();
    let mut uncached = Vec::new();
    for (api_version, kind) in kinds {
        match cluster.cached_list(api_version, kind, namespace, selector) {
            Some(found) => live.extend(found),
            None => uncached.push((api_version, kind)),
        }
    }
    if !uncached.is_empty() {
        live.extend(
            cluster
                .list(&uncached, Some(namespace), selector)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(live
        .iter()
        .filter_map(applied_object)
        .filter(|o| !inventory.contains(o))
        .map(|o| {
            let name = if o.namespace.is_empty() {
                o.name
            } else {
                format!("{}/{}", o.namespace, o.name)
            };
            format!("{} {name}: not applied by kudo; left in place", o.kind)
        })
        .collect())
}
