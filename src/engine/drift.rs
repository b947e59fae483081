//! Drift: a live object that no longer matches what kudo last applied (a person edited or
//! deleted it).
//!
//! How it is found: the instance's objects are rendered again from the version and
//! parameters of the plan that last completed, and each one kudo applied (the inventory) is
//! server-side applied as a dry run (`dryRun=All`, kudo's field manager, forced). Server-side
//! apply only touches the fields kudo's manager owns, so the dry-run result differs from the
//! live object exactly where someone changed a field kudo manages; fields others own
//! (a person's extra label, a controller's status) never count. The server's defaulting and
//! admission take part, so a default the server fills in is never mistaken for drift.
//! The difference (volatile metadata and `status` aside) gives the field paths reported.
//!
//! Repair (`selfHeal`, on unless the Instance is annotated `kudo.dev/self-heal: "false"`) is
//! the same apply, for real: no plan runs again.

use std::time::Duration;

use serde_json::Value;

use crate::api::AppliedObject;

use super::objects::{PHASE_ANNOTATION, PLAN_ANNOTATION, STEP_ANNOTATION};

/// Annotation on an Instance that turns drift repair off when `"false"` (drift is then only
/// reported). A kudo extension; `kudo serve` sets it from an instance file's `selfHeal`.
pub const SELF_HEAL_ANNOTATION: &str = "kudo.dev/self-heal";
/// The Instance condition that reports drift (a kudo extension).
pub const DRIFT_CONDITION: &str = "Drifted";
/// How often an instance whose plan is complete is fully checked, kinds no watch keeps
/// included (jittered by ±10 %; the first check after a start falls anywhere in the period,
/// so a fleet's checks spread out). Watched kinds are checked on their events.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// At most this many objects are named in the condition message (the log has them all).
const MESSAGE_OBJECTS: usize = 5;

/// Whether drift is repaired for an instance with these annotations.
pub fn self_heal(annotations: &std::collections::BTreeMap<String, String>) -> bool {
    annotations
        .get(SELF_HEAL_ANNOTATION)
        .is_none_or(|v| v.trim() != "false")
}

/// How one object drifted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The object is gone.
    Deleted,
    /// These fields (dotted paths, `[i]` for list items) differ from what kudo applied.
    Fields(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drifted {
    pub object: AppliedObject,
    pub change: Change,
}

impl std::fmt::Display for Drifted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = &self.object;
        let name = if o.namespace.is_empty() {
            o.name.clone()
        } else {
            format!("{}/{}", o.namespace, o.name)
        };
        match &self.change {
            Change::Deleted => write!(f, "{} {name}: deleted", o.kind),
            Change::Fields(paths) => write!(f, "{} {name}: {}", o.kind, paths.join(", ")),
        }
    }
}

/// One check of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    pub drifted: Vec<Drifted>,
    /// How many drifted objects were re-applied.
    pub repaired: usize,
    /// Objects that could not be checked or repaired, with why.
    pub errors: Vec<String>,
}

/// The object without what the server changes on every write or owns itself, and without
/// kudo's hash of the apply.
pub fn normalize(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "uid",
            "selfLink",
        ] {
            meta.remove(k);
        }
        // Bookkeeping of the apply itself (see `super::cache`), not content.
        let emptied = meta
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
            .is_some_and(|a| {
                a.remove(super::cache::APPLIED_HASH_ANNOTATION);
                a.is_empty()
            });
        if emptied {
            meta.remove("annotations");
        }
    }
    v
}

/// Field paths where `after` differs from `before` (both normalized first).
pub fn changed_paths(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(&normalize(before), &normalize(after), "", &mut out);
    out
}

fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => walk(va, vb, &at(k), out),
                    _ => out.push(at(k)),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                walk(va, vb, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(if path.is_empty() {
            ".".into()
        } else {
            path.into()
        }),
        _ => {}
    }
}

/// Which plan/phase/step last applied an object (and the hash of what it applied) is
/// bookkeeping, not drift: the live values
/// are kept so the comparison (and a repair) leaves them as they are.
pub fn keep_step_annotations(desired: &mut Value, live: &Value) {
    for key in [
        PLAN_ANNOTATION,
        PHASE_ANNOTATION,
        STEP_ANNOTATION,
        super::cache::APPLIED_HASH_ANNOTATION,
    ] {
        let Some(v) = live
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .cloned()
        else {
            continue;
        };
        if let Some(annotations) = desired
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.insert(key.to_string(), v);
        }
    }
}

