//! Drift checks against the cluster (the pure comparison and the condition are in
//! [`crate::engine::drift`]).

use crate::api::AppliedObject;
use crate::cluster::{FIELD_MANAGER, ObjectRef};
use crate::engine::cache;
use crate::engine::drift::{Change, Check, Drifted, changed_paths, keep_step_annotations};
use crate::engine::objects::applied_object;

use super::runner::ClusterRunner;

/// Checks every inventory object the instance still renders; repairs drift when `heal`.
/// `last_plan` is the plan that completed last (its rendering of an object wins). Unless
/// `full`, only objects a watch keeps are checked (their edits wake the instance; the rest
/// wait for the periodic full check).
pub async fn check(
    runner: &ClusterRunner<'_>,
    inventory: &[AppliedObject],
    last_plan: &str,
    heal: bool,
    full: bool,
) -> Result<Check, String> {
    let desired = runner.desired_values(Some(last_plan)).await?;
    let cluster = runner.cluster;
    let mut result = Check::default();
    for mut obj in desired {
        let Some(entry) = applied_object(&obj) else {
            continue;
        };
        // Only what kudo applied is compared: a step not reached yet is not drift.
        if !inventory.contains(&entry) {
            continue;
        }
        let r = ObjectRef::new(
            entry.api_version.clone(),
            entry.kind.clone(),
            (!entry.namespace.is_empty()).then_some(entry.namespace.as_str()),
            entry.name.clone(),
        );
        if !full && !cluster.watches(&r) {
            continue;
        }
        // The watch's copy carrying exactly what kudo applied settles it without a request;
        // anything else (not cached, an edit, another rendering) is confirmed by a dry run.
        if let Some(cached) = cluster.cached(&r) {
            let mut intent = obj.clone();
            keep_step_annotations(&mut intent, &cached);
            cache::stamp(&mut intent);
            if cache::carries(&cached, &intent) {
                continue;
            }
        }
        let live = match cluster.get_opt(&r).await {
            Ok(live) => live,
            Err(e) => {
                result.errors.push(e.to_string());
                continue;
            }
        };
        let change = match &live {
            None => Change::Deleted,
            Some(live) => {
                keep_step_annotations(&mut obj, live);
                let after = match cluster.apply_dry_run_as(&obj, FIELD_MANAGER).await {
                    Ok(a) => a,
                    Err(e) => {
                        result.errors.push(e.to_string());
                        continue;
                    }
                };
                let paths = changed_paths(live, &after);
                if paths.is_empty() {
                    continue;
                }
                Change::Fields(paths)
            }
        };
        if heal {
            match cluster.apply(&obj).await {
                Ok(_) => result.repaired += 1,
                Err(e) => result.errors.push(format!("repairing {r}: {e}")),
            }
        }
        result.drifted.push(Drifted {
            object: entry,
            change,
        });
    }
    Ok(result)
}
