//! One kube-runtime controller per cluster: watches Instances (the cluster's only Instance
//! watch; its store is shared with the GitOps worker through [`Cluster::cached_list_all`]
//! and [`Cluster::changes`]), and the workload kinds kudo applies (by kudo's labels) so a
//! plan advances as soon as an object becomes healthy.
//! Running plans are also re-checked every `poll`, which covers every other kind.
//! The same watches (plus the common configuration kinds) make drift detection
//! watch-driven: a person's edit or deletion of an object kudo applied wakes its Instance,
//! and instances whose plan is complete are fully re-checked every drift interval
//! (see [`super::drift`]), which covers kinds not watched here and cluster-scoped objects.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::debug;

use crate::api::{Instance, OperatorVersion};
use crate::cluster::Cluster;

use super::guard::{Panics, error_action, reconcile_guarded};
use super::reconcile::Context;
use crate::engine::objects::{HERITAGE_LABEL, HERITAGE_VALUE, INSTANCE_LABEL};

/// Runs the engine for every Instance on `cluster` (in `namespace`, or all namespaces) until
/// `shutdown` resolves.
pub async fn run(
    cluster: Arc<Cluster>,
    namespace: Option<String>,
    poll: Duration,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context::new(cluster.clone(), poll));
    run_with(ctx, namespace, shutdown).await;
}

/// [`run`] with a given context (metrics shared with the process's registry).
pub async fn run_with(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.cluster.client().clone();
    let owned = watcher::Config::default().labels(&format!("{HERITAGE_LABEL}={HERITAGE_VALUE}"));
    let ns = namespace.as_deref();
    // A panic in one reconcile is caught there (see `super::guard`): the controller goes on.
    let panics = Arc::new(Panics::default());
    let backoff = panics.clone();
    // The cluster's one Instance watch: the controller's trigger and store, and the cache
    // the GitOps worker reads (and is woken by) instead of listing and watching on its own.
    let (instances, instance_writer) = reflector::store::<Instance>();
    if ctx.share_instances {
        ctx.cluster.serve_from_cache(
            crate::api::API_VERSION,
            "Instance",
            crate::engine::cache::lookup(instances.clone()),
        );
    }
    let noted = ctx.cluster.clone();
    let instance_events = kube::runtime::reflector(
        instance_writer,
        watcher(api::<Instance>(&client, ns), watcher::Config::default()),
    )
    .inspect(move |_| noted.note_change(crate::api::API_VERSION, "Instance"))
    .applied_objects();
    let controller = Controller::for_stream(instance_events, instances.clone());
    // OperatorVersions are read from this watch's store, not fetched per pass; a version
    // that appears or changes wakes the instances naming it.
    let (versions, writer) = reflector::store::<OperatorVersion>();
    let version_events = watcher(
        api::<OperatorVersion>(&client, ns),
        watcher::Config::default(),
    )
    .modify(|o| o.managed_fields_mut().clear())
    .reflect(writer)
    .touched_objects();
    ctx.cluster.serve_from_cache(
        crate::api::API_VERSION,
        "OperatorVersion",
        crate::engine::cache::lookup(versions.clone()),
    );
    ctx.set_operator_versions(versions);
    let cluster = &ctx.cluster;
    controller
        .watches_stream(version_events, move |ov| users_of(&instances, &ov))
        .watches_stream(cached::<Deployment>(cluster, ns, &owned), owner_of)
        .watches_stream(cached::<StatefulSet>(cluster, ns, &owned), owner_of)
        .watches_stream(cached::<DaemonSet>(cluster, ns, &owned), owner_of)
        .watches_stream(cached::<Job>(cluster, ns, &owned), owner_of)
        .watches_stream(cached::<ConfigMap>(cluster, ns, &owned), owner_of)
        .watches_stream(cached::<Secret>(cluster, ns, &owned), owner_of)
        .watches_stream(cached::<Service>(cluster, ns, &owned), owner_of)
        .watches_stream(cached::<ServiceAccount>(cluster, ns, &owned), owner_of)
        .graceful_shutdown_on(shutdown)
        .run(
            move |inst, ctx| reconcile_guarded(inst, ctx, panics.clone()),
            move |inst, error, _ctx| error_action(&inst, error, &backoff),
            ctx,
        )
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(instance = %obj.name, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile loop"),
            }
        })
        .await;
}

/// The cluster's shared Instance watch without an engine (see `Context::share_instances`):
/// what [`Cluster::cached_list_all`] and [`Cluster::changes`] read on a sharded member,
/// whether or not it drives the cluster. Runs until `stop`; watch errors back off and retry.
pub async fn watch_instances(cluster: Arc<Cluster>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let (store, writer) = reflector::store::<Instance>();
    cluster.serve_from_cache(
        crate::api::API_VERSION,
        "Instance",
        crate::engine::cache::lookup(store),
    );
    let noted = cluster.clone();
    let events = kube::runtime::reflector(
        writer,
        watcher(
            api::<Instance>(cluster.client(), None),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .for_each(move |_| {
        noted.note_change(crate::api::API_VERSION, "Instance");
        async {}
    });
    tokio::select! {
        _ = events => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The watch of `K` objects kudo applied, reflected into a store the cluster serves
/// [`Cluster::cached`] reads from (without `managedFields`, which no reader needs).
fn cached<K>(
    cluster: &Cluster,
    namespace: Option<&str>,
    owned: &watcher::Config,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    cluster.serve_from_cache(
        <K as k8s_openapi::Resource>::API_VERSION,
        <K as k8s_openapi::Resource>::KIND,
        crate::engine::cache::lookup(store),
    );
    watcher(api::<K>(cluster.client(), namespace), owned.clone())
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects()
}

/// The Instances (in the controller's store) that name `ov`.
fn users_of(instances: &Store<Instance>, ov: &OperatorVersion) -> Vec<ObjectRef<Instance>> {
    let (Some(name), Some(namespace)) = (ov.metadata.name.as_deref(), ov.namespace()) else {
        return Vec::new();
    };
    instances
        .state()
        .iter()
        .filter(|i| {
            let own = i.namespace().unwrap_or_default();
            let wanted = i
                .spec
                .operator_version
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(&own);
            i.spec.operator_version.name.as_deref() == Some(name) && wanted == namespace
        })
        .map(|i| ObjectRef::from_obj(&**i))
        .collect()
}

/// Maps an object kudo applied to the Instance that owns it (by its labels).
fn owner_of<K: Resource>(obj: K) -> Option<ObjectRef<Instance>> {
    let instance = obj.labels().get(INSTANCE_LABEL)?.clone();
    let namespace = obj.namespace()?;
    Some(ObjectRef::new(&instance).within(&namespace))
}
