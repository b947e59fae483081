//! The console's HTTP side: its pages, sign-in, the event stream, plan actions on one
//! cluster, and fault injection into embedded simulated clusters.
//!
//! Guarantees:
//! - with API tokens configured, no page and no event shows data before a sign-in (pages
//!   redirect to `/login`);
//! - the event stream sends a change within [`TICK`] of the daemon's view changing, and
//!   only what the page shows; a daemon with no page open computes nothing for it;
//! - a stream ends when the daemon stops (graceful shutdown never waits on a browser);
//! - every action is an `/api/v1` write, so the API's write rule and audit log apply.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tracing::{info, warn};

use super::http::{Caller, Refused, Who, authenticate, cross_site};
use super::state::{Shared, lock};
use super::status::{Snapshot, applied_revision};
use crate::cluster::ObjectRef;
use crate::gitops::console::model::{
    Cell, ClusterRow, Filters, Fleet, InstanceCol, RepoRow, instance_changed, matrix_update,
};
use crate::gitops::console::pages::{self, Chrome};
use crate::gitops::console::session;
use crate::gitops::rollout::{self, Progress, State as Rollout};

/// How often the publisher looks at the daemon's view while a page is open.
pub const TICK: Duration = Duration::from_millis(200);
/// At most this many event streams are open at once (each is a connection and a diff per
/// change); more are answered 503 and the page retries.
pub const MAX_STREAMS: usize = 256;

/// Counts open event streams against [`MAX_STREAMS`].
#[derive(Debug, Default)]
pub struct StreamBudget {
    open: std::sync::atomic::AtomicUsize,
}

