//! What the engine's watches already hold, readable without a request: the
//! OperatorVersions and the objects kudo applied of the kinds the controller watches
//! (reflector stores fed by the controller's own watch streams, `managedFields` stripped).
//!
//! A cache answer is a hint that saves a request, never a fact a decision rests on alone:
//! a miss (not listed yet, not watched, another namespace) falls back to the API, and an
//! object is only left unapplied when its cached copy carries kudo's intent (see
//! [`APPLIED_HASH_ANNOTATION`]).

use std::sync::Arc;

use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::Value;

/// On every object kudo applies: a hash of the object as kudo applied it (rendered and
/// decorated, without this annotation). A live object carrying the hash of what kudo would
/// apply now, and every field of it, needs no apply; it also survives a restart between an
/// apply and the Instance status write.
pub const APPLIED_HASH_ANNOTATION: &str = "kudo.dev/applied-hash";

/// A [`crate::cluster::CacheLookup`] over a reflector store of `K`.
pub fn lookup<K>(store: Store<K>) -> crate::cluster::CacheLookup
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize + Clone + Send + Sync + 'static,
{
    Arc::new(Reflected(store))
}

struct Reflected<K: kube::Resource<DynamicType = ()> + 'static>(Store<K>);

impl<K> crate::cluster::ObjectCache for Reflected<K>
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize + Clone + Send + Sync + 'static,
{
    fn get(&self, namespace: &str, name: &str) -> Option<Value> {
        let obj = self.0.get(&ObjectRef::new(name).within(namespace))?;
        serde_json::to_value(&*obj).ok()
    }

    fn list(&self, namespace: Option<&str>, labels: &[(&str, &str)]) -> Option<Vec<Value>> {
        use futures::FutureExt;
        // Before the first complete list the store is empty or partial: not an answer.
        self.0.wait_until_ready().now_or_never()?.ok()?;
        let found = self.0.state_filter(|o| {
            namespace.is_none_or(|ns| o.meta().namespace.as_deref() == Some(ns))
                && labels.iter().all(|(k, v)| {
                    o.meta()
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(*k))
                        .is_some_and(|have| have == v)
                })
        });
        found
            .iter()
            .map(|o| serde_json::to_value(&**o).ok())
            .collect()
    }
}

/// The value of [`APPLIED_HASH_ANNOTATION`] for `obj` (which must not carry it yet): 32 hex
/// characters of sha256 over its JSON.
pub fn applied_hash(obj: &Value) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(obj.to_string().as_bytes());
    hex::encode(&digest[..16])
}

/// Stamps `obj` with the hash of its current content.
pub fn stamp(obj: &mut Value) -> String {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let emptied = meta
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
            .is_some_and(|a| {
                a.remove(APPLIED_HASH_ANNOTATION);
                a.is_empty()
            });
        if emptied {
            meta.remove("annotations");
        }
    }
    let hash = applied_hash(obj);
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(APPLIED_HASH_ANNOTATION.into(), Value::String(hash.clone()));
        }
    }
    hash
}

/// Whether `live` already carries what kudo would apply: the same hash, and every field of
/// `desired` (stamped) with an equal value (a person's edit since the apply shows here).
pub fn carries(live: &Value, desired: &Value) -> bool {
    let hash = |v: &Value| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(APPLIED_HASH_ANNOTATION))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    hash(live).is_some()
        && hash(live) == hash(desired)
        && crate::util::subset::is_subset(desired, live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "a", "labels": {"app": "web"}},
            "spec": {"replicas": 2}})
    }

    #[test]
    fn stamping_is_stable_and_ignores_an_earlier_stamp() {
        let mut a = deployment();
        let first = stamp(&mut a);
        let again = stamp(&mut a);
        assert_eq!(first, again);
        let mut b = deployment();
        b["spec"]["replicas"] = json!(3);
        assert_ne!(stamp(&mut b), first);
    }

    #[test]
    fn a_live_object_carries_the_intent_only_with_its_hash_and_fields() {
        let mut desired = deployment();
        stamp(&mut desired);
        let mut live = desired.clone();
        live["metadata"]["resourceVersion"] = json!("7");
        live["status"] = json!({"readyReplicas": 2});
        assert!(carries(&live, &desired));
        // A person scaled it: same hash, different field.
        let mut edited = live.clone();
        edited["spec"]["replicas"] = json!(5);
        assert!(!carries(&edited, &desired));
        // Applied by an older kudo (no hash), or another rendering.
        let mut unstamped = live.clone();
        unstamped["metadata"]["annotations"] = json!({});
        assert!(!carries(&unstamped, &desired));
        let mut other = deployment();
        other["spec"]["replicas"] = json!(3);
        stamp(&mut other);
        assert!(!carries(&live, &other));
    }
}
