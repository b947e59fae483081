//! What the daemon's tasks share: the repositories' and clusters' status, the observations,
//! the planner's results, and the locks guarding them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;
use tokio::sync::Notify;

use super::Options;
use crate::api::Instance;
use crate::cluster::Cluster;
use crate::gitops::config::Config;
use crate::gitops::desired::DesiredState;
use crate::gitops::placement::ClusterInfo;
use crate::gitops::rollout::{Progress, State};

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
    pub held_deletions: Option<crate::gitops::ownership::HeldDeletions>,
    /// Why the webhook refuses this repository (its secret file unreadable or empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_error: Option<String>,
    /// The commit of `revision` (Git repositories only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<CommitInfo>,
    /// The commit of `applied_revision`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied_commit: Option<CommitInfo>,
    #[serde(skip)]
    pub good: Option<Arc<DesiredState>>,
    /// The sync epoch (see `Shared::sync_epoch`) of the last sync that reached the source,
    /// and of the one that loaded `good`.
    #[serde(skip)]
    pub synced_epoch: u64,
    #[serde(skip)]
    pub loaded_epoch: u64,
}

/// What the console and the status show of a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitInfo {
    /// The first line of its message.
    pub subject: String,
    /// `Name <email>`.
    pub author: String,
    /// The verified signer, when the repository verifies commits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub up: bool,
    /// Error category and message when down.
    pub reason: Option<String>,
    /// With sharding: the member whose engine drives this cluster now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// The error category alone when down (`unreachable`, `unauthorized`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// How long the last probe of the API server took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// When the cluster last answered (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_contact: Option<String>,
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
    /// Who paused this rollout through the API (`kudo rollout pause`, the console).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_by: Option<String>,
    /// Each stage with its clusters and each gate's state and reason, in order (empty for
    /// the one-stage forms without gates).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageView>,
    pub clusters: BTreeMap<String, ClusterProgressView>,
}

/// One stage of a rollout as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageView {
    pub name: String,
    pub clusters: Vec<String>,
    /// `pending` (not started), `active`, `done` (every cluster COMPLETE or failed).
    pub state: &'static str,
    pub gates: Vec<GateView>,
}

/// One gate of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateView {
    /// `approval`, `bake`, `prometheus` or `plan`.
    pub gate: &'static str,
    /// What it is: the bake time, the query, the plan.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// `open`, `waiting` (the rollout waits on it now) or `pending` (not reached).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    pub detail: Option<crate::gitops::status::PlanDetail>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    pub repositories: Vec<RepoStatus>,
    pub clusters: Vec<ClusterStatus>,
    pub instances: Vec<InstanceStatusView>,
    /// kudo.yaml reloads: how many applied, the last changes, why the newest was refused.
    pub config: super::reload::ReloadStatus,
    /// With sharding: the members, who drives which cluster, and this replica's view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharding: Option<crate::gitops::shard::member::ShardView>,
}

/// What a cluster worker saw of one Instance.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    pub(super) instance: Instance,
    pub(super) owner: crate::gitops::ownership::Owner,
}

impl Seen {
    pub(super) fn new(instance: Instance, control_plane: &str) -> Seen {
        let owner = crate::gitops::ownership::owner_of(
            instance
                .metadata
                .labels
                .as_ref()
                .unwrap_or(&BTreeMap::new()),
            control_plane,
        );
        Seen { instance, owner }
    }

