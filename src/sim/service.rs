//! The HTTP face of a simulated cluster as a tower `Service`: request routing, discovery,
//! watch streams and fault injection. `kube::Client::new(service, ns)` drives it without
//! sockets; the loopback server in `server.rs` hands it hyper's requests.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::error::SimError;
use super::resources::ResourceDef;
use super::selector::Selector;
use super::store::{
    DeleteOptions, Deleted, Event, EventType, PatchKind, Propagation, Store, Target,
};
use super::table;

/// Response body of the simulated API (streaming for watches).
pub type SimBody = UnsyncBoxBody<Bytes, Infallible>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Faults injected into one simulated cluster, switchable while it runs.
#[derive(Debug, Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    /// Errors per million requests.
    error_ppm: AtomicU64,
    partitioned: AtomicBool,
    /// Requests refused because of the partition, so tests can wait for a client to notice.
    refused: AtomicU64,
    watch_delay_ms: AtomicU64,
    rng: AtomicU64,
}

impl Faults {
    /// Added latency before every request is answered.
    pub fn set_latency(&self, d: Duration) {
        self.latency_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Fraction (0.0..=1.0) of requests answered with 503 ServiceUnavailable.
    pub fn set_error_rate(&self, rate: f64) {
        let ppm = (rate.clamp(0.0, 1.0) * 1_000_000.0) as u64;
        self.error_ppm.store(ppm, Ordering::Relaxed);
    }

    /// While partitioned, every request fails with a connection error (no HTTP answer).
    pub fn set_partitioned(&self, on: bool) {
        self.partitioned.store(on, Ordering::Relaxed);
    }

    pub fn partitioned(&self) -> bool {
        self.partitioned.load(Ordering::Relaxed)
    }

    /// How many requests the partition has refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Delay added before every watch event is delivered.
    pub fn set_watch_delay(&self, d: Duration) {
        self.watch_delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::Relaxed))
    }

    fn watch_delay(&self) -> Duration {
        Duration::from_millis(self.watch_delay_ms.load(Ordering::Relaxed))
    }

    fn should_fail(&self) -> bool {
        let ppm = self.error_ppm.load(Ordering::Relaxed);
        if ppm == 0 {
            return false;
        }
        // splitmix64 over a shared counter: cheap, lock-free, good enough for fault rates.
        let mut z = self
            .rng
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        z % 1_000_000 < ppm
    }
}

/// Tunables of a simulated API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Events kept for watch resume; older resourceVersions get 410 Gone.
    pub history_events: usize,
    /// Interval of BOOKMARK events on watches that ask for them.
    pub bookmark_interval: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            history_events: 128,
            bookmark_interval: Duration::from_secs(5),
        }
    }
}

/// State shared by every handle to one simulated cluster.
#[derive(Debug)]
pub struct Shared {
    pub name: String,
    store: Mutex<Store>,
    events: broadcast::Sender<Arc<Event>>,
    pub faults: Faults,
    pub config: ApiConfig,
}

impl Shared {
    pub fn new(name: &str, config: ApiConfig) -> Shared {
        let (events, _) = broadcast::channel(256);
        Shared {
            name: name.to_string(),
            store: Mutex::new(Store::new(config.history_events)),
            events,
            faults: Faults::default(),
            config,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves the store as it was before the write began
        // (writes build new values and swap them in), so a poisoned lock is still usable.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Open watch streams (and other subscribers to the store's events).
    #[cfg(test)]
    pub(crate) fn watchers(&self) -> usize {
        self.events.receiver_count()
    }

    /// Runs `f` on the store and publishes the events it produced (under the lock, so
    /// watchers never miss or reorder events).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.lock();
        let r = f(&mut store);
        for ev in store.drain_events() {
            let _ = self.events.send(Arc::new(ev));
        }
        r
    }
}

/// The tower service of one simulated cluster.
#[derive(Debug, Clone)]
pub struct SimService {
    shared: Arc<Shared>,
    /// Where requests are answered when not on the caller's runtime (see `sim::runtime`).
    runtime: Option<tokio::runtime::Handle>,
}

impl SimService {
    pub fn new(shared: Arc<Shared>) -> SimService {
        SimService {
            shared,
            runtime: None,
        }
    }

