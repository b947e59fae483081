//! kudo.yaml reloads without a restart (on file change and on SIGHUP).
//!
//! Guarantees:
//! - A reload is all or nothing: the new file must load and validate, change nothing that
//!   needs a restart (repositories, listener, cache, control plane name, leader election,
//!   notifications, package repositories, webhook limits), and every new or changed
//!   cluster's client must build. Otherwise it is refused whole, the reason is logged and
//!   shown in the status, and the running config stays (as for a bad commit).
//! - Clusters added start their worker and engine; clusters removed stop theirs and are
//!   only forgotten, never cleaned up (removing a cluster from kudo.yaml deletes nothing on
//!   it). A cluster whose access changed (kubeconfig path, context or content, request
//!   timeout, simulator settings) is replaced: the old engine has stopped before the new one
//!   starts.
//! - Labels, `paused`, maintenance windows and `prometheus:` take effect on the next planner
//!   pass; new or changed labels make the repositories load their revision again (placement
//!   is resolved at load).
//! - Secret files (API tokens, webhook secrets, Git credentials, Prometheus tokens) are read
//!   where they are used, so rotating one needs no reload; a rotated kubeconfig is a changed
//!   access (above).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::state::{ClusterSlot, ClusterStatus, Shared, lock};
use super::{Options, ServeError, worker};
use crate::cluster::Cluster;
use crate::gitops::config::{ClusterAccess, ClusterConfig, Config};
use crate::gitops::placement::ClusterInfo;
use crate::sim::SimCluster;
use crate::sim::workload::{WorkloadConfig, Workloads};

/// The last reload, as `/api/v1/status` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// Reloads applied since start.
    pub applied: u64,
    /// Unix seconds of the last reload applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<i64>,
    /// What the last applied reload changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Why the newest file was refused (cleared by the next good one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(#[from] crate::gitops::config::ConfigError),
    #[error("kudo.yaml: {0}")]
    NeedsRestart(String),
    #[error("kudo.yaml: {0}")]
    Cluster(#[from] ServeError),
}

/// What a reload changes in the clusters (pure; see [`plan_reload`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Access changed: stopped and started anew.
    pub replaced: Vec<String>,
    pub relabelled: Vec<String>,
    /// Anything else that changed and takes effect by itself (pauses, windows, prometheus).
    pub other: Vec<String>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }

    /// One line per change, for the log and the status.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (what, names) in [
            ("cluster added", &self.added),
            ("cluster removed (nothing on it is deleted)", &self.removed),
            ("cluster access changed (reconnected)", &self.replaced),
            ("cluster labels changed", &self.relabelled),
        ] {
            for n in names {
                out.push(format!("{what}: {n}"));
            }
        }
        out.extend(self.other.iter().cloned());
        out
    }
}

/// Compares the running config with a new one: the fields a reload cannot change are
/// refused (naming them); the clusters' changes are sorted by what they need.
/// `access_changed` says whether a cluster present in both has new access (its config entry
/// or its kubeconfig's content).
pub fn plan_reload(
    old: &Config,
    new: &Config,
    access_changed: &dyn Fn(&ClusterConfig, &ClusterConfig) -> bool,
) -> Result<ReloadPlan, String> {
    let mut fixed = Vec::new();
    if old.repositories != new.repositories {
        fixed.push("repositories");
    }
    if old.listen != new.listen {
        fixed.push("listen");
    }
    if old.cache_dir != new.cache_dir {
        fixed.push("cacheDir");
    }
    if old.control_plane != new.control_plane {
        fixed.push("controlPlane");
    }
    if old.leader_election != new.leader_election {
        fixed.push("leaderElection");
    }
    if old.notifications != new.notifications {
        fixed.push("notifications");
    }
    if old.package_repositories != new.package_repositories {
        fixed.push("packageRepositories");
    }
    if old.webhook != new.webhook {
        fixed.push("webhook");
    }
    if old.sharding != new.sharding {
        fixed.push("sharding");
    }
    if !fixed.is_empty() {
        return Err(format!(
            "{} changed: these need a restart of kudo serve (the running config stays)",
            fixed.join(", ")
        ));
    }
    let mut plan = ReloadPlan::default();
    let before: BTreeMap<&str, &ClusterConfig> =
        old.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    let after: BTreeMap<&str, &ClusterConfig> =
        new.clusters.iter().map(|c| (c.name.as_str(), c)).collect();
    for (name, n) in &after {
        match before.get(name) {
            None => plan.added.push(name.to_string()),
            Some(o) if access_changed(o, n) => plan.replaced.push(name.to_string()),
            Some(o) => {
                if o.labels != n.labels {
                    plan.relabelled.push(name.to_string());
                }
                if o.paused != n.paused {
                    plan.other.push(format!(
                        "cluster {name}: {}",
                        if n.paused {
                            "paused"
                        } else {
                            "no longer paused"
                        }
                    ));
                }
                if o.windows != n.windows {
                    plan.other
                        .push(format!("cluster {name}: maintenance windows changed"));
                }
            }
        }
    }
    for name in before.keys() {
        if !after.contains_key(name) {
            plan.removed.push(name.to_string());
        }
    }
    if old.prometheus != new.prometheus {
        plan.other.push("prometheus changed".into());
    }
    if old.api_tokens != new.api_tokens || old.api_token_file != new.api_token_file {
        plan.other.push("API tokens changed".into());
    }
    Ok(plan)
}

