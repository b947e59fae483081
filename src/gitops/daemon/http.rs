//! The HTTP API: router, token auth, the Git webhook and the deletion confirmation.

use std::sync::Arc;

use super::ServeError;
use super::state::{Shared, lock};
use serde_json::json;
use tracing::{info, warn};

impl Shared {
    /// Confirms the held deletions of `repository`'s `revision` (the API's write action).
    /// Errors say why nothing was confirmed.
    pub fn confirm_deletions(
        &self,
        repository: &str,
        revision: &str,
        by: &str,
    ) -> Result<usize, String> {
        let repos = lock(&self.repos);
        let Some(status) = repos.get(repository) else {
            let known: Vec<&str> = repos.keys().map(String::as_str).collect();
            return Err(format!(
                "no repository {repository:?} (repositories: {})",
                known.join(", ")
            ));
        };
        let Some(held) = &status.held_deletions else {
            return Err(format!(
                "repository {repository} has no deletions waiting for confirmation"
            ));
        };
        if held.revision != revision && !held.revision.starts_with(revision) || revision.len() < 7 {
            return Err(format!(
                "repository {repository}: the held deletions belong to revision {}, not {revision:?}; nothing confirmed",
                held.revision
            ));
        }
        let (full, count) = (held.revision.clone(), held.count);
        drop(repos);
        info!(target: "audit", repository, revision = %full, count, token = by, "deletions confirmed");
        self.notifier.emit(
            crate::notify::Event::new(
                crate::notify::EventKind::ApiWrite,
                "deletionsConfirmed",
                format!("{count} deletions of repository {repository} confirmed by {by}"),
            )
            .revision(&full),
        );
        lock(&self.confirmations).insert(repository.to_string(), (full, u32::MAX));
        self.request_plan();
        Ok(count)
    }
}

/// The HTTP API: health, readiness, status, metrics and the Git webhook.
pub fn router(shared: Arc<Shared>) -> axum::Router {
    use axum::routing::{get, post};
    crate::metrics::server::metrics_route(shared.registry.clone())
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(
                |axum::extract::State(s): axum::extract::State<Arc<Shared>>| async move {
                    if s.ready() {
                        (axum::http::StatusCode::OK, "ready")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                },
            ),
        )
        .route(
            "/api/v1/status",
            get(
                |axum::extract::State(s): axum::extract::State<Arc<Shared>>| async move {
                    axum::Json(s.status())
                },
            ),
        )
        .route("/api/v1/instances/{name}", get(instance_detail))
        .route(
            "/api/v1/repositories/{name}/confirm-deletions",
            post(confirm_deletions),
        )
        .route(
            "/api/v1/rollouts/{namespace}/{name}/{action}",
            post(rollout_action),
        )
        .route(
            "/api/v1/hooks/git",
            post(hook).layer(axum::extract::DefaultBodyLimit::max(
                crate::gitops::webhook::MAX_BODY_BYTES,
            )),
        )
        .merge(super::console::routes())
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_api_token,
        ))
        .with_state(shared)
}

#[derive(serde::Deserialize)]
struct DetailQuery {
    namespace: Option<String>,
}

/// `GET /api/v1/instances/{name}?namespace=ns`: 404 with the reason when unknown.
async fn instance_detail(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<DetailQuery>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match s.instance_detail(q.namespace.as_deref(), &name) {
        Ok(d) => axum::Json(d).into_response(),
        Err(reason) => (axum::http::StatusCode::NOT_FOUND, format!("{reason}\n")).into_response(),
    }
}

/// Who made an API request: the token's name (`anonymous` without tokens).
#[derive(Debug, Clone)]
pub struct Caller(pub String);

#[derive(serde::Deserialize)]
struct ConfirmBody {
    revision: String,
}

/// `POST /api/v1/repositories/{name}/confirm-deletions` with `{"revision": "<commit>"}`:
/// releases the deletions held for that revision (a write: see [`require_api_token`]).
async fn confirm_deletions(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body: ConfirmBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                format!("expected a JSON body {{\"revision\": \"<commit>\"}}: {e}\n"),
            )
                .into_response();
        }
    };
    match s.confirm_deletions(&name, &body.revision, &caller.0) {
        Ok(count) => axum::Json(json!({"repository": name, "confirmed": count})).into_response(),
        Err(reason) => (axum::http::StatusCode::CONFLICT, format!("{reason}\n")).into_response(),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    stage: String,
}