/// The Drifted condition's (status, reason, message) for a check.
pub fn condition(check: &Check, heal: bool) -> (&'static str, &'static str, String) {
    if check.drifted.is_empty() {
        return (
            "False",
            "NoDrift",
            "live objects match what kudo applied".into(),
        );
    }
    let mut names: Vec<String> = check
        .drifted
        .iter()
        .take(MESSAGE_OBJECTS)
        .map(ToString::to_string)
        .collect();
    if check.drifted.len() > MESSAGE_OBJECTS {
        names.push(format!(
            "and {} more",
            check.drifted.len() - MESSAGE_OBJECTS
        ));
    }
    let list = names.join("; ");
    let n = check.drifted.len();
    if heal && check.repaired == n {
        (
            "False",
            "DriftRepaired",
            format!("{n} drifted object(s) re-applied: {list}"),
        )
    } else if heal {
        (
            "True",
            "DriftRepairFailed",
            format!(
                "{} of {n} drifted object(s) re-applied: {list}",
                check.repaired
            ),
        )
    } else {
        (
            "True",
            "DriftDetected",
            format!("{n} object(s) drifted (selfHeal is off): {list}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_of_an_apply_is_neither_drift_nor_shown() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "annotations": {"kudo.dev/applied-hash": "ab"}},
            "data": {"a": "b"}});
        let desired = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c"}, "data": {"a": "b"}});
        assert_eq!(normalize(&live), desired);
        assert!(changed_paths(&live, &desired).is_empty());
    }

    #[test]
    fn only_changed_fields_are_reported_and_volatile_metadata_is_ignored() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "resourceVersion": "5", "generation": 2,
                "managedFields": [{"manager": "kubectl"}], "labels": {"a": "1"}},
            "spec": {"replicas": 5, "template": {"spec": {"containers": [{"image": "x:2"}]}}},
            "status": {"replicas": 5}
        });
        let after = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "resourceVersion": "6", "generation": 3,
                "managedFields": [{"manager": "kudo"}], "labels": {"a": "1", "b": "2"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"image": "x:1"}]}}},
            "status": {"replicas": 3}
        });
        assert_eq!(
            changed_paths(&live, &after),
            [
                "metadata.labels.b",
                "spec.replicas",
                "spec.template.spec.containers[0].image"
            ]
        );
        assert!(changed_paths(&live, &live).is_empty());
    }

    #[test]
    fn step_annotations_are_kept_from_the_live_object() {
        let mut desired = json!({"metadata": {"annotations": {
            "kudo.dev/plan": "deploy", "kudo.dev/step": "app", "x": "y"}}});
        let live = json!({"metadata": {"annotations": {
            "kudo.dev/plan": "update", "kudo.dev/step": "web"}}});
        keep_step_annotations(&mut desired, &live);
        assert_eq!(
            desired["metadata"]["annotations"],
            json!({"kudo.dev/plan": "update", "kudo.dev/step": "web", "x": "y"})
        );
    }

    #[test]
    fn self_heal_is_on_unless_turned_off() {
        let mut a = std::collections::BTreeMap::new();
        assert!(self_heal(&a));
        a.insert(SELF_HEAL_ANNOTATION.to_string(), "false".to_string());
        assert!(!self_heal(&a));
        a.insert(SELF_HEAL_ANNOTATION.to_string(), "true".to_string());
        assert!(self_heal(&a));
    }

    #[test]
    fn condition_names_objects_and_paths() {
        let obj = AppliedObject {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: "ns".into(),
            name: "web".into(),
        };
        let mut c = Check {
            drifted: vec![Drifted {
                object: obj,
                change: Change::Fields(vec!["spec.replicas".into()]),
            }],
            repaired: 1,
            errors: vec![],
        };
        let (status, reason, msg) = condition(&c, true);
        assert_eq!((status, reason), ("False", "DriftRepaired"));
        assert!(msg.contains("Deployment ns/web: spec.replicas"), "{msg}");
        c.repaired = 0;
        let (status, reason, msg) = condition(&c, false);
        assert_eq!((status, reason), ("True", "DriftDetected"));
        assert!(msg.contains("selfHeal is off"), "{msg}");
        assert_eq!(condition(&Check::default(), true).1, "NoDrift");
    }
}