/// What a cluster's client is built from: its config entry, and for a kubeconfig the
/// file's content (a rotated credential reconnects it). An unreadable file hashes as such
/// (building the client then names the problem).
pub fn access_of(c: &ClusterConfig) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(format!("{:?}|{:?}", c.access, c.request_timeout).as_bytes());
    if let ClusterAccess::Kubeconfig { path, .. } = &c.access {
        match std::fs::read(path) {
            Ok(bytes) => h.update(&bytes),
            Err(e) => h.update(e.to_string().as_bytes()),
        }
    }
    hex::encode(&h.finalize()[..16])
}

/// A cluster's slot and client, and the simulator it runs when it is a `sim` cluster the
/// caller did not provide.
pub(super) async fn build_slot(
    c: &ClusterConfig,
    options: &Options,
    metrics: &crate::metrics::Metrics,
    leading: &Option<tokio::sync::watch::Receiver<bool>>,
    management: Option<&crate::gitops::config::LeaderElectionConfig>,
) -> Result<(Arc<ClusterSlot>, Option<(SimCluster, Workloads)>), ServeError> {
    let mut sim_out = None;
    let fail = |source| ServeError::Cluster {
        cluster: c.name.clone(),
        source,
    };
    let cluster = match &c.access {
        ClusterAccess::Sim(_) if options.sims.contains_key(&c.name) => {
            Cluster::from_client(&c.name, options.sims[&c.name].client())
        }
        ClusterAccess::Sim(s) => {
            let sim = SimCluster::new(&c.name);
            sim.faults().set_latency(s.latency);
            let workloads = sim.spawn_workloads(WorkloadConfig {
                ready_delay: s.ready_delay,
                job_duration: s.ready_delay,
            });
            let cluster = Cluster::from_client(&c.name, sim.client());
            sim_out = Some((sim, workloads));
            cluster
        }
        ClusterAccess::InCluster => Cluster::in_cluster(&c.name).map_err(fail)?,
        // Its handle is the management cluster's: the worker writes work items there.
        ClusterAccess::Agent => {
            let le = management.ok_or_else(|| {
                fail(crate::cluster::ClusterError::Config {
                    cluster: c.name.clone(),
                    reason: "an agent cluster needs leaderElection (the management cluster)".into(),
                })
            })?;
            let client = crate::gitops::leader::election_client(le)
                .await
                .map_err(fail)?;
            Cluster::from_client(&c.name, client)
        }
        ClusterAccess::Kubeconfig { path, context } => {
            Cluster::from_kubeconfig(&c.name, path, context.as_deref())
                .await
                .map_err(fail)?
        }
    }
    .with_request_timeout(c.request_timeout)
    .with_api_metrics(metrics.cluster.clone());
    // With sharding the engine writes through its own handle, gated by the cluster's claim;
    // the leader's spec writes (below) stay gated by leadership. Both may be logged.
    let agent = (c.access == ClusterAccess::Agent).then(|| ClusterAccess::agent_namespace(&c.name));
    let engine = options
        .member
        .as_ref()
        .filter(|_| agent.is_none())
        .map(|member| {
            let gate = member.gate(&c.name);
            let g = gate.clone();
            let handle =
                cluster.sibling(|client| crate::gitops::shard::gate::claim_gated_client(client, g));
            (Arc::new(handle), gate)
        });
    let cluster = match options.member.as_ref().and_then(|m| m.fence.log().cloned()) {
        Some(log) => {
            let (member, name) = (
                options
                    .member
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_default(),
                c.name.clone(),
            );
            cluster.map_client(|client| {
                crate::gitops::shard::gate::logged_client(client, log, member, name, "leader")
            })
        }
        None => cluster,
    };
    // With leader election every write to the cluster checks leadership as it is sent.
    let cluster = match leading {
        Some(l) => cluster
            .map_client(|client| crate::gitops::leader::leader_gated_client(client, l.clone())),
        None => cluster,
    };
    metrics.cluster.set_up(&c.name, false, None);
    metrics
        .cluster
        .init_cluster(&c.name, &crate::cluster::ErrorKind::labels());
    let (stop, _) = tokio::sync::watch::channel(false);
    let slot = Arc::new(ClusterSlot {
        info: ClusterInfo {
            name: c.name.clone(),
            labels: c.labels.clone(),
        },
        labels: Mutex::new(c.labels.clone()),
        access: access_of(c),
        stop: Arc::new(stop),
        cluster: Arc::new(cluster),
        engine,
        agent,
        wake: Notify::new(),
        status: Mutex::new(ClusterStatus {
            name: c.name.clone(),
            labels: c.labels.clone(),
            up: false,
            reason: Some("not probed yet".into()),
            ..Default::default()
        }),
        seen: Mutex::new(None),
        apply: Mutex::new(BTreeSet::new()),
        delete: Mutex::new(BTreeSet::new()),
        relabel: Mutex::new(BTreeSet::new()),
        trigger: Mutex::new(BTreeSet::new()),
        revert: Mutex::new(BTreeMap::new()),
        sent: Mutex::new(BTreeSet::new()),
        observed_changes: Mutex::new(None),
    });
    Ok((slot, sim_out))
}

