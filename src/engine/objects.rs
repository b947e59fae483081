//! What kudo adds to every object it applies (DESIGN §4): labels that let it find what an
//! instance owns (pruning, drift), annotations that say which plan/phase/step applied it, the
//! instance's namespace, and an owner reference so Kubernetes garbage-collects namespaced
//! objects with their Instance.

use kube::api::DynamicObject;
use serde_json::{Map, Value, json};

pub const HERITAGE_LABEL: &str = "heritage";
pub const HERITAGE_VALUE: &str = "kudo";
pub const OPERATOR_LABEL: &str = "kudo.dev/operator";
pub const INSTANCE_LABEL: &str = "kudo.dev/instance";
pub const PLAN_ANNOTATION: &str = "kudo.dev/plan";
pub const PHASE_ANNOTATION: &str = "kudo.dev/phase";
pub const STEP_ANNOTATION: &str = "kudo.dev/step";
pub const OPERATOR_VERSION_ANNOTATION: &str = "kudo.dev/operator-version";
/// The control plane (`controlPlane` in kudo.yaml, or `kudo manager`'s) that owns an Instance
/// and its objects; an engine never touches what another control plane owns.
pub const CONTROL_PLANE_LABEL: &str = "kudo.dev/control-plane";
/// The GitOps repository that declares an Instance (absent under `kudo manager`).
pub const REPOSITORY_LABEL: &str = "kudo.dev/repository";
/// The owning Instance's uid: two instances of one name in different namespaces (or a deleted
/// and re-created one) never claim each other's objects.
pub const INSTANCE_UID_LABEL: &str = "kudo.dev/instance-uid";
/// A hash of the owning instance's `namespace/name` (label values cannot hold a `/`), for
/// selectors; the readable form is in the two annotations below.
pub const INSTANCE_KEY_LABEL: &str = "kudo.dev/instance-key";
pub const INSTANCE_NAMESPACE_ANNOTATION: &str = "kudo.dev/instance-namespace";
pub const INSTANCE_NAME_ANNOTATION: &str = "kudo.dev/instance-name";
/// Set on objects that existed before kudo first applied them: they get no owner reference
/// and are never deleted by pruning, instance deletion or garbage collection.
pub const ADOPTED_ANNOTATION: &str = "kudo.dev/adopted";
/// `keep` (or Helm's `helm.sh/resource-policy: keep`): never deleted, no owner reference.
/// `delete` on a PersistentVolumeClaim: pruned and garbage-collected like anything else.
pub const RESOURCE_POLICY_ANNOTATION: &str = "kudo.dev/resource-policy";
pub const HELM_RESOURCE_POLICY_ANNOTATION: &str = "helm.sh/resource-policy";
/// On an Instance: the objects kudo adopted for it (a JSON list of inventory entries),
/// recorded before their first apply so a restarted engine still knows them.
pub const ADOPTED_OBJECTS_ANNOTATION: &str = "kudo.dev/adopted-objects";

/// The adopted objects an Instance's annotations list (an unreadable list is empty: the
/// objects themselves still carry [`ADOPTED_ANNOTATION`], which pruning checks).
pub fn adopted_objects(
    annotations: &std::collections::BTreeMap<String, String>,
) -> std::collections::BTreeSet<crate::api::AppliedObject> {
    annotations
        .get(ADOPTED_OBJECTS_ANNOTATION)
        .and_then(|text| serde_json::from_str::<Vec<crate::api::AppliedObject>>(text).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The control plane name when none is configured.
pub const DEFAULT_CONTROL_PLANE: &str = "kudo";

/// The value of [`INSTANCE_KEY_LABEL`]: 32 hex characters of sha256(`namespace/name`).
pub fn instance_key_hash(namespace: &str, name: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    hex::encode(&digest[..16])
}

/// Why kudo must never delete an object (nor let Kubernetes garbage-collect it through an
/// owner reference), from its annotations and kind; `None` when it may.
pub fn retained(
    kind: &str,
    annotations: Option<&serde_json::Map<String, Value>>,
) -> Option<String> {
    let get = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);
    if get(ADOPTED_ANNOTATION) == Some("true") {
        return Some("it existed before kudo applied it (adopted)".into());
    }
    for key in [RESOURCE_POLICY_ANNOTATION, HELM_RESOURCE_POLICY_ANNOTATION] {
        if get(key) == Some("keep") {
            return Some(format!("it is marked {key}: keep"));
        }
    }
    if kind == "PersistentVolumeClaim" && get(RESOURCE_POLICY_ANNOTATION) != Some("delete") {
        return Some(format!(
            "PersistentVolumeClaims are kept unless marked {RESOURCE_POLICY_ANNOTATION}: delete"
        ));
    }
    None
}

/// The owning instance and where in its plan an object is applied.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    pub operator: &'a str,
    pub operator_version: &'a str,
    pub instance: &'a str,
    pub instance_uid: &'a str,
    pub namespace: &'a str,
    /// The owning control plane (never empty: [`DEFAULT_CONTROL_PLANE`] at least).
    pub control_plane: &'a str,
    /// The declaring repository; empty when the Instance has none (`kudo manager`).
    pub repository: &'a str,
    pub plan: &'a str,
    pub phase: &'a str,
    pub step: &'a str,
}