    /// A service answering on `runtime`'s threads instead of the caller's.
    pub fn on_runtime(shared: Arc<Shared>, runtime: tokio::runtime::Handle) -> SimService {
        SimService {
            shared,
            runtime: Some(runtime),
        }
    }
}

impl<B> tower::Service<Request<B>> for SimService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<SimBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let answer = answer(self.shared.clone(), req);
        match self.runtime.clone() {
            None => Box::pin(answer),
            Some(rt) => {
                let task = rt.spawn(answer);
                Box::pin(async move {
                    match task.await {
                        Ok(Ok(response)) => Ok(super::runtime::pump_body(&rt, response)),
                        Ok(Err(e)) => Err(e),
                        Err(e) => {
                            let e: BoxError = Box::new(std::io::Error::other(format!(
                                "simulated cluster stopped answering: {e}"
                            )));
                            Err(e)
                        }
                    }
                })
            }
        }
    }
}

/// One request: fault injection, then the store.
async fn answer<B>(shared: Arc<Shared>, req: Request<B>) -> Result<Response<SimBody>, BoxError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if shared.faults.partitioned() {
        shared.faults.refused.fetch_add(1, Ordering::Relaxed);
        let e: BoxError = Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!(
                "connect error: connection refused (simulated partition of cluster {})",
                shared.name
            ),
        ));
        return Err(e);
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let e: BoxError = e.into();
            return Err(e);
        }
    };
    if shared.faults.should_fail() {
        return Ok(error_response(&SimError::Unavailable(format!(
            "injected fault on cluster {}",
            shared.name
        ))));
    }
    Ok(handle(&shared, &parts, body))
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<SimBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("application/json")),
    );
    resp
}

fn json_response(status: StatusCode, v: &Value) -> Response<SimBody> {
    full(status, "application/json", v.to_string())
}

fn error_response(e: &SimError) -> Response<SimBody> {
    json_response(
        StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.status(),
    )
}

/// A parsed API path.
#[derive(Debug, PartialEq)]
enum Route {
    Version,
    Health,
    CoreVersions,
    Groups,
    Group(String),
    Resources(String, String),
    OpenApiRoot,
    OpenApiGroupVersion(String, String),
    Object {
        group: String,
        version: String,
        namespace: String,
        resource: String,
        name: Option<String>,
        subresource: Option<String>,
    },
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Some(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => return Some(Route::Health),
        ["openapi", "v3"] => return Some(Route::OpenApiRoot),
        ["openapi", "v3", "api", v] => {
            return Some(Route::OpenApiGroupVersion(String::new(), v.to_string()));
        }
        ["openapi", "v3", "apis", g, v] => {
            return Some(Route::OpenApiGroupVersion(g.to_string(), v.to_string()));
        }
        ["api"] => return Some(Route::CoreVersions),
        ["apis"] => return Some(Route::Groups),
        ["apis", g] => return Some(Route::Group(g.to_string())),
        ["api", v] => return Some(Route::Resources(String::new(), v.to_string())),
        ["apis", g, v] => return Some(Route::Resources(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let obj =
        |namespace: &str, resource: &str, name: Option<&&str>, sub: Option<&&str>| Route::Object {
            group: group.clone(),
            version: version.clone(),
            namespace: namespace.to_string(),
            resource: resource.to_string(),
            name: name.map(|s| s.to_string()),
            subresource: sub.map(|s| s.to_string()),
        };
    Some(match rest {
        ["namespaces", ns, res, tail @ ..]
            if group.is_empty() && !matches!(*res, "status" | "finalize") || !group.is_empty() =>
        {
            obj(ns, res, tail.first(), tail.get(1))
        }
        [res, tail @ ..] => obj("", res, tail.first(), tail.get(1)),
        [] => return None,
    })
}

fn query(uri: &http::Uri) -> HashMap<String, String> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Field manager from the query, else the user agent's program name (as the real server does).
fn field_manager(q: &HashMap<String, String>, headers: &http::HeaderMap) -> Option<String> {
    if let Some(m) = q.get("fieldManager") {
        return Some(m.clone());
    }
    headers
        .get(http::header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
}

fn handle(shared: &Arc<Shared>, parts: &http::request::Parts, body: Bytes) -> Response<SimBody> {
    tracing::debug!(
        cluster = %shared.name,
        method = %parts.method,
        uri = %parts.uri,
        content_type = ?parts.headers.get(http::header::CONTENT_TYPE),
        accept = ?parts.headers.get(http::header::ACCEPT),
        "simulated API request"
    );
    match handle_inner(shared, parts, body) {
        Ok(r) => r,
        Err(e) => error_response(&e),
    }
}

fn discovery_resources(defs: &[Arc<ResourceDef>], group: &str, version: &str) -> Value {
    let resources: Vec<Value> = defs
        .iter()
        .filter(|d| d.group == group && d.serves(version))
        .flat_map(|d| d.discovery_entries())
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_string() } else { format!("{group}/{version}") },
        "resources": resources,
    })
}

fn api_group(defs: &[Arc<ResourceDef>], group: &str) -> Option<Value> {
    let mut versions: Vec<String> = Vec::new();
    let mut preferred = None;
    for d in defs.iter().filter(|d| d.group == group) {
        preferred.get_or_insert_with(|| d.versions[0].clone());
        for v in &d.versions {
            if !versions.contains(v) {
                versions.push(v.clone());
            }
        }
    }
    let preferred = preferred?;
    let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(&preferred),
    }))
}

