//! Typed objects on a cluster: installing a framework's CRD, and one controller per typed
//! kind that mirrors each object into an Instance (the engine's controller runs that) and
//! copies the Instance's plan status back.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::crd::{CrdOptions, generate};
use super::mirror::{
    Owner, immutable_violation, instance_parameters, is_mirror_of, mirrored_instance, same_status,
    typed_status,
};
use super::names::PropertyMap;
use super::{CrdTarget, MIRROR_MANAGER, TYPED_KIND_LABEL};
use crate::api::{Instance, Operator, OperatorVersion, OperatorVersionSpec};
use crate::cluster::{Cluster, ClusterError, ObjectRef};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("cluster {cluster}: {what}: {source}")]
    Kube {
        cluster: String,
        what: String,
        source: kube::Error,
    },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Typed(#[from] super::TypedError),
    #[error("cluster {cluster}: CRD {crd}: {message}")]
    Crd {
        cluster: String,
        crd: String,
        message: String,
    },
}

fn kube_err(
    cluster: &Cluster,
    what: impl Into<String>,
) -> impl FnOnce(kube::Error) -> ControllerError {
    let (cluster, what) = (cluster.name().to_string(), what.into());
    move |source| ControllerError::Kube {
        cluster,
        what,
        source,
    }
}

/// What the server supports (CEL validation rules), from its version.
pub async fn server_options(cluster: &Cluster) -> Result<CrdOptions, ControllerError> {
    let info = cluster
        .client()
        .apiserver_version()
        .await
        .map_err(kube_err(cluster, "reading the server version"))?;
    Ok(CrdOptions::for_server(&info.major, &info.minor))
}

/// Generates `target`'s CRD from `versions`, applies it (keeping the versions the live CRD
/// serves) and waits until it is Established and served. Returns the storage version.
pub async fn install_crd(
    cluster: &Cluster,
    target: &CrdTarget,
    versions: &[&OperatorVersionSpec],
) -> Result<String, ControllerError> {
    let opts = server_options(cluster).await?;
    let r = ObjectRef::new(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        None,
        target.crd_name(),
    );
    let live = cluster.get_opt(&r).await?;
    let crd = generate(target, versions, live.as_ref(), opts)?;
    let unchanged = live.as_ref().is_some_and(|l| {
        l.get("spec")
            .map(|s| crate::util::subset::is_subset(&crd["spec"], s))
            == Some(true)
            && l.pointer("/metadata/annotations")
                .map(|a| crate::util::subset::is_subset(&crd["metadata"]["annotations"], a))
                == Some(true)
    });
    if !unchanged {
        cluster.apply(&crd).await?;
        info!(cluster = cluster.name(), crd = %target.crd_name(), "typed CRD applied");
    }
    let health = cluster.wait_healthy(&r, Duration::from_secs(30)).await?;
    if !health.is_healthy() {
        return Err(ControllerError::Crd {
            cluster: cluster.name().to_string(),
            crd: target.crd_name(),
            message: format!("not established: {health:?}"),
        });
    }
    storage_version(&crd).ok_or_else(|| ControllerError::Crd {
        cluster: cluster.name().to_string(),
        crd: target.crd_name(),
        message: "no storage version".to_string(),
    })
}

/// The storage version of a CRD.
pub fn storage_version(crd: &Value) -> Option<String> {
    crd.pointer("/spec/versions")?
        .as_array()?
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))?
        .get("name")?
        .as_str()
        .map(str::to_string)
}

/// The API resource of a target's typed objects at CRD version `version`.
pub fn api_resource(target: &CrdTarget, version: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk(&target.group, version, &target.kind);
    ApiResource::from_gvk_with_plural(&gvk, &target.plural)
}

fn namespaced_or_all<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// One typed kind's controller state.
pub struct TypedContext {
    pub cluster: Arc<Cluster>,
    pub target: CrdTarget,
    pub resource: ApiResource,
}

/// Mirrors every `target` object (at CRD version `version`, in `namespace` or all) until
/// `shutdown` resolves.
pub async fn run(
    cluster: Arc<Cluster>,
    target: CrdTarget,
    version: String,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let resource = api_resource(&target, &version);
    let client = cluster.client().clone();
    let typed: Api<DynamicObject> = match namespace.as_deref() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let mirrors = watcher::Config::default().labels(&format!("{TYPED_KIND_LABEL}={}", target.kind));
    let ctx = Arc::new(TypedContext {
        cluster,
        target,
        resource: resource.clone(),
    });
    Controller::new_with(typed, watcher::Config::default(), resource)
        .owns(
            namespaced_or_all::<Instance>(&client, namespace.as_deref()),
            mirrors,
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(object = %obj.name, "typed object reconciled"),
                Err(e) => debug!(error = %e, "typed reconcile loop"),
            }
        })
        .await;
}

