//! The simulated API driven through `kube::Client` over the in-process tower service.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;
use kudo::sim::SimCluster;
use serde_json::json;

fn deployment(name: &str, image: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image, "ports": [{"containerPort": 80}]}]}}}
    }))
    .expect("deployment json")
}

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn widget_crd() -> CustomResourceDefinition {
    serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}
    }))
    .expect("crd json")
}

async fn wait_established(client: &kube::Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let crd = crds.get(name).await.expect("get crd");
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CRD {name} never Established"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn ssa_create_reapply_noop_and_change() {
    let sim = SimCluster::new("t");
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    let pp = PatchParams::apply("kudo").force();
    let a = api
        .patch("web", &pp, &Patch::Apply(deployment("web", "nginx:1", 1)))
        .await
        .expect("create by apply");
    let b = api
        .patch("web", &pp, &Patch::Apply(deployment("web", "nginx:1", 1)))
        .await
        .expect("re-apply");
    assert_eq!(a.metadata.resource_version, b.metadata.resource_version);
    let c = api
        .patch("web", &pp, &Patch::Apply(deployment("web", "nginx:2", 1)))
        .await
        .expect("change");
    assert_ne!(b.metadata.resource_version, c.metadata.resource_version);
    assert_eq!(c.metadata.generation, Some(2));
    let image = c
        .spec
        .and_then(|s| s.template.spec)
        .map(|s| s.containers[0].image.clone());
    assert_eq!(image.flatten().as_deref(), Some("nginx:2"));
    let mf = c.metadata.managed_fields.expect("managed fields");
    assert_eq!(mf[0].manager.as_deref(), Some("kudo"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
}

#[tokio::test]
async fn ssa_conflict_between_managers_and_force() {
    let sim = SimCluster::new("t");
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    api.patch(
        "web",
        &PatchParams::apply("a"),
        &Patch::Apply(deployment("web", "nginx:1", 1)),
    )
    .await
    .expect("a applies");
    let err = api
        .patch(
            "web",
            &PatchParams::apply("b"),
            &Patch::Apply(deployment("web", "nginx:1", 3)),
        )
        .await
        .expect_err("b conflicts");
    let s = api_err(err);
    assert_eq!(s.code, 409);
    assert!(s.message.contains("conflict with \"a\""), "{}", s.message);
    assert!(s.message.contains(".spec.replicas"), "{}", s.message);
    let forced = api
        .patch(
            "web",
            &PatchParams::apply("b").force(),
            &Patch::Apply(deployment("web", "nginx:1", 3)),
        )
        .await
        .expect("forced");
    assert_eq!(forced.spec.and_then(|s| s.replicas), Some(3));
}

#[tokio::test]
async fn crd_established_custom_resource_and_status_subresource() {
    let sim = SimCluster::new("t");
    let client = sim.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "widgets.example.com",
        &PatchParams::apply("kudo"),
        &Patch::Apply(widget_crd()),
    )
    .await
    .expect("install crd");
    wait_established(&client, "widgets.example.com").await;

    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .expect("Widget discovered");
    assert_eq!(ar.plural, "widgets");
    assert!(
        caps.subresources
            .iter()
            .any(|(s, _)| s.plural.ends_with("status")),
        "{:?}",
        caps.subresources
    );

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w = widgets
        .patch(
            "w1",
            &PatchParams::apply("kudo"),
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w1"}, "spec": {"size": 3, "unknown": true}, "status": {"phase": "ignored"}})),
        )
        .await
        .expect("create widget");
    assert_eq!(w.data["spec"], json!({"size": 3}), "unknown field pruned");
    assert!(
        w.data.get("status").is_none(),
        "status ignored on the main resource"
    );
    let st = widgets
        .patch_status(
            "w1",
            &PatchParams::apply("kudo-status"),
            &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "w1"}, "status": {"phase": "Ready"}})),
        )
        .await
        .expect("status apply");
    assert_eq!(st.data["status"]["phase"], "Ready");
    assert_eq!(
        st.metadata.generation,
        Some(1),
        "status does not bump generation"
    );
    let got = widgets.get_status("w1").await.expect("get status");
    assert_eq!(got.data["status"]["phase"], "Ready");
}

