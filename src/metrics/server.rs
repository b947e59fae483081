//! The metrics endpoint of `kudo manager`: `/metrics` (OpenMetrics text), `/healthz`,
//! `/readyz`. `kudo serve` mounts [`router`] beside its own routes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Routes `/metrics`, `/healthz` and `/readyz`.
pub fn router(registry: Arc<Registry>) -> Router {
    metrics_route(registry)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
}

/// Routes `/metrics` only (for servers with their own health endpoints).
pub fn metrics_route<S: Clone + Send + Sync + 'static>(registry: Arc<Registry>) -> Router<S> {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    super::encode(&registry),
                )
                    .into_response()
            }
        }),
    )
}

/// Serves [`router`] on `addr` until `shutdown` resolves. Binding errors name the address.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown)
        .await
}
