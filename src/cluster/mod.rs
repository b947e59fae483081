//! The layer that talks to one Kubernetes API server: a [`Cluster`] handle with cached
//! discovery, server-side apply under the `kudo` field manager, delete-and-wait, get, and
//! label-selected lists; errors in bounded categories ([`ErrorKind`]); and the pure health
//! evaluation of live objects ([`health`]).
//!
//! Objects travel as `serde_json::Value` so that rendered templates of any kind, including
//! custom resources installed a moment ago, go through the same path.

pub mod error;
pub mod health;
pub mod object;
pub mod resource;

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersion;
use kube::discovery::{ApiResource, Scope};
use serde_json::Value;

pub use error::{ClusterError, ErrorKind, FieldCause};
pub use health::Health;
pub use object::ObjectRef;

/// The field manager kudo applies under; with `force`, kudo owns every field it renders.
pub const FIELD_MANAGER: &str = "kudo";

/// Connect timeout for API servers: an unreachable cluster must fail fast, not stall others.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound for one request (watch-free requests only).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// A kind as the cluster serves it, from discovery.
#[derive(Clone, Debug)]
struct Served {
    resource: ApiResource,
    namespaced: bool,
}

/// A handle on one cluster. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Cluster {
    name: String,
    client: kube::Client,
    /// (group, version, kind) → served resource; refreshed per group-version on a miss.
    kinds: Shared<(String, String, String), Served>,
    request_timeout: Duration,
    /// (apiVersion, kind) → a watch's store of that kind (see [`Cluster::cached`]).
    cache: Shared<(String, String), CacheLookup>,
    /// (apiVersion, kind) → a counter the kind's watch bumps on every event, for readers of
    /// the cache that act on changes (see [`Cluster::changes`]).
    changes: Shared<(String, String), tokio::sync::watch::Sender<u64>>,
}

/// A map shared by a handle and its [`Cluster::sibling`]s.
type Shared<K, V> = Arc<RwLock<HashMap<K, V>>>;

/// A watch's store of one kind, as [`Cluster::cached`] and [`Cluster::cached_list`] read it.
pub trait ObjectCache: Send + Sync {
    /// One object by namespace and name.
    fn get(&self, namespace: &str, name: &str) -> Option<Value>;
    /// The objects in `namespace` (every namespace for `None`) carrying every label of
    /// `labels`; `None` until the watch has listed its objects once.
    fn list(&self, namespace: Option<&str>, labels: &[(&str, &str)]) -> Option<Vec<Value>>;
}

