//! Reconciling one Instance on one cluster, as a pipeline (operator-rs style):
//! dereference (OperatorVersion) → decide (trigger, pure) → validate (parameters, pure) →
//! start (record the snapshot, reset the plan's tree) → execute one pass → write status.
//!
//! Restart safety: the snapshot of what was acted on (annotation) is written before the new
//! plan's status, and the active plan is always read back from that snapshot, so a manager
//! killed between any two writes resumes the same plan run (same uid) and never re-runs a
//! finished step.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, warn};

use crate::api::{
    Condition, ExecutionStatus, Instance, InstanceStatus, OperatorVersion, PlanStatus,
};
use crate::cluster::Cluster;
use crate::metrics::EngineMetrics;
use crate::metrics::engine::{
    ClusterLabels, ErrorLabels, PlanLabels, PlanResult, PlanResultLabels, ReconcileLabels,
    ReconcileResult, StepLabels,
};
use crate::package::{params_value, resolve_parameters};

use super::runner::{ClusterRunner, InstanceInfo};
use crate::engine::backoff::retry_delay;
use crate::engine::status::{cancel, new_plan_status, retry};
use crate::engine::trigger::{self, Decision, LAST_APPLIED_ANNOTATION, Snapshot};
use crate::engine::workflow::execute;

/// Annotation a person (or `kudo plan cancel|retry`) sets to `cancel` or `retry` the
/// instance's current plan; the manager carries it out and removes it.
pub const PLAN_REQUEST_ANNOTATION: &str = "kudo.dev/plan-request";
/// Finalizer held while an instance with a `cleanup` plan is being deleted.
pub const CLEANUP_FINALIZER: &str = "kudo.dev/cleanup";
/// Instance condition naming objects with the instance's labels that pruning left in place.
pub const UNMANAGED_CONDITION: &str = "UnmanagedObjects";
/// Manager name used for the manager's own metadata/status patches.
pub const MANAGER: &str = "kudo-manager";

/// How long a pass skipped on an outdated copy of its Instance waits when no event comes.
const OWN_WRITE_WAIT: Duration = Duration::from_secs(1);

/// Shared state of one cluster's controller.
pub struct Context {
    pub cluster: Arc<Cluster>,
    /// How often a running plan is re-checked when nothing else wakes it.
    pub poll: Duration,
    /// Consecutive ERROR passes per instance (namespace/name), for backoff.
    attempts: Mutex<BTreeMap<String, u32>>,
    pub metrics: Arc<EngineMetrics>,
    /// Instances (namespace/name) with a running plan, for `kudo_plans_in_progress`.
    running: Mutex<std::collections::BTreeSet<String>>,
    /// How often an instance whose plan is complete is fully checked for drift (kinds no
    /// watch keeps included; see [`crate::engine::drift::DEFAULT_INTERVAL`]).
    pub drift_interval: Duration,
    /// When each instance's (namespace/name) next full drift check is due.
    full_checks: Mutex<BTreeMap<String, std::time::Instant>>,
    /// This engine's control plane: Instances labelled for another one are never touched.
    pub control_plane: String,
    /// The controller's OperatorVersion watch (read instead of a GET per pass).
    operator_versions: std::sync::RwLock<Option<kube::runtime::reflector::Store<OperatorVersion>>>,
    /// The engine's latest write to each Instance, until the watch has delivered it.
    own_writes: super::freshness::OwnWrites,
}

impl Context {
    pub fn new(cluster: Arc<Cluster>, poll: Duration) -> Self {
        let (_, metrics) = crate::metrics::registry_with_engine();
        Self::with_metrics(cluster, poll, metrics)
    }

    pub fn with_metrics(
        cluster: Arc<Cluster>,
        poll: Duration,
        metrics: Arc<EngineMetrics>,
    ) -> Self {
        let mut categories = ReconcileError::CATEGORIES.to_vec();
        categories.push(super::guard::PANIC_CATEGORY);
        metrics.init_cluster(cluster.name(), &categories);
        Context {
            cluster,
            poll,
            attempts: Mutex::new(BTreeMap::new()),
            metrics,
            running: Mutex::new(Default::default()),
            drift_interval: crate::engine::drift::DEFAULT_INTERVAL,
            control_plane: crate::engine::objects::DEFAULT_CONTROL_PLANE.to_string(),
            operator_versions: std::sync::RwLock::new(None),
            full_checks: Mutex::new(BTreeMap::new()),
            own_writes: Default::default(),
        }
    }

    /// Sets the control plane this engine acts for (`controlPlane` in kudo.yaml).
    pub fn with_control_plane(mut self, name: &str) -> Self {
        self.control_plane = name.to_string();
        self
    }

    /// Sets the periodic full drift check's interval.
    pub fn with_drift_interval(mut self, interval: Duration) -> Self {
        self.drift_interval = interval;
        self
    }

