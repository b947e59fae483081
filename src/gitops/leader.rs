//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several `kudo serve`
//! replicas exactly one writes to clusters.
//!
//! As client-go does, a lease held by another replica is judged expired on this replica's own
//! clock: from the moment the lease record was last seen to change, not from the `renewTime`
//! written by the holder, so clock skew between machines cannot hand the lease over early.
//! A leader that cannot renew within `renewDeadline` stops leading (the CLI then exits, and
//! the pod restarts as a standby); `renewDeadline < leaseDuration` leaves the gap in which no
//! replica writes. The decision ([`decide`]) is pure; [`Elector`] does the API calls.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::config::{ClusterAccess, LeaderElectionConfig};
use crate::cluster::Cluster;

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: lease {namespace}/{name}: cannot build a client: {source}")]
    Client {
        namespace: String,
        name: String,
        #[source]
        source: crate::cluster::ClusterError,
    },
    #[error(
        "leader election: lost the lease {namespace}/{name} ({reason}); stopping so that only one replica writes"
    )]
    Lost {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// What this replica last saw of the lease, and when (on its own clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub holder: Option<String>,
    pub renew_time: Option<String>,
    pub transitions: i32,
    pub lease_duration: Option<Duration>,
}

impl Record {
    fn of(lease: &Lease) -> Record {
        let spec = lease.spec.clone().unwrap_or_default();
        Record {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.map(|t| t.0.to_string()),
            transitions: spec.lease_transitions.unwrap_or(0),
            lease_duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Observation {
    pub record: Record,
    pub at: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The lease is free or expired: take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Another live replica holds it.
    Standby { holder: String, remaining: Duration },
}

/// Pure: what to do with the lease `current` (None: it does not exist), given what was
/// observed before. `lease_duration` is used when the record carries none.
pub fn decide(
    me: &str,
    current: Option<&Record>,
    last: Option<&Observation>,
    now: Instant,
    lease_duration: Duration,
) -> Decision {
    let Some(rec) = current else {
        return Decision::Acquire;
    };
    let Some(holder) = rec.holder.as_deref() else {
        return Decision::Acquire;
    };
    if holder == me {
        return Decision::Renew;
    }
    // Unchanged since we first saw it: count from then; changed (or never seen): from now.
    let since = match last {
        Some(o) if o.record == *rec => o.at,
        _ => now,
    };
    let duration = rec.lease_duration.unwrap_or(lease_duration);
    let elapsed = now.saturating_duration_since(since);
    if elapsed >= duration {
        Decision::Acquire
    } else {
        Decision::Standby {
            holder: holder.to_string(),
            remaining: duration - elapsed,
        }
    }
}

/// The observation to keep after seeing `current` at `now`: the old one while the record is
/// unchanged (so expiry counts from the first sighting), a fresh one otherwise.
pub fn observe(
    last: Option<Observation>,
    current: Option<&Record>,
    now: Instant,
) -> Option<Observation> {
    let current = current?;
    match last {
        Some(o) if o.record == *current => Some(o),
        _ => Some(Observation {
            record: current.clone(),
            at: now,
        }),
    }
}

/// This replica's identity: the pod name (or host name) and a random suffix, so that a
/// restarted pod is a new holder.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "kudo".to_string());
    unique_identity(&host)
}

/// `base` with a random suffix. Explicit identities get one too: two replicas configured
/// with the same `identity` would otherwise both see themselves as the holder and both lead.
pub fn unique_identity(base: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{base}-{}", id.get(..8).unwrap_or(&id))
}

/// Pure: how long a leader that last renewed (successfully started a renewal) at
/// `last_renew` may still act at `now`; `None` once `renew_deadline` has passed, when it
/// must stop writing. A standby acquires the lease no earlier than `leaseDuration` after it
/// saw that renewal, which config validation keeps longer than `renewDeadline + retryPeriod`.
pub fn renew_budget(
    last_renew: Instant,
    now: Instant,
    renew_deadline: Duration,
) -> Option<Duration> {
    let left = (last_renew + renew_deadline).saturating_duration_since(now);
    (!left.is_zero()).then_some(left)
}

/// A client that refuses every write (any method but GET, HEAD and OPTIONS) while `leading`
/// is false, checked as each request is sent: a leader whose lease lapsed cannot write
/// through it, whatever task holds it (workers, engines, status updates).
pub fn leader_gated_client(client: kube::Client, leading: watch::Receiver<bool>) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let client = client.clone();
        let read = matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        let allowed = read || *leading.borrow();
        async move {
            if !allowed {
                return Err(kube::Error::Service(Box::new(NotLeader)));
            }
            client.send(req).await
        }
    });
    kube::Client::new(service, namespace)
}

