//! One kube-runtime controller per cluster: watches Instances, and the workload kinds kudo
//! applies (by kudo's labels) so a plan advances as soon as an object becomes healthy.
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
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tracing::debug;

use crate::api::Instance;
use crate::cluster::Cluster;

use super::guard::{Panics, error_action, reconcile_guarded};
use super::objects::{HERITAGE_LABEL, HERITAGE_VALUE, INSTANCE_LABEL};
use super::reconcile::Context;

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
    Controller::new(api::<Instance>(&client, ns), watcher::Config::default())
        .watches(api::<Deployment>(&client, ns), owned.clone(), owner_of)
        .watches(api::<StatefulSet>(&client, ns), owned.clone(), owner_of)
        .watches(api::<DaemonSet>(&client, ns), owned.clone(), owner_of)
        .watches(api::<Job>(&client, ns), owned.clone(), owner_of)
        .watches(api::<ConfigMap>(&client, ns), owned.clone(), owner_of)
        .watches(api::<Secret>(&client, ns), owned.clone(), owner_of)
        .watches(api::<Service>(&client, ns), owned.clone(), owner_of)
        .watches(api::<ServiceAccount>(&client, ns), owned, owner_of)
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

/// Maps an object kudo applied to the Instance that owns it (by its labels).
fn owner_of<K: Resource>(obj: K) -> Option<ObjectRef<Instance>> {
    let instance = obj.labels().get(INSTANCE_LABEL)?.clone();
    let namespace = obj.namespace()?;
    Some(ObjectRef::new(&instance).within(&namespace))
}
