//! Pruning by labels plus inventory (operator-rs style): an object is deleted only when it is
//! in the instance's inventory (`status.applied`), no longer rendered, still labelled for the
//! instance and managed by kudo's field manager. A person's object with kudo's labels is
//! never in the inventory, and one kudo no longer manages is reported instead.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::api::AppliedObject;
use crate::cluster::{Cluster, FIELD_MANAGER, ObjectRef};

use super::objects::{HERITAGE_LABEL, HERITAGE_VALUE, INSTANCE_LABEL, OPERATOR_LABEL};

/// Annotation on an Instance that turns pruning off when `"false"`.
pub const PRUNE_ANNOTATION: &str = "kudo.dev/prune";

/// Inventory entries no longer rendered, in inventory (apply) order.
pub fn stale(inventory: &[AppliedObject], desired: &BTreeSet<AppliedObject>) -> Vec<AppliedObject> {
    inventory
        .iter()
        .filter(|o| !desired.contains(o))
        .cloned()
        .collect()
}

/// Whether a live object may be deleted on behalf of the instance; the reason when not.
pub fn prunable(live: &Value, operator: &str, instance: &str) -> Result<(), String> {
    let label = |k: &str| {
        live.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
    };
    if label(HERITAGE_LABEL) != Some(HERITAGE_VALUE)
        || label(OPERATOR_LABEL) != Some(operator)
        || label(INSTANCE_LABEL) != Some(instance)
    {
        return Err(format!(
            "no longer labelled for instance {instance} of operator {operator}; left in place"
        ));
    }
    let managed = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|e| e.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER))
        });
    if !managed {
        return Err(format!(
            "not managed by field manager {FIELD_MANAGER}; left in place"
        ));
    }
    Ok(())
}

/// Deletes inventory objects, newest first, that are still labelled for the instance and
/// managed by kudo; anything else is reported, not deleted. Returns (deleted, reported).
pub async fn delete_owned(
    cluster: &Cluster,
    operator: &str,
    instance: &str,
    entries: &[AppliedObject],
) -> Result<(Vec<AppliedObject>, Vec<String>), String> {
    let mut deleted = Vec::new();
    let mut reported = Vec::new();
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
    let kinds: Vec<(&str, &str)> = kinds.into_iter().collect();
    let live = cluster
        .list(&kinds, Some(namespace), selector)
        .await
        .map_err(|e| e.to_string())?;
    Ok(live
        .iter()
        .filter_map(super::runner::applied_object)
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

/// Merges newly applied objects into the inventory, keeping first-apply order.
pub fn merge(inventory: &mut Vec<AppliedObject>, applied: &[AppliedObject]) {
    for entry in applied {
        if !inventory.contains(entry) {
            inventory.push(entry.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str) -> AppliedObject {
        AppliedObject {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn stale_keeps_apply_order_and_skips_desired() {
        let inventory = vec![
            obj("ConfigMap", "a"),
            obj("Service", "b"),
            obj("ConfigMap", "c"),
        ];
        let desired: BTreeSet<_> = [obj("Service", "b")].into();
        assert_eq!(
            stale(&inventory, &desired),
            [obj("ConfigMap", "a"), obj("ConfigMap", "c")]
        );
        let mut inv = inventory.clone();
        merge(&mut inv, &[obj("Service", "b"), obj("Secret", "d")]);
        assert_eq!(inv.len(), 4);
        assert_eq!(inv[3], obj("Secret", "d"));
    }

    #[test]
    fn only_labelled_objects_managed_by_kudo_are_prunable() {
        let mine = json!({"metadata": {
            "labels": {"heritage": "kudo", "kudo.dev/operator": "op", "kudo.dev/instance": "i"},
            "managedFields": [{"manager": "kudo", "operation": "Apply"}]}});
        assert_eq!(prunable(&mine, "op", "i"), Ok(()));
        let other_instance = json!({"metadata": {
            "labels": {"heritage": "kudo", "kudo.dev/operator": "op", "kudo.dev/instance": "j"},
            "managedFields": [{"manager": "kudo"}]}});
        assert!(prunable(&other_instance, "op", "i").is_err());
        let handmade = json!({"metadata": {
            "labels": {"heritage": "kudo", "kudo.dev/operator": "op", "kudo.dev/instance": "i"},
            "managedFields": [{"manager": "kubectl-client-side-apply"}]}});
        let why = prunable(&handmade, "op", "i").expect_err("not kudo's");
        assert!(why.contains("field manager kudo"), "{why}");
    }
}