fn handle_inner(
    shared: &Arc<Shared>,
    parts: &http::request::Parts,
    body: Bytes,
) -> Result<Response<SimBody>, SimError> {
    let not_found = || SimError::NoResource {
        path: parts.uri.path().to_string(),
    };
    let Some(r) = route(parts.uri.path()) else {
        return Err(not_found());
    };
    let q = query(&parts.uri);
    match r {
        Route::Version => Ok(json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kudo-sim",
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
                    "goVersion": "go1.24", "compiler": "gc", "platform": "linux/amd64"}),
        )),
        Route::Health => Ok(full(StatusCode::OK, "text/plain", "ok")),
        Route::OpenApiRoot => {
            let defs: Vec<Arc<ResourceDef>> = shared.with_store(|s| s.resources().to_vec());
            let rv = shared.with_store(|s| s.resource_version());
            let mut paths = serde_json::Map::new();
            for d in &defs {
                for v in &d.versions {
                    let key = if d.group.is_empty() {
                        format!("api/{v}")
                    } else {
                        format!("apis/{}/{v}", d.group)
                    };
                    let url =
                        json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={rv:X}")});
                    paths.entry(key).or_insert(url);
                }
            }
            Ok(json_response(StatusCode::OK, &json!({"paths": paths})))
        }
        Route::OpenApiGroupVersion(g, v) => {
            let defs: Vec<Arc<ResourceDef>> = shared.with_store(|s| s.resources().to_vec());
            let doc = openapi_v3(&defs, &g, &v).ok_or_else(not_found)?;
            Ok(json_response(StatusCode::OK, &doc))
        }
        Route::CoreVersions => Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        )),
        Route::Groups => {
            let defs: Vec<Arc<ResourceDef>> = shared.with_store(|s| s.resources().to_vec());
            let mut names: Vec<&str> = Vec::new();
            for d in &defs {
                if !d.group.is_empty() && !names.contains(&d.group.as_str()) {
                    names.push(&d.group);
                }
            }
            let groups: Vec<Value> = names.iter().filter_map(|g| api_group(&defs, g)).collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ))
        }
        Route::Group(g) => {
            let defs: Vec<Arc<ResourceDef>> = shared.with_store(|s| s.resources().to_vec());
            api_group(&defs, &g)
                .map(|v| json_response(StatusCode::OK, &v))
                .ok_or_else(not_found)
        }
        Route::Resources(g, v) => {
            let defs: Vec<Arc<ResourceDef>> = shared.with_store(|s| s.resources().to_vec());
            if !defs.iter().any(|d| d.group == g && d.serves(&v)) {
                return Err(not_found());
            }
            Ok(json_response(
                StatusCode::OK,
                &discovery_resources(&defs, &g, &v),
            ))
        }
        Route::Object {
            group,
            version,
            namespace,
            resource,
            name,
            subresource,
        } => {
            let status = match subresource.as_deref() {
                None => false,
                Some("status") => true,
                Some(other) => {
                    return Err(SimError::NotFound {
                        group: group.clone(),
                        resource: format!("{resource}/{other}"),
                        name: name.unwrap_or_default(),
                    });
                }
            };
            let t = shared.with_store(|s| s.target(&group, &version, &resource, &namespace))?;
            if status && !t.def.status {
                return Err(SimError::NotFound {
                    group,
                    resource: format!("{resource}/status"),
                    name: name.unwrap_or_default(),
                });
            }
            object_request(shared, parts, &q, t, name, status, body)
        }
    }
}