#[tokio::test]
async fn label_selector_list_delete_then_gone() {
    let sim = SimCluster::new("t");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    for (name, tier) in [("a", "fe"), ("b", "be"), ("c", "fe")] {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"tier": tier}}, "data": {"k": name}}),
        )
        .expect("cm");
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let fe = api
        .list(&ListParams::default().labels("tier=fe"))
        .await
        .expect("list");
    let names: Vec<String> = fe
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, ["a", "c"]);
    let by_field = api
        .list(&ListParams::default().fields("metadata.name=b"))
        .await
        .expect("list");
    assert_eq!(by_field.items.len(), 1);
    let paged = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    assert_eq!(paged.items.len(), 2);
    let rest = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(paged.metadata.continue_.as_deref().expect("continue")),
        )
        .await
        .expect("page 2");
    assert_eq!(rest.items.len(), 1);

    api.delete("a", &DeleteParams::foreground())
        .await
        .expect("delete");
    let err = api.get("a").await.expect_err("gone");
    let s = api_err(err);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "configmaps \"a\" not found");
}

#[tokio::test]
async fn invalid_object_is_422_with_field_path_and_unknown_kind_is_404() {
    let sim = SimCluster::new("t");
    let client = sim.client();
    let api: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let mut d = deployment("web", "nginx:1", 1);
    d.spec
        .as_mut()
        .expect("spec")
        .template
        .spec
        .as_mut()
        .expect("pod")
        .containers[0]
        .image = None;
    let s = api_err(
        api.create(&PostParams::default(), &d)
            .await
            .expect_err("invalid"),
    );
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    let causes = s.details.expect("details").causes;
    assert_eq!(causes[0].field, "spec.template.spec.containers[0].image");
    assert_eq!(causes[0].reason, "FieldValueRequired");

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nope.example.com", "v1", "Nope"),
        "nopes",
    );
    let nopes: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let s = api_err(
        nopes
            .list(&ListParams::default())
            .await
            .expect_err("unknown kind"),
    );
    assert_eq!(s.code, 404);
    assert_eq!(
        s.message,
        "the server could not find the requested resource"
    );
    let discovery = Discovery::new(client).run().await.expect("discovery");
    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk("nope.example.com", "v1", "Nope"))
            .is_none()
    );
    assert!(
        discovery
            .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
            .is_some()
    );
}

#[tokio::test]
async fn stale_resource_version_update_conflicts() {
    let sim = SimCluster::new("t");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "x"}, "data": {"k": "1"}})).expect("cm");
    let created = api
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let mut first = created.clone();
    first.data = Some([("k".to_string(), "2".to_string())].into());
    api.replace("x", &PostParams::default(), &first)
        .await
        .expect("first update");
    let mut stale = created;
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let s = api_err(
        api.replace("x", &PostParams::default(), &stale)
            .await
            .expect_err("stale"),
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("the object has been modified"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn missing_namespace_is_404_and_namespaces_terminate() {
    let sim = SimCluster::new("t");
    let client = sim.client();
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm");
    let s = api_err(
        missing
            .create(&PostParams::default(), &cm)
            .await
            .expect_err("404"),
    );
    assert_eq!(s.message, "namespaces \"nowhere\" not found");

    let nss: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .expect("list ns")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()));
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}})).expect("ns");
    nss.create(&PostParams::default(), &ns)
        .await
        .expect("create ns");
    let in_team: Api<ConfigMap> = Api::namespaced(client.clone(), "team");
    in_team
        .create(&PostParams::default(), &cm)
        .await
        .expect("cm in team");
    nss.delete("team", &DeleteParams::default())
        .await
        .expect("delete ns");
    assert_eq!(
        api_err(in_team.get("x").await.expect_err("contents gone")).code,
        404
    );
    assert_eq!(
        api_err(nss.get("team").await.expect_err("ns gone")).code,
        404
    );
}