/// A client for the cluster that holds the Lease: the kubeconfig of `leaderElection`, else
/// the cluster this process runs in. The rollout state's ConfigMap lives there too, beside
/// the Lease, so that whoever holds the Lease can read it.
pub async fn election_client(
    config: &LeaderElectionConfig,
) -> Result<kube::Client, crate::cluster::ClusterError> {
    let cluster = match &config.access {
        ClusterAccess::Kubeconfig { path, context } => {
            Cluster::from_kubeconfig("leader-election", path, context.as_deref()).await?
        }
        // Validation refuses `sim`; in-cluster is the default.
        _ => Cluster::in_cluster("leader-election")?,
    };
    Ok(cluster.client().clone())
}

/// The error of a write refused by [`leader_gated_client`].
#[derive(Debug, thiserror::Error)]
#[error("not the leader (lease not held or not renewed in time): write refused")]
pub struct NotLeader;

enum Outcome {
    Leading,
    Standby(String),
}

/// Runs the election loop against one Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaderElectionConfig,
    identity: String,
}

impl Elector {
    pub async fn new(config: &LeaderElectionConfig) -> Result<Elector, LeaderError> {
        let client = election_client(config)
            .await
            .map_err(|source| LeaderError::Client {
                namespace: config.namespace.clone(),
                name: config.name.clone(),
                source,
            })?;
        Ok(Elector::with_client(client, config))
    }

