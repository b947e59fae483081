//! The write fence of a sharded member: every write its engines send to a cluster passes
//! [`claim_gated_client`], which lets it through only while the member holds the cluster's
//! claim (`owns`) and its member Lease is within its deadline.
//!
//! Guarantees:
//! - checked as each request is sent, so no task (engine, drift repair, status update) can
//!   write for a cluster this member stopped owning, or after its Lease deadline passed,
//!   whether or not the member's own renewal task still runs;
//! - writes that passed the check and have not been answered are counted
//!   ([`ClusterGate::inflight`]): a claim is released only once none is left, so the next
//!   owner never races a request of ours;
//! - with `KUDO_WRITE_LOG=<file>`, every write that passed is appended to the file as one
//!   JSON line (time, member, cluster, role, method, path) in a single `write`, so several
//!   processes can share one log (the shard tests check it for overlaps).

use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The error of a write refused by [`claim_gated_client`].
#[derive(Debug, thiserror::Error)]
#[error(
    "cluster {cluster}: member {member} does not hold its claim (or its member Lease was not renewed in time): write refused"
)]
pub struct NotClaimed {
    pub cluster: String,
    pub member: String,
}

/// What every cluster gate of one member shares: its name, its Lease deadline, the log.
#[derive(Debug)]
pub struct Fence {
    pub member: String,
    /// Until when (ms since the epoch) this member may write: its last successful renewal
    /// plus the Lease duration minus the clock-skew margin.
    deadline_ms: AtomicI64,
    log: Option<Arc<WriteLog>>,
}

impl Fence {
    pub fn new(member: &str, log: Option<Arc<WriteLog>>) -> Arc<Fence> {
        Arc::new(Fence {
            member: member.to_string(),
            deadline_ms: AtomicI64::new(0),
            log,
        })
    }

    pub fn deadline_ms(&self) -> i64 {
        self.deadline_ms.load(Ordering::SeqCst)
    }

    /// Moves the deadline (after a renewal; to 0 to stop every write at once).
    pub fn set_deadline_ms(&self, ms: i64) {
        self.deadline_ms.store(ms, Ordering::SeqCst);
    }

    pub fn log(&self) -> Option<&Arc<WriteLog>> {
        self.log.as_ref()
    }
}

/// One cluster's gate on one member.
#[derive(Debug)]
pub struct ClusterGate {
    pub cluster: String,
    fence: Arc<Fence>,
    owns: watch::Sender<bool>,
    inflight: AtomicUsize,
}

impl ClusterGate {
    pub fn new(cluster: &str, fence: Arc<Fence>) -> Arc<ClusterGate> {
        Arc::new(ClusterGate {
            cluster: cluster.to_string(),
            fence,
            owns: watch::channel(false).0,
            inflight: AtomicUsize::new(0),
        })
    }

    /// Whether a write may be sent now.
    pub fn allows(&self, now_ms: i64) -> bool {
        *self.owns.borrow() && now_ms < self.fence.deadline_ms()
    }

    /// Whether this member drives the cluster (its engine runs while true).
    pub fn owned(&self) -> bool {
        *self.owns.borrow()
    }

    pub fn set_owned(&self, owned: bool) {
        self.owns
            .send_if_modified(|o| std::mem::replace(o, owned) != owned);
    }

    /// Follows [`ClusterGate::owned`] (the engine waits on it).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.owns.subscribe()
    }

    /// Writes sent and not yet answered.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::SeqCst)
    }
}