/// A minimal OpenAPI v3 document for one group/version: one path per resource with the
/// PATCH parameters kubectl probes for (`fieldValidation`), no schemas.
fn openapi_v3(defs: &[Arc<ResourceDef>], group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for d in defs
        .iter()
        .filter(|d| d.group == group && d.serves(version))
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{prefix}/{}/{{name}}", d.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": d.kind});
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
            .iter()
            .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string"}}))
            .collect();
        paths.insert(
            path,
            json!({
                "get": {"operationId": format!("read{}", d.kind), "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk},
                "patch": {"operationId": format!("patch{}", d.kind), "x-kubernetes-action": "patch",
                          "x-kubernetes-group-version-kind": gvk, "parameters": params},
            }),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kudo simulated cluster)", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

fn accept(parts: &http::request::Parts) -> Option<&str> {
    parts
        .headers
        .get(http::header::ACCEPT)
        .and_then(|h| h.to_str().ok())
}

fn content_type(parts: &http::request::Parts) -> &str {
    parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or(s).trim())
        .unwrap_or("application/json")
}

fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

/// Runs a write on the store, or on a throwaway copy for `dryRun=All`.
fn write<R>(shared: &Shared, dry: bool, f: impl FnOnce(&mut Store) -> R) -> R {
    if dry {
        let mut copy = shared.lock().clone();
        f(&mut copy)
    } else {
        shared.with_store(f)
    }
}

fn list_value(t: &Target, items: &[Arc<Value>], rv: u64, cont: Option<String>) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": format!("{}List", t.def.kind),
        "apiVersion": t.def.api_version(&t.version),
        "metadata": meta,
        "items": items.iter().map(|i| (**i).clone()).collect::<Vec<_>>(),
    })
}

