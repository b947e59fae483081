//! The `kudo serve` daemon: repositories are synced into desired states, every cluster has
//! its own worker (CRDs, applying specs, deleting removed instances, observing progress) and
//! its own engine controller, and the rollout planner decides from the observations which
//! cluster gets which spec next.
//!
//! Tasks and what they share:
//! - one sync task per repository: on each new revision, load and validate it (pure) and keep
//!   it as that repository's last good revision only when it has no error;
//! - one worker per cluster: never waits on another cluster; each request has the cluster's
//!   own timeout, and a failing cluster is marked down and retried;
//! - the planner runs after every observation: [`crate::gitops::rollout::plan`] per instance,
//!   then wakes the workers that have something to apply, so the next wave starts on the
//!   completion event.
//!
//! Files: `state` (what the tasks share), `sync` (repositories), `worker` (clusters),
//! `planner` (rollout and ownership decisions), `status` (the status views), `http` (the API),
//! `rollouts` (rollout actions) and `rollout_store` (where the rollout state is kept); this
//! file starts and stops the tasks. `super::serve` re-exports the public names.

mod agents;
mod console;
mod gates;
mod http;
mod planner;
#[cfg(test)]
mod planner_tests;
pub mod reload;
pub mod rollout_store;
pub mod rollouts;
mod state;
mod status;
#[cfg(test)]
mod status_tests;
mod sync;
mod worker;

pub use http::{Caller, router, serve_http};
pub use state::{
    ClusterProgressView, ClusterStatus, CommitInfo, GateView, InstanceStatusView, PlanSummary,
    RepoStatus, Shared, StageView, StatusDoc,
};
pub use worker::{apply_instance, apply_instance_as, install_crds};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::warn;

use crate::cluster::ClusterError;
use crate::gitops::config::{Config, Source};
use crate::gitops::git::watch_dir;
use crate::sim::SimCluster;

/// Field manager of everything the control plane applies.
pub const FIELD_MANAGER: &str = "kudo-gitops";
/// Annotation recording the revision that last applied an object.
pub const REVISION_ANNOTATION: &str = "kudo.dev/git-revision";
/// Label marking Instances `kudo serve` applies (see [`crate::gitops::ownership`] for whose).
pub const MANAGED_LABEL: &str = crate::gitops::ownership::MANAGED_LABEL;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cluster {cluster}: {source}")]
    Cluster {
        cluster: String,
        #[source]
        source: ClusterError,
    },
    #[error("rollout state {0}")]
    RolloutState(String),
    #[error(transparent)]
    RolloutStore(#[from] rollout_store::StoreError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

/// Tuning knobs (tests shorten them).
#[derive(Debug, Clone)]
pub struct Options {
    /// How often each cluster worker re-observes its Instances without an event.
    pub observe_interval: Duration,
    /// How often a cluster worker asks the API server whether it answers (`GET /version`).
    /// Instances come from the watch cache and an open watch stays quiet through a
    /// partition, so without this probe a converged cluster would never be seen down.
    pub probe_interval: Duration,
    /// The clock of rollout timing (bake, progress deadlines); tests move a manual one.
    pub clock: crate::util::clock::Clock,
    /// The engine's re-check interval for running plans.
    pub engine_poll: Duration,
    /// Quiet period before a changed local directory is loaded.
    pub debounce: Duration,
    /// Simulated clusters the caller built (by cluster name): used instead of new ones for
    /// `sim` clusters of that name, so they outlive the daemon (restart measurements). The
    /// caller runs their workload simulators.
    pub sims: BTreeMap<String, SimCluster>,
    /// Set when sharding is on: this replica's membership (see [`crate::gitops::shard`]).
    /// Engines then run on the clusters whose claim this member holds, and every cluster's
    /// Instances are watched whether or not this replica drives it.
    pub member: Option<Arc<crate::gitops::shard::member::Member>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            observe_interval: Duration::from_secs(2),
            probe_interval: Duration::from_secs(10),
            clock: crate::util::clock::Clock::system(),
            engine_poll: Duration::from_secs(2),
            debounce: Duration::from_millis(300),
            sims: BTreeMap::new(),
            member: None,
        }
    }
}

/// A running daemon. Dropping it stops nothing; call [`Daemon::shutdown`].
pub struct Daemon {
    pub shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _watchers: Vec<notify::RecommendedWatcher>,
}

impl Daemon {
    /// Starts every task. Clusters given in `extra` (name → client) replace the config's
    /// access for that name (tests hand in clients they built).
    pub async fn start(config: Config, options: Options) -> Result<Daemon, ServeError> {
        Self::start_mode(config, options, false, None).await
    }

    /// Starts a daemon that syncs and reports what it would change (the status API's
    /// `pendingChanges` per cluster, and the log) without writing to any cluster.
    pub async fn start_dry_run(config: Config, options: Options) -> Result<Daemon, ServeError> {
        Self::start_mode(config, options, true, None).await
    }

