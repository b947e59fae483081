//! A member of a sharded control plane at run time: renews its member Lease, reads the
//! others', assigns clusters ([`super::assign`]), and takes, keeps or hands back each
//! cluster's claim ([`super::fence`]), opening and closing the cluster's gate
//! ([`super::gate`]) that its engine waits on and writes through.
//!
//! Records in the management cluster, in the leader election's namespace:
//! - `<controlPlane>-member-<name>`: one Lease per member, holder `<name>/<process>`,
//!   annotated with its kudo.yaml hash, whether it leads, and its renewal time in ms;
//! - `<controlPlane>-claim-<cluster>`: one Lease per cluster, holder the member driving it
//!   (`<name>/<process>`, empty once released). A claim lives as long as its holder's member
//!   Lease: it is written only when taken and released, never renewed on its own.
//!
//! Guarantees (on top of the pure cores'):
//! - a member whose kudo.yaml differs from the leader's takes no cluster and says why;
//! - a member never writes past its Lease deadline (the gates check it per request), and
//!   releases a claim only once no write of its is in flight;
//! - on a clean stop it closes every gate, releases its claims and deletes its Lease, so the
//!   others take its clusters at once instead of after the Lease duration.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Serialize;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::fence::{self, Action, Claim};
use super::gate::{ClusterGate, Fence, WriteLog};
use super::members::{self, MemberLease};
use crate::gitops::config::ShardingConfig;

const MEMBER_LABEL: &str = "kudo.dev/member-of";
const CLAIM_LABEL: &str = "kudo.dev/claim-of";
const HASH_ANNOTATION: &str = "kudo.dev/config-hash";
const LEADER_ANNOTATION: &str = "kudo.dev/leader";
const RENEWED_ANNOTATION: &str = "kudo.dev/renewed-ms";
const DURATION_ANNOTATION: &str = "kudo.dev/duration-ms";
const CLUSTER_ANNOTATION: &str = "kudo.dev/cluster";

/// The verbs member Leases need (checked at start, named when missing).
pub const LEASE_VERBS: [&str; 6] = ["get", "list", "watch", "create", "update", "delete"];

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "sharding: this replica's account may not {verbs} leases.coordination.k8s.io in namespace {namespace}; member Leases and cluster claims need get, list, watch, create, update and delete there (deploy/sharded/rbac-shards.yaml grants them)"
    )]
    Forbidden { verbs: String, namespace: String },
    #[error("sharding: {0}")]
    NameTaken(String),
    #[error("sharding: lease {namespace}/{name}: {operation}: {source}")]
    Api {
        namespace: String,
        name: String,
        operation: &'static str,
        #[source]
        source: kube::Error,
    },
}

/// What `/api/v1/status` shows of the shards (the same on every replica that read the same
/// Leases, except `member`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ShardView {
    /// This replica's member name.
    pub member: String,
    /// Live members sharing the leader's kudo.yaml, sorted.
    pub members: Vec<String>,
    /// Live members left out, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<String>,
    /// This member's kudo.yaml hash (first 12 hex digits).
    pub config_hash: String,
    /// Why this member takes no cluster, or the last error talking to the Leases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Cluster → the member driving it now (its claim's live holder).
    pub owners: BTreeMap<String, String>,
    /// Cluster → the member the assignment gives it to.
    pub assigned: BTreeMap<String, String>,
}

/// One replica's membership: its gates, and what it last saw.
#[derive(Debug)]
pub struct Member {
    pub name: String,
    /// Random per process start: a restart is a new holder.
    pub process: String,
    pub config: ShardingConfig,
    pub namespace: String,
    pub control_plane: String,
    pub fence: Arc<Fence>,
    gates: Mutex<BTreeMap<String, Arc<ClusterGate>>>,
    hash: Mutex<String>,
    view: Mutex<ShardView>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// SHA-256 of a kudo.yaml's bytes, hex.
pub fn config_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Member {
    pub fn new(
        name: &str,
        config: &ShardingConfig,
        namespace: &str,
        control_plane: &str,
        config_hash: &str,
    ) -> Arc<Member> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        Arc::new(Member {
            name: name.to_string(),
            process: id.get(..12).unwrap_or(&id).to_string(),
            config: config.clone(),
            namespace: namespace.to_string(),
            control_plane: control_plane.to_string(),
            fence: Fence::new(name, WriteLog::from_env()),
            gates: Mutex::new(BTreeMap::new()),
            hash: Mutex::new(config_hash.to_string()),
            view: Mutex::new(ShardView {
                member: name.to_string(),
                ..Default::default()
            }),
        })
    }