/// Starts a slot's supervised worker (which starts its engine), stopped by the daemon's stop
/// or the slot's own.
pub(super) fn spawn_worker(shared: &Arc<Shared>, slot: &Arc<ClusterSlot>) {
    let rx = slot.stop.subscribe();
    tokio::spawn(forward_stop(shared.stop_rx.clone(), slot.stop.clone()));
    let (s, sl, r) = (shared.clone(), slot.clone(), rx.clone());
    shared.health.spawn("worker", &slot.info.name, rx, move || {
        worker::cluster_worker(s.clone(), sl.clone(), r.clone())
    });
}

/// Passes the daemon's stop on to a cluster's own stop; ends when either is set. (It must
/// not end on the cluster channel having no receiver: a forwarder that ran before the
/// worker subscribed would end at once, and the worker never stopped.)
async fn forward_stop(
    mut global: tokio::sync::watch::Receiver<bool>,
    own: Arc<tokio::sync::watch::Sender<bool>>,
) {
    let mut removed = own.subscribe();
    tokio::select! {
        _ = global.wait_for(|s| *s) => { let _ = own.send(true); }
        _ = removed.wait_for(|s| *s) => {}
    }
}

impl Shared {
    /// Applies a new kudo.yaml (see the module's guarantees). Returns what changed.
    pub async fn reload(self: &Arc<Self>, new: Config) -> Result<Vec<String>, ReloadError> {
        let _one = self.reload_lock.lock().await;
        let old = self.config();
        let slots = self.slots();
        let accesses: BTreeMap<String, String> = slots
            .iter()
            .map(|s| (s.info.name.clone(), s.access.clone()))
            .collect();
        let plan = plan_reload(&old, &new, &|o, n| {
            o.access != n.access
                || o.request_timeout != n.request_timeout
                || accesses.get(&n.name) != Some(&access_of(n))
        })
        .map_err(ReloadError::NeedsRestart)?;
        if plan.is_empty() && *old == new {
            return Ok(Vec::new());
        }
        // Every new client first: a cluster that cannot be reached by its config refuses
        // the whole reload before anything changed.
        let mut built = BTreeMap::new();
        for c in new
            .clusters
            .iter()
            .filter(|c| plan.added.contains(&c.name) || plan.replaced.contains(&c.name))
        {
            built.insert(
                c.name.clone(),
                build_slot(
                    c,
                    &self.options,
                    &self.metrics,
                    &self.leading,
                    new.leader_election.as_ref(),
                )
                .await?,
            );
        }
        // Stop what leaves (and what is replaced) and wait for its engine to end.
        for name in plan.removed.iter().chain(&plan.replaced) {
            if let Some(slot) = slots.iter().find(|s| s.info.name == *name) {
                let _ = slot.stop.send(true);
                self.health.retire(name).await;
                lock(&self.sims).remove(name);
                if plan.removed.contains(name) {
                    self.metrics.cluster.forget_cluster(name);
                }
            }
        }
        // The new slot list in the new config's order; then the config itself.
        let mut next = Vec::new();
        let mut started = Vec::new();
        for c in &new.clusters {
            if let Some((slot, sim)) = built.remove(&c.name) {
                if let Some(sim) = sim {
                    lock(&self.sims).insert(c.name.clone(), sim);
                }
                started.push(slot.clone());
                next.push(slot);
            } else if let Some(slot) = slots.iter().find(|s| s.info.name == c.name) {
                *lock(&slot.labels) = c.labels.clone();
                lock(&slot.status).labels = c.labels.clone();
                next.push(slot.clone());
            }
        }
        *self.clusters.write().unwrap_or_else(|p| p.into_inner()) = next;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        for slot in &started {
            spawn_worker(self, slot);
        }
        if !plan.added.is_empty()
            || !plan.removed.is_empty()
            || !plan.replaced.is_empty()
            || !plan.relabelled.is_empty()
        {
            self.clusters_epoch
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.sync_now(None);
        }
        self.request_plan();
        let changes = plan.describe();
        Ok(changes)
    }

