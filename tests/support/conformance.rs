//! The conformance suite: what kudo needs from anything that claims to be a Kubernetes API.
//!
//! Each case takes a [`Cluster`] (build one over any `kube::Client` with
//! [`Cluster::from_client`]) and works in its own namespace / uniquely named cluster-scoped
//! objects, cleaning up after itself. [`conformance_suite!`] generates one `#[tokio::test]`
//! per case for a backend:
//!
//! ```ignore
//! mod support;
//! async fn backend() -> kudo::cluster::Cluster { /* real or simulated */ }
//! conformance_suite!(backend);
//! ```

#![allow(dead_code)]

use std::time::Duration;

use kudo::cluster::{Cluster, ErrorKind, Health, ObjectRef};
use serde_json::{Value, json};

use super::envtest::{in_namespace, unique};

const WAIT: Duration = Duration::from_secs(60);

/// Generate one test per conformance case, each getting its cluster from `$backend().await`.
#[macro_export]
macro_rules! conformance_suite {
    ($backend:path) => {
        $crate::conformance_suite!(@cases $backend;
            ssa_create_then_reapply_is_a_noop,
            ssa_of_a_changed_field_updates_it,
            crd_install_then_established,
            custom_resource_create_and_status_subresource_write,
            label_selector_list_across_kinds,
            delete_then_gone_including_dependents,
            invalid_object_is_422_with_field_path,
            unknown_kind_is_unknown_kind_error,
            stale_resource_version_update_conflicts,
            ports_without_protocol_apply,
            discovery_refreshes_when_a_kind_appears_in_a_known_group,
        );
    };
    (@cases $backend:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let cluster = $backend().await;
                $crate::support::conformance::$case(&cluster).await;
            }
        )*
    };
}

fn config_map(ns: &str, name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns}, "data": data})
}

fn rv(obj: &Value) -> String {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .expect("live objects have a resourceVersion")
        .to_string()
}

pub async fn ssa_create_then_reapply_is_a_noop(c: &Cluster) {
    in_namespace(c, "conf-ssa-noop", |ns| async move {
        let cm = config_map(&ns, "settings", json!({"mode": "fast"}));
        let created = c.apply(&cm).await.expect("create by server-side apply");
        let again = c.apply(&cm).await.expect("re-apply");
        assert_eq!(
            rv(&created),
            rv(&again),
            "re-applying the same object must not write"
        );
        let managers: Vec<&str> = again
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .expect("managedFields")
            .iter()
            .filter_map(|m| m.get("manager").and_then(Value::as_str))
            .collect();
        assert_eq!(managers, ["kudo"], "one field manager, kudo");
    })
    .await;
}

pub async fn ssa_of_a_changed_field_updates_it(c: &Cluster) {
    in_namespace(c, "conf-ssa-change", |ns| async move {
        let first = c
            .apply(&config_map(
                &ns,
                "settings",
                json!({"mode": "fast", "level": "1"}),
            ))
            .await
            .expect("create");
        let second = c
            .apply(&config_map(&ns, "settings", json!({"mode": "safe"})))
            .await
            .expect("update");
        assert_ne!(rv(&first), rv(&second));
        let live = c
            .get(&ObjectRef::new("v1", "ConfigMap", Some(&ns), "settings"))
            .await
            .expect("get");
        // The changed field is updated and the field kudo no longer applies is removed.
        assert_eq!(live["data"], json!({"mode": "safe"}));
    })
    .await;
}

/// A CRD with a unique group, namespaced kind `Widget`, status subresource.
fn widget_crd(group: &str) -> Value {
    kind_crd(group, "Widget", "widgets")
}

fn kind_crd(group: &str, kind: &str, plural: &str) -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": {"plural": plural, "kind": kind, "listKind": format!("{kind}List")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
                }}}
            }]
        }
    })
}

async fn with_crd<F, Fut>(c: &Cluster, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let group = format!("{}.conformance.kudo.dev", unique("g"));
    let crd = widget_crd(&group);
    let crd_ref = ObjectRef::from_object(&crd).expect("crd identity");
    let widget = ObjectRef::new(format!("{group}/v1"), "Widget", Some("default"), "w");
    let err = c.get(&widget).await.expect_err("kind not installed yet");
    assert_eq!(err.kind(), ErrorKind::UnknownKind, "{err}");
    c.apply(&crd).await.expect("install CRD");
    let check = async {
        let health = c
            .wait_healthy(&crd_ref, WAIT)
            .await
            .expect("CRD established");
        assert_eq!(health, Health::Healthy);
        body(group.clone()).await;
    };
    let cleanup = async {
        c.delete_and_wait(&crd_ref, WAIT)
            .await
            .expect("CRD deleted");
    };
    then_cleanup(check, cleanup).await;
}