    /// `<name>/<process>`: what claims and the member Lease name as holder.
    pub fn identity(&self) -> String {
        format!("{}/{}", self.name, self.process)
    }

    /// The gate of `cluster` (made on first use).
    pub fn gate(&self, cluster: &str) -> Arc<ClusterGate> {
        lock(&self.gates)
            .entry(cluster.to_string())
            .or_insert_with(|| ClusterGate::new(cluster, self.fence.clone()))
            .clone()
    }

    /// After a kudo.yaml reload: the hash other members compare.
    pub fn set_config_hash(&self, hash: &str) {
        *lock(&self.hash) = hash.to_string();
    }

    pub fn view(&self) -> ShardView {
        lock(&self.view).clone()
    }

    fn member_lease_name(&self, member: &str) -> String {
        format!("{}-member-{member}", self.control_plane)
    }

    fn claim_name(&self, cluster: &str) -> String {
        format!("{}-claim-{cluster}", self.control_plane)
    }

    fn api_error(&self, name: &str, operation: &'static str, source: kube::Error) -> ShardError {
        ShardError::Api {
            namespace: self.namespace.clone(),
            name: name.to_string(),
            operation,
            source,
        }
    }
}

/// Asks the API server (SelfSubjectAccessReview) whether this account has every verb member
/// Leases need in `namespace`; names the missing ones.
pub async fn check_access(client: &kube::Client, namespace: &str) -> Result<(), ShardError> {
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut denied = Vec::new();
    for verb in LEASE_VERBS {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    group: Some("coordination.k8s.io".into()),
                    resource: Some("leases".into()),
                    namespace: Some(namespace.to_string()),
                    verb: Some(verb.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &review).await {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {}
            Ok(_) => denied.push(verb),
            Err(e) => {
                return Err(ShardError::Api {
                    namespace: namespace.to_string(),
                    name: "(access review)".into(),
                    operation: "check permissions",
                    source: e,
                });
            }
        }
    }
    if denied.is_empty() {
        Ok(())
    } else {
        Err(ShardError::Forbidden {
            verbs: denied.join(", "),
            namespace: namespace.to_string(),
        })
    }
}

fn annotation(lease: &Lease, key: &str) -> Option<String> {
    lease.metadata.annotations.as_ref()?.get(key).cloned()
}

/// A member Lease as the pure cores read it (`None`: not one of ours or malformed).
fn member_of(lease: &Lease) -> Option<MemberLease> {
    let holder = lease.spec.as_ref()?.holder_identity.clone()?;
    let (name, process) = holder.split_once('/')?;
    Some(MemberLease {
        name: name.to_string(),
        process: process.to_string(),
        renewed_ms: annotation(lease, RENEWED_ANNOTATION)?.parse().ok()?,
        duration_ms: annotation(lease, DURATION_ANNOTATION)?.parse().ok()?,
        config_hash: annotation(lease, HASH_ANNOTATION).unwrap_or_default(),
        leader: annotation(lease, LEADER_ANNOTATION).as_deref() == Some("true"),
    })
}

/// A cluster's claim: it lives as long as its holder's member Lease (same process).
fn claim_of(lease: &Lease, members: &[MemberLease]) -> Claim {
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty());
    let Some(holder) = holder else {
        return Claim {
            holder: None,
            renewed_ms: 0,
            duration_ms: 0,
        };
    };
    let alive = holder.split_once('/').and_then(|(name, process)| {
        members
            .iter()
            .find(|m| m.name == name && m.process == process)
    });
    Claim {
        holder: Some(holder),
        renewed_ms: alive.map_or(0, |m| m.renewed_ms),
        duration_ms: alive.map_or(0, |m| m.duration_ms),
    }
}