    /// Reads OperatorVersions from `store` from now on (misses still go to the API).
    pub fn set_operator_versions(&self, store: kube::runtime::reflector::Store<OperatorVersion>) {
        *self
            .operator_versions
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(store);
    }

    /// The OperatorVersion from the watch's store, else from the API.
    async fn operator_version(
        &self,
        versions: &Api<OperatorVersion>,
        namespace: &str,
        name: &str,
    ) -> Result<Option<OperatorVersion>, kube::Error> {
        let cached = self
            .operator_versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|s| s.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)));
        match cached {
            Some(ov) => Ok(Some((*ov).clone())),
            None => versions.get_opt(name).await,
        }
    }

    /// When `key`'s next full drift check is due: a first one anywhere in the period.
    fn next_full_check(&self, key: &str) -> std::time::Instant {
        let mut due = self.full_checks.lock().unwrap_or_else(|p| p.into_inner());
        *due.entry(key.to_string()).or_insert_with(|| {
            std::time::Instant::now() + self.drift_interval.mul_f64(fastrand::f64())
        })
    }

    /// Records a full drift check of `key`: the next is due a period (±10 %) later.
    fn full_check_done(&self, key: &str) {
        let next =
            std::time::Instant::now() + self.drift_interval.mul_f64(0.9 + 0.2 * fastrand::f64());
        self.full_checks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_string(), next);
    }

    fn set_running(&self, key: &str, running: bool) {
        let mut set = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running {
            set.insert(key.to_string());
        } else {
            set.remove(key);
        }
        self.metrics
            .plans_in_progress
            .get_or_create(&ClusterLabels {
                cluster: self.cluster.name().to_string(),
            })
            .set(set.len() as i64);
    }

    fn next_attempt(&self, key: &str, failed: bool) -> u32 {
        let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            let n = attempts.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        } else {
            attempts.remove(key);
            0
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(
        "cluster {cluster}: instance {namespace}/{name}: reading OperatorVersion {operator_version}: {source}"
    )]
    ReadOperatorVersion {
        cluster: String,
        namespace: String,
        name: String,
        operator_version: String,
        source: kube::Error,
    },
    #[error("cluster {cluster}: instance {namespace}/{name}: writing {what}: {source}")]
    Write {
        cluster: String,
        namespace: String,
        name: String,
        what: &'static str,
        source: kube::Error,
    },
    #[error("cluster {cluster}: instance {namespace}/{name}: {message}")]
    Invalid {
        cluster: String,
        namespace: String,
        name: String,
        message: String,
    },
}

impl ReconcileError {
    /// Every value [`Self::category`] returns.
    pub const CATEGORIES: [&'static str; 3] = ["dereference", "write", "invalid"];

    /// Bounded category for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::ReadOperatorVersion { .. } => "dereference",
            ReconcileError::Write { .. } => "write",
            ReconcileError::Invalid { .. } => "invalid",
        }
    }
}

struct Names {
    cluster: String,
    namespace: String,
    name: String,
    /// The resourceVersion the pass's latest write left the Instance at.
    wrote: Mutex<Option<String>>,
}

impl Names {
    /// Notes the Instance as an engine write returned it.
    fn wrote(&self, written: &Instance) {
        *self.wrote.lock().unwrap_or_else(|p| p.into_inner()) = written.resource_version();
    }

    fn write(&self, what: &'static str) -> impl FnOnce(kube::Error) -> ReconcileError + '_ {
        move |source| ReconcileError::Write {
            cluster: self.cluster.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            what,
            source,
        }
    }
}

/// Reconciles one Instance. Returns when to look again.
pub async fn reconcile(inst: Arc<Instance>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    if let Some(other) = inst
        .labels()
        .get(crate::engine::objects::CONTROL_PLANE_LABEL)
        && *other != ctx.control_plane
    {
        // Another control plane's Instance: not ours to run, write or delete.
        return Ok(Action::await_change());
    }
    let names = Names {
        cluster: ctx.cluster.name().to_string(),
        namespace: inst.namespace().unwrap_or_default(),
        name: inst.name_any(),
        wrote: Mutex::new(None),
    };
    let key = format!("{}/{}", names.namespace, names.name);
    if ctx
        .own_writes
        .behind(&key, inst.resource_version().as_deref())
    {
        // The watch has not delivered this engine's last write yet: a pass on this copy
        // would act on a state the engine already left (start the plan again, run a
        // finished step again). The write's own event wakes the instance; the requeue is
        // the fallback while the watch is down.
        debug!(cluster = %names.cluster, instance = %key, "copy older than the engine's last write; waiting for it");
        return Ok(Action::requeue(OWN_WRITE_WAIT));
    }
    let span = tracing::info_span!(
        "reconcile",
        cluster = %names.cluster,
        namespace = %names.namespace,
        instance = %names.name,
        plan = tracing::field::Empty,
        phase = tracing::field::Empty,
        step = tracing::field::Empty
    );
    let started = std::time::Instant::now();
    let result = reconcile_instance(&inst, &ctx, &names)
        .instrument(span)
        .await;
    let wrote = names.wrote.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(wrote) = wrote {
        ctx.own_writes
            .record(&key, inst.resource_version().unwrap_or_default(), wrote);
    }
    // A plan start written from a copy that is no longer current is refused by the server
    // (resourceVersion precondition): not a failure, the pass is run again on a fresh copy.
    let result = match result {
        Err(ReconcileError::Write {
            source: kube::Error::Api(ref status),
            what,
            ..
        }) if status.code == 409 => {
            info!(cluster = %names.cluster, instance = %key, what, "the Instance changed since it was read; looking again");
            Ok(Action::requeue(OWN_WRITE_WAIT))
        }
        other => other,
    };
    let cluster = ClusterLabels {
        cluster: names.cluster.clone(),
    };
    ctx.metrics
        .reconcile_duration
        .get_or_create(&cluster)
        .observe(started.elapsed().as_secs_f64());
    let outcome = if result.is_ok() {
        ReconcileResult::ok
    } else {
        ReconcileResult::error
    };
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            cluster: names.cluster.clone(),
            result: outcome,
        })
        .inc();
    if let Err(e) = &result {
        ctx.metrics
            .reconcile_errors
            .get_or_create(&ErrorLabels {
                cluster: names.cluster.clone(),
                category: e.category(),
            })
            .inc();
    }
    result
}