    /// Loads `path` and applies it ([`Shared::reload`]); the outcome is logged and kept for
    /// the status. `overrides` are the command line's (kept across reloads).
    pub async fn reload_from(
        self: &Arc<Self>,
        path: &Path,
        overrides: &Overrides,
    ) -> Result<Vec<String>, String> {
        let result = match Config::load(path) {
            Ok(mut c) => {
                overrides.apply(&mut c);
                self.reload(c).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        // Other members compare this hash with the leader's: the file as now running (also
        // after an edit that changed nothing, so a replica started later agrees).
        if let (true, Some(member), Ok(bytes)) =
            (result.is_ok(), &self.options.member, std::fs::read(path))
        {
            member.set_config_hash(&crate::gitops::shard::member::config_hash(&bytes));
        }
        let mut status = lock(&self.reload_status);
        match &result {
            Ok(changes) if changes.is_empty() => {
                status.error = None;
            }
            Ok(changes) => {
                info!(file = %path.display(), changes = %changes.join("; "), "kudo.yaml reloaded");

                status.applied += 1;
                status.applied_at = Some(jiff::Timestamp::now().as_second());
                status.changes = changes.clone();
                status.error = None;
                self.metrics.gitops.count_reload(true);
            }
            Err(e) => {
                warn!(file = %path.display(), error = %e, "kudo.yaml reload refused; the running config stays");
                status.error = Some(e.clone());
                self.metrics.gitops.count_reload(false);
            }
        }
        result
    }

    /// The last reload's outcome.
    pub fn reload_status(&self) -> ReloadStatus {
        lock(&self.reload_status).clone()
    }
}

/// What the command line overrides in kudo.yaml (`--listen`, `--cache-dir`), applied to the
/// file at start and at every reload.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<std::net::SocketAddr>,
    pub cache_dir: Option<PathBuf>,
}

impl Overrides {
    pub fn apply(&self, config: &mut Config) {
        if let Some(l) = self.listen {
            config.listen = l;
        }
        if let Some(d) = &self.cache_dir {
            config.cache_dir = d.clone();
        }
    }
}

/// Reloads kudo.yaml at `path` on SIGHUP and whenever the file (or a kubeconfig it names)
/// changes, until `stop`.
pub async fn reload_on_change(
    shared: Arc<Shared>,
    path: PathBuf,
    overrides: Overrides,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    let dir_of = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    dirs.insert(dir_of(&path));
    for c in &shared.config().clusters {
        if let ClusterAccess::Kubeconfig { path, .. } = &c.access {
            dirs.insert(dir_of(path));
        }
    }
    let mut watchers = Vec::new();
    for d in &dirs {
        match crate::gitops::git::watch_dir(d, shared.options.debounce, tx.clone()) {
            Ok(w) => watchers.push(w),
            Err(e) => {
                warn!(dir = %d.display(), error = %e, "cannot watch for kudo.yaml changes; SIGHUP still reloads");
            }
        }
    }
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            _ = hangup => info!(file = %path.display(), "SIGHUP: reloading kudo.yaml"),
            got = rx.recv() => if got.is_none() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let _ = shared.reload_from(&path, &overrides).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: the forwarder ran before the worker subscribed, saw no receiver, ended,
    /// and the daemon's stop never reached the worker (shutdown waited 30 s per task).
    #[tokio::test(flavor = "current_thread")]
    async fn the_daemons_stop_reaches_a_cluster_whose_worker_subscribed_late() {
        let (global_tx, global_rx) = tokio::sync::watch::channel(false);
        let (own, _) = tokio::sync::watch::channel(false);
        let own = Arc::new(own);
        tokio::spawn(forward_stop(global_rx, own.clone()));
        // The forwarder runs first, before any worker holds a receiver.
        tokio::task::yield_now().await;
        let mut worker = own.subscribe();
        let _ = global_tx.send(true);
        let stopped =
            tokio::time::timeout(std::time::Duration::from_secs(10), worker.wait_for(|s| *s)).await;
        assert!(
            matches!(stopped, Ok(Ok(_))),
            "the worker never saw the stop"
        );
    }

    fn config(text: &str) -> Config {
        Config::parse("kudo.yaml", text, Path::new("/tmp")).expect("config")
    }

    const BASE: &str = "repositories:\n  - {name: r, url: https://git.example.com/a.git}\nclusters:\n  - {name: a, sim: {}, labels: {env: dev}}\n  - {name: b, sim: {}}\n";

    #[test]
    fn clusters_added_removed_relabelled_and_paused_are_told_apart() {
        let old = config(BASE);
        let new = config(
            "repositories:\n  - {name: r, url: https://git.example.com/a.git}\nclusters:\n  - {name: a, sim: {}, labels: {env: prod}, paused: true}\n  - {name: c, sim: {}}\n",
        );
        let plan = plan_reload(&old, &new, &|o, n| o.access != n.access).expect("plan");
        assert_eq!(plan.added, vec!["c"]);
        assert_eq!(plan.removed, vec!["b"]);
        assert_eq!(plan.relabelled, vec!["a"]);
        assert!(plan.replaced.is_empty());
        assert_eq!(plan.other, vec!["cluster a: paused"]);
        let same = plan_reload(&old, &config(BASE), &|o, n| o.access != n.access).expect("plan");
        assert!(same.is_empty(), "{same:?}");
    }

    #[test]
    fn changed_access_replaces_and_fixed_fields_refuse_the_reload() {
        let old = config(BASE);
        let plan = plan_reload(&old, &config(BASE), &|_, n| n.name == "b").expect("plan");
        assert_eq!(plan.replaced, vec!["b"]);
        let err = plan_reload(
            &old,
            &config(
                "repositories:\n  - {name: r2, url: https://git.example.com/a.git}\ncontrolPlane: other\nclusters:\n  - {name: a, sim: {}}\n",
            ),
            &|_, _| false,
        )
        .expect_err("refused");
        assert!(
            err.contains("repositories, controlPlane changed") && err.contains("restart"),
            "{err}"
        );
    }
}