/// `POST /api/v1/rollouts/{namespace}/{name}/approve` with `{"stage": "prod"}`, `.../pause`
/// `.../resume` and `.../revert` (writes: see [`require_api_token`]). 404 for an unknown
/// instance or action, 409 when the rollout is not in a state the action applies to, 503 on
/// a replica that does not lead (the change would be lost when it next reads the state).
async fn rollout_action(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    axum::extract::Path((namespace, name, action)): axum::extract::Path<(String, String, String)>,
    axum::Extension(caller): axum::Extension<Caller>,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use super::rollouts::RolloutError;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let key = format!("{namespace}/{name}");
    let result = match action.as_str() {
        "approve" => {
            let body: ApproveBody = match serde_json::from_slice(&body) {
                Ok(b) => b,
                Err(e) => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("expected a JSON body {{\"stage\": \"<stage>\"}}: {e}\n"),
                    )
                        .into_response();
                }
            };
            s.approve_stage(&key, &body.stage, &caller.0)
                .map(|()| json!({"instance": key, "approved": body.stage, "by": caller.0}))
        }
        "revert" => s.revert_rollout(&key, &caller.0).map(
            |reason| json!({"instance": key, "reverted": true, "by": caller.0, "reason": reason}),
        ),
        "pause" | "resume" => s.set_paused(&key, action == "pause", &caller.0).map(
            |changed| json!({"instance": key, "paused": action == "pause", "changed": changed}),
        ),
        other => {
            return (
                StatusCode::NOT_FOUND,
                format!("no rollout action {other:?} (approve, pause, resume, revert)\n"),
            )
                .into_response();
        }
    };
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e @ RolloutError::Unknown { .. }) => {
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
        Err(e @ RolloutError::Conflict(_)) => {
            (StatusCode::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(e @ RolloutError::NotLeader(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response()
        }
    }
}

/// Who made a request, once authenticated.
#[derive(Debug, Clone)]
pub(super) struct Who {
    /// The token's name (`anonymous` without tokens).
    pub name: String,
    /// Whether this caller may write.
    pub write: bool,
    /// Set when the caller came with a console session cookie (its writes need the CSRF
    /// header).
    pub session: Option<crate::gitops::console::session::Session>,
    /// No token is configured (reads are open).
    pub open: bool,
}

/// Why a request was not authenticated.
pub(super) enum Refused {
    /// No valid bearer token or session.
    Unauthorized,
    /// Every token file is unreadable or empty.
    Unavailable,
}

/// Finds who is calling: a bearer token, else a console session cookie; with no token
/// configured, everyone (writes only on a loopback listener). Token files are read per
/// request, so rotating one needs no restart and ends the sessions made from the old value.
pub(super) fn authenticate(s: &Shared, headers: &axum::http::HeaderMap) -> Result<Who, Refused> {
    let tokens = s.config().all_api_tokens();
    if tokens.is_empty() {
        return Ok(Who {
            name: "anonymous".into(),
            write: s.loopback_listener(),
            session: None,
            open: true,
        });
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_string();
    let session = if given.is_empty() {
        headers
            .get(axum::http::header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::gitops::console::session::cookie_value)
            .and_then(|id| s.sessions.get(id))
    } else {
        None
    };
    let mut readable = 0;
    for token in &tokens {
        let value = match std::fs::read_to_string(&token.file) {
            Ok(v) if !v.trim().is_empty() => v,
            Ok(_) => {
                warn!(token = %token.name, file = %token.file.display(), "API token file is empty; that token is refused");
                continue;
            }
            Err(e) => {
                warn!(token = %token.name, file = %token.file.display(), error = %e, "API token file unreadable; that token is refused");
                continue;
            }
        };
        readable += 1;
        let write = token.role == crate::gitops::config::TokenRole::Write;
        let matched = if !given.is_empty() {
            crate::gitops::webhook::same_secret(&given, value.trim())
        } else {
            session
                .as_ref()
                .is_some_and(|ss| ss.token == token.name && ss.token_matches(&value))
        };
        if matched {
            return Ok(Who {
                name: token.name.clone(),
                write,
                session: session.filter(|_| given.is_empty()),
                open: false,
            });
        }
    }
    if readable == 0 {
        Err(Refused::Unavailable)
    } else {
        Err(Refused::Unauthorized)
    }
}

/// Whether a browser sent this request from another site (`Sec-Fetch-Site` says so, or
/// without it, its `Origin` names another host). Such a request never writes: without this, a page
/// anywhere could post to a loopback kudo that needs no token.
pub(super) fn cross_site(headers: &axum::http::HeaderMap) -> bool {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    // Browsers that send it say it best ("same-site" is another port of the same host: a
    // different application).
    if let Some(site) = get("sec-fetch-site") {
        return !matches!(site, "same-origin" | "none");
    }
    match (get("origin"), get("host")) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'))
            .is_none_or(|authority| !authority.eq_ignore_ascii_case(host)),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The API's access rule, one for every endpoint:
/// - health, readiness and metrics are open (probes and scrapers); the webhook checks its
///   own signature;
/// - with tokens configured (`apiTokens`, or `apiTokenFile` as the write token `default`),
///   every `/api/v1/*` request needs `Authorization: Bearer <token>` or a console session
///   cookie, and writes (any method but GET and HEAD) need a `write` token; a write made
///   with a session cookie also needs the session's CSRF token in `X-Kudo-Csrf`;
/// - with no token configured, reads are open and writes are allowed only when the listener
///   is a loopback address (the embedded demo);
/// - a write a browser sends from another site is refused whatever it carries.
///
/// Every write is logged (target `audit`) and notified with the token's name. Token files
/// are read per request, so rotating one needs no restart; an unreadable one counts as absent
/// and is logged.
async fn require_api_token(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    let path = request.uri().path().to_string();
    let protected = path.starts_with("/api/v1/") && !path.starts_with("/api/v1/hooks/");
    if !protected {
        return next.run(request).await;
    }
    let write = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if write && cross_site(request.headers()) {
        warn!(target: "audit", method = %request.method(), %path, "write refused: sent from another site");
        return (
            StatusCode::FORBIDDEN,
            "writes from another site are refused\n",
        )
            .into_response();
    }
    let who = match authenticate(&s, request.headers()) {
        Ok(who) => who,
        Err(Refused::Unavailable) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "API tokens unavailable (every token file is unreadable or empty)\n",
            )
                .into_response();
        }
        Err(Refused::Unauthorized) => {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response();
        }
    };
    if write {
        if who.open && !who.write {
            return (
                StatusCode::FORBIDDEN,
                "writes need a write token (apiTokens) unless kudo listens on loopback only\n",
            )
                .into_response();
        }
        if let Some(session) = &who.session {
            let given = request
                .headers()
                .get(crate::gitops::console::session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !session.csrf_matches(given) {
                warn!(target: "audit", token = %who.name, method = %request.method(), %path, "write refused: session without its CSRF token");
                return (
                    StatusCode::FORBIDDEN,
                    "a write with a session cookie needs the session's X-Kudo-Csrf header\n",
                )
                    .into_response();
            }
        }
        if !who.write {
            warn!(target: "audit", token = %who.name, method = %request.method(), %path, "write refused: read-only token");
            return (
                StatusCode::FORBIDDEN,
                format!(
                    "token {:?} is read-only; this needs a write token\n",
                    who.name
                ),
            )
                .into_response();
        }
        info!(target: "audit", token = %who.name, method = %request.method(), %path, "API write");
        s.notifier.emit(crate::notify::Event::new(
            crate::notify::EventKind::ApiWrite,
            "write",
            format!("{} {path} by token {}", request.method(), who.name),
        ));
    }
    request.extensions_mut().insert(Caller(who.name.clone()));
    request.extensions_mut().insert(who);
    next.run(request).await
}

async fn hook(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use crate::gitops::webhook::{HookError, HookSecret};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    if let Err(wait) = s.hook_limiter.take() {
        let refusal = s.hook_limiter.refusal();
        warn!(reason = %refusal, "webhook refused");
        let retry = wait.as_secs().max(1).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(axum::http::header::RETRY_AFTER, retry)],
            format!("{refusal}\n"),
        )
            .into_response();
    }
    let secrets: Vec<(String, HookSecret)> = s
        .config()
        .repositories
        .iter()
        .map(|r| {
            (
                r.name.clone(),
                HookSecret::load(r.webhook_secret_file.as_deref()),
            )
        })
        .collect();
    {
        let mut repos = lock(&s.repos);
        for (name, secret) in &secrets {
            let problem = secret.problem().map(str::to_string);
            if let Some(p) = &problem {
                warn!(repository = %name, problem = %p, "webhook secret unavailable; refusing its webhooks");
            }
            if let Some(status) = repos.get_mut(name) {
                status.webhook_error = problem;
            }
        }
    }
    match crate::gitops::webhook::authorize(&headers, &body, &secrets) {
        Ok(repos) => {
            info!(repositories = ?repos, "webhook: syncing now");
            s.sync_now(Some(&repos));
            (
                StatusCode::ACCEPTED,
                format!("syncing {}\n", repos.join(", ")),
            )
                .into_response()
        }
        Err(reason) => {
            warn!(%reason, "webhook refused");
            let code = match reason {
                HookError::SecretUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            (code, format!("{reason}\n")).into_response()
        }
    }
}

/// Serves the HTTP API on `addr` until `stop` resolves; returns the bound address.
pub async fn serve_http(
    shared: Arc<Shared>,
    addr: std::net::SocketAddr,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: addr.to_string(),
        source,
    })?;
    s_set_loopback(&shared, bound);
    let app = router(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(error = %e, "HTTP server stopped");
        }
    });
    Ok((bound, task))
}

fn s_set_loopback(shared: &Shared, bound: std::net::SocketAddr) {
    shared.loopback.store(
        bound.ip().is_loopback(),
        std::sync::atomic::Ordering::SeqCst,
    );
}

#[cfg(test)]
mod tests {
    use super::cross_site;

    fn headers(pairs: &[(&'static str, &'static str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, axum::http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn a_write_from_another_site_is_told_apart_from_the_cli_and_the_console() {
        // The CLI and curl send neither header.
        assert!(!cross_site(&headers(&[("host", "127.0.0.1:8080")])));
        // The console itself.
        assert!(!cross_site(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080")
        ])));
        // Another page, another port of the same host, a sandboxed frame.
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:9090")
        ])));
        assert!(cross_site(&headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "null")
        ])));
    }
}