async fn reconcile_instance(
    inst: &Instance,
    ctx: &Context,
    names: &Names,
) -> Result<Action, ReconcileError> {
    let span = tracing::Span::current();
    let client = ctx.cluster.client().clone();
    let instances: Api<Instance> = Api::namespaced(client.clone(), &names.namespace);
    // KUDO resolves the OperatorVersion in `spec.operatorVersion.namespace` when given
    // (e.g. a shared one in `default`), else in the instance's namespace.
    let ov_namespace = inst
        .spec
        .operator_version
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| names.namespace.clone());
    let versions: Api<OperatorVersion> = Api::namespaced(client, &ov_namespace);
    let mut status = inst.status.clone().unwrap_or_default();
    let before = status.clone();

    // 1. Dereference the OperatorVersion the spec names.
    let ov_name = inst.spec.operator_version.name.clone().unwrap_or_default();
    if ov_name.is_empty() {
        set_ready(
            &mut status,
            "False",
            "InvalidSpec",
            "spec.operatorVersion.name is empty",
        );
        write_status(&instances, names, &before, &status).await?;
        return Ok(Action::await_change());
    }
    let ov = ctx
        .operator_version(&versions, &ov_namespace, &ov_name)
        .await
        .map_err(|source| ReconcileError::ReadOperatorVersion {
            cluster: names.cluster.clone(),
            namespace: names.namespace.clone(),
            name: names.name.clone(),
            operator_version: ov_name.clone(),
            source,
        })?;

    let snapshot: Option<Snapshot> = inst
        .annotations()
        .get(LAST_APPLIED_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok());
    let deleting = inst.meta().deletion_timestamp.is_some();
    let has_finalizer = inst.finalizers().iter().any(|f| f == CLEANUP_FINALIZER);

    // 2. Deletion: run cleanup (if any), then delete the cluster-scoped objects the
    // inventory lists (garbage collection handles namespaced ones through owner references),
    // then let the Instance go.
    if deleting {
        if !has_finalizer {
            return Ok(Action::await_change());
        }
        if let Some(ov) = ov.as_ref()
            && trigger::on_deletion(&ov.spec).is_some()
        {
            let running_cleanup = snapshot
                .as_ref()
                .is_some_and(|s| s.plan == trigger::CLEANUP);
            if !running_cleanup {
                let snap = start_plan(
                    inst,
                    &instances,
                    names,
                    ov,
                    trigger::CLEANUP,
                    &mut status,
                    false,
                )
                .await?;
                info!(plan = trigger::CLEANUP, reason = %trigger::Reason::Deletion, "plan started");
                let written = Some(ExecutionStatus::InProgress);
                return run_active(
                    inst, &instances, ctx, names, ov, &snap, &before, status, written,
                )
                .await;
            }
            let finished = snapshot.as_ref().is_none_or(|s| {
                status.plan_status.get(&s.plan).is_none_or(|p| {
                    p.uid == s.plan_uid && p.status.is_some_and(ExecutionStatus::is_terminal)
                })
            });
            if !finished {
                let snap = snapshot.clone().unwrap_or_default();
                let written = written_status(inst, &snap);
                return run_active(
                    inst, &instances, ctx, names, ov, &snap, &before, status, written,
                )
                .await;
            }
        }
        let cluster_scoped: Vec<_> = status
            .applied
            .iter()
            .filter(|o| o.namespace.is_empty())
            .cloned()
            .collect();
        let operator = match ov.as_ref() {
            Some(ov) => operator_name(inst, ov),
            None => inst
                .labels()
                .get(crate::engine::objects::OPERATOR_LABEL)
                .cloned()
                .unwrap_or_default(),
        };
        let uid = inst.uid().unwrap_or_default();
        let claim = crate::engine::prune::Claim {
            operator: &operator,
            instance: &names.name,
            namespace: &names.namespace,
            uid: &uid,
        };
        match super::prune::delete_owned(&ctx.cluster, &claim, &cluster_scoped).await {
            Ok((deleted, reported)) => {
                for entry in &deleted {
                    info!(kind = %entry.kind, name = %entry.name, "deleted cluster-scoped object");
                }
                for why in &reported {
                    warn!(object = %why, "not deleted");
                }
            }
            Err(message) => {
                warn!(%message, "deleting cluster-scoped objects failed; retrying");
                return Ok(Action::requeue(Duration::from_secs(5)));
            }
        }
        set_finalizer(inst, &instances, names, false).await?;
        return Ok(Action::await_change());
    }
    let Some(ov) = ov else {
        let msg = format!(
            "OperatorVersion {ov_name} not found in namespace {ov_namespace}; retrying until it appears"
        );
        set_ready(&mut status, "False", "OperatorVersionNotFound", &msg);
        write_status(&instances, names, &before, &status).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    // The finalizer is held while the instance has a cleanup plan or owns cluster-scoped
    // objects: both need the manager before the Instance may go.
    // A plan starting in this pass carries it in its start write (one write, not two).
    let add_finalizer = !has_finalizer && needs_finalizer(&ov, &status);

    // 3. Decide (pure) and 4. validate parameters before anything is applied.
    let mut active = snapshot.clone();
    // A plan started in this pass: its planExecution already says IN_PROGRESS.
    let mut started = false;
    match trigger::decide(&ov.spec, &inst.spec, snapshot.as_ref()) {
        Decision::Nothing => {}
        Decision::Reject { message } => {
            warn!(%message, "change rejected");
            set_ready(&mut status, "False", "ChangeRejected", &message);
        }
        Decision::Run { plan, reason } => {
            let old = snapshot.as_ref().map(|s| &s.parameters);
            match resolve_parameters(&ov.spec.parameters, &inst.spec.parameters, old) {
                Err(errors) => {
                    let message = format!("plan {plan} not started: {errors}");
                    warn!(%message, "parameters rejected");
                    set_ready(&mut status, "False", "InvalidParameters", &message);
                }
                Ok(_) => {
                    let snap = start_plan(
                        inst,
                        &instances,
                        names,
                        &ov,
                        &plan,
                        &mut status,
                        add_finalizer,
                    )
                    .await?;
                    info!(%plan, %reason, uid = %snap.plan_uid, "plan started");
                    active = Some(snap);
                    started = true;
                }
            }
        }
    }

    if add_finalizer && !started {
        set_finalizer(inst, &instances, names, true).await?;
    }

    let Some(active) = active else {
        write_status(&instances, names, &before, &status).await?;
        return Ok(Action::await_change());
    };
    span.record("plan", active.plan.as_str());
    // A rejected version change keeps running the version last acted on.
    let ov = if active.operator_version == ov.name_any() {
        ov
    } else {
        match ctx
            .operator_version(&versions, &ov_namespace, &active.operator_version)
            .await
        {
            Ok(Some(old)) => old,
            _ => ov,
        }
    };
    let written = if started {
        Some(ExecutionStatus::InProgress)
    } else {
        written_status(inst, &active)
    };
    run_active(
        inst, &instances, ctx, names, &ov, &active, &before, status, written,
    )
    .await
}

