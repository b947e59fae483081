//! Pruning by labels plus inventory (operator-rs style): an object is deleted only when it is
//! in the instance's inventory (`status.applied`), no longer rendered, still labelled for the
//! instance and managed by kudo's field manager. A person's object with kudo's labels is
//! never in the inventory, and one kudo no longer manages is reported instead.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::api::AppliedObject;
use crate::cluster::FIELD_MANAGER;

use super::objects::{HERITAGE_LABEL, HERITAGE_VALUE, INSTANCE_LABEL, OPERATOR_LABEL};

/// The instance on whose behalf objects are deleted.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub operator: &'a str,
    pub instance: &'a str,
    pub namespace: &'a str,
    /// The Instance's uid (empty when unknown).
    pub uid: &'a str,
}

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

/// Whether a live object carries this instance's labels (heritage, operator, name).
pub fn labelled_for(live: &Value, operator: &str, instance: &str) -> bool {
    let label = |k: &str| {
        live.pointer("/metadata/labels")
            .and_then(|l| l.get(k))
            .and_then(Value::as_str)
    };
    label(HERITAGE_LABEL) == Some(HERITAGE_VALUE)
        && label(OPERATOR_LABEL) == Some(operator)
        && label(INSTANCE_LABEL) == Some(instance)
}

/// Whether kudo made a live object (for this or another instance): labelled `heritage:
/// kudo` and applied by kudo's field manager. Anything else that exists before kudo's first
/// apply is adopted.
pub fn made_by_kudo(live: &Value) -> bool {
    let heritage = live
        .pointer("/metadata/labels")
        .and_then(|l| l.get(HERITAGE_LABEL))
        .and_then(Value::as_str);
    heritage == Some(HERITAGE_VALUE) && managed_by_kudo(live)
}

fn managed_by_kudo(live: &Value) -> bool {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|m| {
            m.iter()
                .any(|e| e.get("manager").and_then(Value::as_str) == Some(FIELD_MANAGER))
        })
}

/// Whether a live object may be deleted on behalf of the instance; the reason when not.
/// Objects kudo adopted, objects marked to be kept and PersistentVolumeClaims are never
/// deleted ([`super::objects::retained`]). Whether another instance still lists a
/// cluster-scoped object is [`listed_elsewhere`]'s question (the uid label of a shared
/// object names whichever instance applied it last, so it decides nothing).
pub fn prunable(live: &Value, operator: &str, instance: &str) -> Result<(), String> {
    if !labelled_for(live, operator, instance) {
        return Err(format!(
            "no longer labelled for instance {instance} of operator {operator}; left in place"
        ));
    }
    let kind = live.get("kind").and_then(Value::as_str).unwrap_or_default();
    let annotations = live
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    if let Some(why) = super::objects::retained(kind, annotations) {
        return Err(format!("{why}; left in place"));
    }
    if !managed_by_kudo(live) {
        return Err(format!(
            "not managed by field manager {FIELD_MANAGER}; left in place"
        ));
    }
    Ok(())
}

/// The other Instances on the cluster whose inventory lists `entry` (`namespace/name`);
/// only cluster-scoped objects can be shared, and one stays while anyone lists it.
pub fn listed_elsewhere(
    instances: &[Value],
    own_uid: &str,
    own_key: &str,
    entry: &AppliedObject,
) -> Vec<String> {
    instances
        .iter()
        .filter(|i| {
            let uid = i
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            let key = format!(
                "{}/{}",
                i.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                i.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            );
            (own_uid.is_empty() || uid != own_uid) && key != own_key
        })
        .filter(|i| {
            i.pointer("/status/applied")
                .and_then(|a| serde_json::from_value::<Vec<AppliedObject>>(a.clone()).ok())
                .is_some_and(|applied| applied.contains(entry))
        })
        .map(|i| {
            format!(
                "{}/{}",
                i.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or(""),
                i.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
            )
        })
        .collect()
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
        assert!(made_by_kudo(&mine));
        let other_instance = json!({"metadata": {
            "labels": {"heritage": "kudo", "kudo.dev/operator": "op", "kudo.dev/instance": "j"},
            "managedFields": [{"manager": "kudo"}]}});
        assert!(prunable(&other_instance, "op", "i").is_err());
        let handmade = json!({"metadata": {
            "labels": {"heritage": "kudo", "kudo.dev/operator": "op", "kudo.dev/instance": "i"},
            "managedFields": [{"manager": "kubectl-client-side-apply"}]}});
        assert!(!made_by_kudo(&handmade));
        let why = prunable(&handmade, "op", "i").expect_err("not kudo's");
        assert!(why.contains("field manager kudo"), "{why}");
    }

    #[test]
    fn adopted_kept_and_claims_are_never_prunable() {
        let labels =
            json!({"heritage": "kudo", "kudo.dev/operator": "op", "kudo.dev/instance": "i"});
        let managed = json!([{"manager": "kudo"}]);
        for (kind, annotations) in [
            ("Namespace", json!({"kudo.dev/adopted": "true"})),
            ("ConfigMap", json!({"kudo.dev/resource-policy": "keep"})),
            ("ConfigMap", json!({"helm.sh/resource-policy": "keep"})),
            ("PersistentVolumeClaim", json!({})),
        ] {
            let live = json!({"kind": kind, "metadata": {"labels": labels, "annotations": annotations,
                "managedFields": managed}});
            let why = prunable(&live, "op", "i").expect_err(kind);
            assert!(why.contains("left in place"), "{why}");
        }
        let pvc = json!({"kind": "PersistentVolumeClaim", "metadata": {"labels": labels,
            "annotations": {"kudo.dev/resource-policy": "delete"}, "managedFields": managed}});
        assert_eq!(prunable(&pvc, "op", "i"), Ok(()));
    }

    #[test]
    fn a_cluster_scoped_object_another_instance_lists_is_shared() {
        let entry = AppliedObject {
            api_version: "rbac.authorization.k8s.io/v1".into(),
            kind: "ClusterRole".into(),
            namespace: String::new(),
            name: "shared".into(),
        };
        let instances = vec![
            json!({"metadata": {"namespace": "a", "name": "db", "uid": "ua"},
                   "status": {"applied": [entry]}}),
            json!({"metadata": {"namespace": "b", "name": "db", "uid": "ub"},
                   "status": {"applied": [entry]}}),
            json!({"metadata": {"namespace": "c", "name": "other", "uid": "uc"},
                   "status": {"applied": []}}),
        ];
        assert_eq!(listed_elsewhere(&instances, "ua", "a/db", &entry), ["b/db"]);
        assert!(listed_elsewhere(&instances[..1], "ua", "a/db", &entry).is_empty());
    }
}