fn object_request(
    shared: &Arc<Shared>,
    parts: &http::request::Parts,
    q: &HashMap<String, String>,
    t: Target,
    name: Option<String>,
    status: bool,
    body: Bytes,
) -> Result<Response<SimBody>, SimError> {
    let labels = Selector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = Selector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))?;
    let manager = field_manager(q, &parts.headers);
    let dry = dry_run(q);
    if content_type(parts) == "application/vnd.kubernetes.protobuf" && !body.is_empty() {
        // kubectl's imperative generators (`kubectl create namespace x`) send protobuf.
        return Err(SimError::UnsupportedMediaType(
            "application/json, application/yaml (this simulated API server speaks JSON only: use `kubectl create -f` or `kubectl apply -f` instead of kubectl's generators)".to_string(),
        ));
    }
    let ok = |v: &Value| Ok(json_response(StatusCode::OK, v));
    match (&parts.method, name) {
        (&Method::GET, None) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(shared, t, q, labels, fields);
            }
            let limit = q.get("limit").and_then(|l| l.parse().ok());
            let page = shared.with_store(|s| {
                s.list(
                    &t,
                    &labels,
                    &fields,
                    limit,
                    q.get("continue").map(String::as_str),
                )
            })?;
            if table::wants_table(accept(parts)) {
                let items: Vec<&Value> = page.items.iter().map(|i| i.as_ref()).collect();
                let mut tbl = table::table(
                    &t.def,
                    &t.version,
                    &items,
                    Some(page.resource_version.to_string()),
                );
                if let Some(c) = page.continue_token {
                    tbl["metadata"]["continue"] = json!(c);
                }
                return ok(&tbl);
            }
            ok(&list_value(
                &t,
                &page.items,
                page.resource_version,
                page.continue_token,
            ))
        }
        (&Method::GET, Some(n)) => {
            let obj = shared.with_store(|s| s.get(&t, &n))?;
            if table::wants_table(accept(parts)) {
                return ok(&table::table(&t.def, &t.version, &[obj.as_ref()], None));
            }
            ok(&obj)
        }
        (&Method::POST, None) => {
            let mut obj: Value = serde_json::from_slice(&body)
                .map_err(|e| SimError::BadRequest(format!("invalid JSON body: {e}")))?;
            // A simulated cluster authorizes everything: reviews are answered, not stored.
            if t.def.kind == "SelfSubjectAccessReview" {
                obj["status"] =
                    json!({"allowed": true, "reason": "simulated cluster: no authorization"});
                return Ok(json_response(StatusCode::CREATED, &obj));
            }
            let manager = manager.unwrap_or_else(|| "unknown".to_string());
            let created = write(shared, dry, |s| s.create(&t, obj, &manager))?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (&Method::PUT, Some(n)) => {
            let obj: Value = serde_json::from_slice(&body)
                .map_err(|e| SimError::BadRequest(format!("invalid JSON body: {e}")))?;
            let manager = manager.unwrap_or_else(|| "unknown".to_string());
            ok(&*write(shared, dry, |s| {
                s.update(&t, &n, obj, status, &manager)
            })?)
        }
        (&Method::PATCH, Some(n)) => {
            let kind = match content_type(parts) {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    PatchKind::Apply {
                        force: q.get("force").is_some_and(|f| f == "true"),
                    }
                }
                other => {
                    return Err(SimError::UnsupportedMediaType(format!(
                        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other})"
                    )));
                }
            };
            let existed = shared.with_store(|s| s.get(&t, &n).is_ok());
            let out = write(shared, dry, |s| {
                s.patch(&t, &n, kind, &body, status, manager.as_deref())
            })?;
            let code = if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(json_response(code, &out))
        }
        (&Method::DELETE, Some(n)) => {
            let opts = delete_options(q, &body)?;
            match write(shared, dry, |s| s.delete(&t, &n, &opts))? {
                Deleted::Pending(obj) => Ok(json_response(StatusCode::OK, &obj)),
                Deleted::Gone(obj) => Ok(json_response(
                    StatusCode::OK,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                            "details": {"name": n, "group": t.def.group, "kind": t.def.plural,
                                        "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(Value::Null)}}),
                )),
            }
        }
        (&Method::DELETE, None) => {
            let opts = delete_options(q, &body)?;
            let items = write(shared, dry, |s| {
                s.delete_collection(&t, &labels, &fields, &opts)
            })?;
            let rv = shared.with_store(|s| s.resource_version());
            ok(&list_value(&t, &items, rv, None))
        }
        _ => Err(SimError::MethodNotAllowed),
    }
}

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions, SimError> {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| SimError::BadRequest(format!("invalid DeleteOptions: {e}")))?
    };
    let policy = q
        .get("propagationPolicy")
        .map(String::as_str)
        .or_else(|| b.get("propagationPolicy").and_then(Value::as_str))
        .or_else(
            || match b.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some("Orphan"),
                _ => None,
            },
        );
    let propagation = match policy {
        None => None,
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(SimError::BadRequest(format!(
                "propagationPolicy {other:?} is not one of Orphan, Foreground, Background"
            )));
        }
    };
    Ok(DeleteOptions {
        propagation,
        precondition_uid: b
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        precondition_rv: b
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": ty, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

struct WatchState {
    shared: Arc<Shared>,
    target: Target,
    labels: Selector,
    fields: Selector,
    rx: broadcast::Receiver<Arc<Event>>,
    queued: std::collections::VecDeque<Bytes>,
    bookmarks: bool,
    next_bookmark: tokio::time::Instant,
    deadline: tokio::time::Instant,
    last_rv: u64,
    done: bool,
}

impl WatchState {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_labels(obj) && self.fields.matches_fields(obj)
    }

    /// The line for an event, translating selector transitions as the real cacher does.
    fn line(&self, ev: &Event) -> Option<Bytes> {
        if ev.resource != self.target.def.key()
            || (!self.target.namespace.is_empty() && ev.namespace != self.target.namespace)
        {
            return None;
        }
        let mut obj: Value = serde_json::from_str(&ev.object).ok()?;
        let now_matches = self.matches(&obj);
        let selective = !self.labels.is_empty() || !self.fields.is_empty();
        let was = match &ev.prev {
            None => false,
            Some(_) if !selective => true,
            Some(p) => serde_json::from_str::<Value>(p).is_ok_and(|p| self.matches(&p)),
        };
        let ty = match (ev.kind, was, now_matches) {
            (EventType::Deleted, _, true) => "DELETED",
            (EventType::Added, _, true) => "ADDED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, false, true) => "ADDED",
            (EventType::Modified, true, false) => "DELETED",
            _ => return None,
        };
        obj["apiVersion"] = json!(self.target.def.api_version(&self.target.version));
        Some(event_line(ty, &obj))
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": self.last_rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line(
            "BOOKMARK",
            &json!({"kind": self.target.def.kind, "apiVersion": self.target.def.api_version(&self.target.version), "metadata": meta}),
        )
    }
}