    /// An elector on the Lease `config` names, through `client`.
    pub fn with_client(client: kube::Client, config: &LeaderElectionConfig) -> Elector {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            identity: config
                .identity
                .as_deref()
                .map(unique_identity)
                .unwrap_or_else(default_identity),
            config: config.clone(),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Campaigns until `stop` turns true (then releases a held lease so a standby takes over
    /// at once) or leadership is lost (an error: the caller must stop writing and exit).
    /// `leading` follows whether this replica leads.
    pub async fn run(
        self,
        leading: watch::Sender<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), LeaderError> {
        let c = &self.config;
        let lease = format!("{}/{}", c.namespace, c.name);
        let mut last: Option<Observation> = None;
        let mut is_leader = false;
        let mut last_renew = Instant::now();
        let mut logged_holder: Option<String> = None;
        let mut error_logged = false;
        loop {
            let started = Instant::now();
            // A leader's attempt may not outlast its renew deadline: leadership ends then.
            let budget = if is_leader {
                renew_budget(last_renew, started, c.renew_deadline).unwrap_or_default()
            } else {
                c.renew_deadline
            };
            let attempt = tokio::time::timeout(budget, self.try_once(&mut last)).await;
            match attempt {
                Ok(Ok(Outcome::Leading)) => {
                    // Counted from before the request: the lease's renewTime is no older.
                    last_renew = started;
                    error_logged = false;
                    if !is_leader {
                        is_leader = true;
                        info!(%lease, identity = %self.identity, "became the leader; writing to clusters");
                        leading.send_replace(true);
                    }
                }
                Ok(Ok(Outcome::Standby(holder))) => {
                    error_logged = false;
                    if is_leader {
                        leading.send_replace(false);
                        error!(%lease, %holder, "lease taken by another replica");
                        return Err(self.lost(format!("now held by {holder}")));
                    }
                    if logged_holder.as_deref() != Some(holder.as_str()) {
                        info!(%lease, %holder, identity = %self.identity, "standby: another replica holds the lease; waiting");
                        logged_holder = Some(holder);
                    }
                }
                Ok(Err(e)) => {
                    if !error_logged {
                        warn!(%lease, error = %e, "leader election: lease request failed; retrying");
                        error_logged = true;
                    }
                }
                Err(_) => {
                    if !error_logged {
                        warn!(%lease, "leader election: lease request timed out; retrying");
                        error_logged = true;
                    }
                }
            }
            let left = renew_budget(last_renew, Instant::now(), c.renew_deadline);
            if is_leader && left.is_none() {
                leading.send_replace(false);
                error!(%lease, "lease not renewed within the renew deadline; stopping every write");
                return Err(self.lost(format!(
                    "not renewed within the renew deadline of {:?}",
                    c.renew_deadline
                )));
            }
            // A leader never sleeps past its deadline: it wakes to try (and to give up) in time.
            let pause = match left {
                Some(left) if is_leader => c.retry_period.min(left),
                _ => c.retry_period,
            };
            let stopping = tokio::select! {
                _ = tokio::time::sleep(pause) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping {
                if is_leader {
                    leading.send_replace(false);
                    self.release().await;
                }
                return Ok(());
            }
        }
    }

    fn lost(&self, reason: String) -> LeaderError {
        LeaderError::Lost {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            reason,
        }
    }

    async fn try_once(&self, last: &mut Option<Observation>) -> Result<Outcome, kube::Error> {
        let c = &self.config;
        let lease = self.api.get_opt(&c.name).await?;
        let now = Instant::now();
        let record = lease.as_ref().map(Record::of);
        let decision = decide(
            &self.identity,
            record.as_ref(),
            last.as_ref(),
            now,
            c.lease_duration,
        );
        *last = observe(last.take(), record.as_ref(), now);
        let stamp = MicroTime(jiff::Timestamp::now());
        let seconds = i32::try_from(c.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let result = match (decision, lease) {
            (Decision::Standby { holder, .. }, _) => return Ok(Outcome::Standby(holder)),
            // `decide` acquires a lease that does not exist.
            (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(c.name.clone()),
                        namespace: Some(c.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(stamp.clone()),
                        renew_time: Some(stamp),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                if decision == Decision::Acquire {
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    spec.acquire_time = Some(stamp.clone());
                    spec.holder_identity = Some(self.identity.clone());
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(stamp);
                // The resourceVersion from the read makes this a compare-and-swap.
                self.api
                    .replace(&c.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(Outcome::Leading),
            // Someone else wrote first: stand by and look again next round.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Ok(Outcome::Standby("(another replica, just now)".to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// Hands the lease back (empty holder) so that a standby takes it on its next try.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.config.name, "lease released"),
            Err(e) => warn!(lease = %self.config.name, error = %e, "could not release the lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn held(by: &str, renew: &str) -> Record {
        Record {
            holder: Some(by.to_string()),
            renew_time: Some(renew.to_string()),
            transitions: 0,
            lease_duration: Some(D),
        }
    }

    #[test]
    fn missing_or_released_lease_is_acquired() {
        let now = Instant::now();
        assert_eq!(decide("me", None, None, now, D), Decision::Acquire);
        let released = Record {
            holder: None,
            ..held("x", "t0")
        };
        assert_eq!(
            decide("me", Some(&released), None, now, D),
            Decision::Acquire
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        let now = Instant::now();
        assert_eq!(
            decide("me", Some(&held("me", "t0")), None, now, D),
            Decision::Renew
        );
    }

    #[test]
    fn a_live_holder_keeps_it_and_expiry_counts_from_first_sighting() {
        let t0 = Instant::now();
        let rec = held("other", "t0");
        // First sighting: the full duration remains, whatever renewTime says.
        let d = decide("me", Some(&rec), None, t0, D);
        assert_eq!(
            d,
            Decision::Standby {
                holder: "other".into(),
                remaining: D
            }
        );
        let last = observe(None, Some(&rec), t0);
        let t1 = t0 + Duration::from_secs(10);
        match decide("me", Some(&rec), last.as_ref(), t1, D) {
            Decision::Standby { remaining, .. } => assert_eq!(remaining, Duration::from_secs(5)),
            other => panic!("expected standby, got {other:?}"),
        }
        // Unchanged for the whole duration: the holder is gone.
        let last = observe(last, Some(&rec), t1);
        assert_eq!(last.as_ref().map(|o| o.at), Some(t0), "first sighting kept");
        assert_eq!(
            decide("me", Some(&rec), last.as_ref(), t0 + D, D),
            Decision::Acquire
        );
    }

    #[test]
    fn a_renewal_restarts_the_clock() {
        let t0 = Instant::now();
        let last = observe(None, Some(&held("other", "t0")), t0);
        let renewed = held("other", "t1");
        let t1 = t0 + D;
        assert!(matches!(
            decide("me", Some(&renewed), last.as_ref(), t1, D),
            Decision::Standby { remaining, .. } if remaining == D
        ));
        let last = observe(last, Some(&renewed), t1);
        assert_eq!(last.map(|o| o.at), Some(t1));
    }

    #[test]
    fn explicit_identities_get_a_unique_suffix() {
        let a = unique_identity("kudo-0");
        let b = unique_identity("kudo-0");
        assert!(
            a.starts_with("kudo-0-") && b.starts_with("kudo-0-"),
            "{a} {b}"
        );
        assert_ne!(
            a, b,
            "two replicas with one configured identity are two holders"
        );
        // So the second one stands by instead of renewing the first one's lease.
        let t0 = Instant::now();
        assert!(matches!(
            decide(&b, Some(&held(&a, "t0")), None, t0, D),
            Decision::Standby { .. }
        ));
    }

    #[test]
    fn a_leader_stops_acting_when_the_renew_deadline_passes() {
        let t0 = Instant::now();
        let deadline = Duration::from_secs(10);
        assert_eq!(renew_budget(t0, t0, deadline), Some(deadline));
        assert_eq!(
            renew_budget(t0, t0 + Duration::from_secs(7), deadline),
            Some(Duration::from_secs(3))
        );
        assert_eq!(renew_budget(t0, t0 + deadline, deadline), None);
        assert_eq!(
            renew_budget(t0, t0 + Duration::from_secs(60), deadline),
            None
        );
    }

    /// A leader whose lease API stops answering stops leading by itself once its renew
    /// deadline passes (before a standby could take the lease), returns the loss, and from
    /// then on a leader-gated client refuses every write while reads go through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_that_cannot_renew_stops_every_write() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let sim = crate::sim::SimCluster::new("mgmt");
        let config = LeaderElectionConfig {
            access: ClusterAccess::InCluster,
            namespace: "default".into(),
            name: "kudo".into(),
            identity: Some("same".into()),
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(200),
        };
        let elector = Elector::with_client(sim.client(), &config);
        assert!(
            elector.identity().starts_with("same-"),
            "{}",
            elector.identity()
        );
        let (tx, mut leading) = watch::channel(false);
        let (_stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(elector.run(tx, stop));
        leading.wait_for(|l| *l).await.expect("leads");
        let gated = leader_gated_client(sim.client(), leading.clone());
        let configmaps: Api<ConfigMap> = Api::namespaced(gated, "default");
        let cm = |name: &str| ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        configmaps
            .create(&PostParams::default(), &cm("while-leading"))
            .await
            .expect("a leader writes");

        sim.faults().set_partitioned(true);
        let partitioned = Instant::now();
        leading.wait_for(|l| !*l).await.expect("stops leading");
        let after = partitioned.elapsed();
        println!(
            "stopped leading {after:?} after the lease API went away (renew deadline 2s, lease 3s)"
        );
        let outcome = task.await.expect("elector task");
        assert!(
            matches!(&outcome, Err(LeaderError::Lost { reason, .. }) if reason.contains("renew deadline")),
            "{outcome:?}"
        );
        sim.faults().set_partitioned(false);
        let refused = configmaps
            .create(&PostParams::default(), &cm("after-the-deadline"))
            .await
            .expect_err("no write after the renew deadline");
        assert!(refused.to_string().contains("not the leader"), "{refused}");
        assert!(
            configmaps
                .get_opt("while-leading")
                .await
                .expect("reads")
                .is_some()
        );
        let plain: Api<ConfigMap> = Api::namespaced(sim.client(), "default");
        assert!(
            plain
                .get_opt("after-the-deadline")
                .await
                .expect("read")
                .is_none(),
            "the refused write never reached the cluster"
        );
    }

    #[test]
    fn the_records_own_duration_wins() {
        let t0 = Instant::now();
        let rec = Record {
            lease_duration: Some(Duration::from_secs(1)),
            ..held("other", "t0")
        };
        let last = observe(None, Some(&rec), t0);
        assert_eq!(
            decide(
                "me",
                Some(&rec),
                last.as_ref(),
                t0 + Duration::from_secs(1),
                D
            ),
            Decision::Acquire
        );
    }
}