/// The `spec.planExecution.status` the Instance carries for the run `active` (none for
/// another run).
fn written_status(inst: &Instance, active: &Snapshot) -> Option<ExecutionStatus> {
    let execution = &inst.spec.plan_execution;
    if execution.uid == active.plan_uid {
        execution.status
    } else {
        None
    }
}

/// Records the new plan run: snapshot annotation and `spec.planExecution` (already
/// IN_PROGRESS: the same pass executes it, and one write fewer), with kudo's finalizer when
/// `add_finalizer`, first; then a fresh status tree under a new uid.
async fn start_plan(
    inst: &Instance,
    instances: &Api<Instance>,
    names: &Names,
    ov: &OperatorVersion,
    plan: &str,
    status: &mut InstanceStatus,
    add_finalizer: bool,
) -> Result<Snapshot, ReconcileError> {
    let uid = uuid::Uuid::new_v4().to_string();
    let snap = Snapshot::of(&inst.spec, plan, &uid);
    let snap_text = serde_json::to_string(&snap).unwrap_or_default();
    // Guarded by the resourceVersion that was read: a plan is started from the current
    // Instance only, never twice from a copy that predates an earlier start.
    let mut patch = json!({
        "metadata": {
            "annotations": {LAST_APPLIED_ANNOTATION: snap_text},
            "resourceVersion": inst.resource_version(),
        },
        "spec": {"planExecution": {"planName": plan, "uid": uid, "status": ExecutionStatus::InProgress}},
    });
    if add_finalizer {
        patch["metadata"]["finalizers"] = json!(finalizers_with(inst, true));
    }
    instances
        .patch(&names.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|i| names.wrote(&i))
        .map_err(names.write("plan start"))?;
    let plan_spec = ov.spec.plans.get(plan).cloned().unwrap_or_default();
    let mut tree = new_plan_status(plan, &plan_spec, &uid);
    tree.last_updated_timestamp = Some(now());
    status.plan_status.insert(plan.to_string(), tree);
    Ok(snap)
}

