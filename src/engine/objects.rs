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

/// The owning instance and where in its plan an object is applied.
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    pub operator: &'a str,
    pub operator_version: &'a str,
    pub instance: &'a str,
    pub instance_uid: &'a str,
    pub namespace: &'a str,
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
/// reference (a namespaced owner cannot own them; kudo deletes them itself).
pub fn decorate(obj: &mut DynamicObject, owner: &Owner<'_>, namespaced: bool) {
    let labels = obj.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(HERITAGE_LABEL.into(), HERITAGE_VALUE.into());
    labels.insert(OPERATOR_LABEL.into(), owner.operator.into());
    labels.insert(INSTANCE_LABEL.into(), owner.instance.into());
    let annotations = obj
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(PLAN_ANNOTATION.into(), owner.plan.into());
    annotations.insert(PHASE_ANNOTATION.into(), owner.phase.into());
    annotations.insert(STEP_ANNOTATION.into(), owner.step.into());
    annotations.insert(
        OPERATOR_VERSION_ANNOTATION.into(),
        owner.operator_version.into(),
    );

    if namespaced {
        obj.metadata.namespace = Some(owner.namespace.to_string());
        if !owner.instance_uid.is_empty() {
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

    let kind = obj
        .types
        .as_ref()
        .map(|t| t.kind.as_str())
        .unwrap_or_default();
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
    fn selector_names_instance_and_operator() {
        assert_eq!(
            owner().selector(),
            "heritage=kudo,kudo.dev/operator=zookeeper,kudo.dev/instance=zk"
        );
    }
}