/// One open stream; dropping it frees its place.
#[derive(Debug)]
pub struct StreamSlot(Arc<StreamBudget>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl StreamBudget {
    /// A place for one more stream, or None when `max` are open.
    pub fn enter(self: &Arc<Self>, max: usize) -> Option<StreamSlot> {
        use std::sync::atomic::Ordering::SeqCst;
        self.open
            .fetch_update(SeqCst, SeqCst, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| StreamSlot(self.clone()))
    }

    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub(super) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/", get(matrix_page))
        .route("/instances/{namespace}/{name}", get(instance_page))
        .route("/revisions", get(revisions_page))
        .route("/clusters", get(clusters_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/console/console.js", get(script))
        .route("/console/console.css", get(style))
        .route("/api/v1/session", get(session_info))
        .route("/api/v1/events", get(events))
        .route(
            "/api/v1/instances/{namespace}/{name}/clusters/{cluster}/plans/{action}",
            post(plan_action),
        )
        .route("/api/v1/clusters/{name}/faults", post(sim_faults))
        .fallback(not_found)
}

/// A rollout's state in a few words.
fn rollout_text(state: &Rollout) -> String {
    match state {
        Rollout::Waiting { stage, gate, .. } => format!("Waiting: {stage} {gate}"),
        other => match pages::rollout_state(other) {
            (name, Some(why)) => format!("{}: {why}", title(name)),
            (name, None) => title(name),
        },
    }
}

/// `IN_PROGRESS` → `In progress`.
fn title(word: &str) -> String {
    let lower = word.replace('_', " ").to_lowercase();
    let mut c = lower.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The fleet matrix of one snapshot (pure).
pub(super) fn fleet_of(s: &Snapshot) -> Fleet {
    let mut fleet = Fleet {
        clusters: s
            .clusters
            .iter()
            .map(|c| ClusterRow {
                name: c.name.clone(),
                labels: c.labels.clone(),
                up: c.up,
                reason: c.reason.clone(),
            })
            .collect(),
        repositories: s
            .repositories
            .iter()
            .map(|r| RepoRow {
                name: r.name.clone(),
                revision: r.revision.clone(),
                applied: r.applied_revision.clone(),
                errors: r.errors.len(),
            })
            .collect(),
        ..Default::default()
    };
    let Some(d) = &s.desired else {
        return fleet;
    };
    for (key, inst) in &d.instances {
        fleet.instances.push(InstanceCol {
            namespace: inst.namespace.clone(),
            name: inst.name.clone(),
            framework: inst.framework.clone(),
            version: inst.version.clone(),
            revision: d.revision.clone(),
            rollout: match s.pauses.get(key) {
                Some(p) => format!("Paused by {}", p.by),
                None => s
                    .rollouts
                    .get(key)
                    .map(rollout_text)
                    .unwrap_or_else(|| "Progressing".into()),
            },
        });
        for cluster in &inst.targets {
            let Some(seen) = s.observed.get(cluster) else {
                continue;
            };
            let cell = match seen {
                None => Cell {
                    status: "UNKNOWN".into(),
                    message: "the cluster has not been observed yet".into(),
                    ..Default::default()
                },
                Some(obs) => {
                    let live = obs.get(key).map(|x| &x.instance);
                    let progress = rollout::observe(live, &inst.operator_version, &inst.parameters);
                    let detail = live.and_then(crate::gitops::status::plan_detail);
                    let status = match (live, &detail) {
                        (None, _) => "NOT_APPLIED".to_string(),
                        (Some(_), Some(d)) if !d.status.is_empty() => d.status.clone(),
                        (Some(_), _) => "PENDING".to_string(),
                    };
                    let d = detail.unwrap_or_default();
                    Cell {
                        plan: d.plan,
                        status,
                        done: d.steps_done,
                        total: d.steps_total,
                        revision: live.and_then(applied_revision),
                        current: !matches!(progress, Progress::NotApplied),
                        message: d.message,
                    }
                }
            };
            fleet.cells.insert((cluster.clone(), key.clone()), cell);
        }
    }
    fleet
}

impl Shared {
    pub fn fleet(&self) -> Fleet {
        fleet_of(&self.snapshot())
    }

    /// Changes whenever something the fleet matrix shows may have changed: an observation,
    /// a planner pass, a sync, a cluster's state. Cheap next to building the fleet (which
    /// at 1,000 clusters × 10 instances takes tens of milliseconds).
    fn fleet_version(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        use std::sync::atomic::Ordering::SeqCst;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.observations().hash(&mut h);
        self.passes.load(SeqCst).hash(&mut h);
        self.sync_epoch.load(SeqCst).hash(&mut h);
        for c in self.slots() {
            let st = lock(&c.status);
            (&st.name, st.up, &st.reason, &st.labels).hash(&mut h);
        }
        h.finish()
    }
}

/// Publishes the fleet to the open event streams: every [`TICK`] while one is open, it is
/// rebuilt when [`Shared::fleet_version`] moved; idle with no stream open.
pub(super) async fn publisher(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut published = None;
    loop {
        if shared.live.receiver_count() == 0 {
            tokio::select! {
                _ = shared.live_wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        let version = shared.fleet_version();
        if published == Some(version) {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        published = Some(version);
        let fleet = shared.fleet();
        shared.live.send_if_modified(|current| {
            if **current != fleet {
                *current = Arc::new(fleet);
                true
            } else {
                false
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        markup.into_string(),
    )
        .into_response()
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// The page chrome for this viewer, or the redirect to sign in.
fn viewer(
    s: &Shared,
    headers: &HeaderMap,
    here: &str,
    title: &str,
    nav: &'static str,
    events: String,
) -> Result<Chrome, Box<Response>> {
    match authenticate(s, headers) {
        Ok(who) => {
            let write_note = if who.write {
                None
            } else if who.open {
                Some("Read-only: kudo listens beyond loopback and no API token is configured, so actions are off (see apiTokens).".to_string())
            } else {
                Some(format!(
                    "Read-only: token {:?} cannot act; sign in with a write token to act.",
                    who.name
                ))
            };
            Ok(Chrome {
                title: title.to_string(),
                csrf: who.session.as_ref().map(|s| s.csrf.clone()),
                can_write: who.write,
                write_note,
                signed_in: (!who.open).then(|| who.name.clone()),
                events,
                nav,
                bare: false,
            })
        }
        Err(Refused::Unauthorized) => {
            let next: String = form_urlencoded::byte_serialize(here.as_bytes()).collect();
            Err(Box::new(redirect(&format!("/login?next={next}"))))
        }
        Err(Refused::Unavailable) => Err(Box::new(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "API tokens unavailable (every token file is unreadable or empty)\n",
            )
                .into_response(),
        )),
    }
}

fn filters_from(q: &BTreeMap<String, String>) -> Filters {
    Filters {
        namespace: q.get("namespace").cloned(),
        framework: q.get("framework").cloned(),
        label: q.get("label").cloned(),
        status: q.get("status").cloned(),
        q: q.get("q").cloned(),
        page: q.get("page").and_then(|p| p.parse().ok()),
    }
}

async fn matrix_page(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let f = filters_from(&q);
    let query = f.query(f.page());
    let here = if query.is_empty() {
        "/".to_string()
    } else {
        format!("/?{query}")
    };
    let events = if query.is_empty() {
        "/api/v1/events".to_string()
    } else {
        format!("/api/v1/events?{query}")
    };
    match viewer(&s, &headers, &here, "Fleet", "fleet", events) {
        Ok(c) => html(StatusCode::OK, pages::matrix(&c, &s.fleet(), &f)),
        Err(r) => *r,
    }
}

async fn instance_page(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let key = format!("{namespace}/{name}");
    let events = format!(
        "/api/v1/events?instance={}",
        form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
    );
    let c = match viewer(&s, &headers, &format!("/instances/{key}"), &key, "", events) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let doc = super::status::status_doc(s.snapshot());
    let view = doc
        .instances
        .iter()
        .find(|i| i.namespace == namespace && i.name == name);
    match (view, s.instance_detail(Some(&namespace), &name)) {
        (Some(view), Ok(detail)) => html(
            StatusCode::OK,
            pages::instance(&c, view, &detail, &doc.clusters),
        ),
        _ => html(
            StatusCode::NOT_FOUND,
            pages::not_found(
                &Chrome {
                    title: "Not found".into(),
                    ..c
                },
                &format!("No instance {key} in the desired state."),
            ),
        ),
    }
}

async fn revisions_page(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match viewer(
        &s,
        &headers,
        "/revisions",
        "Revisions",
        "revisions",
        "/api/v1/events?view=revisions".into(),
    ) {
        Ok(c) => {
            let repos: Vec<_> = lock(&s.repos).values().cloned().collect();
            html(StatusCode::OK, pages::revisions(&c, &repos))
        }
        Err(r) => *r,
    }
}

async fn clusters_page(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    match viewer(
        &s,
        &headers,
        "/clusters",
        "Clusters",
        "clusters",
        "/api/v1/events?view=clusters".into(),
    ) {
        Ok(c) => html(StatusCode::OK, pages::clusters(&c, &s.cluster_statuses())),
        Err(r) => *r,
    }
}

async fn not_found(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if uri.path().starts_with("/api/") {
        return (
            StatusCode::NOT_FOUND,
            format!("no endpoint {}\n", uri.path()),
        )
            .into_response();
    }
    match viewer(&s, &headers, "/", "Not found", "", String::new()) {
        Ok(c) => html(
            StatusCode::NOT_FOUND,
            pages::not_found(&c, &format!("There is no page {}.", uri.path())),
        ),
        Err(r) => *r,
    }
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::gitops::console::SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        crate::gitops::console::STYLE,
    )
        .into_response()
}

/// Only local paths: a sign-in never sends the browser to another site.
fn safe_next(next: Option<&String>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.clone(),
        _ => "/".to_string(),
    }
}

async fn login_page(
    State(s): State<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if s.config().all_api_tokens().is_empty() {
        return redirect("/");
    }
    html(
        StatusCode::OK,
        pages::login(None, &safe_next(q.get("next"))),
    )
}

/// `POST /login` with a form `token=...&next=/path`: a session cookie for a valid token.
/// The token is never logged and never put in a URL.
async fn login(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let next = safe_next(form.get("next"));
    if let Err(wait) = s.login_limiter.take() {
        warn!(target: "audit", "console sign-in refused: too many attempts");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.as_secs().max(1).to_string())],
            format!(
                "too many sign-in attempts; try again in {} s\n",
                wait.as_secs().max(1)
            ),
        )
            .into_response();
    }
    if cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "sign-in from another site refused\n").into_response();
    }
    let given = form.get("token").map(|t| t.trim()).unwrap_or_default();
    let tokens = s.config().all_api_tokens();
    if tokens.is_empty() {
        return redirect("/");
    }
    let found = (!given.is_empty())
        .then(|| {
            tokens.iter().find_map(|t| {
                let value = std::fs::read_to_string(&t.file).ok()?;
                (!value.trim().is_empty()
                    && crate::gitops::webhook::same_secret(given, value.trim()))
                .then(|| (t.clone(), value))
            })
        })
        .flatten();
    let Some((token, value)) = found else {
        warn!(target: "audit", "console sign-in refused: the token given matches no API token");
        return html(
            StatusCode::UNAUTHORIZED,
            pages::login(
                Some("That token is not valid. Nothing is shown without a valid API token."),
                &next,
            ),
        );
    };
    let write = token.role == crate::gitops::config::TokenRole::Write;
    let (id, _) = s.sessions.create(&token.name, write, &value);
    info!(target: "audit", token = %token.name, write, "console sign-in");
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, next),
            (header::SET_COOKIE, session::set_cookie(&id, secure)),
        ],
    )
        .into_response()
}