/// Executes one pass of the active plan and writes what changed.
#[allow(clippy::too_many_arguments)]
async fn run_active(
    inst: &Instance,
    instances: &Api<Instance>,
    ctx: &Context,
    names: &Names,
    ov: &OperatorVersion,
    active: &Snapshot,
    before: &InstanceStatus,
    mut status: InstanceStatus,
    written: Option<ExecutionStatus>,
) -> Result<Action, ReconcileError> {
    let Some(plan) = ov.spec.plans.get(&active.plan) else {
        let msg = format!(
            "plan {} is not defined by OperatorVersion {}",
            active.plan,
            ov.name_any()
        );
        set_ready(&mut status, "False", "PlanNotFound", &msg);
        write_status(instances, names, before, &status).await?;
        return Ok(Action::await_change());
    };
    let tree = status
        .plan_status
        .entry(active.plan.clone())
        .or_insert_with(|| new_plan_status(&active.plan, plan, &active.plan_uid));
    // The snapshot is written first; a status from an earlier run of this plan is reset.
    if tree.uid != active.plan_uid {
        *tree = new_plan_status(&active.plan, plan, &active.plan_uid);
    }
    let plan_before = tree.status;
    if let Some(request) = inst.annotations().get(PLAN_REQUEST_ANNOTATION) {
        let result = match request.as_str() {
            "cancel" => cancel(tree),
            "retry" => retry(tree),
            other => Err(format!("unknown plan request {other:?} (cancel or retry)")),
        };
        match result {
            Ok(()) => info!(plan = %active.plan, %request, "plan request carried out"),
            Err(message) => warn!(plan = %active.plan, %request, %message, "plan request refused"),
        }
        let patch = json!({"metadata": {"annotations": {PLAN_REQUEST_ANNOTATION: null}}});
        instances
            .patch(&names.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|i| names.wrote(&i))
            .map_err(names.write("plan request"))?;
    }
    let key = format!("{}/{}", names.namespace, names.name);
    let mut report = Default::default();
    // Objects pruning left in place, when it ran in this pass.
    let mut unpruned: Option<Vec<String>> = None;
    if !tree.status.is_some_and(ExecutionStatus::is_terminal) {
        let values = match resolve_parameters(&ov.spec.parameters, &active.parameters, None) {
            Ok(v) => v,
            Err(errors) => {
                fail_plan(tree, &format!("parameters invalid: {errors}"));
                BTreeMap::new()
            }
        };
        if !tree.status.is_some_and(ExecutionStatus::is_terminal) {
            match params_value(&ov.spec.parameters, &values) {
                Ok(params) => {
                    let info = instance_info(inst, ov, names, ctx);
                    let mut runner = ClusterRunner {
                        cluster: &ctx.cluster,
                        ov: &ov.spec,
                        info: &info,
                        params: &params,
                        values: &values,
                        applied: Default::default(),
                        newly_adopted: Default::default(),
                    };
                    report = execute(plan, &ov.spec.tasks, tree, &mut runner).await;
                    let applied = std::mem::take(
                        &mut *runner.applied.lock().unwrap_or_else(|p| p.into_inner()),
                    );
                    crate::engine::prune::merge(&mut status.applied, &applied);
                    let prune_off = inst
                        .annotations()
                        .get(crate::engine::prune::PRUNE_ANNOTATION)
                        .is_some_and(|v| v == "false");
                    if tree.status == Some(ExecutionStatus::Complete) && !prune_off {
                        unpruned = Some(prune_stale(&runner, &mut status.applied).await);
                    }
                    // A cluster-scoped object was just applied: hold the finalizer now, not
                    // on the next reconcile, so a deletion in between cannot leak it.
                    let has_finalizer = inst.finalizers().iter().any(|f| f == CLEANUP_FINALIZER);
                    if !has_finalizer && applied.iter().any(|o| o.namespace.is_empty()) {
                        // Unguarded: this reconcile may already have written the Instance.
                        let mut finalizers = inst.finalizers().to_vec();
                        finalizers.push(CLEANUP_FINALIZER.to_string());
                        let patch = json!({"metadata": {"finalizers": finalizers}});
                        instances
                            .patch(&names.name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .map(|i| names.wrote(&i))
                            .map_err(names.write("finalizer"))?;
                    }
                }
                Err(errors) => fail_plan(tree, &format!("parameters invalid: {errors}")),
            }
        }
    }
    if before.plan_status.get(&active.plan) != Some(&*tree) {
        tree.last_updated_timestamp = Some(now());
    }
    let plan_now = tree.status;
    let plan_message = tree.message.clone();
    // The span names where the plan stands: its first unfinished (or failed) step.
    if let Some((phase, step)) = tree.phases.iter().find_map(|ph| {
        ph.steps
            .iter()
            .find(|st| st.status != Some(ExecutionStatus::Complete))
            .map(|st| (ph.name.as_str(), st.name.as_str()))
    }) {
        let span = tracing::Span::current();
        span.record("phase", phase);
        span.record("step", step);
    }
    record_plan_metrics(
        ctx,
        names,
        &operator_name(inst, ov),
        tree,
        plan_before,
        &report,
    );
    for (phase, step) in &report.completed_steps {
        debug!(%phase, %step, "step complete");
    }
    match plan_now {
        Some(ExecutionStatus::Complete) => set_ready(
            &mut status,
            "True",
            "PlanComplete",
            &format!("plan {} complete", active.plan),
        ),
        Some(ExecutionStatus::FatalError) => {
            set_ready(&mut status, "False", "PlanFailed", &plan_message);
        }
        Some(ExecutionStatus::Cancelled) => set_ready(
            &mut status,
            "False",
            "PlanCancelled",
            &format!("plan {} was cancelled", active.plan),
        ),
        _ => set_ready(
            &mut status,
            "False",
            "PlanInProgress",
            &format!("plan {} in progress", active.plan),
        ),
    }
    if plan_now != plan_before {
        info!(
            status = plan_now.map(ExecutionStatus::as_str).unwrap_or("none"),
            "plan status changed"
        );
    }
    // Written when the Instance does not say it yet (not on every change of the tree).
    if plan_now != written {
        let patch = json!({"spec": {"planExecution": {"status": plan_now}}});
        instances
            .patch(&names.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|i| names.wrote(&i))
            .map_err(names.write("planExecution"))?;
    }
    // Drift is looked for once the plan that ran last has completed (and not in the pass
    // that completed it: what was just applied matches by construction).
    if let Some(left) = &unpruned {
        report_unpruned(&mut status, left);
    }
    let complete = plan_now == Some(ExecutionStatus::Complete);
    if complete && plan_before == Some(ExecutionStatus::Complete) {
        // Watched kinds on every pass (from the cache); every kind when the period is up.
        let full = std::time::Instant::now() >= ctx.next_full_check(&key);
        check_drift(inst, ctx, names, ov, active, &mut status, full).await;
        if full {
            ctx.full_check_done(&key);
        }
    } else if complete
        && !status
            .conditions
            .iter()
            .any(|c| c.type_ == crate::engine::drift::DRIFT_CONDITION)
    {
        // A first completion: what was just applied matches, and saying so now spares the
        // next pass a status write of its own.
        let (value, reason, message) =
            crate::engine::drift::condition(&crate::engine::drift::Check::default(), true);
        set_condition(
            &mut status,
            crate::engine::drift::DRIFT_CONDITION,
            value,
            reason,
            &message,
        );
    }
    write_status(instances, names, before, &status).await?;
    if complete {
        ctx.next_attempt(&key, false);
        let until = ctx
            .next_full_check(&key)
            .saturating_duration_since(std::time::Instant::now());
        return Ok(Action::requeue(until.max(Duration::from_secs(1))));
    }
    if plan_now.is_some_and(ExecutionStatus::is_terminal) {
        ctx.next_attempt(&key, false);
        return Ok(Action::await_change());
    }
    let attempt = ctx.next_attempt(&key, report.has_error);
    Ok(if report.has_error {
        Action::requeue(retry_delay(attempt))
    } else {
        Action::requeue(ctx.poll)
    })
}

/// Plan status gauge, runs that ended, plan and step durations.
fn record_plan_metrics(
    ctx: &Context,
    names: &Names,
    operator: &str,
    tree: &PlanStatus,
    plan_before: Option<ExecutionStatus>,
    report: &crate::engine::workflow::PassReport,
) {
    let m = &ctx.metrics;
    m.set_plan_status(
        &names.cluster,
        &names.namespace,
        &names.name,
        &tree.name,
        tree.status,
    );
    let key = format!("{}/{}", names.namespace, names.name);
    ctx.set_running(&key, tree.status.is_some_and(ExecutionStatus::is_running));
    let now = Timestamp::now();
    let since = |t: &Option<Time>| {
        t.as_ref()
            .map(|t| now.duration_since(t.0).as_secs_f64().max(0.0))
    };
    for (phase, step) in &report.completed_steps {
        let started = tree
            .phases
            .iter()
            .find(|p| &p.name == phase)
            .and_then(|p| p.steps.iter().find(|s| &s.name == step))
            .and_then(|s| since(&s.started_at));
        if let Some(seconds) = started {
            m.step_duration
                .get_or_create(&StepLabels {
                    operator: operator.to_string(),
                    plan: tree.name.clone(),
                    phase: phase.clone(),
                    step: step.clone(),
                })
                .observe(seconds);
        }
    }
    let ended = tree.status.is_some_and(ExecutionStatus::is_terminal)
        && !plan_before.is_some_and(ExecutionStatus::is_terminal);
    if !ended {
        return;
    }
    let result = match tree.status {
        Some(ExecutionStatus::Complete) => PlanResult::complete,
        Some(ExecutionStatus::Cancelled) => PlanResult::cancelled,
        _ => PlanResult::fatal_error,
    };
    m.plan_executions
        .get_or_create(&PlanResultLabels {
            cluster: names.cluster.clone(),
            operator: operator.to_string(),
            plan: tree.name.clone(),
            result,
        })
        .inc();
    if let Some(seconds) = since(&tree.started_at) {
        m.plan_duration
            .get_or_create(&PlanLabels {
                cluster: names.cluster.clone(),
                operator: operator.to_string(),
                plan: tree.name.clone(),
            })
            .observe(seconds);
    }
}

/// After a plan completes: deletes what the instance no longer renders (see
/// [`super::prune`]). Failures are logged and retried after the next completed plan; they
/// never fail the plan that just finished.
/// Returns the objects left in place (with why), including objects with the instance's
/// labels that kudo never applied.
async fn prune_stale(
    runner: &ClusterRunner<'_>,
    inventory: &mut Vec<crate::api::AppliedObject>,
) -> Vec<String> {
    let desired = match runner.desired_objects().await {
        Ok(d) => d,
        Err(error) => {
            warn!(%error, "not pruning: the current version does not render");
            return Vec::new();
        }
    };
    let mut left = Vec::new();
    let stale = crate::engine::prune::stale(inventory, &desired);
    if !stale.is_empty() {
        match runner.prune(&stale).await {
            Ok((deleted, reported)) => {
                for entry in &deleted {
                    info!(kind = %entry.kind, name = %entry.name, namespace = %entry.namespace, "pruned");
                }
                left.extend(reported);
                // Reported objects leave the inventory too: kudo no longer claims them.
                inventory.retain(|o| !stale.contains(o));
            }
            Err(error) => warn!(%error, "pruning failed; retried after the next completed plan"),
        }
    }
    use crate::engine::objects::{HERITAGE_LABEL, HERITAGE_VALUE, INSTANCE_LABEL, OPERATOR_LABEL};
    let selector = format!(
        "{HERITAGE_LABEL}={HERITAGE_VALUE},{OPERATOR_LABEL}={},{INSTANCE_LABEL}={}",
        runner.info.operator, runner.info.instance
    );
    match super::prune::unclaimed(runner.cluster, &runner.info.namespace, &selector, inventory)
        .await
    {
        Ok(found) => left.extend(found),
        Err(error) => warn!(%error, "looking for unclaimed objects failed"),
    }
    for why in &left {
        warn!(object = %why, "not pruned");
    }
    left
}

/// The `UnmanagedObjects` condition (a kudo extension): objects pruning left in place.
fn report_unpruned(status: &mut InstanceStatus, left: &[String]) {
    if left.is_empty() {
        status.conditions.retain(|c| c.type_ != UNMANAGED_CONDITION);
    } else {
        set_condition(
            status,
            UNMANAGED_CONDITION,
            "True",
            "LeftInPlace",
            &left.join("; "),
        );
    }
}

fn instance_info(
    inst: &Instance,
    ov: &OperatorVersion,
    names: &Names,
    ctx: &Context,
) -> InstanceInfo {
    let labels = inst.labels();
    InstanceInfo {
        control_plane: labels
            .get(crate::engine::objects::CONTROL_PLANE_LABEL)
            .cloned()
            .unwrap_or_else(|| ctx.control_plane.clone()),
        repository: labels
            .get(crate::engine::objects::REPOSITORY_LABEL)
            .cloned()
            .unwrap_or_default(),
        inventory: inst
            .status
            .as_ref()
            .map(|s| s.applied.iter().cloned().collect())
            .unwrap_or_default(),
        adopted: crate::engine::objects::adopted_objects(inst.annotations()),
        operator: operator_name(inst, ov),
        operator_version: ov.name_any(),
        app_version: ov.spec.app_version.clone(),
        version: ov.spec.version.clone(),
        instance: names.name.clone(),
        instance_uid: inst.uid().unwrap_or_default(),
        namespace: names.namespace.clone(),
    }
}

/// One drift check (see [`super::drift`]): repairs under selfHeal, then reports through
/// the Drifted condition, `kudo_drift_objects` and a log line per object with its fields.
/// A check that cannot run is logged and tried again at the next one.
async fn check_drift(
    inst: &Instance,
    ctx: &Context,
    names: &Names,
    ov: &OperatorVersion,
    active: &Snapshot,
    status: &mut InstanceStatus,
    full: bool,
) {
    let values = match resolve_parameters(&ov.spec.parameters, &active.parameters, None) {
        Ok(v) => v,
        Err(error) => return warn!(%error, "drift check skipped: parameters do not resolve"),
    };
    let params = match params_value(&ov.spec.parameters, &values) {
        Ok(p) => p,
        Err(error) => return warn!(%error, "drift check skipped: parameters do not resolve"),
    };
    let info = instance_info(inst, ov, names, ctx);
    let runner = ClusterRunner {
        cluster: &ctx.cluster,
        ov: &ov.spec,
        info: &info,
        params: &params,
        values: &values,
        applied: Default::default(),
        newly_adopted: Default::default(),
    };
    let heal = crate::engine::drift::self_heal(inst.annotations());
    let check = match super::drift::check(&runner, &status.applied, &active.plan, heal, full).await
    {
        Ok(c) => c,
        Err(error) => return warn!(%error, "drift check failed"),
    };
    for d in &check.drifted {
        let fields = match &d.change {
            crate::engine::drift::Change::Deleted => "(object deleted)".to_string(),
            crate::engine::drift::Change::Fields(paths) => paths.join(", "),
        };
        warn!(
            kind = %d.object.kind,
            object = %d.object.name,
            object_namespace = %d.object.namespace,
            %fields,
            repaired = heal,
            "drift: live object differs from what kudo applied"
        );
    }
    for error in &check.errors {
        warn!(%error, "drift check incomplete");
    }
    ctx.metrics.drift.record(
        &crate::metrics::drift::DriftLabels {
            cluster: names.cluster.clone(),
            namespace: names.namespace.clone(),
            instance: names.name.clone(),
        },
        check.drifted.len(),
        check.repaired,
    );
    let (value, reason, message) = crate::engine::drift::condition(&check, heal);
    let existing = status
        .conditions
        .iter()
        .find(|c| c.type_ == crate::engine::drift::DRIFT_CONDITION);
    // A repair stays on record until drift is seen again.
    if reason == "NoDrift" && existing.is_some_and(|c| c.reason == "DriftRepaired") {
        return;
    }
    // Reported drift may be in an object only the full check looks at: only a full check
    // clears it.
    if reason == "NoDrift" && !full && existing.is_some_and(|c| c.status == "True") {
        return;
    }
    set_condition(
        status,
        crate::engine::drift::DRIFT_CONDITION,
        value,
        reason,
        &message,
    );
}

fn fail_plan(tree: &mut PlanStatus, message: &str) {
    tree.status = Some(ExecutionStatus::FatalError);
    tree.message = message.to_string();
}

fn operator_name(inst: &Instance, ov: &OperatorVersion) -> String {
    ov.spec
        .operator
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            inst.labels()
                .get(crate::engine::objects::OPERATOR_LABEL)
                .cloned()
        })
        .unwrap_or_else(|| ov.name_any())
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// Sets the Ready condition, keeping lastTransitionTime when the status is unchanged.
fn set_ready(status: &mut InstanceStatus, value: &str, reason: &str, message: &str) {
    set_condition(status, "Ready", value, reason, message);
}