#[tokio::test]
async fn watch_resume_and_410_gone() {
    let sim = SimCluster::with_config(
        "t",
        kudo::sim::ApiConfig {
            history_events: 5,
            ..Default::default()
        },
    );
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let list = api.list(&ListParams::default()).await.expect("list");
    let start = list.metadata.resource_version.expect("rv");
    for i in 0..3 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).expect("cm");
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &start)
        .await
        .expect("watch")
        .boxed();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match stream.try_next().await.expect("event") {
            Some(WatchEvent::Added(cm)) => seen.push(cm.metadata.name.expect("name")),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2"]);
    // A live event after the replay.
    api.delete("c0", &DeleteParams::default())
        .await
        .expect("delete");
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Deleted(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("c0")),
        other => panic!("unexpected {other:?}"),
    }
    for i in 3..10 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("c{i}")}})).expect("cm");
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let mut old = api
        .watch(&WatchParams::default().timeout(5), &start)
        .await
        .expect("watch")
        .boxed();
    match old.try_next().await.expect("event") {
        Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
        other => panic!("expected 410 Gone, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_bookmarks_and_runtime_watcher() {
    let sim = SimCluster::with_config(
        "t",
        kudo::sim::ApiConfig {
            bookmark_interval: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("event") {
        Some(WatchEvent::Bookmark(b)) => assert!(!b.metadata.resource_version.is_empty()),
        other => panic!("expected a bookmark, got {other:?}"),
    }
    // kube-runtime's watcher (list + watch) sees objects created after it starts.
    let cfg = kube::runtime::watcher::Config::default();
    let mut w = kube::runtime::watcher(api.clone(), cfg).boxed();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "late"}})).expect("cm");
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ev = tokio::time::timeout_at(deadline, w.next())
            .await
            .expect("watcher event in time");
        match ev.expect("stream open").expect("no error") {
            kube::runtime::watcher::Event::Apply(cm)
            | kube::runtime::watcher::Event::InitApply(cm)
                if cm.metadata.name.as_deref() == Some("late") =>
            {
                break;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn strategic_and_merge_patches() {
    let sim = SimCluster::new("t");
    let api: Api<Deployment> = Api::namespaced(sim.client(), "default");
    api.create(&PostParams::default(), &deployment("web", "nginx:1", 1))
        .await
        .expect("create");
    let patched = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "side", "image": "busybox:1"}]}}}})),
        )
        .await
        .expect("strategic");
    let names: Vec<String> = patched
        .spec
        .and_then(|s| s.template.spec)
        .expect("pod")
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["main", "side"], "containers merged by name");
    let merged = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"extra": "1"}}})),
        )
        .await
        .expect("merge");
    assert_eq!(
        merged
            .metadata
            .labels
            .expect("labels")
            .get("extra")
            .map(String::as_str),
        Some("1")
    );
}

#[tokio::test]
async fn partition_is_a_connection_error_and_heals() {
    let sim = SimCluster::new("t");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    sim.faults().set_partitioned(true);
    let err = api
        .list(&ListParams::default())
        .await
        .expect_err("unreachable");
    assert!(matches!(err, kube::Error::Service(_)), "{err:?}");
    assert!(
        err.to_string().contains("onnect") || format!("{err:?}").contains("ConnectionRefused"),
        "{err:?}"
    );
    sim.faults().set_partitioned(false);
    api.list(&ListParams::default()).await.expect("healed");
    sim.faults().set_error_rate(1.0);
    let s = api_err(
        api.list(&ListParams::default())
            .await
            .expect_err("injected"),
    );
    assert_eq!(s.code, 503);
    sim.faults().set_error_rate(0.0);
}