fn watch(
    shared: &Arc<Shared>,
    t: Target,
    q: &HashMap<String, String>,
    labels: Selector,
    fields: Selector,
) -> Result<Response<SimBody>, SimError> {
    let rv_param = q.get("resourceVersion").cloned().unwrap_or_default();
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let mut queued = std::collections::VecDeque::new();
    let probe = WatchState {
        shared: shared.clone(),
        target: t.clone(),
        labels: labels.clone(),
        fields: fields.clone(),
        rx: shared.events.subscribe(),
        queued: Default::default(),
        bookmarks,
        next_bookmark: tokio::time::Instant::now(),
        deadline: tokio::time::Instant::now(),
        last_rv: 0,
        done: false,
    };
    // Subscribe and snapshot under the store lock: nothing can slip between the two.
    let (rx, last_rv, initial_end) = {
        let store = shared.lock();
        let rx = shared.events.subscribe();
        let current = store.resource_version();
        let initial = rv_param.is_empty() || rv_param == "0" || send_initial;
        if initial {
            let page = store.list(&t, &labels, &fields, None, None)?;
            for obj in &page.items {
                queued.push_back(event_line("ADDED", obj));
            }
        } else {
            let rv: u64 = rv_param.parse().map_err(|_| {
                SimError::BadRequest(format!("invalid resourceVersion {rv_param:?}"))
            })?;
            match store.events_since(&t, rv) {
                Ok(evs) => {
                    for ev in &evs {
                        if let Some(line) = probe.line(ev) {
                            queued.push_back(line);
                        }
                    }
                }
                Err(e) => queued.push_back(event_line("ERROR", &e.status())),
            }
        }
        (rx, current, send_initial && bookmarks)
    };
    let now = tokio::time::Instant::now();
    let mut state = WatchState {
        rx,
        queued,
        next_bookmark: now + shared.config.bookmark_interval,
        deadline: now + timeout,
        last_rv,
        ..probe
    };
    if initial_end {
        let b = state.bookmark(true);
        state.queued.push_back(b);
    }
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.queued.pop_front() {
                let delay = st.shared.faults.watch_delay();
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                return Some((Ok::<_, Infallible>(http_body::Frame::data(b)), st));
            }
            if st.done {
                return None;
            }
            let bookmark_at = if st.bookmarks {
                st.next_bookmark
            } else {
                st.deadline
            };
            tokio::select! {
                ev = st.rx.recv() => match ev {
                    Ok(ev) => {
                        st.last_rv = ev.rv;
                        if let Some(line) = st.line(&ev) {
                            st.queued.push_back(line);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let err = SimError::Gone { requested: st.last_rv, oldest: st.last_rv + 1 };
                        st.queued.push_back(event_line("ERROR", &err.status()));
                        st.done = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => st.done = true,
                },
                _ = tokio::time::sleep_until(bookmark_at) => {
                    if tokio::time::Instant::now() >= st.deadline {
                        st.done = true;
                    } else {
                        let b = st.bookmark(false);
                        st.queued.push_back(b);
                        st.next_bookmark = tokio::time::Instant::now() + st.shared.config.bookmark_interval;
                    }
                }
                _ = tokio::time::sleep_until(st.deadline) => st.done = true,
            }
        }
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_namespaced_cluster_and_status_paths() {
        assert_eq!(
            route("/api/v1/namespaces/default/configmaps/x"),
            Some(Route::Object {
                group: "".into(),
                version: "v1".into(),
                namespace: "default".into(),
                resource: "configmaps".into(),
                name: Some("x".into()),
                subresource: None
            })
        );
        assert_eq!(
            route("/api/v1/namespaces/foo/status"),
            Some(Route::Object {
                group: "".into(),
                version: "v1".into(),
                namespace: "".into(),
                resource: "namespaces".into(),
                name: Some("foo".into()),
                subresource: Some("status".into())
            })
        );
        assert_eq!(
            route("/apis/apps/v1/namespaces/d/deployments/w/status"),
            Some(Route::Object {
                group: "apps".into(),
                version: "v1".into(),
                namespace: "d".into(),
                resource: "deployments".into(),
                name: Some("w".into()),
                subresource: Some("status".into())
            })
        );
        assert_eq!(
            route("/apis/apps/v1"),
            Some(Route::Resources("apps".into(), "v1".into()))
        );
    }
}