    pub(super) fn live(&self) -> crate::gitops::ownership::Live {
        crate::gitops::ownership::Live {
            owner: self.owner.clone(),
            protected: self
                .instance
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::gitops::ownership::DELETION_PROTECTION_ANNOTATION))
                .is_some_and(|v| v == "true"),
            deleting: self.instance.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// One cluster's managed Instances by `namespace/name`.
pub(super) type Observation = BTreeMap<String, Seen>;

pub(super) struct ClusterSlot {
    /// The name and the labels the slot started with (see `labels` for the current ones).
    pub(super) info: ClusterInfo,
    /// The cluster's labels now (a kudo.yaml reload may change them).
    pub(super) labels: Mutex<BTreeMap<String, String>>,
    /// What the client was built from (the config entry and its kubeconfig's content): a
    /// reload that changes it replaces the cluster.
    pub(super) access: String,
    /// Stops this cluster's worker and engine: the daemon's stop, or the cluster leaving
    /// kudo.yaml.
    pub(super) stop: Arc<tokio::sync::watch::Sender<bool>>,
    pub(super) cluster: Arc<Cluster>,
    /// With sharding: the engine's handle on the cluster (sharing `cluster`'s caches, its
    /// writes passing the claim gate) and the gate.
    pub(super) engine: Option<(Arc<Cluster>, Arc<crate::gitops::shard::gate::ClusterGate>)>,
    /// An agent cluster: its namespace in the management cluster (`cluster` is then a handle
    /// on the management cluster, see [`super::agents`]).
    pub(super) agent: Option<String>,
    pub(super) wake: Notify,
    pub(super) status: Mutex<ClusterStatus>,
    /// Managed Instances by `namespace/name`, from the last successful observation.
    /// Shared with the planner's snapshot (a pass reads every cluster without copying).
    pub(super) seen: Mutex<Option<Arc<Observation>>>,
    /// Instance keys to apply the desired spec to now (from the planner).
    pub(super) apply: Mutex<BTreeSet<String>>,
    /// Instance keys to delete now (from the planner's [`crate::gitops::ownership::decide`]).
    pub(super) delete: Mutex<BTreeSet<String>>,
    /// Instance keys whose ownership labels to rewrite (legacy or moved instances).
    pub(super) relabel: Mutex<BTreeSet<String>>,
    /// (Instance key, plan) a `plan` gate runs here now (from the planner).
    pub(super) trigger: Mutex<BTreeSet<(String, String)>>,
    /// Instance key → the good spec a revert gives back here (from the planner).
    pub(super) revert: Mutex<BTreeMap<String, Arc<super::planner::RevertTo>>>,
    /// Plan triggers and reverts this worker sent, by `key|plan|spec`: each is sent once,
    /// even while the watch cache does not show it yet (a second trigger would run the plan
    /// twice). Forgotten when the planner stops asking.
    pub(super) sent: Mutex<BTreeSet<String>>,
    /// The Instance watch's change count when `seen` was last built from its cache: an
    /// unchanged count means an unchanged observation, so a quiet cluster costs its worker
    /// no copy and the planner no pass.
    pub(super) observed_changes: Mutex<Option<u64>>,
}

impl ClusterSlot {
    /// Name and current labels (what placement reads).
    pub(super) fn cluster_info(&self) -> ClusterInfo {
        ClusterInfo {
            name: self.info.name.clone(),
            labels: lock(&self.labels).clone(),
        }
    }
}

pub struct Shared {
    /// The running kudo.yaml; a reload swaps it whole (see `super::reload`).
    pub(super) config: RwLock<Arc<Config>>,
    pub(super) options: Options,
    /// One slot per configured cluster, in config order (a reload adds and removes).
    pub(super) clusters: RwLock<Vec<Arc<ClusterSlot>>>,
    /// Bumped when a reload changed the clusters or their labels: repositories load their
    /// revision again (placement is resolved at load).
    pub(super) clusters_epoch: std::sync::atomic::AtomicU64,
    /// The daemon's stop signal (clusters added by a reload start under it).
    pub(super) stop_rx: tokio::sync::watch::Receiver<bool>,
    /// Simulated clusters this daemon runs, with their workload simulators (by name).
    pub(super) sims:
        Mutex<BTreeMap<String, (crate::sim::SimCluster, crate::sim::workload::Workloads)>>,
    /// The last reload's outcome (shown in the status).
    pub(super) reload_status: Mutex<super::reload::ReloadStatus>,
    /// Reloads one at a time.
    pub(super) reload_lock: tokio::sync::Mutex<()>,
    /// Wakes the planner task: observations coalesce into one pass over every instance.
    pub(super) plan_wake: Notify,
    pub(super) repos: Mutex<BTreeMap<String, RepoStatus>>,
    pub(super) repo_wake: BTreeMap<String, Arc<Notify>>,
    pub(super) desired: RwLock<Option<Arc<DesiredState>>>,
    pub(super) rollouts: Mutex<BTreeMap<String, State>>,
    /// What the planner remembers of each rollout (bake and deadline clocks, approvals).
    pub(super) rollout_memory: Mutex<BTreeMap<String, crate::gitops::stages::Memory>>,
    /// Instance key → its last spec that completed everywhere, as this process saw it.
    pub(super) good_specs: Mutex<BTreeMap<String, Arc<super::planner::GoodInstance>>>,
    /// Instance key → who paused its rollout through the API.
    pub(super) rollout_pauses: Mutex<BTreeMap<String, crate::gitops::stages::Approval>>,
    /// What the rollout state's store holds (written only when this changes).
    pub(super) rollout_saved: Mutex<Option<super::rollouts::Saved>>,
    /// Where the rollout state is written: the file, or the ConfigMap's keeper task.
    pub(super) rollout_sink: super::rollout_store::Sink,
    /// Whether the rollout memory is the one to act on (see `Shared::rollout_state_current`).
    pub(super) rollout_current: std::sync::atomic::AtomicBool,
    /// Why this leader could not read the rollout state yet (it plans no rollout meanwhile).
    pub(super) rollout_state_error: Mutex<Option<String>>,
    /// The latest verdicts of the `prometheus` gates rollouts wait on.
    pub(super) gate_verdicts: Mutex<super::gates::Verdicts>,
    /// Planner passes so far (tests wait on progress, not on time).
    pub(super) passes: std::sync::atomic::AtomicU64,
    /// Observations the cluster workers built (a quiet fleet builds none).
    pub(super) observations: std::sync::atomic::AtomicU64,
    /// What the last planner pass concluded, per revision (cheap to read while converging).
    pub(super) planned: Mutex<PlanSummary>,
    /// Every subsystem's metrics, served at `/metrics`.
    pub(super) registry: Arc<prometheus_client::registry::Registry>,
    pub(super) engine_metrics: Arc<crate::metrics::EngineMetrics>,
    pub(super) metrics: crate::metrics::Metrics,
    /// Revision → Unix time of its commit (or of it being first seen, for directories).
    pub(super) revision_times: Mutex<BTreeMap<String, i64>>,
    /// Instances the planner applied a new spec for, until their rollout completes
    /// (the commit-to-converged clock runs for those only).
    pub(super) converging: Mutex<BTreeSet<String>>,
    /// Held through a planner pass: passes never overlap.
    pub(super) pass_lock: Mutex<()>,
    /// Notification sinks (never waited on).
    pub(super) notifier: crate::notify::Notifier,
    /// `--dry-run`: sync and report, never write to a cluster (no CRDs, no engine).
    pub(super) dry_run: bool,
    /// With leader election: whether this replica leads (only then do workers write).
    pub(super) leading: Option<tokio::sync::watch::Receiver<bool>>,
    /// Repository → (revision, deletions confirmed for it), from the API or a trailer.
    pub(super) confirmations: Mutex<BTreeMap<String, (String, u32)>>,
    /// Whether the HTTP listener is a loopback address (writes without tokens need it).
    pub(super) loopback: std::sync::atomic::AtomicBool,
    /// Counts finished syncs, to order them across repositories (see `RepoStatus`).
    pub(super) sync_epoch: std::sync::atomic::AtomicU64,
    /// The supervised core tasks (planner, workers, engines): restarts and readiness.
    pub(super) health: Arc<crate::gitops::supervise::Health>,
    /// The webhook endpoint's token bucket (`webhook:` in kudo.yaml).
    pub(super) hook_limiter: crate::gitops::webhook::RateLimiter,
    /// Console sign-ins (see [`crate::gitops::console::session`]).
    pub(super) sessions: crate::gitops::console::session::Sessions,
    /// The fleet as the console's event streams last saw it (see `super::console`).
    pub(super) live: tokio::sync::watch::Sender<Arc<crate::gitops::console::model::Fleet>>,
    /// Wakes the console publisher when a stream opens.
    pub(super) live_wake: Notify,
    /// This process's id in the event stream (a page that sees it change reloads).
    pub(super) server_id: String,
    /// Open event streams, bounded (see `super::console::MAX_STREAMS`).
    pub(super) streams: Arc<super::console::StreamBudget>,
    /// Console sign-in attempts (a token bucket: guessing a token is slow).
    pub(super) login_limiter: crate::gitops::webhook::RateLimiter,
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

impl Shared {
    /// Asks repositories to sync now (the webhook). `None`: all of them.
    pub fn sync_now(&self, repos: Option<&[String]>) {
        for (name, wake) in &self.repo_wake {
            if repos.is_none_or(|r| r.contains(name)) {
                wake.notify_one();
            }
        }
    }

    /// The running kudo.yaml.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The cluster slots now.
    pub(super) fn slots(&self) -> Vec<Arc<ClusterSlot>> {
        self.clusters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the HTTP listener is a loopback address.
    pub fn loopback_listener(&self) -> bool {
        self.loopback.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn notifier(&self) -> &crate::notify::Notifier {
        &self.notifier
    }

    /// True without leader election, else whether this replica holds the lease.
    /// Whether clusters are sharded over replicas (`sharding: {enabled: true}`).
    pub fn sharded(&self) -> bool {
        self.options.member.is_some()
    }

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

    /// How many times a cluster worker rebuilt its observation of the cluster's Instances.
    pub fn observations(&self) -> u64 {
        self.observations.load(std::sync::atomic::Ordering::SeqCst)
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
        if let Some(e) = lock(&self.rollout_state_error).as_ref() {
            return Some(e.clone());
        }
        let down = self.health.down();
        (!down.is_empty()).then(|| format!("core tasks down: {}", down.join(", ")))
    }

    /// Asks the planner task for a pass; requests made while a pass runs coalesce into the
    /// next one, so a thousand cluster observations cost a few passes, not a thousand.
    pub(super) fn request_plan(&self) {
        self.plan_wake.notify_one();
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