impl Owner<'_> {
    /// The label selector matching everything this instance owns.
    pub fn selector(&self) -> String {
        format!(
            "{HERITAGE_LABEL}={HERITAGE_VALUE},{OPERATOR_LABEL}={},{INSTANCE_LABEL}={}",
            self.operator, self.instance
        )
    }
}

/// Kinds whose pods are described by a template at `spec.template` (labels go there too, so
/// pods can be traced to their instance).
const POD_TEMPLATE_KINDS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
];

/// Adds kudo's labels, annotations, namespace and owner reference to a rendered object.
/// `namespaced` comes from discovery; cluster-scoped objects get no namespace and no owner
/// reference (a namespaced owner cannot own them; kudo deletes them itself). Objects that
/// must outlive the instance ([`retained`]: adopted, `resource-policy: keep`, PVCs) get no
/// owner reference either, so garbage collection cannot take them.
pub fn decorate(obj: &mut DynamicObject, owner: &Owner<'_>, namespaced: bool) {
    let labels = obj.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(HERITAGE_LABEL.into(), HERITAGE_VALUE.into());
    labels.insert(OPERATOR_LABEL.into(), owner.operator.into());
    labels.insert(INSTANCE_LABEL.into(), owner.instance.into());
    labels.insert(CONTROL_PLANE_LABEL.into(), owner.control_plane.into());
    if owner.repository.is_empty() {
        labels.remove(REPOSITORY_LABEL);
    } else {
        labels.insert(REPOSITORY_LABEL.into(), owner.repository.into());
    }
    if owner.instance_uid.is_empty() {
        labels.remove(INSTANCE_UID_LABEL);
    } else {
        labels.insert(INSTANCE_UID_LABEL.into(), owner.instance_uid.into());
    }
    labels.insert(
        INSTANCE_KEY_LABEL.into(),
        instance_key_hash(owner.namespace, owner.instance),
    );
    let annotations = obj
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(INSTANCE_NAMESPACE_ANNOTATION.into(), owner.namespace.into());
    annotations.insert(INSTANCE_NAME_ANNOTATION.into(), owner.instance.into());
    annotations.insert(PLAN_ANNOTATION.into(), owner.plan.into());
    annotations.insert(PHASE_ANNOTATION.into(), owner.phase.into());
    annotations.insert(STEP_ANNOTATION.into(), owner.step.into());
    annotations.insert(
        OPERATOR_VERSION_ANNOTATION.into(),
        owner.operator_version.into(),
    );

    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.clone())
        .unwrap_or_default();
    let annotation_map: serde_json::Map<String, Value> = obj
        .metadata
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let kept = retained(&kind, Some(&annotation_map)).is_some();
    if namespaced {
        obj.metadata.namespace = Some(owner.namespace.to_string());
        if kept {
            if let Some(refs) = obj.metadata.owner_references.as_mut() {
                refs.retain(|r| r.uid != owner.instance_uid);
            }
        } else if !owner.instance_uid.is_empty() {
            let reference = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: crate::api::API_VERSION.into(),
                kind: "Instance".into(),
                name: owner.instance.into(),
                uid: owner.instance_uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            };
            let refs = obj.metadata.owner_references.get_or_insert_with(Vec::new);
            refs.retain(|r| r.uid != reference.uid);
            refs.push(reference);
        }
    } else {
        obj.metadata.namespace = None;
    }

    let kind = kind.as_str();
    if POD_TEMPLATE_KINDS.contains(&kind) {
        label_pod_template(&mut obj.data, &["spec", "template"], owner);
    } else if kind == "CronJob" {
        label_pod_template(
            &mut obj.data,
            &["spec", "jobTemplate", "spec", "template"],
            owner,
        );
    }
}

fn label_pod_template(data: &mut Value, path: &[&str], owner: &Owner<'_>) {
    let mut node = data;
    for key in path {
        let Some(map) = node.as_object_mut() else {
            return;
        };
        node = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let Some(template) = node.as_object_mut() else {
        return;
    };
    let metadata = template
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(HERITAGE_LABEL.into(), json!(HERITAGE_VALUE));
        labels.insert(OPERATOR_LABEL.into(), json!(owner.operator));
        labels.insert(INSTANCE_LABEL.into(), json!(owner.instance));
    }
}