/// Run `check`, then `cleanup` even if `check` panicked; a panic of `check` wins.
async fn then_cleanup(
    check: impl std::future::Future<Output = ()>,
    cleanup: impl std::future::Future<Output = ()>,
) {
    use futures::FutureExt;
    let outcome = std::panic::AssertUnwindSafe(check).catch_unwind().await;
    let cleaned = std::panic::AssertUnwindSafe(cleanup).catch_unwind().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    if let Err(panic) = cleaned {
        std::panic::resume_unwind(panic);
    }
}

pub async fn crd_install_then_established(c: &Cluster) {
    with_crd(c, |group| async move {
        let live = c
            .get(&ObjectRef::new(
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                None,
                format!("widgets.{group}"),
            ))
            .await
            .expect("get CRD");
        let established = live["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True");
        assert!(established, "{live}");
    })
    .await;
}

pub async fn custom_resource_create_and_status_subresource_write(c: &Cluster) {
    with_crd(c, |group| async move {
        in_namespace(c, "conf-cr", |ns| async move {
            let api_version = format!("{group}/v1");
            let widget = json!({"apiVersion": api_version, "kind": "Widget",
                "metadata": {"name": "w1", "namespace": ns}, "spec": {"size": 3}});
            // The kind was installed a moment ago: discovery must refresh to find it.
            let created = c.apply(&widget).await.expect("create custom resource");
            assert_eq!(created["spec"]["size"], 3);
            // The main resource ignores status; the status subresource writes it.
            let status = json!({"apiVersion": api_version, "kind": "Widget",
                "metadata": {"name": "w1", "namespace": ns}, "status": {"phase": "Ready"}});
            c.apply_status(&status)
                .await
                .expect("write status subresource");
            let live = c
                .get(&ObjectRef::new(&api_version, "Widget", Some(&ns), "w1"))
                .await
                .expect("get custom resource");
            assert_eq!(live["status"]["phase"], "Ready");
            assert_eq!(live["spec"]["size"], 3, "status write leaves spec alone");
        })
        .await;
    })
    .await;
}

pub async fn label_selector_list_across_kinds(c: &Cluster) {
    in_namespace(c, "conf-list", |ns| async move {
        let labelled = |kind: &str, name: &str, app: &str| {
            json!({"apiVersion": "v1", "kind": kind,
                "metadata": {"name": name, "namespace": ns, "labels": {"app": app}}})
        };
        for obj in [
            labelled("ConfigMap", "a1", "a"),
            labelled("ConfigMap", "a2", "a"),
            labelled("ConfigMap", "b1", "b"),
            labelled("Secret", "a3", "a"),
        ] {
            c.apply(&obj).await.expect("create");
        }
        let found = c
            .list(&[("v1", "ConfigMap"), ("v1", "Secret")], Some(&ns), "app=a")
            .await
            .expect("list");
        let mut names: Vec<String> = found
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().expect("kind"),
                    o["metadata"]["name"].as_str().expect("name")
                )
            })
            .collect();
        names.sort();
        assert_eq!(names, ["ConfigMap/a1", "ConfigMap/a2", "Secret/a3"]);
    })
    .await;
}

pub async fn delete_then_gone_including_dependents(c: &Cluster) {
    in_namespace(c, "conf-delete", |ns| async move {
        let owner = c
            .apply(&config_map(&ns, "owner", json!({})))
            .await
            .expect("create owner");
        let uid = owner["metadata"]["uid"].as_str().expect("uid");
        let mut dependent = config_map(&ns, "dependent", json!({}));
        dependent["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
            "name": "owner", "uid": uid, "blockOwnerDeletion": true}]);
        c.apply(&dependent).await.expect("create dependent");

        let owner_ref = ObjectRef::new("v1", "ConfigMap", Some(&ns), "owner");
        c.delete_and_wait(&owner_ref, WAIT)
            .await
            .expect("delete and wait");
        assert_eq!(c.get_opt(&owner_ref).await.expect("get"), None);
        // Foreground propagation: the owner is only gone once its dependents are.
        let dep_ref = ObjectRef::new("v1", "ConfigMap", Some(&ns), "dependent");
        assert_eq!(c.get_opt(&dep_ref).await.expect("get"), None);
        // Deleting what is already gone is fine.
        c.delete_and_wait(&owner_ref, WAIT)
            .await
            .expect("idempotent delete");
    })
    .await;
}