/// Runs the member until `stop` (then hands everything back) or until its name is taken by
/// another process (an error: the caller exits). `clusters` lists the config's clusters now;
/// `leading` says whether this replica leads.
pub async fn run(
    member: Arc<Member>,
    client: kube::Client,
    clusters: impl Fn() -> Vec<String> + Send,
    leading: Option<watch::Receiver<bool>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ShardError> {
    let api: Api<Lease> = Api::namespaced(client, &member.namespace);
    let mut runner = Runner {
        member: member.clone(),
        api,
        reference: None,
        logged_error: None,
        members_seen: Vec::new(),
        stable_since_ms: 0,
    };
    runner.wait_for_name(&mut stop).await?;
    info!(member = %member.name, process = %member.process, namespace = %member.namespace, "sharding: member started");
    loop {
        let led = leading.as_ref().is_none_or(|l| *l.borrow());
        if let Err(e) = runner.tick(&clusters(), led).await {
            if matches!(e, ShardError::NameTaken(_)) {
                member.fence.set_deadline_ms(0);
                for g in lock(&member.gates).values() {
                    g.set_owned(false);
                }
                error!(error = %e, "sharding: stopping every engine");
                return Err(e);
            }
            let text = e.to_string();
            if runner.logged_error.as_deref() != Some(text.as_str()) {
                warn!(error = %text, "sharding: member Leases; retrying (writes stop at the Lease deadline)");
                runner.logged_error = Some(text.clone());
            }
            lock(&member.view).error = Some(text);
        } else {
            runner.logged_error = None;
        }
        tokio::select! {
            _ = tokio::time::sleep(member.config.tick()) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    runner.hand_back().await;
    Ok(())
}

struct Runner {
    member: Arc<Member>,
    api: Api<Lease>,
    /// The leader's kudo.yaml hash as last seen.
    reference: Option<String>,
    logged_error: Option<String>,
    /// The live members as last seen, and since when unchanged: a member takes a cluster
    /// only once the member set has settled (two ticks), so replicas starting a moment
    /// apart do not each start, then stop, every engine (releases are immediate).
    members_seen: Vec<String>,
    stable_since_ms: i64,
}

impl Runner {
    /// Waits for a live Lease of another process under our name to expire (a restarted pod
    /// whose previous process died): up to one Lease duration plus the margin. A Lease that
    /// keeps being renewed means a second live process: refused.
    async fn wait_for_name(&self, stop: &mut watch::Receiver<bool>) -> Result<(), ShardError> {
        let m = &self.member;
        let name = m.member_lease_name(&m.name);
        let give_up =
            now_ms() + ms(m.config.member_lease_duration) + 2 * ms(m.config.margin()) + 1000;
        loop {
            let current = self
                .api
                .get_opt(&name)
                .await
                .map_err(|e| m.api_error(&name, "read the member Lease", e))?;
            let lease = current.as_ref().and_then(member_of);
            let now = now_ms();
            match members::may_start(&m.name, &m.process, lease.as_ref(), now) {
                Ok(()) => return Ok(()),
                Err(reason) if now >= give_up => return Err(ShardError::NameTaken(reason)),
                Err(reason) => {
                    info!(%reason, "sharding: waiting for the member name to be free");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(m.config.tick()) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    }

    async fn tick(&mut self, clusters: &[String], led: bool) -> Result<(), ShardError> {
        let m = self.member.clone();
        let me = m.identity();
        let stamp = now_ms();
        self.renew(stamp, led).await?;
        m.fence
            .set_deadline_ms(stamp + ms(m.config.member_lease_duration) - ms(m.config.margin()));
        let selector = format!("{MEMBER_LABEL}={}", m.control_plane);
        let leases: Vec<MemberLease> = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| m.api_error("(members)", "list member Leases", e))?
            .items
            .iter()
            .filter_map(member_of)
            .collect();
        let selector = format!("{CLAIM_LABEL}={}", m.control_plane);
        let claims: BTreeMap<String, Lease> = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| m.api_error("(claims)", "list cluster claims", e))?
            .items
            .into_iter()
            .filter_map(|l| Some((annotation(&l, CLUSTER_ANNOTATION)?, l)))
            .collect();
        let now = now_ms();
        let ours = lock(&m.hash).clone();
        if led {
            self.reference = Some(ours.clone());
        } else if let Some(r) = members::reference_hash(&leases, now) {
            self.reference = Some(r);
        }
        let mut view = ShardView {
            member: m.name.clone(),
            config_hash: ours.get(..12).unwrap_or(&ours).to_string(),
            ..Default::default()
        };
        let (live, agrees) = match &self.reference {
            Some(reference) => {
                let ms = members::membership(&leases, reference, now);
                view.excluded = ms.excluded.iter().map(|(_, why)| why.clone()).collect();
                let agrees = *reference == ours;
                if !agrees {
                    view.error = Some(format!(
                        "this member's kudo.yaml (hash {}) differs from the leader's ({}): it takes no cluster until they match",
                        ours.get(..12).unwrap_or(&ours),
                        reference.get(..12).unwrap_or(reference)
                    ));
                }
                (ms.members, agrees)
            }
            None => {
                view.error = Some("no leader seen yet: no cluster is taken".into());
                (Vec::new(), false)
            }
        };
        view.members = live.clone();
        if live != self.members_seen {
            self.members_seen = live.clone();
            self.stable_since_ms = now;
        }
        let settled = now - self.stable_since_ms >= 2 * ms(m.config.tick());
        // Every cluster we know: the config's, and any we still hold a claim on.
        let mut names: Vec<String> = clusters.to_vec();
        for (cluster, lease) in &claims {
            if claim_of(lease, &leases).holder.as_deref() == Some(me.as_str())
                && !names.contains(cluster)
            {
                names.push(cluster.clone());
            }
        }
        for cluster in &names {
            let in_config = clusters.contains(cluster);
            let assigned = super::assign::owner(cluster, &live)
                .filter(|_| in_config)
                .map(str::to_string);
            if let Some(a) = &assigned {
                view.assigned.insert(cluster.clone(), a.clone());
            }
            let owner = match &assigned {
                Some(a) if *a == m.name && agrees => Some(me.clone()),
                Some(a) => Some(format!("{a}/(other)")),
                None => None,
            };
            let lease = claims.get(cluster);
            let claim = lease.map(|l| claim_of(l, &leases));
            if let Some(Claim {
                holder: Some(h), ..
            }) = &claim
                && claim.as_ref().is_some_and(|c| now < c.expires_ms())
            {
                view.owners.insert(
                    cluster.clone(),
                    h.split_once('/').map_or(h.as_str(), |(n, _)| n).to_string(),
                );
            }
            let gate = m.gate(cluster);
            let action = fence::decide(&fence::Input {
                me: &me,
                owner: owner.as_deref(),
                claim: claim.as_ref(),
                running: gate.owned(),
                now_ms: now,
                margin_ms: ms(m.config.margin()),
            });
            match action {
                Action::Acquire => {
                    if now >= m.fence.deadline_ms() || !settled {
                        continue;
                    }
                    if self.write_claim(cluster, lease, Some(&me)).await? {
                        if !gate.owned() {
                            info!(%cluster, member = %m.name, "sharding: claim taken; starting the engine");
                        }
                        gate.set_owned(true);
                        view.owners.insert(cluster.clone(), m.name.clone());
                    }
                }
                Action::Stop => {
                    info!(%cluster, member = %m.name, "sharding: not ours any more; stopping the engine");
                    gate.set_owned(false);
                }
                Action::Release if gate.inflight() == 0 => {
                    if self.write_claim(cluster, lease, None).await? {
                        info!(%cluster, member = %m.name, "sharding: claim released");
                        view.owners.remove(cluster);
                    }
                }
                Action::Renew | Action::Idle | Action::Wait { .. } | Action::Release => {}
            }
        }
        *lock(&m.view) = view;
        Ok(())
    }

    /// Creates or renews our member Lease; refuses when another process holds our name.
    async fn renew(&self, stamp: i64, led: bool) -> Result<(), ShardError> {
        let m = &self.member;
        let name = m.member_lease_name(&m.name);
        let current = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| m.api_error(&name, "read the member Lease", e))?;
        if let Some(other) = current.as_ref().and_then(member_of)
            && other.process != m.process
            && other.live(now_ms())
        {
            return Err(ShardError::NameTaken(format!(
                "member name {} was taken by another process ({}) after this one failed to renew it",
                m.name, other.process
            )));
        }
        let seconds =
            i32::try_from(m.config.member_lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let mut lease = current.unwrap_or_default();
        let meta = &mut lease.metadata;
        meta.name = Some(name.clone());
        meta.namespace = Some(m.namespace.clone());
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(MEMBER_LABEL.into(), m.control_plane.clone());
        let ann = meta.annotations.get_or_insert_with(Default::default);
        ann.insert(HASH_ANNOTATION.into(), lock(&m.hash).clone());
        ann.insert(LEADER_ANNOTATION.into(), led.to_string());
        ann.insert(RENEWED_ANNOTATION.into(), stamp.to_string());
        ann.insert(
            DURATION_ANNOTATION.into(),
            ms(m.config.member_lease_duration).to_string(),
        );
        let time =
            jiff::Timestamp::from_millisecond(stamp).unwrap_or_else(|_| jiff::Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(m.identity()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(time)),
            ..lease.spec.unwrap_or_default()
        });
        let result = if lease.metadata.resource_version.is_some() {
            self.api
                .replace(&name, &PostParams::default(), &lease)
                .await
        } else {
            self.api.create(&PostParams::default(), &lease).await
        };
        result
            .map(|_| ())
            .map_err(|e| m.api_error(&name, "renew the member Lease", e))
    }

    /// Writes a cluster's claim (compare-and-swap on the version read): `holder` None
    /// releases it. Returns false when someone else wrote first.
    async fn write_claim(
        &self,
        cluster: &str,
        current: Option<&Lease>,
        holder: Option<&str>,
    ) -> Result<bool, ShardError> {
        let m = &self.member;
        let name = m.claim_name(cluster);
        let mut lease = current.cloned().unwrap_or_default();
        let meta = &mut lease.metadata;
        meta.name = Some(name.clone());
        meta.namespace = Some(m.namespace.clone());
        meta.labels
            .get_or_insert_with(Default::default)
            .insert(CLAIM_LABEL.into(), m.control_plane.clone());
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(CLUSTER_ANNOTATION.into(), cluster.to_string());
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = holder.map(str::to_string);
        if holder.is_some() {
            spec.acquire_time = Some(MicroTime(jiff::Timestamp::now()));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        let result = if current.is_some() {
            self.api
                .replace(&name, &PostParams::default(), &lease)
                .await
        } else {
            self.api.create(&PostParams::default(), &lease).await
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(m.api_error(&name, "write the cluster claim", e)),
        }
    }

    /// A clean stop: close every gate, wait (bounded) for writes in flight, release our
    /// claims and delete our member Lease.
    async fn hand_back(&self) {
        let m = &self.member;
        let gates: Vec<Arc<ClusterGate>> = lock(&m.gates).values().cloned().collect();
        for g in &gates {
            g.set_owned(false);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while gates.iter().any(|g| g.inflight() > 0) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let me = m.identity();
        let selector = format!("{CLAIM_LABEL}={}", m.control_plane);
        if let Ok(list) = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
        {
            for lease in &list.items {
                let ours = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(me.as_str());
                if let (true, Some(cluster)) = (ours, annotation(lease, CLUSTER_ANNOTATION)) {
                    let _ = self.write_claim(&cluster, Some(lease), None).await;
                }
            }
        }
        let _ = self
            .api
            .delete(&m.member_lease_name(&m.name), &DeleteParams::default())
            .await;
        info!(member = %m.name, "sharding: claims released, member Lease deleted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, annotations: &[(&str, &str)]) -> Lease {
        Lease {
            metadata: kube::api::ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_string()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_claim_lives_as_long_as_its_holders_member_lease() {
        let m = member_of(&lease(
            "kudo-0/p1",
            &[
                (RENEWED_ANNOTATION, "1000"),
                (DURATION_ANNOTATION, "4000"),
                (HASH_ANNOTATION, "h"),
                (LEADER_ANNOTATION, "true"),
            ],
        ))
        .expect("a member Lease");
        assert_eq!((m.name.as_str(), m.process.as_str()), ("kudo-0", "p1"));
        assert!(m.leader && m.live(4999) && !m.live(5000));
        assert_eq!(member_of(&lease("no-slash", &[])), None, "not ours");

        let members = [m];
        let held = claim_of(&lease("kudo-0/p1", &[]), &members);
        assert_eq!((held.renewed_ms, held.expires_ms()), (1000, 5000));
        // The same name restarted (another process): the old claim has ended.
        let stale = claim_of(&lease("kudo-0/p0", &[]), &members);
        assert!(stale.free_for("kudo-1/p9", 0), "{stale:?}");
        let released = claim_of(&lease("", &[]), &members);
        assert_eq!(released.holder, None);
    }

    /// Two members on a simulated management cluster split twenty clusters as the
    /// assignment says, each gate open on exactly one of them; a third with another kudo.yaml
    /// takes none and says why; a stopped member hands its clusters back at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn members_split_the_clusters_and_a_stopped_one_hands_them_back() {
        let sim = crate::sim::SimCluster::new("mgmt");
        check_access(&sim.client(), "default")
            .await
            .expect("a simulated cluster allows everything");
        let cfg = ShardingConfig {
            member_lease_duration: Duration::from_secs(2),
        };
        let clusters: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
        let start = |name: &str, hash: &str, leads: bool| {
            let m = Member::new(name, &cfg, "default", "kudo", hash);
            let (stop_tx, stop) = watch::channel(false);
            let (_lead_tx, lead) = watch::channel(leads);
            let names = clusters.clone();
            let task = tokio::spawn(run(
                m.clone(),
                sim.client(),
                move || names.clone(),
                Some(lead),
                stop,
            ));
            (m, stop_tx, task, _lead_tx)
        };
        let (a, _stop_a, _task_a, _la) = start("a", "h", true);
        let (b, stop_b, task_b, _lb) = start("b", "h", false);
        let (odd, _stop_odd, _task_odd, _lo) = start("odd", "other", false);
        let expected = super::super::assign::assign(&clusters, &["a", "b"]);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let split = clusters.iter().all(|c| {
                let owner = expected[c].as_str();
                a.gate(c).owned() == (owner == "a") && b.gate(c).owned() == (owner == "b")
            });
            if split && a.view().owners.len() == 20 && odd.view().error.is_some() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no split: a {:?} b {:?}",
                a.view(),
                b.view()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(clusters.iter().all(|c| !odd.gate(c).owned()));
        let why = odd.view().error.unwrap_or_default();
        assert!(why.contains("differs from the leader's"), "{why}");
        assert!(
            a.view()
                .excluded
                .iter()
                .any(|e| e.contains("odd runs another kudo.yaml")),
            "{:?}",
            a.view()
        );

        let _ = stop_b.send(true);
        task_b.await.expect("b's task").expect("b stops cleanly");
        assert!(
            clusters.iter().all(|c| !b.gate(c).owned()),
            "b's gates closed"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !clusters.iter().all(|c| a.gate(c).owned()) {
            assert!(
                std::time::Instant::now() < deadline,
                "a never took b's clusters: {:?}",
                a.view()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