fn error_policy(
    obj: Arc<DynamicObject>,
    error: &ControllerError,
    _ctx: Arc<TypedContext>,
) -> Action {
    warn!(object = %obj.name_any(), %error, "typed reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// Reconciles one typed object: mirror it into its Instance, copy the status back.
pub async fn reconcile(
    obj: Arc<DynamicObject>,
    ctx: Arc<TypedContext>,
) -> Result<Action, ControllerError> {
    if obj.meta().deletion_timestamp.is_some() {
        // Garbage collection deletes the mirrored Instance (which runs its cleanup plan).
        return Ok(Action::await_change());
    }
    let cluster = &ctx.cluster;
    let client = cluster.client().clone();
    let namespace = obj.namespace().unwrap_or_default();
    let owner = Owner {
        api_version: ctx.resource.api_version.clone(),
        kind: ctx.target.kind.clone(),
        name: obj.name_any(),
        namespace: namespace.clone(),
        uid: obj.uid().unwrap_or_default(),
    };
    let typed: Api<DynamicObject> = Api::namespaced_with(client.clone(), &namespace, &ctx.resource);
    let instances: Api<Instance> = Api::namespaced(client.clone(), &namespace);
    let spec = obj
        .data
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let version = spec
        .get("version")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();

    let outcome = mirror(ctx.as_ref(), &owner, &instances, &spec, &version).await?;
    let (instance, ov_name, problem, requeue) = match outcome {
        Mirror::Done { instance, ov } => (Some(instance), ov, None, None),
        Mirror::Problem {
            instance,
            ov,
            reason,
            message,
            requeue,
        } => {
            warn!(object = %owner.name, %reason, %message, "typed object not mirrored");
            (instance, ov, Some((reason, message)), requeue)
        }
    };
    let status = typed_status(
        instance.as_ref(),
        &ov_name,
        problem.as_ref().map(|(r, m)| (*r, m.as_str())),
        obj.metadata.generation,
    );
    let current = obj.data.get("status").cloned().unwrap_or(Value::Null);
    if !same_status(&current, &status) {
        typed
            .patch_status(
                &owner.name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .map_err(kube_err(
                cluster,
                format!(
                    "writing status of {} {}/{}",
                    owner.kind, namespace, owner.name
                ),
            ))?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

enum Mirror {
    Done {
        instance: Instance,
        ov: String,
    },
    Problem {
        instance: Option<Instance>,
        ov: String,
        reason: &'static str,
        message: String,
        requeue: Option<Duration>,
    },
}

async fn mirror(
    ctx: &TypedContext,
    owner: &Owner,
    instances: &Api<Instance>,
    spec: &serde_json::Map<String, Value>,
    version: &str,
) -> Result<Mirror, ControllerError> {
    let cluster = &ctx.cluster;
    let ns = &owner.namespace;
    let existing = instances.get_opt(&owner.name).await.map_err(kube_err(
        cluster,
        format!("reading Instance {ns}/{}", owner.name),
    ))?;
    let problem =
        |instance: Option<Instance>, ov: &str, reason, message: String, requeue| Mirror::Problem {
            instance,
            ov: ov.to_string(),
            reason,
            message,
            requeue,
        };
    if let Some(inst) = &existing
        && !is_mirror_of(inst, owner)
    {
        return Ok(problem(
            None,
            "",
            "InstanceConflict",
            format!(
                "an Instance {ns}/{} exists that does not belong to this {}; rename one of them",
                owner.name, owner.kind
            ),
            None,
        ));
    }
    let versions: Api<OperatorVersion> = Api::namespaced(cluster.client().clone(), ns);
    let list = versions
        .list(&ListParams::default())
        .await
        .map_err(kube_err(
            cluster,
            format!("listing OperatorVersions in {ns}"),
        ))?;
    let of_operator: Vec<&OperatorVersion> = list
        .items
        .iter()
        .filter(|ov| ov.spec.operator.name.as_deref() == Some(ctx.target.operator.as_str()))
        .collect();
    let Some(ov) = of_operator.iter().find(|ov| ov.spec.version == version) else {
        let found: Vec<&str> = of_operator
            .iter()
            .map(|ov| ov.spec.version.as_str())
            .collect();
        return Ok(problem(
            existing,
            "",
            "OperatorVersionNotFound",
            format!(
                "spec.version {version:?}: no OperatorVersion of operator {} with that version in namespace {ns} (found: {}); retrying until it appears",
                ctx.target.operator,
                if found.is_empty() {
                    "none".to_string()
                } else {
                    found.join(", ")
                }
            ),
            Some(Duration::from_secs(5)),
        ));
    };
    let ov_name = ov.name_any();
    let what = format!("framework {} version {}", ctx.target.operator, version);
    let map = match PropertyMap::new(&what, ov.spec.parameters.iter().map(|p| p.name.as_str())) {
        Ok(m) => m,
        Err(e) => {
            return Ok(problem(
                existing,
                &ov_name,
                "InvalidPackage",
                e.to_string(),
                None,
            ));
        }
    };
    let parameters = match instance_parameters(spec, &ov.spec.parameters, &map) {
        Ok(p) => p,
        Err(message) => {
            return Ok(problem(
                existing,
                &ov_name,
                "InvalidParameters",
                message,
                None,
            ));
        }
    };
    if let Some(inst) = &existing
        && let Some(message) = immutable_violation(
            &ov.spec.parameters,
            &map,
            &inst.spec.parameters,
            &parameters,
        )
    {
        return Ok(problem(
            existing.clone(),
            &ov_name,
            "ImmutableParameterChanged",
            message,
            None,
        ));
    }
    let body = mirrored_instance(owner, &ctx.target, &ov_name, &parameters);
    let live = cluster.apply_as(&body, MIRROR_MANAGER).await?;
    let instance: Instance = serde_json::from_value(live).map_err(|e| ControllerError::Crd {
        cluster: cluster.name().to_string(),
        crd: ctx.target.crd_name(),
        message: format!("mirrored Instance {ns}/{} undecodable: {e}", owner.name),
    })?;
    Ok(Mirror::Done {
        instance,
        ov: ov_name,
    })
}

/// The typed frameworks visible in `namespace` (or all): Operators carrying the
/// [`super::CRD_ANNOTATION`], each with the specs of its OperatorVersions.
pub async fn discover(
    cluster: &Cluster,
    namespace: Option<&str>,
) -> Result<Vec<(CrdTarget, Vec<OperatorVersionSpec>)>, ControllerError> {
    let client = cluster.client();
    let operators = namespaced_or_all::<Operator>(client, namespace)
        .list(&ListParams::default())
        .await
        .map_err(kube_err(cluster, "listing Operators"))?;
    let mut targets: HashMap<CrdTarget, Vec<OperatorVersionSpec>> = HashMap::new();
    for op in &operators.items {
        match CrdTarget::from_operator(op) {
            None => {}
            Some(Ok(t)) => {
                targets.entry(t).or_default();
            }
            Some(Err(e)) => warn!(error = %e, "typed CRD not generated"),
        }
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let versions = namespaced_or_all::<OperatorVersion>(client, namespace)
        .list(&ListParams::default())
        .await
        .map_err(kube_err(cluster, "listing OperatorVersions"))?;
    for ov in versions.items {
        let op = ov.spec.operator.name.clone().unwrap_or_default();
        for (t, specs) in &mut targets {
            if t.operator == op && !specs.iter().any(|s| s.version == ov.spec.version) {
                specs.push(ov.spec.clone());
            }
        }
    }
    let mut out: Vec<_> = targets.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `kudo manager`'s typed part: every `interval`, installs or extends the CRD of each
/// opted-in framework it sees and runs one controller per typed kind (restarted when the
/// storage version moves), until `shutdown` resolves.
pub async fn run_all(
    cluster: Arc<Cluster>,
    namespace: Option<String>,
    interval: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    type Running = (
        String,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    );
    let mut running: HashMap<CrdTarget, Running> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        match discover(&cluster, namespace.as_deref()).await {
            Err(e) => warn!(error = %e, "typed frameworks not discovered"),
            Ok(found) => {
                for (target, specs) in found {
                    let refs: Vec<&OperatorVersionSpec> = specs.iter().collect();
                    let version = match install_crd(&cluster, &target, &refs).await {
                        Ok(v) => v,
                        Err(e) => {
                            warn!(crd = %target.crd_name(), error = %e, "typed CRD not installed");
                            continue;
                        }
                    };
                    if running.get(&target).is_some_and(|(v, _, _)| *v == version) {
                        continue;
                    }
                    if let Some((_, stop, handle)) = running.remove(&target) {
                        let _ = stop.send(());
                        let _ = handle.await;
                    }
                    info!(cluster = cluster.name(), kind = %target.kind, %version, "mirroring typed objects");
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    let handle = tokio::spawn(run(
                        cluster.clone(),
                        target.clone(),
                        version.clone(),
                        namespace.clone(),
                        async move {
                            let _ = rx.await;
                        },
                    ));
                    running.insert(target, (version, tx, handle));
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(interval) => {}
        }
    }
    for (_, (_, stop, handle)) in running {
        let _ = stop.send(());
        let _ = handle.await;
    }
}
