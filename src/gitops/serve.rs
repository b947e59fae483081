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
//! - the planner runs after every observation: [`rollout::plan`] per instance, then wakes the
//!   workers that have something to apply, so the next wave starts on the completion event.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::config::{ClusterAccess, Config, Repository, Source};
use super::desired::{self, DesiredInstance, DesiredState, short};
use super::git::{GitSource, content_revision, next_poll, watch_dir};
use super::placement::ClusterInfo;
use super::rollout::{self, Progress, State};
use crate::api::Instance;
use crate::cluster::{Cluster, ClusterError, ObjectRef};
use crate::metrics::gitops::{RolloutState, SyncResult};
use crate::package::DirTree;
use crate::sim::SimCluster;
use crate::sim::workload::{WorkloadConfig, Workloads};

/// Field manager of everything the control plane applies.
pub const FIELD_MANAGER: &str = "kudo-gitops";
/// Annotation recording the revision that last applied an object.
pub const REVISION_ANNOTATION: &str = "kudo.dev/git-revision";
/// Label marking Instances `kudo serve` applies (see [`super::ownership`] for whose).
pub const MANAGED_LABEL: &str = super::ownership::MANAGED_LABEL;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cluster {cluster}: {source}")]
    Cluster {
        cluster: String,
        #[source]
        source: ClusterError,
    },
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
    /// The engine's re-check interval for running plans.
    pub engine_poll: Duration,
    /// Quiet period before a changed local directory is loaded.
    pub debounce: Duration,
    /// Simulated clusters the caller built (by cluster name): used instead of new ones for
    /// `sim` clusters of that name, so they outlive the daemon (restart measurements). The
    /// caller runs their workload simulators.
    pub sims: BTreeMap<String, SimCluster>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            observe_interval: Duration::from_secs(2),
            engine_poll: Duration::from_secs(2),
            debounce: Duration::from_millis(300),
            sims: BTreeMap::new(),
        }
    }
}

/// A repository's sync state, as the status API shows it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoStatus {
    pub name: String,
    /// The newest revision seen (good or not).
    pub revision: Option<String>,
    /// The revision being applied (the last one without errors).
    pub applied_revision: Option<String>,
    /// Problems of `revision` (or of the sync itself); empty when it is applied.
    pub errors: Vec<String>,
    pub consecutive_failures: u32,
    /// Deletions of the applied revision waiting for confirmation (over `maxDeletions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_deletions: Option<super::ownership::HeldDeletions>,
    /// Why the webhook refuses this repository (its secret file unreadable or empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_error: Option<String>,
    #[serde(skip)]
    pub good: Option<Arc<DesiredState>>,
    /// The sync epoch (see `Shared::sync_epoch`) of the last sync that reached the source,
    /// and of the one that loaded `good`.
    #[serde(skip)]
    pub synced_epoch: u64,
    #[serde(skip)]
    pub loaded_epoch: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub up: bool,
    /// Error category and message when down.
    pub reason: Option<String>,
    /// Under `--dry-run`: what would be changed on this cluster (nothing is written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending_changes: Vec<String>,
    /// Instances no longer declared here that are kept, each with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_instances: Vec<String>,
    /// Instances of the desired state that another control plane owns here (not applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatusView {
    pub namespace: String,
    pub name: String,
    pub framework: String,
    pub version: String,
    pub revision: String,
    pub rollout: State,
    pub clusters: BTreeMap<String, ClusterProgressView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterProgressView {
    pub progress: Progress,
    /// Plan name → status on that cluster (whatever spec it runs).
    pub plans: BTreeMap<String, String>,
    /// The revision that last applied the live Instance there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The running (or last) plan: phase, step, steps done of total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<super::status::PlanDetail>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    pub repositories: Vec<RepoStatus>,
    pub clusters: Vec<ClusterStatus>,
    pub instances: Vec<InstanceStatusView>,
}

/// What a cluster worker saw of one Instance.
#[derive(Debug, Clone)]
struct Seen {
    instance: Instance,
    owner: super::ownership::Owner,
}

impl Seen {
    fn new(instance: Instance, control_plane: &str) -> Seen {
        let owner = super::ownership::owner_of(
            instance
                .metadata
                .labels
                .as_ref()
                .unwrap_or(&BTreeMap::new()),
            control_plane,
        );
        Seen { instance, owner }
    }

    fn live(&self) -> super::ownership::Live {
        super::ownership::Live {
            owner: self.owner.clone(),
            protected: self
                .instance
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(super::ownership::DELETION_PROTECTION_ANNOTATION))
                .is_some_and(|v| v == "true"),
            deleting: self.instance.metadata.deletion_timestamp.is_some(),
        }
    }
}

struct ClusterSlot {
    info: ClusterInfo,
    cluster: Arc<Cluster>,
    wake: Notify,
    status: Mutex<ClusterStatus>,
    /// Managed Instances by `namespace/name`, from the last successful observation.
    seen: Mutex<Option<BTreeMap<String, Seen>>>,
    /// Instance keys to apply the desired spec to now (from the planner).
    apply: Mutex<BTreeSet<String>>,
    /// Instance keys to delete now (from the planner's [`super::ownership::decide`]).
    delete: Mutex<BTreeSet<String>>,
    /// Instance keys whose ownership labels to rewrite (legacy or moved instances).
    relabel: Mutex<BTreeSet<String>>,
}

pub struct Shared {
    config: Config,
    options: Options,
    clusters: Vec<Arc<ClusterSlot>>,
    /// Cluster name → index into `clusters` (the planner looks up every target).
    cluster_index: std::collections::HashMap<String, usize>,
    /// Wakes the planner task: observations coalesce into one pass over every instance.
    plan_wake: Notify,
    repos: Mutex<BTreeMap<String, RepoStatus>>,
    repo_wake: BTreeMap<String, Arc<Notify>>,
    desired: RwLock<Option<Arc<DesiredState>>>,
    rollouts: Mutex<BTreeMap<String, State>>,
    /// Planner passes so far (tests wait on progress, not on time).
    passes: std::sync::atomic::AtomicU64,
    /// What the last planner pass concluded, per revision (cheap to read while converging).
    planned: Mutex<PlanSummary>,
    /// Every subsystem's metrics, served at `/metrics`.
    registry: Arc<prometheus_client::registry::Registry>,
    engine_metrics: Arc<crate::metrics::EngineMetrics>,
    metrics: crate::metrics::Metrics,
    /// Revision → Unix time of its commit (or of it being first seen, for directories).
    revision_times: Mutex<BTreeMap<String, i64>>,
    /// Instances the planner applied a new spec for, until their rollout completes
    /// (the commit-to-converged clock runs for those only).
    converging: Mutex<BTreeSet<String>>,
    /// Notification sinks (never waited on).
    notifier: crate::notify::Notifier,
    /// `--dry-run`: sync and report, never write to a cluster (no CRDs, no engine).
    dry_run: bool,
    /// With leader election: whether this replica leads (only then do workers write).
    leading: Option<tokio::sync::watch::Receiver<bool>>,
    /// Repository → (revision, deletions confirmed for it), from the API or a trailer.
    confirmations: Mutex<BTreeMap<String, (String, u32)>>,
    /// Whether the HTTP listener is a loopback address (writes without tokens need it).
    loopback: std::sync::atomic::AtomicBool,
    /// Counts finished syncs, to order them across repositories (see `RepoStatus`).
    sync_epoch: std::sync::atomic::AtomicU64,
    /// The supervised core tasks (planner, workers, engines): restarts and readiness.
    health: Arc<super::supervise::Health>,
    /// The webhook endpoint's token bucket (`webhook:` in kudo.yaml).
    hook_limiter: super::webhook::RateLimiter,
}