/// A shared [`ObjectCache`].
pub type CacheLookup = std::sync::Arc<dyn ObjectCache>;

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// A handle from a kubeconfig file and a context in it (`None`: its current context).
    pub async fn from_kubeconfig(name: &str, path: &Path, context: Option<&str>) -> Result<Self> {
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| ClusterError::Kubeconfig {
            cluster: name.to_string(),
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        if let Some(ctx) = context
            && !kubeconfig.contexts.iter().any(|c| c.name == ctx)
        {
            return Err(ClusterError::MissingContext {
                cluster: name.to_string(),
                path: path.display().to_string(),
                context: ctx.to_string(),
                present: kubeconfig.contexts.iter().map(|c| c.name.clone()).collect(),
            });
        }
        let options = KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| ClusterError::Kubeconfig {
                cluster: name.to_string(),
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        Self::from_config(name, config)
    }

    /// A handle for the cluster this process runs in (service account token and CA).
    pub fn in_cluster(name: &str) -> Result<Self> {
        let config = kube::Config::incluster().map_err(|e| ClusterError::Config {
            cluster: name.to_string(),
            reason: format!("in-cluster configuration: {e}"),
        })?;
        Self::from_config(name, config)
    }

    /// A handle from a client configuration; bounds the connect timeout.
    pub fn from_config(name: &str, mut config: kube::Config) -> Result<Self> {
        config.connect_timeout = Some(
            config
                .connect_timeout
                .map_or(CONNECT_TIMEOUT, |t| t.min(CONNECT_TIMEOUT)),
        );
        let client = kube::Client::try_from(config).map_err(|e| ClusterError::Config {
            cluster: name.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self::from_client(name, client))
    }

    /// A handle over an existing client (e.g. one speaking to an in-process API server).
    pub fn from_client(name: &str, client: kube::Client) -> Self {
        Cluster {
            name: name.to_string(),
            client,
            kinds: Default::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            cache: Default::default(),
            changes: Default::default(),
        }
    }

    /// A second handle on the same cluster that shares this one's discovery, watch caches
    /// and change counters but sends through `f(client)`: two writers with different
    /// permissions (a sharded member's engine and the leader's spec writes) read one cache.
    pub fn sibling(&self, f: impl FnOnce(kube::Client) -> kube::Client) -> Cluster {
        Cluster {
            name: self.name.clone(),
            client: f(self.client.clone()),
            kinds: self.kinds.clone(),
            request_timeout: self.request_timeout,
            cache: self.cache.clone(),
            changes: self.changes.clone(),
        }
    }

    /// Change the upper bound of a single request (default 30 s).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Counts every request of this handle's client (and of clients cloned from it later)
    /// in `kudo_cluster_api_requests_total` and its latency histogram.
    pub fn with_api_metrics(
        mut self,
        metrics: std::sync::Arc<crate::metrics::ClusterMetrics>,
    ) -> Self {
        self.client = crate::metrics::cluster::metered_client(self.client, &self.name, metrics);
        self
    }

    /// Wraps this handle's client (e.g. in a layer that refuses writes).
    pub fn map_client(mut self, f: impl FnOnce(kube::Client) -> kube::Client) -> Self {
        self.client = f(self.client);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Serves [`Cluster::cached`] reads of `api_version`/`kind` from a watch's store.
    pub fn serve_from_cache(&self, api_version: &str, kind: &str, lookup: CacheLookup) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((api_version.to_string(), kind.to_string()), lookup);
    }

    /// Whether a watch keeps objects like `r` (its kind is cached and it is namespaced): an
    /// edit or deletion of one reaches the engine as an event.
    pub fn watches(&self, r: &ObjectRef) -> bool {
        r.namespace.is_some()
            && self
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&(r.api_version.clone(), r.kind.clone()))
    }

    /// The object as a watch last saw it, without a request; `None` when its kind is not
    /// cached, or the watch has not (yet) seen it. A hint, possibly stale: callers fall back
    /// to the API (or to an apply) when it does not settle their question.
    pub fn cached(&self, r: &ObjectRef) -> Option<Value> {
        let lookup = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(r.api_version.clone(), r.kind.clone()))?
            .clone();
        lookup.get(r.namespace.as_deref()?, &r.name)
    }

    /// [`Cluster::list`] of one kind in one namespace from its watch, when the kind is
    /// cached, its watch has listed once and `label_selector` is a list of `key=value`.
    pub fn cached_list(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        label_selector: &str,
    ) -> Option<Vec<Value>> {
        self.cached_list_in(api_version, kind, Some(namespace), label_selector)
    }

    /// [`Cluster::cached_list`] across every namespace the watch covers.
    pub fn cached_list_all(
        &self,
        api_version: &str,
        kind: &str,
        label_selector: &str,
    ) -> Option<Vec<Value>> {
        self.cached_list_in(api_version, kind, None, label_selector)
    }

    fn cached_list_in(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Option<Vec<Value>> {
        let mut labels = Vec::new();
        for term in label_selector.split(',').filter(|t| !t.is_empty()) {
            let (key, value) = term.split_once('=')?;
            if key.ends_with('!') || value.starts_with('=') {
                return None;
            }
            labels.push((key.trim(), value.trim()));
        }
        let lookup = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(api_version.to_string(), kind.to_string()))?
            .clone();
        lookup.list(namespace, &labels)
    }

    /// Bumps every [`Cluster::changes`] receiver of `api_version`/`kind` (called by the
    /// kind's watch on each event).
    pub fn note_change(&self, api_version: &str, kind: &str) {
        self.change_sender(api_version, kind)
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever the watch of `api_version`/`kind` sees an event; usable before the
    /// watch starts (it then changes once the watch runs).
    pub fn changes(&self, api_version: &str, kind: &str) -> tokio::sync::watch::Receiver<u64> {
        self.change_sender(api_version, kind).subscribe()
    }

    fn change_sender(&self, api_version: &str, kind: &str) -> tokio::sync::watch::Sender<u64> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(tx) = self
            .changes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return tx.clone();
        }
        self.changes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_insert_with(|| tokio::sync::watch::channel(0).0)
            .clone()
    }

    /// One cheap request (`GET /version`, no storage behind it) that says whether the API
    /// server answers: liveness for a handle whose reads come from watches.
    pub async fn probe(&self) -> Result<()> {
        self.call("probe", &"/version", self.client.apiserver_version())
            .await
            .map(|_| ())
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Namespace used for namespaced objects that name none (the kubeconfig context's).
    pub fn default_namespace(&self) -> &str {
        self.client.default_namespace()
    }

    /// Run one request under the request deadline, mapping its error.
    async fn call<T>(
        &self,
        op: &'static str,
        object: &(dyn Display + Sync),
        fut: impl Future<Output = kube::Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ClusterError::from_kube(&self.name, op, object, e)),
            Err(_) => Err(ClusterError::request(
                &self.name,
                op,
                object,
                ErrorKind::Timeout,
                format!("no answer within {:?}", self.request_timeout),
            )),
        }
    }

    /// Resolve apiVersion + kind to the served resource; on a cache miss, refresh discovery of
    /// that group-version (a CRD may have just been installed).
    async fn resolve(&self, op: &'static str, r: &ObjectRef) -> Result<Served> {
        let (group, version) = r.group_version();
        let key = (group.to_string(), version.to_string(), r.kind.clone());
        if let Some(s) = self.read_kinds().get(&key) {
            return Ok(s.clone());
        }
        let gv = GroupVersion::gv(group, version);
        let fetched = self
            .call(op, r, kube::discovery::pinned_group(&self.client, &gv))
            .await;
        let api_group = match fetched {
            Ok(g) => g,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(self.unknown_kind(op, r));
            }
            Err(e) => return Err(e),
        };
        let mut kinds = self.kinds.write().unwrap_or_else(|p| p.into_inner());
        for (resource, caps) in api_group.versioned_resources(version) {
            let served = Served {
                namespaced: caps.scope == Scope::Namespaced,
                resource,
            };
            kinds.insert(
                (
                    group.to_string(),
                    version.to_string(),
                    served.resource.kind.clone(),
                ),
                served,
            );
        }
        kinds
            .get(&key)
            .cloned()
            .ok_or_else(|| self.unknown_kind(op, r))
    }

    fn read_kinds(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(String, String, String), Served>> {
        self.kinds.read().unwrap_or_else(|p| p.into_inner())
    }

    fn unknown_kind(&self, op: &'static str, r: &ObjectRef) -> ClusterError {
        ClusterError::request(
            &self.name,
            op,
            r,
            ErrorKind::UnknownKind,
            format!(
                "kind {} of apiVersion {} is not served by the cluster",
                r.kind, r.api_version
            ),
        )
    }

    fn api(&self, served: &Served, namespace: Option<&str>) -> Api<DynamicObject> {
        if served.namespaced {
            let ns = namespace.unwrap_or(self.default_namespace());
            Api::namespaced_with(self.client.clone(), ns, &served.resource)
        } else {
            Api::all_with(self.client.clone(), &served.resource)
        }
    }

    /// Check identity locally, resolve the kind, and settle the namespace: namespaced objects
    /// without one get the default namespace, cluster-scoped objects lose theirs.
    async fn prepare(&self, op: &'static str, obj: &Value) -> Result<(ObjectRef, Served, Value)> {
        let mut r = ObjectRef::from_object(obj).map_err(|reason| ClusterError::BadObject {
            cluster: self.name.clone(),
            object: object::describe(obj),
            reason,
        })?;
        let served = self.resolve(op, &r).await?;
        let mut body = obj.clone();
        let meta = body
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("invariant: from_object checked metadata.name");
        if served.namespaced {
            let ns = r
                .namespace
                .get_or_insert_with(|| self.default_namespace().to_string());
            meta.insert("namespace".into(), Value::String(ns.clone()));
        } else {
            r.namespace = None;
            meta.remove("namespace");
        }
        object::default_port_protocols(&mut body);
        Ok((r, served, body))
    }

    /// Whether the object's kind is namespaced on this cluster (from discovery, refreshed
    /// when the kind is unknown).
    pub async fn is_namespaced(&self, obj: &Value) -> Result<bool> {
        let r = ObjectRef::from_object(obj).map_err(|reason| ClusterError::BadObject {
            cluster: self.name.clone(),
            object: object::describe(obj),
            reason,
        })?;
        Ok(self.resolve("discover", &r).await?.namespaced)
    }

    /// Server-side apply `obj` under field manager `kudo`, forcing ownership of conflicting
    /// fields. Returns the live object.
    pub async fn apply(&self, obj: &Value) -> Result<Value> {
        self.apply_as(obj, FIELD_MANAGER).await
    }

    /// Server-side apply under another field manager (the GitOps control plane owns the
    /// Instance spec under its own name, the engine its status).
    pub async fn apply_as(&self, obj: &Value, manager: &str) -> Result<Value> {
        let (r, served, mut body) = self.prepare("apply", obj).await?;
        object::default_apply_keys(&mut body);
        let api = self.api(&served, r.namespace.as_deref());
        let params = PatchParams::apply(manager).force();
        let live = self
            .call(
                "apply",
                &r,
                api.patch(&r.name, &params, &Patch::Apply(&body)),
            )
            .await?;
        self.to_json("apply", &r, &live)
    }

    /// Server-side apply dry run (`dryRun=All`) under `manager`: what the object would look
    /// like after an apply, with the server's defaults and admission, without changing it.
    pub async fn apply_dry_run_as(&self, obj: &Value, manager: &str) -> Result<Value> {
        let (r, served, mut body) = self.prepare("apply (dry run)", obj).await?;
        object::default_apply_keys(&mut body);
        let api = self.api(&served, r.namespace.as_deref());
        let params = PatchParams::apply(manager).force().dry_run();
        let after = self
            .call(
                "apply (dry run)",
                &r,
                api.patch(&r.name, &params, &Patch::Apply(&body)),
            )
            .await?;
        self.to_json("apply (dry run)", &r, &after)
    }

    /// Server-side apply of the `status` subresource (e.g. an Instance's plan status).
    pub async fn apply_status(&self, obj: &Value) -> Result<Value> {
        let (r, served, body) = self.prepare("apply status", obj).await?;
        let api = self.api(&served, r.namespace.as_deref());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let live = self
            .call(
                "apply status",
                &r,
                api.patch_status(&r.name, &params, &Patch::Apply(&body)),
            )
            .await?;
        self.to_json("apply status", &r, &live)
    }

    /// Create (POST) `obj`; [`ErrorKind::Conflict`] when it already exists. For tools (kuttl
    /// steps, `kudo install`) that create objects rather than own their fields.
    pub async fn create(&self, obj: &Value) -> Result<Value> {
        let (r, served, body) = self.prepare("create", obj).await?;
        let api = self.api(&served, r.namespace.as_deref());
        let dynamic: DynamicObject =
            serde_json::from_value(body).map_err(|e| ClusterError::BadObject {
                cluster: self.name.clone(),
                object: r.to_string(),
                reason: e.to_string(),
            })?;
        let live = self
            .call("create", &r, api.create(&PostParams::default(), &dynamic))
            .await?;
        self.to_json("create", &r, &live)
    }

    /// JSON merge patch (RFC 7386) of `obj` into the live object it names: fields it gives
    /// are set, `null` removes, everything else is kept (kuttl's "merge into existing").
    pub async fn merge_patch(&self, obj: &Value) -> Result<Value> {
        let (r, served, body) = self.prepare("patch", obj).await?;
        let api = self.api(&served, r.namespace.as_deref());
        let live = self
            .call(
                "patch",
                &r,
                api.patch(&r.name, &PatchParams::default(), &Patch::Merge(&body)),
            )
            .await?;
        self.to_json("patch", &r, &live)
    }

    /// Replace (PUT) `obj`. Fails with [`ErrorKind::Conflict`] when its
    /// `metadata.resourceVersion` is stale: optimistic concurrency for read-modify-write.
    pub async fn replace(&self, obj: &Value) -> Result<Value> {
        let (r, served, body) = self.prepare("replace", obj).await?;
        let api = self.api(&served, r.namespace.as_deref());
        let dynamic: DynamicObject =
            serde_json::from_value(body).map_err(|e| ClusterError::BadObject {
                cluster: self.name.clone(),
                object: r.to_string(),
                reason: e.to_string(),
            })?;
        let live = self
            .call(
                "replace",
                &r,
                api.replace(&r.name, &PostParams::default(), &dynamic),
            )
            .await?;
        self.to_json("replace", &r, &live)
    }

    /// The live object; [`ErrorKind::NotFound`] when it does not exist.
    pub async fn get(&self, r: &ObjectRef) -> Result<Value> {
        let served = self.resolve("get", r).await?;
        let api = self.api(&served, r.namespace.as_deref());
        let live = self.call("get", r, api.get(&r.name)).await?;
        self.to_json("get", r, &live)
    }

    /// The live object, or `None` when it does not exist.
    pub async fn get_opt(&self, r: &ObjectRef) -> Result<Option<Value>> {
        match self.get(r).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Health of the live object; a missing object is progressing (not yet created).
    ///
    /// An established CRD only counts as healthy once discovery serves its kind: the API
    /// server publishes discovery a moment after `Established`, and what follows a CRD in a
    /// plan is usually a custom resource of that kind.
    pub async fn health(&self, r: &ObjectRef) -> Result<Health> {
        let Some(live) = self.get_opt(r).await? else {
            return Ok(Health::Progressing(format!("{r} does not exist")));
        };
        let h = health::evaluate(&live);
        let (group, _) = r.group_version();
        let is_crd = group == "apiextensions.k8s.io" && r.kind == "CustomResourceDefinition";
        if h.is_healthy()
            && is_crd
            && let Some(why) = self.crd_not_discoverable(&live).await?
        {
            return Ok(Health::Progressing(why));
        }
        Ok(h)
    }

    /// Why an established CRD's kind is not (yet) resolvable, for each served version.
    async fn crd_not_discoverable(&self, crd: &Value) -> Result<Option<String>> {
        let s = |p: &str| crd.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (group, kind) = (s("/spec/group"), s("/spec/names/kind"));
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for v in versions {
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let version = v.get("name").and_then(Value::as_str).unwrap_or("");
            let r = ObjectRef::new(format!("{group}/{version}"), kind, None, "*");
            match self.resolve("discover", &r).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::UnknownKind => {
                    return Ok(Some(format!(
                        "established, but {kind} of {group}/{version} not yet in discovery"
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Poll until the object is healthy or failed; [`ErrorKind::Timeout`] (with the last
    /// reason) when `timeout` passes first.
    pub async fn wait_healthy(&self, r: &ObjectRef, timeout: Duration) -> Result<Health> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            let h = self.health(r).await?;
            let why = match &h {
                Health::Healthy | Health::Failed(_) => return Ok(h),
                Health::Progressing(why) => why.clone(),
            };
            if tokio::time::Instant::now() + delay > deadline {
                return Err(ClusterError::request(
                    &self.name,
                    "wait healthy",
                    r,
                    ErrorKind::Timeout,
                    format!("not healthy after {timeout:?}: {why}"),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Delete with foreground propagation (dependents first). Returns the uid of the object
    /// that is being deleted, or `None` when it was already gone.
    pub async fn delete(&self, r: &ObjectRef) -> Result<Option<String>> {
        let served = self.resolve("delete", r).await?;
        let api = self.api(&served, r.namespace.as_deref());
        match self
            .call(
                "delete",
                r,
                api.delete(&r.name, &DeleteParams::foreground()),
            )
            .await
        {
            Ok(either) => Ok(either.left().and_then(|o| o.metadata.uid)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Cluster::delete`] of exactly the object with `uid` (when given): an object deleted
    /// and re-created meanwhile under the same name is left alone (`Ok(None)`).
    pub async fn delete_uid(&self, r: &ObjectRef, uid: Option<&str>) -> Result<Option<String>> {
        let Some(uid) = uid else {
            return self.delete(r).await;
        };
        let served = self.resolve("delete", r).await?;
        let api = self.api(&served, r.namespace.as_deref());
        let mut params = DeleteParams::foreground();
        params.preconditions = Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
        match self.call("delete", r, api.delete(&r.name, &params)).await {
            Ok(either) => Ok(either.left().and_then(|o| o.metadata.uid)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Conflict) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete (foreground) and wait until the object is gone (or replaced by a new one with
    /// another uid); [`ErrorKind::Timeout`] when `timeout` passes first.
    pub async fn delete_and_wait(&self, r: &ObjectRef, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let Some(uid) = self.delete(r).await? else {
            return Ok(());
        };
        let mut delay = Duration::from_millis(50);
        loop {
            match self.get_opt(r).await? {
                None => return Ok(()),
                Some(live)
                    if live.pointer("/metadata/uid").and_then(Value::as_str) != Some(&uid) =>
                {
                    return Ok(());
                }
                Some(live) => {
                    if tokio::time::Instant::now() + delay > deadline {
                        let finalizers = live
                            .pointer("/metadata/finalizers")
                            .map(Value::to_string)
                            .unwrap_or_else(|| "[]".into());
                        return Err(ClusterError::request(
                            &self.name,
                            "delete",
                            r,
                            ErrorKind::Timeout,
                            format!("still present after {timeout:?} (finalizers {finalizers})"),
                        ));
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Objects of the given kinds (apiVersion, kind) matching a label selector, in one
    /// namespace or (None) in all namespaces. Kinds the cluster does not serve are an error.
    pub async fn list(
        &self,
        kinds: &[(&str, &str)],
        namespace: Option<&str>,
        label_selector: &str,
    ) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        for (api_version, kind) in kinds {
            let r = ObjectRef::new(*api_version, *kind, namespace, "*");
            let served = self.resolve("list", &r).await?;
            let api = match (served.namespaced, namespace) {
                (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &served.resource),
                _ => Api::all_with(self.client.clone(), &served.resource),
            };
            let params = ListParams::default().labels(label_selector);
            let what = format!("{api_version} {kind} (selector {label_selector:?})");
            let list = self.call("list", &what, api.list(&params)).await?;
            for item in list.items {
                let mut v = self.to_json("list", &what, &item)?;
                // List items come without apiVersion/kind; put them back so each is complete.
                if let Some(m) = v.as_object_mut() {
                    m.insert(
                        "apiVersion".into(),
                        Value::String((*api_version).to_string()),
                    );
                    m.insert("kind".into(), Value::String((*kind).to_string()));
                }
                out.push(v);
            }
        }
        Ok(out)
    }

    fn to_json(&self, op: &'static str, r: &dyn Display, obj: &DynamicObject) -> Result<Value> {
        serde_json::to_value(obj).map_err(|e| {
            ClusterError::request(
                &self.name,
                op,
                r,
                ErrorKind::Other,
                format!("undecodable: {e}"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    #[test]
    fn in_cluster_outside_a_cluster_names_the_cluster() {
        // Test processes do not run in a pod: no service-account environment.
        if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
            return;
        }
        let err = Cluster::in_cluster("mgmt").expect_err("not in a pod");
        let msg = err.to_string();
        assert!(
            msg.contains("cluster mgmt") && msg.contains("in-cluster"),
            "{msg}"
        );
    }

    struct Fixed;

    impl ObjectCache for Fixed {
        fn get(&self, namespace: &str, name: &str) -> Option<Value> {
            (namespace == "a" && name == "x")
                .then(|| serde_json::json!({"metadata": {"name": "x"}}))
        }
        fn list(&self, namespace: Option<&str>, labels: &[(&str, &str)]) -> Option<Vec<Value>> {
            Some(vec![serde_json::json!([namespace, labels.len()])])
        }
    }

    /// Only equality selectors are answered from a cache; anything else goes to the API.
    #[tokio::test]
    async fn cached_reads_answer_only_what_a_watch_can() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("uri"));
        let c = Cluster::from_config("cache", config).expect("client");
        let r = ObjectRef::new("v1", "ConfigMap", Some("a"), "x");
        assert!(c.cached(&r).is_none() && !c.watches(&r));
        c.serve_from_cache("v1", "ConfigMap", std::sync::Arc::new(Fixed));
        assert!(c.cached(&r).is_some() && c.watches(&r));
        let cluster_scoped = ObjectRef::new("v1", "ConfigMap", None, "x");
        assert!(c.cached(&cluster_scoped).is_none() && !c.watches(&cluster_scoped));
        let list = |sel: &str| c.cached_list("v1", "ConfigMap", "a", sel);
        assert_eq!(
            list("heritage=kudo,kudo.dev/instance=i"),
            Some(vec![serde_json::json!(["a", 2])])
        );
        assert_eq!(
            c.cached_list_all("v1", "ConfigMap", "heritage=kudo"),
            Some(vec![serde_json::json!([null, 1])])
        );
        for unsupported in ["a!=b", "a==b", "a in (b)", "!a"] {
            assert_eq!(list(unsupported), None, "{unsupported}");
        }
        assert_eq!(c.cached_list("v1", "Secret", "a", "a=b"), None);
    }

    /// A reader may ask for changes before the watch runs; every event reaches it.
    #[tokio::test]
    async fn change_receivers_see_every_later_event() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("uri"));
        let c = Cluster::from_config("changes", config).expect("client");
        let mut early = c.changes("kudo.dev/v1beta1", "Instance");
        assert!(!early.has_changed().expect("open"));
        c.note_change("kudo.dev/v1beta1", "Instance");
        assert!(early.has_changed().expect("open"));
        early.borrow_and_update();
        c.note_change("v1", "ConfigMap");
        assert!(!early.has_changed().expect("open"), "another kind");
        let late = c.changes("kudo.dev/v1beta1", "Instance");
        c.note_change("kudo.dev/v1beta1", "Instance");
        assert!(early.has_changed().expect("open") && late.has_changed().expect("open"));
    }

    /// Cluster calls must be spawnable on a multi-threaded runtime.
    #[tokio::test]
    async fn operations_are_send() {
        let config = kube::Config::new("https://127.0.0.1:1".parse().expect("uri"));
        let c = Cluster::from_config("send", config).expect("client");
        let obj = serde_json::json!({});
        let r = ObjectRef::new("v1", "ConfigMap", Some("d"), "x");
        assert_send(&c.apply(&obj));
        assert_send(&c.apply_status(&obj));
        assert_send(&c.replace(&obj));
        assert_send(&c.get(&r));
        assert_send(&c.health(&r));
        assert_send(&c.delete_and_wait(&r, Duration::from_secs(1)));
        assert_send(&c.list(&[("v1", "ConfigMap")], None, ""));
        assert_send(&c.is_namespaced(&obj));
    }
}