/// `POST /logout` (form with the session's CSRF token): ends the session.
async fn logout(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    let id = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(session::cookie_value)
        .map(str::to_string);
    if let Some(id) = id
        && let Some(ss) = s.sessions.get(&id)
    {
        if !ss.csrf_matches(form.get("csrf").map(String::as_str).unwrap_or_default()) {
            return (
                StatusCode::FORBIDDEN,
                "sign-out needs the page's CSRF token\n",
            )
                .into_response();
        }
        s.sessions.remove(&id);
        info!(target: "audit", token = %ss.token, "console sign-out");
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_string()),
            (header::SET_COOKIE, session::clear_cookie()),
        ],
    )
        .into_response()
}

/// `GET /api/v1/session`: who the caller is (401 without a valid token or session).
async fn session_info(axum::Extension(who): axum::Extension<Who>) -> Response {
    axum::Json(json!({"token": who.name, "write": who.write, "session": who.session.is_some()}))
        .into_response()
}

/// `GET /api/v1/events`: server-sent events for one page. `?view=revisions|clusters`, or
/// `?instance=ns/name`, or the matrix's filters. Events: `hello` (this process's id),
/// `matrix` (the page's changed cells, clusters, rollouts and the counts), `changed` (the
/// page should be fetched again).
async fn events(
    State(s): State<Arc<Shared>>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    enum Kind {
        Matrix(Filters),
        Instance(String),
        Revisions,
        Clusters,
    }
    let kind = match (q.get("view").map(String::as_str), q.get("instance")) {
        (_, Some(key)) => Kind::Instance(key.clone()),
        (Some("revisions"), _) => Kind::Revisions,
        (Some("clusters"), _) => Kind::Clusters,
        _ => Kind::Matrix(filters_from(&q)),
    };
    let Some(slot) = s.streams.enter(MAX_STREAMS) else {
        warn!(
            max = MAX_STREAMS,
            open = s.streams.open(),
            "event stream refused: too many open"
        );
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!("too many open event streams (at most {MAX_STREAMS})\n"),
        )
            .into_response();
    };
    let rx = s.live.subscribe();
    s.live_wake.notify_one();
    let first = Arc::new(s.fleet());
    let mut pending: VecDeque<Event> = VecDeque::new();
    pending.push_back(
        Event::default()
            .event("hello")
            .retry(Duration::from_secs(1))
            .data(json!({"server": s.server_id}).to_string()),
    );
    if let Kind::Matrix(f) = &kind {
        let u = matrix_update(None, &first, f);
        pending.push_back(matrix_event(&u));
    }
    let stop = s.stop_rx.clone();
    let stream = futures::stream::unfold(
        (rx, first, stop, pending, kind, slot),
        |(mut rx, mut last, mut stop, mut pending, kind, slot)| async move {
            loop {
                if let Some(ev) = pending.pop_front() {
                    return Some((
                        Ok::<_, Infallible>(ev),
                        (rx, last, stop, pending, kind, slot),
                    ));
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return None },
                    _ = stop.wait_for(|s| *s) => return None,
                }
                let new = rx.borrow_and_update().clone();
                match &kind {
                    Kind::Matrix(f) => {
                        let u = matrix_update(Some(&last), &new, f);
                        if !u.is_empty() {
                            pending.push_back(matrix_event(&u));
                        }
                    }
                    Kind::Instance(key) => {
                        if instance_changed(&last, &new, key) {
                            pending.push_back(Event::default().event("changed").data("{}"));
                        }
                    }
                    Kind::Revisions => {
                        if last.repositories != new.repositories {
                            pending.push_back(Event::default().event("changed").data("{}"));
                        }
                    }
                    Kind::Clusters => {
                        if last.clusters != new.clusters {
                            pending.push_back(Event::default().event("changed").data("{}"));
                        }
                    }
                }
                last = new;
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn matrix_event(u: &crate::gitops::console::model::MatrixUpdate) -> Event {
    Event::default()
        .event("matrix")
        .data(serde_json::to_string(u).unwrap_or_else(|_| "{}".into()))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PlanBody {
    plan: Option<String>,
}

/// Why a plan action was refused.
#[derive(Debug, thiserror::Error)]
pub enum PlanActionError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("this replica does not lead; ask the leader")]
    NotLeader,
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
}

impl Shared {
    /// Triggers, cancels or retries a plan of one instance on one cluster (`action`), as
    /// `by`. Returns what was done. The trigger names the plan; cancel and retry act on the
    /// running, or the failed or cancelled, plan.
    pub async fn plan_action(
        &self,
        namespace: &str,
        name: &str,
        cluster: &str,
        action: &str,
        plan: Option<&str>,
        by: &str,
    ) -> Result<String, PlanActionError> {
        use crate::api::{ExecutionStatus, Instance};
        use PlanActionError::*;
        let key = format!("{namespace}/{name}");
        let desired = self
            .desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let d = desired.ok_or_else(|| NotFound("no desired state loaded yet".into()))?;
        let inst = d
            .instances
            .get(&key)
            .ok_or_else(|| NotFound(format!("no instance {key} in the desired state")))?;
        if !inst.targets.iter().any(|t| t == cluster) {
            return Err(NotFound(format!(
                "instance {key} does not target cluster {cluster} (targets: {})",
                inst.targets.join(", ")
            )));
        }
        let slot = self
            .slots()
            .into_iter()
            .find(|c| c.info.name == cluster)
            .ok_or_else(|| NotFound(format!("no cluster {cluster}")))?;
        if !self.is_leader() {
            return Err(NotLeader);
        }
        let r = ObjectRef::new(crate::api::API_VERSION, "Instance", Some(namespace), name);
        let live: Instance = slot
            .cluster
            .get_opt(&r)
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| Refused(format!("instance {key} is not on cluster {cluster} yet")))?;
        let plans = live
            .status
            .as_ref()
            .map(|s| s.plan_status.clone())
            .unwrap_or_default();
        let (patch, done) = match action {
            "trigger" => {
                let plan = plan
                    .filter(|p| !p.is_empty())
                    .ok_or_else(|| BadRequest("a trigger needs {\"plan\": \"<name>\"}".into()))?;
                let defined: Vec<String> = d
                    .frameworks
                    .get(&(inst.framework.clone(), inst.version.clone()))
                    .map(|f| f.operator_version.spec.plans.keys().cloned().collect())
                    .unwrap_or_default();
                if !defined.iter().any(|p| p == plan) {
                    return Err(Refused(format!(
                        "plan {plan:?} is not defined by {} {} (plans: {})",
                        inst.framework,
                        inst.version,
                        defined.join(", ")
                    )));
                }
                (
                    json!({
                        "apiVersion": crate::api::API_VERSION, "kind": "Instance",
                        "metadata": {"name": name, "namespace": namespace,
                                     "resourceVersion": live.metadata.resource_version},
                        "spec": {"planExecution": {"planName": plan, "uid": null, "status": null}},
                    }),
                    format!("plan {plan} triggered"),
                )
            }
            "cancel" | "retry" => {
                let wanted = |s: ExecutionStatus| match action {
                    "cancel" => s.is_running(),
                    _ => matches!(s, ExecutionStatus::FatalError | ExecutionStatus::Cancelled),
                };
                let target = plans
                    .iter()
                    .filter(|(_, p)| p.status.is_some_and(wanted))
                    .max_by_key(|(_, p)| p.last_updated_timestamp.as_ref().map(|t| t.0))
                    .map(|(n, _)| n.clone())
                    .ok_or_else(|| {
                        Refused(if action == "cancel" {
                            format!("instance {key} has no running plan on {cluster}; nothing to cancel")
                        } else {
                            format!("no plan of {key} on {cluster} ended FATAL_ERROR or CANCELLED; nothing to retry")
                        })
                    })?;
                (
                    json!({
                        "apiVersion": crate::api::API_VERSION, "kind": "Instance",
                        "metadata": {"name": name, "namespace": namespace, "annotations": {
                            crate::manager::reconcile::PLAN_REQUEST_ANNOTATION: action}},
                    }),
                    format!(
                        "plan {target} {}",
                        if action == "cancel" {
                            "cancelling"
                        } else {
                            "retrying"
                        }
                    ),
                )
            }
            other => {
                return Err(NotFound(format!(
                    "no plan action {other:?} (trigger, cancel, retry)"
                )));
            }
        };
        match slot.cluster.merge_patch(&patch).await {
            Ok(_) => {}
            Err(e) if e.kind() == crate::cluster::ErrorKind::Conflict => {
                return Err(Refused(format!(
                    "instance {key} changed on {cluster} meanwhile; look again and retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        info!(target: "audit", token = by, instance = %key, %cluster, action, result = %done, "plan action");
        self.notifier.emit(
            crate::notify::Event::new(
                crate::notify::EventKind::ApiWrite,
                "planAction",
                format!("{done} for {key} on {cluster} by {by}"),
            )
            .cluster(cluster),
        );
        slot.wake.notify_one();
        Ok(done)
    }
}

async fn plan_action(
    State(s): State<Arc<Shared>>,
    Path((namespace, name, cluster, action)): Path<(String, String, String, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    let body: PlanBody = if body.iter().all(u8::is_ascii_whitespace) {
        PlanBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("expected a JSON body {{\"plan\": \"<name>\"}}: {e}\n"),
                )
                    .into_response();
            }
        }
    };
    match s
        .plan_action(
            &namespace,
            &name,
            &cluster,
            &action,
            body.plan.as_deref(),
            &caller.0,
        )
        .await
    {
        Ok(done) => axum::Json(json!({
            "instance": format!("{namespace}/{name}"), "cluster": cluster,
            "action": action, "result": done, "by": caller.0,
        }))
        .into_response(),
        Err(e) => {
            let code = match &e {
                PlanActionError::NotFound(_) => StatusCode::NOT_FOUND,
                PlanActionError::Refused(_) => StatusCode::CONFLICT,
                PlanActionError::BadRequest(_) => StatusCode::BAD_REQUEST,
                PlanActionError::NotLeader => StatusCode::SERVICE_UNAVAILABLE,
                PlanActionError::Cluster(_) => StatusCode::BAD_GATEWAY,
            };
            (code, format!("{e}\n")).into_response()
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FaultsBody {
    partitioned: Option<bool>,
    /// Added to every API request (`50ms`, `1s`).
    latency: Option<String>,
    /// Share of requests that fail, 0 to 1.
    error_rate: Option<f64>,
}

/// `POST /api/v1/clusters/{name}/faults` `{"partitioned": true, "latency": "50ms",
/// "errorRate": 0.1}`: injects faults into an embedded simulated cluster (the demo's and the
/// console tests' way to take a cluster down). 404 for any other cluster.
async fn sim_faults(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let body: FaultsBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "expected a JSON body {{\"partitioned\": bool, \"latency\": \"50ms\", \"errorRate\": 0.1}}: {e}\n"
                ),
            )
                .into_response();
        }
    };
    let latency = match body
        .latency
        .as_deref()
        .map(str::parse::<jiff::SignedDuration>)
    {
        None => None,
        Some(Ok(d)) if !d.is_negative() => Some(d.unsigned_abs()),
        Some(_) => {
            return (
                StatusCode::BAD_REQUEST,
                format!(
                    "latency {:?} is not a duration like 50ms or 1s\n",
                    body.latency.unwrap_or_default()
                ),
            )
                .into_response();
        }
    };
    if let Some(rate) = body.error_rate
        && !(0.0..=1.0).contains(&rate)
    {
        return (
            StatusCode::BAD_REQUEST,
            format!("errorRate {rate} is not between 0 and 1\n"),
        )
            .into_response();
    }
    {
        let sims = lock(&s.sims);
        let Some((sim, _)) = sims.get(&name) else {
            let known: Vec<&String> = sims.keys().collect();
            return (
                StatusCode::NOT_FOUND,
                format!(
                    "cluster {name:?} is not a simulated cluster this daemon runs (simulated: {known:?})\n"
                ),
            )
                .into_response();
        };
        let f = sim.faults();
        if let Some(p) = body.partitioned {
            f.set_partitioned(p);
        }
        if let Some(l) = latency {
            f.set_latency(l);
        }
        if let Some(r) = body.error_rate {
            f.set_error_rate(r);
        }
    }
    info!(cluster = %name, partitioned = ?body.partitioned, latency = ?latency, error_rate = ?body.error_rate, "simulated faults set");
    if let Some(slot) = s.slots().into_iter().find(|c| c.info.name == name) {
        slot.wake.notify_one();
    }
    axum::Json(
        json!({"cluster": name, "partitioned": body.partitioned, "errorRate": body.error_rate}),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_past_the_budget_are_refused_and_a_closed_one_frees_its_place() {
        let budget = Arc::new(StreamBudget::default());
        let held: Vec<StreamSlot> = (0..3).filter_map(|_| budget.enter(3)).collect();
        assert_eq!((held.len(), budget.open()), (3, 3));
        assert!(budget.enter(3).is_none(), "a fourth is refused");
        drop(held);
        assert_eq!(budget.open(), 0);
        assert!(budget.enter(3).is_some());
    }

    #[test]
    fn a_sign_in_never_sends_the_browser_elsewhere() {
        for bad in ["https://evil.example/", "//evil.example/x", "/\\evil", "x"] {
            assert_eq!(safe_next(Some(&bad.to_string())), "/", "{bad}");
        }
        assert_eq!(
            safe_next(Some(&"/instances/a/b".to_string())),
            "/instances/a/b"
        );
        assert_eq!(safe_next(None), "/");
    }
}