/// The last planner pass in numbers: rollouts of the desired revision by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    /// The desired state's revision the pass planned (combined: `a,b`).
    pub revision: String,
    pub instances: usize,
    pub complete: usize,
    pub halted: usize,
}

/// A running daemon. Dropping it stops nothing; call [`Daemon::shutdown`].
pub struct Daemon {
    pub shared: Arc<Shared>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _sims: Vec<(SimCluster, Workloads)>,
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
        let mut sims = Vec::new();
        let mut slots = Vec::new();
        for c in &config.clusters {
            let cluster = match &c.access {
                ClusterAccess::Sim(_) if options.sims.contains_key(&c.name) => {
                    let sim = &options.sims[&c.name];
                    Cluster::from_client(&c.name, sim.client())
                }
                ClusterAccess::Sim(s) => {
                    let sim = SimCluster::new(&c.name);
                    sim.faults().set_latency(s.latency);
                    let workloads = sim.spawn_workloads(WorkloadConfig {
                        ready_delay: s.ready_delay,
                        job_duration: s.ready_delay,
                    });
                    let cluster = Cluster::from_client(&c.name, sim.client());
                    sims.push((sim, workloads));
                    cluster
                }
                ClusterAccess::InCluster => {
                    Cluster::in_cluster(&c.name).map_err(|source| ServeError::Cluster {
                        cluster: c.name.clone(),
                        source,
                    })?
                }
                ClusterAccess::Kubeconfig { path, context } => {
                    Cluster::from_kubeconfig(&c.name, path, context.as_deref())
                        .await
                        .map_err(|source| ServeError::Cluster {
                            cluster: c.name.clone(),
                            source,
                        })?
                }
            }
            .with_request_timeout(c.request_timeout)
            .with_api_metrics(metrics.cluster.clone());
            // With leader election every write to the cluster checks leadership as it is sent.
            let cluster = match &leading {
                Some(l) => cluster
                    .map_client(|client| super::leader::leader_gated_client(client, l.clone())),
                None => cluster,
            };
            metrics.cluster.set_up(&c.name, false, None);
            metrics
                .cluster
                .init_cluster(&c.name, &crate::cluster::ErrorKind::labels());
            slots.push(Arc::new(ClusterSlot {
                info: ClusterInfo {
                    name: c.name.clone(),
                    labels: c.labels.clone(),
                },
                cluster: Arc::new(cluster),
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
            }));
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
        let health = super::supervise::Health::register(&mut registry);
        let shared = Arc::new(Shared {
            config: config.clone(),
            options,
            cluster_index: slots
                .iter()
                .enumerate()
                .map(|(i, s)| (s.info.name.clone(), i))
                .collect(),
            plan_wake: Notify::new(),
            clusters: slots,
            repos: Mutex::new(repos),
            repo_wake,
            desired: RwLock::new(None),
            rollouts: Mutex::new(BTreeMap::new()),
            passes: Default::default(),
            planned: Mutex::new(PlanSummary::default()),
            registry: Arc::new(registry),
            engine_metrics: metrics.engine.clone(),
            metrics,
            revision_times: Mutex::new(BTreeMap::new()),
            converging: Mutex::new(BTreeSet::new()),
            notifier,
            dry_run,
            leading: leading.clone(),
            confirmations: Mutex::new(BTreeMap::new()),
            loopback: std::sync::atomic::AtomicBool::new(config.listen.ip().is_loopback()),
            sync_epoch: std::sync::atomic::AtomicU64::new(0),
            health,
            hook_limiter: super::webhook::RateLimiter::new(config.webhook),
        });
        let mut tasks = Vec::new();
        let (s, rx) = (shared.clone(), stop_rx.clone());
        shared
            .health
            .spawn("planner", "", stop_rx.clone(), move || {
                planner(s.clone(), rx.clone())
            });
        tasks.push(tokio::spawn(mirror_leader(
            leading,
            shared.metrics.leader.clone(),
            stop_rx.clone(),
        )));
        let mut watchers = Vec::new();
        for slot in &shared.clusters {
            let (s, slot, rx) = (shared.clone(), slot.clone(), stop_rx.clone());
            let name = slot.info.name.clone();
            shared
                .health
                .spawn("worker", &name, stop_rx.clone(), move || {
                    cluster_worker(s.clone(), slot.clone(), rx.clone())
                });
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
            tasks.push(tokio::spawn(repo_task(
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
            _sims: sims,
            _watchers: watchers,
        })
    }

    /// Stops every task and waits for them, the engines included (none writes after this).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.shared.health.join().await;
    }
}

impl Shared {
    /// Asks repositories to sync now (the webhook). `None`: all of them.
    pub fn sync_now(&self, repos: Option<&[String]>) {
        for (name, wake) in &self.repo_wake {
            if repos.is_none_or(|r| r.contains(name)) {
                wake.notify_one();
            }
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether the HTTP listener is a loopback address.
    pub fn loopback_listener(&self) -> bool {
        self.loopback.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn notifier(&self) -> &crate::notify::Notifier {
        &self.notifier
    }

    /// True without leader election, else whether this replica holds the lease.
    pub fn is_leader(&self) -> bool {
        self.leading.as_ref().is_none_or(|l| *l.borrow())
    }

    /// The OpenMetrics text `/metrics` serves.
    pub fn metrics_text(&self) -> String {
        crate::metrics::encode(&self.registry)
    }

    /// What the last planner pass concluded (see [`PlanSummary`]).
    pub fn plan_summary(&self) -> PlanSummary {
        lock(&self.planned).clone()
    }

    pub fn passes(&self) -> u64 {
        self.passes.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// "This process can do its job": a desired state was loaded and no core task (planner,
    /// a cluster's worker or engine) is down. A stuck repository or a down cluster shows in
    /// status and metrics, not here: restarting the process would not fix either.
    pub fn ready(&self) -> bool {
        self.not_ready_reason().is_none()
    }

    /// Why [`Shared::ready`] is false.
    pub fn not_ready_reason(&self) -> Option<String> {
        let has_desired = self
            .desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if !has_desired {
            return Some("no desired state loaded yet".to_string());
        }
        let down = self.health.down();
        (!down.is_empty()).then(|| format!("core tasks down: {}", down.join(", ")))
    }

    pub fn status(&self) -> StatusDoc {
        let repositories = lock(&self.repos).values().cloned().collect();
        let clusters = self
            .clusters
            .iter()
            .map(|c| lock(&c.status).clone())
            .collect();
        let desired = self
            .desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let rollouts = lock(&self.rollouts).clone();
        let mut instances = Vec::new();
        if let Some(d) = desired {
            for (key, inst) in &d.instances {
                let mut per = BTreeMap::new();
                for name in &inst.targets {
                    let Some(slot) = self.slot(name) else {
                        continue;
                    };
                    let seen = lock(&slot.seen);
                    let live = seen.as_ref().and_then(|s| s.get(key)).map(|s| &s.instance);
                    let plans = live
                        .and_then(|i| i.status.as_ref())
                        .map(|s| {
                            s.plan_status
                                .iter()
                                .map(|(k, p)| {
                                    (
                                        k.clone(),
                                        p.status.map(|s| s.to_string()).unwrap_or_default(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    per.insert(
                        name.clone(),
                        ClusterProgressView {
                            progress: rollout::observe(
                                live,
                                &inst.operator_version,
                                &inst.parameters,
                            ),
                            plans,
                            revision: live.and_then(|i| {
                                i.metadata
                                    .annotations
                                    .as_ref()?
                                    .get(REVISION_ANNOTATION)
                                    .cloned()
                            }),
                            detail: live.and_then(super::status::plan_detail),
                        },
                    );
                }
                instances.push(InstanceStatusView {
                    namespace: inst.namespace.clone(),
                    name: inst.name.clone(),
                    framework: inst.framework.clone(),
                    version: inst.version.clone(),
                    revision: d.revision.clone(),
                    rollout: rollouts
                        .get(key)
                        .cloned()
                        .unwrap_or(State::Progressing { wave: 0, waves: 0 }),
                    clusters: per,
                });
            }
        }
        StatusDoc {
            repositories,
            clusters,
            instances,
        }
    }

    /// One desired instance (by name, and namespace when given) on each of its clusters:
    /// the live Instance and the OperatorVersion it runs. Errors name what matched.
    pub fn instance_detail(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<super::status::InstanceDetail, String> {
        let desired = self
            .desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| "no desired state yet (no repository synced)".to_string())?;
        let matches: Vec<&DesiredInstance> = desired
            .instances
            .values()
            .filter(|i| i.name == name && namespace.is_none_or(|n| n == i.namespace))
            .collect();
        let inst = match matches.as_slice() {
            [one] => *one,
            [] => {
                let known: Vec<String> = desired.instances.keys().cloned().collect();
                return Err(format!(
                    "instance {name:?}{} is not in the desired state (instances: {})",
                    namespace
                        .map(|n| format!(" in namespace {n:?}"))
                        .unwrap_or_default(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
            many => {
                let keys: Vec<String> = many.iter().map(|i| i.key()).collect();
                return Err(format!(
                    "instance {name:?} exists in several namespaces ({}); name one",
                    keys.join(", ")
                ));
            }
        };
        let key = inst.key();
        let mut clusters = BTreeMap::new();
        let sensitive = super::diff::sensitive_names(&desired, inst);
        for target in &inst.targets {
            let Some(slot) = self.slot(target) else {
                continue;
            };
            let live = lock(&slot.seen)
                .as_ref()
                .and_then(|s| s.get(&key))
                .map(|s| s.instance.clone());
            let ov_name = live
                .as_ref()
                .and_then(|i| i.spec.operator_version.name.clone())
                .unwrap_or_else(|| inst.operator_version.clone());
            let mut operator_version = desired
                .frameworks
                .values()
                .find(|f| f.operator_version.metadata.name.as_deref() == Some(ov_name.as_str()))
                .map(|f| f.operator_version.clone());
            // Sensitive parameters never leave the process in an answer.
            let mut shown = live.clone();
            if let Some(i) = shown.as_mut() {
                let mut names = sensitive.clone();
                if let Some(ov) = &operator_version {
                    names.extend(crate::package::redact::sensitive_names(&ov.spec.parameters));
                }
                crate::package::redact::mask_instance(i, &names);
            }
            if let Some(ov) = operator_version.as_mut() {
                crate::package::redact::mask_operator_version(ov);
            }
            clusters.insert(
                target.clone(),
                super::status::ClusterInstance {
                    progress: rollout::observe(
                        live.as_ref(),
                        &inst.operator_version,
                        &inst.parameters,
                    )
                    .as_str()
                    .to_string(),
                    instance: shown,
                    operator_version,
                    up: lock(&slot.status).up,
                },
            );
        }
        let rollout = match lock(&self.rollouts).get(&key) {
            Some(State::Complete) => "Complete",
            Some(State::Halted { .. }) => "Halted",
            _ => "Progressing",
        };
        Ok(super::status::InstanceDetail {
            namespace: inst.namespace.clone(),
            name: inst.name.clone(),
            revision: desired.revision.clone(),
            rollout: rollout.to_string(),
            clusters,
        })
    }

    /// Combines the repositories' good revisions into one desired state; an instance defined
    /// by two repositories is kept from the first and reported.
    fn recombine(&self) {
        let repos = lock(&self.repos);
        let mut combined: Option<DesiredState> = None;
        for r in repos.values() {
            let Some(good) = &r.good else { continue };
            let mut good = (**good).clone();
            for inst in good.instances.values_mut() {
                inst.repository = r.name.clone();
            }
            let good = &good;
            match &mut combined {
                None => combined = Some(good.clone()),
                Some(c) => {
                    c.revision = format!("{},{}", c.revision, good.revision);
                    c.frameworks.extend(good.frameworks.clone());
                    for (k, v) in &good.instances {
                        if c.instances.contains_key(k) {
                            warn!(repository = %r.name, instance = %k, "instance defined by two repositories; keeping the first");
                        } else {
                            c.instances.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        drop(repos);
        if let Some(c) = &combined {
            let secrets = super::diff::all_secrets(c);
            crate::package::redact::set_process_secrets(secrets.clone());
            self.notifier.set_secrets(secrets);
        }
        *self.desired.write().unwrap_or_else(|p| p.into_inner()) = combined.map(Arc::new);
        self.plan();
    }

    fn slot(&self, name: &str) -> Option<&Arc<ClusterSlot>> {
        self.cluster_index
            .get(name)
            .and_then(|&i| self.clusters.get(i))
    }

    /// Asks the planner task for a pass; requests made while a pass runs coalesce into the
    /// next one, so a thousand cluster observations cost a few passes, not a thousand.
    fn request_plan(&self) {
        self.plan_wake.notify_one();
    }

    /// The planner: per instance, which clusters get its spec now. Wakes the workers that
    /// have new work.
    fn plan(&self) {
        self.passes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(desired) = self
            .desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let mut apply: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut states = BTreeMap::new();
        for (key, inst) in &desired.instances {
            let mut observed = BTreeMap::new();
            for name in &inst.targets {
                let Some(slot) = self.slot(name) else {
                    continue;
                };
                let seen = lock(&slot.seen);
                // A cluster never observed is unknown: it is not applied to until it answers.
                let progress = match seen.as_ref() {
                    None => Progress::Pending,
                    Some(s) => match s.get(key) {
                        Some(Seen {
                            owner: super::ownership::Owner::Foreign(other),
                            ..
                        }) => Progress::Failed(format!(
                            "Instance {key} on cluster {name} belongs to control plane {other:?}; not touched"
                        )),
                        live => rollout::observe(
                            live.map(|s| &s.instance),
                            &inst.operator_version,
                            &inst.parameters,
                        ),
                    },
                };
                observed.insert(name.clone(), progress);
            }
            let waves = rollout::waves(inst.strategy, &inst.targets, &inst.canary);
            let p = rollout::plan(&waves, &observed);
            for c in p.apply_now.iter().filter(|c| {
                // Never applied over another control plane's Instance.
                !matches!(observed.get(*c), Some(Progress::Failed(why)) if why.contains("belongs to control plane"))
            }) {
                apply.entry(c.clone()).or_default().insert(key.clone());
            }
            self.record_rollout(key, inst, &desired.revision, &observed, &p);
            let previous = lock(&self.rollouts).get(key).cloned();
            if previous.as_ref() != Some(&p.state) {
                match &p.state {
                    State::Halted { cluster, reason } => {
                        warn!(instance = %key, %cluster, %reason, "rollout halted");
                        self.notifier.emit(
                            crate::notify::Event::new(
                                crate::notify::EventKind::RolloutHalted,
                                "halted",
                                reason.clone(),
                            )
                            .cluster(cluster)
                            .instance(key)
                            .revision(&desired.revision),
                        );
                    }
                    State::Complete => {
                        info!(instance = %key, revision = short(&desired.revision), "rollout complete");
                    }
                    State::Progressing { wave, waves } => {
                        info!(instance = %key, wave = wave + 1, waves, "rollout progressing");
                    }
                }
            }
            states.insert(key.clone(), p.state);
        }
        let mut rollouts = lock(&self.rollouts);
        for gone in rollouts.keys().filter(|k| !states.contains_key(*k)) {
            if let Some((ns, name)) = gone.split_once('/') {
                self.metrics.gitops.forget_rollout(ns, name);
            }
        }
        *lock(&self.planned) = PlanSummary {
            revision: desired.revision.clone(),
            instances: states.len(),
            complete: states.values().filter(|s| **s == State::Complete).count(),
            halted: states
                .values()
                .filter(|s| matches!(s, State::Halted { .. }))
                .count(),
        };
        *rollouts = states;
        drop(rollouts);
        let ownership = self.decide_ownership(&desired);
        for slot in &self.clusters {
            let name = &slot.info.name;
            let delete = ownership.delete.get(name).cloned().unwrap_or_default();
            let relabel = ownership.relabel.get(name).cloned().unwrap_or_default();
            let work = !delete.is_empty() || !relabel.is_empty();
            {
                let mut st = lock(&slot.status);
                st.kept_instances = ownership.kept.get(name).cloned().unwrap_or_default();
                st.conflicts = lock(&slot.seen)
                    .iter()
                    .flatten()
                    .filter(|(key, _)| desired.instances.contains_key(*key))
                    .filter_map(|(key, s)| match &s.owner {
                        super::ownership::Owner::Foreign(other) => {
                            Some(format!("{key}: owned by control plane {other:?}"))
                        }
                        _ => None,
                    })
                    .collect();
            }
            *lock(&slot.delete) = delete;
            *lock(&slot.relabel) = relabel;
            if work {
                slot.wake.notify_one();
            }
        }
        self.record_held(&desired.revision, ownership.held);
        if !ownership.resync.is_empty() {
            let names: Vec<String> = ownership.resync.into_iter().collect();
            self.sync_now(Some(&names));
        }
        for slot in &self.clusters {
            let new = apply.remove(&slot.info.name).unwrap_or_default();
            let mut current = lock(&slot.apply);
            if *current != new {
                let wake = !new.is_subset(&current) || current.is_empty() && !new.is_empty();
                *current = new;
                if wake {
                    slot.wake.notify_one();
                }
            }
        }
    }
}

impl Shared {
    /// The ownership decision over every observed cluster (see [`super::ownership`]).
    fn decide_ownership(&self, desired: &DesiredState) -> super::ownership::Decision {
        let confirmations = lock(&self.confirmations).clone();
        let repos: BTreeMap<String, super::ownership::RepoState> = {
            let statuses = lock(&self.repos);
            self.config
                .repositories
                .iter()
                .map(|r| {
                    let status = statuses.get(&r.name);
                    let loaded = status
                        .and_then(|s| s.good.as_ref())
                        .map(|g| g.revision.clone());
                    let loaded_epoch = status.map(|s| s.loaded_epoch).unwrap_or_default();
                    let waiting_for = statuses
                        .iter()
                        .filter(|(name, s)| **name != r.name && s.synced_epoch <= loaded_epoch)
                        .map(|(name, _)| name.clone())
                        .collect();
                    (
                        r.name.clone(),
                        super::ownership::RepoState {
                            loaded,
                            max_deletions: r.max_deletions,
                            confirmed: confirmations.get(&r.name).cloned(),
                            waiting_for,
                        },
                    )
                })
                .collect()
        };
        let mut observed = BTreeMap::new();
        for slot in &self.clusters {
            if let Some(seen) = lock(&slot.seen).as_ref() {
                observed.insert(
                    slot.info.name.clone(),
                    seen.iter().map(|(k, s)| (k.clone(), s.live())).collect(),
                );
            }
        }
        super::ownership::decide(&desired.instances, &repos, &observed)
    }

    /// Shows held deletions in each repository's status, and logs and notifies them once.
    fn record_held(&self, revision: &str, held: BTreeMap<String, super::ownership::HeldDeletions>) {
        let mut repos = lock(&self.repos);
        for (name, status) in repos.iter_mut() {
            let now = held.get(name).cloned();
            if now != status.held_deletions
                && let Some(h) = &now
            {
                let message = h.message(name);
                warn!(repository = %name, revision = short(&h.revision), count = h.count, "{message}");
                self.notifier.emit(
                    crate::notify::Event::new(
                        crate::notify::EventKind::DeletionsHeld,
                        "held",
                        message,
                    )
                    .revision(revision),
                );
            }
            status.held_deletions = now;
        }
    }

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

    /// Rollout gauges of one instance, and the commit-to-converged time when a rollout the
    /// planner started completes.
    fn record_rollout(
        &self,
        key: &str,
        inst: &DesiredInstance,
        revision: &str,
        observed: &BTreeMap<String, Progress>,
        p: &rollout::RolloutPlan,
    ) {
        let halted = matches!(p.state, State::Halted { .. });
        let counts: Vec<(RolloutState, i64)> = observed
            .values()
            .map(|progress| {
                let state = match progress {
                    Progress::Complete => RolloutState::complete,
                    Progress::InProgress => RolloutState::in_progress,
                    Progress::Failed(_) => RolloutState::halted,
                    Progress::NotApplied | Progress::Pending if halted => RolloutState::halted,
                    Progress::NotApplied | Progress::Pending => RolloutState::pending,
                };
                (state, 1)
            })
            .collect();
        let gm = &self.metrics.gitops;
        gm.set_rollout(&inst.namespace, &inst.name, &counts);
        let mut converging = lock(&self.converging);
        if !p.apply_now.is_empty() {
            converging.insert(key.to_string());
        }
        if p.state == State::Complete && converging.remove(key) {
            // A combined revision ("a,b") converged when its newest part did.
            let times = lock(&self.revision_times);
            let since = revision.split(',').filter_map(|r| times.get(r)).max();
            if let Some(since) = since {
                let seconds = (jiff::Timestamp::now().as_second() - since).max(0);
                gm.commit_to_converged
                    .get_or_create(&crate::metrics::gitops::OperatorLabels {
                        operator: inst.framework.clone(),
                    })
                    .observe(seconds as f64);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- repositories ----

/// A new revision and what loading it gave.
type Loaded = (String, Result<DesiredState, desired::RevisionErrors>);

async fn repo_task(
    shared: Arc<Shared>,
    repo: Repository,
    mut changes: tokio::sync::mpsc::Receiver<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let wake = shared.repo_wake[&repo.name].clone();
    let git = match &repo.source {
        Source::Git(url) => Some(GitSource::new(&repo, url, &shared.config.cache_dir)),
        Source::Dir(_) => None,
    };
    let mut last_seen: Option<String> = None;
    let cache = Arc::new(Mutex::new(desired::DesiredCache::new()));
    // libgit2's timeouts are process-wide: the shortest sync deadline of all repositories.
    if let Some(t) = shared.config.repositories.iter().map(|r| r.timeout).min() {
        super::git::set_network_timeout(t.min(super::git::DEFAULT_NETWORK_TIMEOUT));
    }
    let mut deadline = super::sync::Deadline::new(&repo.name, repo.timeout);
    loop {
        let failures = sync_once(
            &shared,
            &repo,
            git.as_ref(),
            &cache,
            &mut last_seen,
            &mut deadline,
        )
        .await;
        let delay = next_poll(repo.interval, failures, fastrand::f64());
        if super::sync::wait_next(delay, failures, &wake, &mut changes, &mut stop).await {
            return;
        }
    }
}

/// The blocking part of one sync: `None` when the revision did not change.
type SyncWork = Result<Option<(Loaded, Option<i64>)>, String>;

/// One sync: new revision → verify (signature, ancestry) → load (blocking thread, under the
/// repository's deadline) → keep if good. Returns the number of consecutive failures (for
/// backoff).
async fn sync_once(
    shared: &Arc<Shared>,
    repo: &Repository,
    git: Option<&GitSource>,
    cache: &Arc<Mutex<desired::DesiredCache>>,
    last_seen: &mut Option<String>,
    deadline: &mut super::sync::Deadline<SyncWork>,
) -> u32 {
    let cache = cache.clone();
    let clusters: Vec<ClusterInfo> = shared.clusters.iter().map(|c| c.info.clone()).collect();
    let mirror = git.map(|g| g.mirror.clone());
    let git = git.cloned();
    let source = repo.source.clone();
    let subpath = repo.path.clone();
    let seen = last_seen.clone();
    let package_repos = shared.config.package_repositories.clone();
    let package_cache = shared.config.cache_dir.join("package-repositories");
    let verify = repo.verify.clone();
    let name = repo.name.clone();
    let allow_rollback = repo.allow_rollback;
    let applied_store = git
        .as_ref()
        .map(|g| super::sync::AppliedStore::new(&shared.config.cache_dir, repo, &g.url));
    let persist = !shared.dry_run;
    let started = Instant::now();
    let result = deadline
        .run(move || -> SyncWork {
            match (&git, &source) {
                (Some(g), _) => {
                    let commit = g.sync().map_err(|e| e.to_string())?;
                    if seen.as_deref() == Some(commit.as_str()) {
                        return Ok(None);
                    }
                    let refused = |errors| {
                        let time = commit_time(&g.mirror, &commit);
                        Ok(Some(((commit.clone(), Err(errors)), time)))
                    };
                    if let Some(verify) = &verify {
                        // A trust file that cannot be read is a failure (retried), not a
                        // verdict about this commit.
                        let trust =
                            super::signing::Trust::load(verify).map_err(|e| e.to_string())?;
                        match super::signing::verify_commit(&g.mirror, &commit, &trust) {
                            Ok(signer) => {
                                info!(repository = %name, revision = short(&commit), %signer, "commit signature verified");
                            }
                            Err(refusal) if refusal.is_verdict() => {
                                return refused(unsigned(&commit, refusal));
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    let store = applied_store.as_ref();
                    if let Some(store) = store.filter(|_| !allow_rollback)
                        && let Some(old) = store.load().map_err(|e| e.to_string())?
                        && !g.descends_from(&commit, &old).map_err(|e| e.to_string())?
                    {
                        return refused(super::sync::rollback_refused(
                            &name,
                            &commit,
                            &old,
                            store.path(),
                        ));
                    }
                    let tree = g.tree(&commit).map_err(|e| e.to_string())?;
                    let mut cache = lock(&cache);
                    let tree = crate::repo::frameworks::overlay_cached(
                        &tree,
                        &package_repos,
                        &package_cache,
                        &mut cache.repository_refs,
                    )?;
                    let loaded = desired::load_cached(&tree, &commit, &clusters, &mut cache);
                    if let (true, Ok(_), Some(store)) = (persist, &loaded, store) {
                        store.save(&commit).map_err(|e| e.to_string())?;
                    }
                    let time = commit_time(&g.mirror, &commit);
                    Ok(Some(((commit, loaded), time)))
                }
                (None, Source::Dir(dir)) => {
                    let root = if subpath.is_empty() {
                        dir.clone()
                    } else {
                        dir.join(&subpath)
                    };
                    let tree = DirTree::new(root);
                    let rev = content_revision(&tree).map_err(|e| e.to_string())?;
                    if seen.as_deref() == Some(rev.as_str()) {
                        return Ok(None);
                    }
                    let mut cache = lock(&cache);
                    let tree = crate::repo::frameworks::overlay_cached(
                        &tree,
                        &package_repos,
                        &package_cache,
                        &mut cache.repository_refs,
                    )?;
                    let loaded = desired::load_cached(&tree, &rev, &clusters, &mut cache);
                    Ok(Some(((rev, loaded), None)))
                }
                (None, Source::Git(_)) => Err("internal: git source without a mirror".into()),
            }
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let took = started.elapsed().as_secs_f64();
    let gm = &shared.metrics.gitops;
    let webhook_error = super::webhook::HookSecret::load(repo.webhook_secret_file.as_deref())
        .problem()
        .map(str::to_string);
    let mut repos = lock(&shared.repos);
    let status = repos.entry(repo.name.clone()).or_default();
    if result.is_ok() {
        let epoch = shared
            .sync_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        status.synced_epoch = epoch;
        if matches!(result, Ok(Some(((_, Ok(_)), _)))) {
            status.loaded_epoch = epoch;
        }
    }
    status.webhook_error = webhook_error;
    match result {
        Ok(None) => {
            gm.record_sync(&repo.name, SyncResult::unchanged, took, None);
            status.consecutive_failures = 0;
            // The source answers again: an earlier sync failure is over (a refused
            // revision's errors stay while that revision is the newest).
            if status.revision.is_some() && status.revision == status.applied_revision {
                status.errors.clear();
            }
            0
        }
        Ok(Some(((rev, Ok(state)), time))) => {
            gm.record_sync(&repo.name, SyncResult::applied, took, Some(0));
            gm.set_revision(&repo.name, status.applied_revision.as_deref(), &rev);
            let seen_at = time.unwrap_or_else(|| jiff::Timestamp::now().as_second());
            lock(&shared.revision_times)
                .entry(rev.clone())
                .or_insert(seen_at);
            info!(repository = %repo.name, revision = short(&rev), instances = state.instances.len(), took_ms = started.elapsed().as_millis() as u64, "new revision applied");
            // Deletions confirmed by the commit itself: only where commits are verified.
            if let (Some(mirror), Some(_)) = (&mirror, &repo.verify)
                && let Some(up_to) = commit_message(mirror, &rev)
                    .as_deref()
                    .and_then(super::ownership::confirm_trailer)
            {
                info!(target: "audit", repository = %repo.name, revision = short(&rev), up_to, "deletions confirmed by a verified commit's trailer");
                lock(&shared.confirmations).insert(repo.name.clone(), (rev.clone(), up_to));
            }
            *last_seen = Some(rev.clone());
            status.revision = Some(rev.clone());
            status.applied_revision = Some(rev);
            status.errors.clear();
            status.consecutive_failures = 0;
            status.good = Some(Arc::new(state));
            drop(repos);
            shared.recombine();
            0
        }
        Ok(Some(((rev, Err(errors)), _))) => {
            gm.record_sync(&repo.name, SyncResult::refused, took, Some(errors.0.len()));
            warn!(repository = %repo.name, revision = short(&rev), %errors, "revision refused; the last good revision keeps running");
            shared.notifier.emit(
                crate::notify::Event::new(
                    crate::notify::EventKind::RevisionRefused,
                    "refused",
                    errors.to_string(),
                )
                .revision(&rev),
            );
            *last_seen = Some(rev.clone());
            status.revision = Some(rev);
            status.errors = errors.0.iter().map(ToString::to_string).collect();
            status.consecutive_failures = 0;
            0
        }
        Err(message) => {
            gm.record_sync(&repo.name, SyncResult::failed, took, None);
            warn!(repository = %repo.name, error = %message, "sync failed; the last good revision keeps running");
            status.errors = vec![message];
            status.consecutive_failures += 1;
            status.consecutive_failures
        }
    }
}

/// A commit's message in a mirror (None when unreadable).
fn commit_message(mirror: &Path, commit: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(mirror).ok()?;
    let oid = git2::Oid::from_str(commit).ok()?;
    Some(repo.find_commit(oid).ok()?.message()?.to_string())
}

/// Unix time of a commit in a mirror (None when unreadable: the first-seen time is used).
fn commit_time(mirror: &Path, commit: &str) -> Option<i64> {
    let repo = git2::Repository::open_bare(mirror).ok()?;
    let oid = git2::Oid::from_str(commit).ok()?;
    Some(repo.find_commit(oid).ok()?.time().seconds())
}

/// A commit refused for its signature, as a revision error (so it is reported like a bad
/// file and the last good revision keeps running).
fn unsigned(commit: &str, refusal: super::signing::SigningError) -> desired::RevisionErrors {
    desired::RevisionErrors(vec![desired::DesiredError {
        revision: commit.to_string(),
        file: "(commit signature)".to_string(),
        line: None,
        reason: refusal.to_string(),
    }])
}

// ---- clusters ----

async fn cluster_worker(
    shared: Arc<Shared>,
    slot: Arc<ClusterSlot>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = slot.info.name.clone();
    let mut engine_started = false;
    let mut failures: u32 = 0;
    if let Some(mut leading) = shared.leading.clone()
        && !*leading.borrow()
    {
        lock(&slot.status).reason = Some("standby: another replica leads".into());
        tokio::select! {
            _ = leading.wait_for(|l| *l) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        lock(&slot.status).reason = Some("not probed yet".into());
    }
    loop {
        let result = async {
            if shared.dry_run {
                return dry_run_work(&shared, &slot).await;
            }
            if !engine_started {
                install_crds(&slot.cluster).await?;
                let ctx = Arc::new(
                    crate::engine::reconcile::Context::with_metrics(
                        slot.cluster.clone(),
                        shared.options.engine_poll,
                        shared.engine_metrics.clone(),
                    )
                    .with_control_plane(&shared.config.control_plane),
                );
                let (rx, leading) = (stop.clone(), shared.leading.clone());
                // Supervised (restarted if it ever ends) and joined on shutdown; a restarted
                // worker finds it running.
                let started = shared.health.spawn("engine", &name, stop.clone(), move || {
                    super::supervise::engine(ctx.clone(), rx.clone(), leading.clone())
                });
                engine_started = true;
                if started {
                    tokio::spawn(wake_on_instance_changes(slot.clone(), stop.clone()));
                    info!(cluster = %name, "CRDs installed, engine started");
                }
            }
            work(&shared, &slot).await
        }
        .await;
        let delay = match result {
            Ok(()) => {
                failures = 0;
                let mut st = lock(&slot.status);
                if !st.up {
                    info!(cluster = %name, "cluster up");
                }
                // Back up after being down (the first probe at start is not news).
                if !st.up && st.reason.as_deref() != Some("not probed yet") {
                    shared.notifier.emit(
                        crate::notify::Event::new(crate::notify::EventKind::ClusterUp, "up", "")
                            .cluster(&name),
                    );
                }
                st.up = true;
                st.reason = None;
                shared.metrics.cluster.set_up(&name, true, None);
                shared.options.observe_interval
            }
            Err(e) => {
                failures += 1;
                let mut st = lock(&slot.status);
                if st.up || failures == 1 {
                    warn!(cluster = %name, category = e.kind().as_str(), error = %e, "cluster down");
                    shared.notifier.emit(
                        crate::notify::Event::new(
                            crate::notify::EventKind::ClusterDown,
                            "down",
                            format!("{}: {e}", e.kind().as_str()),
                        )
                        .cluster(&name),
                    );
                }
                st.up = false;
                st.reason = Some(format!("{}: {e}", e.kind().as_str()));
                shared
                    .metrics
                    .cluster
                    .set_up(&name, false, Some(e.kind().as_str()));
                next_poll(
                    shared.options.observe_interval.max(Duration::from_secs(1)),
                    failures,
                    fastrand::f64(),
                )
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = slot.wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Runs a planner pass whenever one was requested, until stopped.
async fn planner(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shared.plan_wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        shared.plan();
        // A pass over a large fleet takes milliseconds and requests keep arriving while it
        // runs: resting as long as the pass took caps the planner at half a core, and the
        // requests of the rest coalesce into the next pass.
        let took = started.elapsed();
        if took > Duration::from_millis(1) {
            tokio::select! {
                _ = tokio::time::sleep(took) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
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

/// Wakes the cluster worker whenever a managed Instance changes (its plan status above all),
/// so a rollout wave advances on the event that finishes it, not on the next poll; the
/// worker's interval remains the fallback when the watch is down.
async fn wake_on_instance_changes(
    slot: Arc<ClusterSlot>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let api: kube::Api<crate::api::Instance> = kube::Api::all(slot.cluster.client().clone());
    let config = watcher::Config::default().labels(MANAGED_LABEL);
    let mut events = watcher(api, config).default_backoff().boxed();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(_)) => slot.wake.notify_one(),
                Some(Err(_)) => {}
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn install_crds(cluster: &Cluster) -> Result<(), ClusterError> {
    let mut names = Vec::new();
    for crd in crate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let r = ObjectRef::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &name,
        );
        if cluster.get_opt(&r).await?.is_none() {
            let value = serde_json::to_value(&crd).unwrap_or_default();
            cluster.apply_as(&value, FIELD_MANAGER).await?;
        }
        names.push(r);
    }
    for r in names {
        cluster.wait_healthy(&r, Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// One pass on one cluster: apply what the planner assigned, delete what is no longer
/// desired here, observe, and re-plan when something changed.
async fn work(shared: &Arc<Shared>, slot: &ClusterSlot) -> Result<(), ClusterError> {
    let desired = shared
        .desired
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let cluster = &slot.cluster;
    if let Some(d) = &desired {
        let control_plane = &shared.config.control_plane;
        let assigned = lock(&slot.apply).clone();
        for key in &assigned {
            // A lapsed lease stops writes here (and in the cluster's client).
            if !shared.is_leader() {
                return Ok(());
            }
            if let Some(inst) = d.instances.get(key) {
                apply_instance_as(cluster, d, inst, control_plane).await?;
            }
        }
        // Ownership labels of legacy or moved Instances: labels only, never the spec (a
        // wave not yet due must not get the new spec early).
        let relabel = lock(&slot.relabel).clone();
        for key in &relabel {
            if let Some(inst) = d.instances.get(key) {
                info!(cluster = %slot.info.name, instance = %key, repository = %inst.repository, "taking over ownership labels");
                cluster
                    .merge_patch(&json!({
                        "apiVersion": crate::api::API_VERSION,
                        "kind": "Instance",
                        "metadata": {
                            "name": inst.name,
                            "namespace": inst.namespace,
                            "labels": ownership_labels(inst, control_plane),
                        },
                    }))
                    .await?;
            }
        }
        // Only what the planner's ownership decision picked, and only while the Instance we
        // observed is still ours (re-checked under the lock).
        let unwanted: Vec<(String, ObjectRef, Option<String>)> = {
            let picked = lock(&slot.delete).clone();
            lock(&slot.seen)
                .iter()
                .flatten()
                .filter(|(key, s)| {
                    picked.contains(*key)
                        && matches!(s.owner, super::ownership::Owner::Ours { .. })
                        && s.instance.metadata.deletion_timestamp.is_none()
                })
                .map(|(key, s)| {
                    let r = ObjectRef::new(
                        crate::api::API_VERSION,
                        "Instance",
                        s.instance.metadata.namespace.as_deref(),
                        s.instance.metadata.name.clone().unwrap_or_default(),
                    );
                    (key.clone(), r, s.instance.metadata.uid.clone())
                })
                .collect()
        };
        for (key, r, uid) in &unwanted {
            if !shared.is_leader() {
                return Ok(());
            }
            info!(cluster = %slot.info.name, instance = %key, "instance no longer declared here by its repository; deleting");
            cluster.delete_uid(r, uid.as_deref()).await?;
        }
    }
    let live = cluster
        .list(
            &[(crate::api::API_VERSION, "Instance")],
            None,
            &format!("{MANAGED_LABEL}={FIELD_MANAGER}"),
        )
        .await?;
    let mut seen = BTreeMap::new();
    for v in live {
        if let Ok(instance) = serde_json::from_value::<Instance>(v) {
            let key = format!(
                "{}/{}",
                instance.metadata.namespace.clone().unwrap_or_default(),
                instance.metadata.name.clone().unwrap_or_default()
            );
            seen.insert(key, Seen::new(instance, &shared.config.control_plane));
        }
    }
    {
        let mut previous = lock(&slot.seen);
        // The first observation is the baseline: a restarted daemon does not replay history.
        if let Some(prev) = previous.as_ref() {
            for (key, s) in &seen {
                let before = prev.get(key).map(|p| &p.instance);
                for event in crate::notify::plan_events(&slot.info.name, before, &s.instance) {
                    shared.notifier.emit(event);
                }
            }
        }
        *previous = Some(seen);
    }
    shared.request_plan();
    Ok(())
}

/// The labels recording who owns a GitOps Instance.
fn ownership_labels(inst: &DesiredInstance, control_plane: &str) -> Value {
    let mut labels = json!({
        MANAGED_LABEL: FIELD_MANAGER,
        crate::engine::objects::CONTROL_PLANE_LABEL: control_plane,
        "kudo.dev/operator": inst.framework,
    });
    if !inst.repository.is_empty() {
        labels[crate::engine::objects::REPOSITORY_LABEL] = json!(inst.repository);
    }
    labels
}

/// [`apply_instance_as`] for the default control plane.
pub async fn apply_instance(
    cluster: &Cluster,
    d: &DesiredState,
    inst: &DesiredInstance,
) -> Result<(), ClusterError> {
    apply_instance_as(
        cluster,
        d,
        inst,
        crate::engine::objects::DEFAULT_CONTROL_PLANE,
    )
    .await
}

/// Server-side applies what one desired instance needs on a cluster: its namespace, its
/// framework's Operator and OperatorVersion, and the Instance spec, labelled with its
/// owners (control plane, repository).
pub async fn apply_instance_as(
    cluster: &Cluster,
    d: &DesiredState,
    inst: &DesiredInstance,
    control_plane: &str,
) -> Result<(), ClusterError> {
    let rev = &d.revision;
    cluster
        .apply_as(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": inst.namespace}}),
            FIELD_MANAGER,
        )
        .await?;
    if let Some(fw) = d
        .frameworks
        .get(&(inst.framework.clone(), inst.version.clone()))
    {
        for obj in [
            serde_json::to_value(&fw.operator).unwrap_or_default(),
            serde_json::to_value(&fw.operator_version).unwrap_or_default(),
        ] {
            let mut obj = obj;
            obj["metadata"]["namespace"] = json!(inst.namespace);
            obj["metadata"]["annotations"][REVISION_ANNOTATION] = json!(rev);
            strip_empty_status(&mut obj);
            cluster.apply_as(&obj, FIELD_MANAGER).await?;
        }
    }
    let body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "Instance",
        "metadata": {
            "name": inst.name,
            "namespace": inst.namespace,
            "labels": ownership_labels(inst, control_plane),
            "annotations": {
                REVISION_ANNOTATION: rev,
                crate::engine::drift::SELF_HEAL_ANNOTATION: inst.self_heal.to_string(),
                super::ownership::DELETION_PROTECTION_ANNOTATION: inst.deletion_protection.to_string(),
            },
        },
        "spec": {
            "operatorVersion": {"name": inst.operator_version},
            "parameters": inst.parameters,
        },
    });
    info!(cluster = %cluster.name(), instance = %inst.key(), revision = short(rev), "applying instance spec");
    cluster.apply_as(&body, FIELD_MANAGER).await?;
    Ok(())
}

/// A `--dry-run` pass on one cluster: observe (read only) and record what a real pass would
/// change, as [`super::diff::instance_changes`] sees it.
async fn dry_run_work(shared: &Arc<Shared>, slot: &ClusterSlot) -> Result<(), ClusterError> {
    let listed = slot
        .cluster
        .list(
            &[(crate::api::API_VERSION, "Instance")],
            None,
            &format!("{MANAGED_LABEL}={FIELD_MANAGER}"),
        )
        .await;
    let values = match listed {
        Ok(v) => v,
        // No kudo CRDs yet: nothing of ours lives there.
        Err(e) if e.kind() == crate::cluster::ErrorKind::UnknownKind => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut live = BTreeMap::new();
    for v in values {
        if let Ok(instance) = serde_json::from_value::<Instance>(v) {
            // Another control plane's Instances are none of this one's business.
            let owner = Seen::new(instance.clone(), &shared.config.control_plane).owner;
            if matches!(owner, super::ownership::Owner::Foreign(_)) {
                continue;
            }
            let key = format!(
                "{}/{}",
                instance.metadata.namespace.clone().unwrap_or_default(),
                instance.metadata.name.clone().unwrap_or_default()
            );
            live.insert(key, instance);
        }
    }
    let desired = shared
        .desired
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let pending: Vec<String> = match &desired {
        Some(d) => super::diff::instance_changes(d, &slot.info.name, &live)
            .iter()
            .map(|c| super::diff::describe_change(c).trim_end().to_string())
            .collect(),
        None => Vec::new(),
    };
    {
        let mut st = lock(&slot.status);
        if st.pending_changes != pending {
            for change in &pending {
                info!(cluster = %slot.info.name, %change, "dry run: would apply");
            }
        }
        st.pending_changes = pending;
    }
    let seen = live
        .into_iter()
        .map(|(k, instance)| (k, Seen::new(instance, &shared.config.control_plane)))
        .collect();
    *lock(&slot.seen) = Some(seen);
    shared.request_plan();
    Ok(())
}

fn strip_empty_status(obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
    }
}

// ---- HTTP ----

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
            "/api/v1/hooks/git",
            post(hook).layer(axum::extract::DefaultBodyLimit::max(
                super::webhook::MAX_BODY_BYTES,
            )),
        )
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

/// The API's access rule, one for every endpoint:
/// - health, readiness and metrics are open (probes and scrapers); the webhook checks its
///   own signature;
/// - with tokens configured (`apiTokens`, or `apiTokenFile` as the write token `default`),
///   every `/api/v1/*` request needs `Authorization: Bearer <token>`, and writes (any method
///   but GET and HEAD) need a `write` token;
/// - with no token configured, reads are open and writes are allowed only when the listener
///   is a loopback address (the embedded demo).
///
/// Every write is logged (target `audit`) and notified with the token's name. Token files
/// are read per request, so rotating one needs no restart; an unreadable one counts as absent
/// and is logged.
async fn require_api_token(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
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
    let tokens = s.config.all_api_tokens();
    let caller = if tokens.is_empty() {
        if write && !s.loopback_listener() {
            return (
                axum::http::StatusCode::FORBIDDEN,
                "writes need a write token (apiTokens) unless kudo listens on loopback only\n",
            )
                .into_response();
        }
        "anonymous".to_string()
    } else {
        let given = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut readable = 0;
        let mut matched = None;
        for token in &tokens {
            match std::fs::read_to_string(&token.file) {
                Ok(expected) if !expected.trim().is_empty() => {
                    readable += 1;
                    if !given.is_empty()
                        && super::webhook::same_secret(&given, expected.trim())
                        && matched.is_none()
                    {
                        matched = Some(token);
                    }
                }
                Ok(_) => {
                    warn!(token = %token.name, file = %token.file.display(), "API token file is empty; that token is refused");
                }
                Err(e) => {
                    warn!(token = %token.name, file = %token.file.display(), error = %e, "API token file unreadable; that token is refused");
                }
            }
        }
        if readable == 0 {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "API tokens unavailable (every token file is unreadable or empty)\n",
            )
                .into_response();
        }
        let Some(token) = matched else {
            return (
                axum::http::StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                "a valid bearer token is required\n",
            )
                .into_response();
        };
        if write && token.role != super::config::TokenRole::Write {
            warn!(target: "audit", token = %token.name, method = %request.method(), %path, "write refused: read-only token");
            return (
                axum::http::StatusCode::FORBIDDEN,
                format!(
                    "token {:?} is read-only; this needs a write token\n",
                    token.name
                ),
            )
                .into_response();
        }
        token.name.clone()
    };
    if write {
        info!(target: "audit", token = %caller, method = %request.method(), %path, "API write");
        s.notifier.emit(crate::notify::Event::new(
            crate::notify::EventKind::ApiWrite,
            "write",
            format!("{} {path} by token {caller}", request.method()),
        ));
    }
    request.extensions_mut().insert(Caller(caller));
    next.run(request).await
}

async fn hook(
    axum::extract::State(s): axum::extract::State<Arc<Shared>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use super::webhook::{HookError, HookSecret};
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
        .config
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
    match super::webhook::authorize(&headers, &body, &secrets) {
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

/// Resolves the embedded default's relative paths against `dir` (the current directory).
pub fn default_config(dir: &Path) -> Result<Config, super::config::ConfigError> {
    Config::embedded(dir)
}