    /// Like [`Daemon::start`], but cluster workers (every write to clusters, the engine
    /// included) wait until `leading` is true. When it turns false every write stops: the
    /// clusters' clients refuse writes and the engines stop; `kudo serve` then exits.
    pub async fn start_gated(
        config: Config,
        options: Options,
        leading: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<Daemon, ServeError> {
        Self::start_mode(config, options, false, leading).await
    }

    async fn start_mode(
        config: Config,
        options: Options,
        dry_run: bool,
        leading: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Result<Daemon, ServeError> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let (mut registry, metrics) = crate::metrics::registry();
        let mut sims = BTreeMap::new();
        let mut slots = Vec::new();
        for c in &config.clusters {
            let (slot, sim) = reload::build_slot(
                c,
                &options,
                &metrics,
                &leading,
                config.leader_election.as_ref(),
            )
            .await?;
            if let Some(sim) = sim {
                sims.insert(c.name.clone(), sim);
            }
            slots.push(slot);
        }
        let repo_wake = config
            .repositories
            .iter()
            .map(|r| (r.name.clone(), Arc::new(Notify::new())))
            .collect();
        let repos = config
            .repositories
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    RepoStatus {
                        name: r.name.clone(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        for r in &config.repositories {
            metrics.gitops.init_repository(&r.name);
        }
        let notifier = crate::notify::Notifier::start(&config.notifications, &mut registry);
        let health = crate::gitops::supervise::Health::register(&mut registry);
        let opened = rollout_store::open(&config, leading.as_ref(), dry_run).await?;
        let shared = Arc::new(Shared {
            config: RwLock::new(Arc::new(config.clone())),
            options,
            plan_wake: Notify::new(),
            clusters: RwLock::new(slots),
            clusters_epoch: Default::default(),
            stop_rx: stop_rx.clone(),
            sims: Mutex::new(sims),
            reload_status: Mutex::new(reload::ReloadStatus::default()),
            reload_lock: tokio::sync::Mutex::new(()),
            repos: Mutex::new(repos),
            repo_wake,
            desired: RwLock::new(None),
            rollouts: Mutex::new(BTreeMap::new()),
            passes: Default::default(),
            rollout_memory: Mutex::new(BTreeMap::new()),
            rollout_pauses: Mutex::new(BTreeMap::new()),
            rollout_saved: Mutex::new(None),
            rollout_sink: opened.sink,
            rollout_current: std::sync::atomic::AtomicBool::new(opened.current),
            rollout_state_error: Mutex::new(None),
            good_specs: Mutex::new(BTreeMap::new()),
            gate_verdicts: Mutex::new(BTreeMap::new()),
            observations: Default::default(),
            planned: Mutex::new(PlanSummary::default()),
            registry: Arc::new(registry),
            engine_metrics: metrics.engine.clone(),
            metrics,
            revision_times: Mutex::new(BTreeMap::new()),
            converging: Mutex::new(BTreeSet::new()),
            pass_lock: Mutex::new(()),
            notifier,
            dry_run,
            leading: leading.clone(),
            confirmations: Mutex::new(BTreeMap::new()),
            loopback: std::sync::atomic::AtomicBool::new(config.listen.ip().is_loopback()),
            sync_epoch: std::sync::atomic::AtomicU64::new(0),
            health,
            hook_limiter: crate::gitops::webhook::RateLimiter::new(config.webhook),
            sessions: Default::default(),
            live: tokio::sync::watch::channel(Arc::default()).0,
            live_wake: Notify::new(),
            server_id: uuid::Uuid::new_v4().simple().to_string(),
            streams: Default::default(),
            login_limiter: crate::gitops::webhook::RateLimiter::new(
                crate::gitops::config::WebhookConfig {
                    rate_per_minute: 30,
                    burst: 10,
                },
            ),
        });
        shared.install_rollout_state(opened.saved);
        let mut tasks = Vec::new();
        if let Some((store, saves)) = opened.keeper {
            tasks.push(tokio::spawn(rollout_store::keeper(
                shared.clone(),
                store,
                saves,
                stop_rx.clone(),
            )));
        }
        tasks.push(tokio::spawn(console::publisher(
            shared.clone(),
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(gates::gate_evaluator(
            shared.clone(),
            stop_rx.clone(),
        )));
        let (s, rx) = (shared.clone(), stop_rx.clone());
        shared
            .health
            .spawn("planner", "", stop_rx.clone(), move || {
                planner::planner(s.clone(), rx.clone())
            });
        tasks.push(tokio::spawn(mirror_leader(
            leading,
            shared.metrics.leader.clone(),
            stop_rx.clone(),
        )));
        let mut watchers = Vec::new();
        for slot in &shared.slots() {
            reload::spawn_worker(&shared, slot);
        }
        for repo in &config.repositories {
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            if let Source::Dir(path) = &repo.source {
                match watch_dir(path, shared.options.debounce, tx) {
                    Ok(w) => watchers.push(w),
                    Err(e) => {
                        warn!(repository = %repo.name, error = %e, "cannot watch; polling only");
                    }
                }
            }
            tasks.push(tokio::spawn(sync::repo_task(
                shared.clone(),
                repo.clone(),
                rx,
                stop_rx.clone(),
            )));
        }
        Ok(Daemon {
            shared,
            stop,
            tasks,
            _watchers: watchers,
        })
    }

    /// Stops every task and waits for them, the engines included (none writes after this).
    /// Returns the tasks that did not stop in time (a stop signal that did not reach them);
    /// tests assert there are none.
    pub async fn shutdown(self) -> Vec<String> {
        let _ = self.stop.send(true);
        let mut late = Vec::new();
        for (i, t) in self.tasks.into_iter().enumerate() {
            if tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .is_err()
            {
                late.push(format!("daemon task {i}"));
            }
        }
        late.extend(self.shared.health.join().await);
        late
    }
}

/// Keeps `kudo_leader` in step with the election (1 when there is none).
async fn mirror_leader(
    leading: Option<tokio::sync::watch::Receiver<bool>>,
    metrics: crate::metrics::leader::LeaderMetrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(mut leading) = leading else {
        metrics.leader.set(1);
        return;
    };
    loop {
        metrics.leader.set(i64::from(*leading.borrow_and_update()));
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Resolves the embedded default's relative paths against `dir` (the current directory).
pub fn default_config(dir: &Path) -> Result<Config, crate::gitops::config::ConfigError> {
    Config::embedded(dir)
}