/// Sets a condition, keeping lastTransitionTime when the status is unchanged.
fn set_condition(
    status: &mut InstanceStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
) {
    let existing = status.conditions.iter_mut().find(|c| c.type_ == type_);
    match existing {
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(now());
            }
            c.status = value.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
        }
        None => status.conditions.push(Condition {
            type_: type_.into(),
            status: value.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Some(now()),
            observed_generation: None,
        }),
    }
}

/// Writes the status subresource when it changed.
async fn write_status(
    instances: &Api<Instance>,
    names: &Names,
    before: &InstanceStatus,
    status: &InstanceStatus,
) -> Result<(), ReconcileError> {
    if before == status {
        return Ok(());
    }
    let patch = json!({ "status": status });
    instances
        .patch_status(&names.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|i| names.wrote(&i))
        .map_err(names.write("status"))?;
    Ok(())
}

fn needs_finalizer(ov: &OperatorVersion, status: &InstanceStatus) -> bool {
    trigger::on_deletion(&ov.spec).is_some()
        || status.applied.iter().any(|o| o.namespace.is_empty())
}

/// Adds or removes kudo's finalizer, guarded by the resourceVersion that was read (a
/// concurrent change makes the write fail and the reconcile retry).
async fn set_finalizer(
    inst: &Instance,
    instances: &Api<Instance>,
    names: &Names,
    present: bool,
) -> Result<(), ReconcileError> {
    let finalizers = finalizers_with(inst, present);
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": inst.resource_version()}});
    instances
        .patch(&names.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|i| names.wrote(&i))
        .map_err(names.write("finalizer"))?;
    Ok(())
}

/// The Instance's finalizers with kudo's present or not.
fn finalizers_with(inst: &Instance, present: bool) -> Vec<String> {
    let mut finalizers: Vec<String> = inst
        .finalizers()
        .iter()
        .filter(|f| *f != CLEANUP_FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(CLEANUP_FINALIZER.to_string());
    }
    finalizers
}