#[tokio::test]
async fn latency_and_slow_watch_delay_but_do_not_lose_anything() {
    let sim = SimCluster::new("t");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    sim.faults().set_latency(Duration::from_millis(30));
    let start = tokio::time::Instant::now();
    api.list(&ListParams::default())
        .await
        .expect("slow but answered");
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "latency applied"
    );
    sim.faults().set_latency(Duration::ZERO);

    sim.faults().set_watch_delay(Duration::from_millis(20));
    let rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    for i in 0..3 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("s{i}")}})).expect("cm");
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let start = tokio::time::Instant::now();
    let mut names = Vec::new();
    while names.len() < 3 {
        match stream.try_next().await.expect("event") {
            Some(WatchEvent::Added(cm)) => names.push(cm.metadata.name.expect("name")),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, ["s0", "s1", "s2"], "every event, in order");
    assert!(
        start.elapsed() >= Duration::from_millis(60),
        "each event delayed"
    );
}

#[tokio::test]
async fn dry_run_persists_nothing() {
    let sim = SimCluster::new("t");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dry"}})).expect("cm");
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answered = api.create(&pp, &cm).await.expect("dry-run create");
    assert!(answered.metadata.uid.is_some(), "the answer looks created");
    assert_eq!(
        api_err(api.get("dry").await.expect_err("not stored")).code,
        404
    );
}

#[tokio::test]
async fn foreground_delete_waits_for_a_dependent_finalizer_and_orphan_keeps_dependents() {
    let sim = SimCluster::new("t");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let mk = |name: &str, owner: Option<&ConfigMap>, finalizer: bool| -> ConfigMap {
        let mut v = json!({"metadata": {"name": name}});
        if let Some(o) = owner {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
                "name": o.metadata.name, "uid": o.metadata.uid, "blockOwnerDeletion": true}]);
        }
        if finalizer {
            v["metadata"]["finalizers"] = json!(["example.com/hold"]);
        }
        serde_json::from_value(v).expect("cm")
    };
    let owner = api
        .create(&PostParams::default(), &mk("owner", None, false))
        .await
        .expect("owner");
    api.create(&PostParams::default(), &mk("held", Some(&owner), true))
        .await
        .expect("dependent");

    api.delete("owner", &DeleteParams::foreground())
        .await
        .expect("delete");
    let o = api
        .get("owner")
        .await
        .expect("owner waits for its dependent");
    assert!(o.metadata.deletion_timestamp.is_some());
    assert_eq!(
        o.metadata.finalizers.as_deref(),
        Some(&["foregroundDeletion".to_string()][..])
    );
    let held = api
        .get("held")
        .await
        .expect("dependent held by its finalizer");
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release finalizer");
    assert_eq!(api_err(api.get("held").await.expect_err("gone")).code, 404);
    assert_eq!(
        api_err(api.get("owner").await.expect_err("then the owner")).code,
        404
    );

    let owner = api
        .create(&PostParams::default(), &mk("owner2", None, false))
        .await
        .expect("owner");
    api.create(&PostParams::default(), &mk("kept", Some(&owner), false))
        .await
        .expect("dependent");
    api.delete("owner2", &DeleteParams::orphan())
        .await
        .expect("orphan delete");
    let kept = api.get("kept").await.expect("orphaned dependent survives");
    assert!(
        kept.metadata.owner_references.is_none(),
        "owner reference removed"
    );
}

#[tokio::test]
async fn label_selected_watch_sees_objects_leave_and_enter_the_selector() {
    let sim = SimCluster::new("t");
    let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "x", "labels": {"app": "a"}}}))
            .expect("cm");
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create");
    let rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut stream = api
        .watch(&WatchParams::default().labels("app=a").timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    api.patch("x", &PatchParams::default(), &relabel("b"))
        .await
        .expect("leave");
    api.patch("x", &PatchParams::default(), &relabel("a"))
        .await
        .expect("enter");
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match stream.try_next().await.expect("event") {
            Some(WatchEvent::Deleted(_)) => kinds.push("DELETED"),
            Some(WatchEvent::Added(_)) => kinds.push("ADDED"),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(kinds, ["DELETED", "ADDED"]);
}