fn is_write(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

/// Counts a write as in flight until dropped (answered, failed or cancelled).
struct InFlight(Arc<ClusterGate>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A client whose writes pass `gate` (reads always pass): a member's engine writes through it.
pub fn claim_gated_client(client: kube::Client, gate: Arc<ClusterGate>) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let client = client.clone();
        let gate = gate.clone();
        async move {
            if !is_write(req.method()) {
                return client.send(req).await;
            }
            // Counted before the check, so a release that saw zero cannot miss this one.
            gate.inflight.fetch_add(1, Ordering::SeqCst);
            let guard = InFlight(gate.clone());
            if !gate.allows(now_ms()) {
                drop(guard);
                return Err(kube::Error::Service(Box::new(NotClaimed {
                    cluster: gate.cluster.clone(),
                    member: gate.fence.member.clone(),
                })));
            }
            if let Some(log) = gate.fence.log() {
                log.record(&gate.fence.member, &gate.cluster, "owner", &req);
            }
            let out = client.send(req).await;
            drop(guard);
            out
        }
    });
    kube::Client::new(service, namespace)
}

/// A client that records its writes in `log` under `role` (the leader's spec writes on a
/// sharded member); it refuses nothing.
pub fn logged_client(
    client: kube::Client,
    log: Arc<WriteLog>,
    member: String,
    cluster: String,
    role: &'static str,
) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let client = client.clone();
        if is_write(req.method()) {
            log.record(&member, &cluster, role, &req);
        }
        async move { client.send(req).await }
    });
    kube::Client::new(service, namespace)
}

/// An append-only JSON-lines log of cluster writes (`KUDO_WRITE_LOG`).
#[derive(Debug)]
pub struct WriteLog {
    file: Mutex<std::fs::File>,
}

impl WriteLog {
    /// The log named by `KUDO_WRITE_LOG`, if set and openable (else a warning, no log).
    pub fn from_env() -> Option<Arc<WriteLog>> {
        let path = std::env::var_os("KUDO_WRITE_LOG")?;
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(file) => Some(Arc::new(WriteLog {
                file: Mutex::new(file),
            })),
            Err(e) => {
                tracing::warn!(path = %std::path::Path::new(&path).display(), error = %e, "cannot open KUDO_WRITE_LOG; writes are not logged");
                None
            }
        }
    }

    pub fn record<B>(&self, member: &str, cluster: &str, role: &str, req: &http::Request<B>) {
        let mut line = serde_json::json!({
            "ms": now_ms(),
            "member": member,
            "cluster": cluster,
            "role": role,
            "method": req.method().as_str(),
            "path": req.uri().path(),
        })
        .to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = file.write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_allows_writes_only_while_owned_and_before_the_deadline() {
        let fence = Fence::new("m0", None);
        let gate = ClusterGate::new("c", fence.clone());
        let now = 1_000_000;
        assert!(!gate.allows(now), "not owned, no deadline");
        gate.set_owned(true);
        assert!(!gate.allows(now), "owned but the Lease was never renewed");
        fence.set_deadline_ms(now + 500);
        assert!(gate.allows(now));
        assert!(!gate.allows(now + 500), "at the deadline writes stop");
        gate.set_owned(false);
        assert!(!gate.allows(now), "released");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_write_never_reaches_the_cluster_and_reads_pass() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{Api, PostParams};
        let sim = crate::sim::SimCluster::new("c");
        let fence = Fence::new("m0", None);
        let gate = ClusterGate::new("c", fence.clone());
        let api: Api<ConfigMap> =
            Api::namespaced(claim_gated_client(sim.client(), gate.clone()), "default");
        let cm = |name: &str| ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let refused = api
            .create(&PostParams::default(), &cm("early"))
            .await
            .expect_err("not claimed");
        assert!(
            refused.to_string().contains("does not hold its claim"),
            "{refused}"
        );
        assert_eq!(gate.inflight(), 0, "a refused write is not in flight");
        gate.set_owned(true);
        fence.set_deadline_ms(now_ms() + 60_000);
        api.create(&PostParams::default(), &cm("claimed"))
            .await
            .expect("claimed: written");
        assert_eq!(gate.inflight(), 0, "answered writes are not in flight");
        assert!(api.get_opt("early").await.expect("read").is_none());
        assert!(api.get_opt("claimed").await.expect("read").is_some());
    }
}