pub async fn invalid_object_is_422_with_field_path(c: &Cluster) {
    in_namespace(c, "conf-invalid", |ns| async move {
        let bad = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"ports": [{"port": 70000, "protocol": "TCP"}]}});
        let err = c.apply(&bad).await.expect_err("port out of range");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert!(
            err.causes()
                .iter()
                .any(|cause| cause.field == "spec.ports[0].port"),
            "causes {:?}",
            err.causes()
        );
        let msg = err.to_string();
        assert!(msg.contains(c.name()), "names the cluster: {msg}");
        assert!(
            msg.contains(&format!("Service {ns}/web")),
            "names the object: {msg}"
        );
        assert!(
            msg.contains("spec.ports[0].port"),
            "keeps the field path: {msg}"
        );
    })
    .await;
}

pub async fn unknown_kind_is_unknown_kind_error(c: &Cluster) {
    let unknown_group = json!({"apiVersion": "nothere.kudo.dev/v1", "kind": "Gadget",
        "metadata": {"name": "g", "namespace": "default"}});
    let err = c.apply(&unknown_group).await.expect_err("unknown group");
    assert_eq!(err.kind(), ErrorKind::UnknownKind, "{err}");
    assert!(err.to_string().contains("Gadget"), "{err}");

    let unknown_kind = json!({"apiVersion": "v1", "kind": "Gizmo", "metadata": {"name": "g"}});
    let err = c
        .apply(&unknown_kind)
        .await
        .expect_err("unknown kind in core group");
    assert_eq!(err.kind(), ErrorKind::UnknownKind, "{err}");
    let err = c
        .get(&ObjectRef::new("apps/v1", "Gizmo", Some("default"), "g"))
        .await
        .expect_err("get of unknown kind");
    assert_eq!(err.kind(), ErrorKind::UnknownKind, "{err}");
}

pub async fn stale_resource_version_update_conflicts(c: &Cluster) {
    in_namespace(c, "conf-conflict", |ns| async move {
        let v1 = c
            .apply(&config_map(&ns, "settings", json!({"n": "1"})))
            .await
            .expect("create");
        c.apply(&config_map(&ns, "settings", json!({"n": "2"})))
            .await
            .expect("update");
        let mut stale = v1.clone();
        stale["data"] = json!({"n": "3"});
        let err = c.replace(&stale).await.expect_err("stale resourceVersion");
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert!(err.to_string().contains("settings"), "{err}");
        // With the current resourceVersion the same replace succeeds.
        let mut fresh = c
            .get(&ObjectRef::new("v1", "ConfigMap", Some(&ns), "settings"))
            .await
            .expect("get");
        fresh["data"] = json!({"n": "3"});
        let replaced = c.replace(&fresh).await.expect("fresh replace");
        assert_eq!(replaced["data"]["n"], "3");
    })
    .await;
}

/// Packages often omit `protocol` on ports; such objects must apply (and re-apply) cleanly.
pub async fn ports_without_protocol_apply(c: &Cluster) {
    in_namespace(c, "conf-ports", |ns| async move {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}});
        let live = c.apply(&svc).await.expect("service without protocol");
        assert_eq!(live["spec"]["ports"][0]["protocol"], "TCP");
        let again = c.apply(&svc).await.expect("re-apply");
        assert_eq!(rv(&live), rv(&again));
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx",
                        "ports": [{"containerPort": 8080}]}]}}}});
        let live = c
            .apply(&deploy)
            .await
            .expect("deployment without port protocol");
        assert_eq!(
            live.pointer("/spec/template/spec/containers/0/ports/0/protocol"),
            Some(&json!("TCP"))
        );
    })
    .await;
}

/// Discovery of a group-version is cached; a kind added to it later (a second CRD in the same
/// group) must still be found.
pub async fn discovery_refreshes_when_a_kind_appears_in_a_known_group(c: &Cluster) {
    with_crd(c, |group| async move {
        in_namespace(c, "conf-disco", |ns| async move {
            let api_version = format!("{group}/v1");
            c.apply(&json!({"apiVersion": api_version, "kind": "Widget",
                "metadata": {"name": "w", "namespace": ns}, "spec": {"size": 1}}))
                .await
                .expect("widget (caches the group-version)");
            let gadgets = kind_crd(&group, "Gadget", "gadgets");
            let gadgets_ref = ObjectRef::from_object(&gadgets).expect("identity");
            c.apply(&gadgets).await.expect("install second CRD");
            let check = async {
                c.wait_healthy(&gadgets_ref, WAIT)
                    .await
                    .expect("established");
                c.apply(&json!({"apiVersion": api_version, "kind": "Gadget",
                    "metadata": {"name": "g", "namespace": ns}}))
                    .await
                    .expect("gadget found after refreshing discovery");
            };
            let cleanup = async {
                c.delete_and_wait(&gadgets_ref, WAIT)
                    .await
                    .expect("delete second CRD");
            };
            then_cleanup(check, cleanup).await;
        })
        .await;
    })
    .await;
}
