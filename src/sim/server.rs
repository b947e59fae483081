//! Serves a simulated cluster over plain HTTP on loopback, for kubectl and other processes.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower::Service;

use super::service::{BoxError, Shared, SimService};

/// A running loopback server; dropping it stops accepting connections.
#[derive(Debug)]
pub struct HttpServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// The `server:` URL for a kubeconfig.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` (port 0 picks a free port) and serves the cluster until dropped.
pub async fn serve(shared: Arc<Shared>, addr: SocketAddr) -> std::io::Result<HttpServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = SimService::new(shared.clone());
            tokio::spawn(async move {
                let hyper_svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let mut svc = svc.clone();
                        let (parts, body) = req.into_parts();
                        let body =
                            http_body_util::BodyExt::map_err(body, |e| -> BoxError { Box::new(e) });
                        async move {
                            // A partitioned cluster answers nothing: the error closes the connection.
                            svc.call(http::Request::from_parts(parts, body))
                                .await
                                .map_err(|e| std::io::Error::other(e.to_string()))
                        }
                    });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), hyper_svc);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "simulated cluster connection ended");
                }
            });
        }
    });
    Ok(HttpServer { addr, task })
}