/// The inventory entry of a live or rendered object.
pub fn applied_object(obj: &Value) -> Option<crate::api::AppliedObject> {
    let r = crate::cluster::ObjectRef::from_object(obj).ok()?;
    Some(crate::api::AppliedObject {
        api_version: r.api_version,
        kind: r.kind,
        namespace: r.namespace.unwrap_or_default(),
        name: r.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner<'static> {
        Owner {
            operator: "zookeeper",
            operator_version: "zookeeper-3.4.14-0.3.0",
            instance: "zk",
            instance_uid: "uid-1",
            namespace: "team-a",
            control_plane: "kudo",
            repository: "platform",
            plan: "deploy",
            phase: "zookeeper",
            step: "deploy",
        }
    }

    fn obj(v: Value) -> DynamicObject {
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn namespaced_objects_get_labels_annotations_namespace_owner_and_pod_labels() {
        let mut o = obj(json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "zk", "namespace": "elsewhere", "labels": {"app": "zk"}},
            "spec": {"template": {"metadata": {"labels": {"app": "zk"}}, "spec": {}}}
        }));
        decorate(&mut o, &owner(), true);
        let v = serde_json::to_value(&o).expect("ser");
        assert_eq!(v["metadata"]["namespace"], "team-a");
        assert_eq!(v["metadata"]["labels"]["app"], "zk");
        assert_eq!(v["metadata"]["labels"]["heritage"], "kudo");
        assert_eq!(v["metadata"]["labels"]["kudo.dev/instance"], "zk");
        assert_eq!(v["metadata"]["labels"]["kudo.dev/operator"], "zookeeper");
        assert_eq!(v["metadata"]["annotations"]["kudo.dev/phase"], "zookeeper");
        assert_eq!(v["metadata"]["annotations"]["kudo.dev/plan"], "deploy");
        assert_eq!(v["metadata"]["annotations"]["kudo.dev/step"], "deploy");
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Instance");
        assert_eq!(
            v["spec"]["template"]["metadata"]["labels"]["kudo.dev/instance"],
            "zk"
        );
        assert_eq!(v["spec"]["template"]["metadata"]["labels"]["app"], "zk");
        // Decorating twice keeps one owner reference.
        decorate(&mut o, &owner(), true);
        assert_eq!(o.metadata.owner_references.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn cluster_scoped_objects_get_no_namespace_and_no_owner() {
        let mut o = obj(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "r", "namespace": "x"}
        }));
        decorate(&mut o, &owner(), false);
        assert_eq!(o.metadata.namespace, None);
        assert_eq!(o.metadata.owner_references, None);
        assert_eq!(
            o.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kudo.dev/instance"))
                .map(String::as_str),
            Some("zk")
        );
    }

    #[test]
    fn cronjob_pod_template_is_labelled() {
        let mut o = obj(json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}
        }));
        decorate(&mut o, &owner(), true);
        let v = serde_json::to_value(&o).expect("ser");
        assert_eq!(
            v["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]["heritage"],
            "kudo"
        );
    }

    #[test]
    fn ownership_is_recorded_as_bounded_labels_and_readable_annotations() {
        let mut o =
            obj(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
        decorate(&mut o, &owner(), true);
        let v = serde_json::to_value(&o).expect("ser");
        let labels = &v["metadata"]["labels"];
        assert_eq!(labels["kudo.dev/control-plane"], "kudo");
        assert_eq!(labels["kudo.dev/repository"], "platform");
        assert_eq!(labels["kudo.dev/instance-uid"], "uid-1");
        let key = labels["kudo.dev/instance-key"].as_str().expect("key");
        assert_eq!(key, instance_key_hash("team-a", "zk"));
        assert_ne!(key, instance_key_hash("team-b", "zk"));
        for (_, value) in labels.as_object().expect("labels") {
            assert!(value.as_str().expect("string").len() <= 63, "{value}");
        }
        assert_eq!(
            v["metadata"]["annotations"]["kudo.dev/instance-namespace"],
            "team-a"
        );
        assert_eq!(v["metadata"]["annotations"]["kudo.dev/instance-name"], "zk");
    }

    #[test]
    fn kept_objects_and_claims_get_no_owner_reference() {
        for (kind, annotations) in [
            ("PersistentVolumeClaim", json!({})),
            ("ConfigMap", json!({"kudo.dev/resource-policy": "keep"})),
            ("Secret", json!({"helm.sh/resource-policy": "keep"})),
            ("Namespace", json!({"kudo.dev/adopted": "true"})),
        ] {
            let mut o = obj(json!({"apiVersion": "v1", "kind": kind,
                "metadata": {"name": "x", "annotations": annotations}}));
            decorate(&mut o, &owner(), true);
            assert_eq!(o.metadata.owner_references, None, "{kind}");
        }
        let mut o = obj(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "x", "annotations": {"kudo.dev/resource-policy": "delete"}}}));
        decorate(&mut o, &owner(), true);
        assert_eq!(o.metadata.owner_references.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn selector_names_instance_and_operator() {
        assert_eq!(
            owner().selector(),
            "heritage=kudo,kudo.dev/operator=zookeeper,kudo.dev/instance=zk"
        );
    }
}
