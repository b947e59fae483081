//! A Tokio runtime of its own for simulated clusters, so their CPU can be told apart from the
//! control plane's: every thread it starts is named [`THREAD_PREFIX`], and `kudo bench` sums
//! per-thread CPU by that name (`crate::bench::process`).
//!
//! A cluster placed on it ([`super::SimCluster::on_runtime`]) answers requests there: the
//! client's request future is spawned onto this runtime and a watch body is pumped from it,
//! so JSON encoding, server-side apply, the store and watch fan-out run on its threads while
//! the caller only decodes responses, as against a real API server.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body::Body as _;
use http_body_util::{BodyExt, StreamBody};
use tokio::runtime::{Handle, Runtime};

use super::service::SimBody;

/// The name of every thread of a simulator runtime (Linux keeps 15 bytes of a thread name).
pub const THREAD_PREFIX: &str = "kudo-sim";

/// Frames of a watch body buffered between the simulator and the client.
const PUMP_FRAMES: usize = 64;

/// An owned multi-thread runtime for simulators. Stop it with [`SimRuntime::shutdown`] once
/// the clusters' clients are gone; dropping it stops it without waiting.
#[derive(Debug)]
pub struct SimRuntime {
    handle: Handle,
    runtime: Option<Runtime>,
}

impl SimRuntime {
    /// A runtime with `workers` worker threads (at least one).
    pub fn new(workers: usize) -> std::io::Result<SimRuntime> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(THREAD_PREFIX)
            .enable_all()
            .build()?;
        Ok(SimRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// A runtime with one worker per available core.
    pub fn per_core() -> std::io::Result<SimRuntime> {
        SimRuntime::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops every task and waits (up to five seconds) for its threads, off the async
    /// threads: a runtime may not block while dropped inside another one.
    pub async fn shutdown(mut self) {
        if let Some(rt) = self.runtime.take() {
            let stopped = tokio::task::spawn_blocking(move || {
                rt.shutdown_timeout(Duration::from_secs(5));
            })
            .await;
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "simulator runtime did not shut down cleanly");
            }
        }
    }
}

impl Drop for SimRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Moves a streaming response body (a watch) onto `runtime`: a task there polls it and
/// hands frames over a channel, so producing events costs the simulator's threads. Bodies
/// of known length (everything but watches) are already encoded and pass through.
pub(crate) fn pump_body(runtime: &Handle, response: Response<SimBody>) -> Response<SimBody> {
    let (parts, mut body) = response.into_parts();
    if body.is_end_stream() || body.size_hint().exact().is_some() {
        return Response::from_parts(parts, body);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<http_body::Frame<Bytes>>(PUMP_FRAMES);
    runtime.spawn(async move {
        loop {
            // A client that stopped watching ends the pump without waiting for an event.
            let frame = tokio::select! {
                _ = tx.closed() => break,
                f = body.frame() => f,
            };
            match frame {
                Some(Ok(frame)) => {
                    if tx.send(frame).await.is_err() {
                        break;
                    }
                }
                Some(Err(never)) => match never {},
                None => break,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (Ok::<_, Infallible>(f), rx))
    });
    Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams, WatchEvent, WatchParams};

    use super::*;
    use crate::sim::SimCluster;

    /// The caller's runtime has no timer, so the injected latency (a timer) can only run
    /// if the simulator's runtime answers; a watch streams from there and its pump ends
    /// when the client stops watching.
    #[test]
    fn a_cluster_on_its_runtime_answers_there_and_streams_watches() {
        let sims = SimRuntime::new(1).expect("runtime");
        let sim = SimCluster::new("rt").on_runtime(sims.handle());
        sim.faults().set_latency(Duration::from_millis(1));
        let caller = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime without timers");
        caller.block_on(async {
            let api: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
            let baseline = sim.shared.watchers();
            let mut events = api
                .watch(&WatchParams::default(), "0")
                .await
                .expect("watch")
                .boxed();
            let mut cm = ConfigMap::default();
            cm.metadata.name = Some("x".into());
            api.create(&PostParams::default(), &cm)
                .await
                .expect("create");
            match events.try_next().await.expect("event") {
                Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("x")),
                other => panic!("expected ADDED x, got {other:?}"),
            }
            assert!(sim.shared.watchers() > baseline);
            drop(events);
            // Polled without a timer: the pump notices the client left on its own, before
            // the next bookmark (every 5 s) would have told it.
            let deadline = Instant::now() + Duration::from_secs(3);
            while sim.shared.watchers() > baseline {
                assert!(Instant::now() < deadline, "the watch pump did not stop");
                std::thread::yield_now();
            }
        });
        drop(caller);
        drop(sims);
    }
}
