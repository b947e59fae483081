//! Reconciling one Instance on one cluster: read the OperatorVersion, ask the engine what
//! to do ([`crate::engine::decide`]), perform its intents in order, execute one pass of the
//! active plan, write what changed. Every Instance write goes through the cluster layer
//! ([`Cluster::merge_patch_resource`]), so a failed one is a [`ClusterError`] with a
//! bounded category; the resourceVersion each write returns is recorded for
//! [`super::freshness`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::{Instrument, debug, info, warn};

use crate::api::{ExecutionStatus, Instance, InstanceStatus, OperatorVersion, PlanStatus};
use crate::cluster::{Cluster, ClusterError, ErrorKind};
use crate::engine::backoff::retry_delay;
use crate::engine::decide::{
    self, DriftWork, Inputs, Intent, Next, Pass, PassEnd, PassStart, PlanStart, finalizers_with,
    now, operator_name, set_condition,
};
use crate::engine::status::new_plan_status;
use crate::engine::trigger::{LAST_APPLIED_ANNOTATION, Snapshot};
use crate::engine::workflow::execute;
use crate::metrics::EngineMetrics;
use crate::metrics::engine::{
    ClusterLabels, ErrorLabels, PlanLabels, PlanResult, PlanResultLabels, ReconcileLabels,
    ReconcileResult, StepLabels,
};
use crate::package::{params_value, resolve_parameters};

use super::runner::{ClusterRunner, InstanceInfo};

pub use crate::engine::decide::{CLEANUP_FINALIZER, PLAN_REQUEST_ANNOTATION, UNMANAGED_CONDITION};
/// Manager name used for the manager's own metadata/status patches.
pub const MANAGER: &str = "kudo-manager";

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
    /// Whether the controller's Instance watch is the cluster's shared Instance cache. A
    /// sharded member's engine starts and stops with its claim, so its store would go stale
    /// when it stops; there a separate watch ([`super::controller::watch_instances`]) is the
    /// shared one.
    pub share_instances: bool,
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
            share_instances: true,
        }
    }

    /// Keeps the controller's Instance store to itself (see `share_instances`).
    pub fn with_private_instances(mut self) -> Self {
        self.share_instances = false;
        self
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
        namespace: &str,
        name: &str,
    ) -> Result<Option<OperatorVersion>, ClusterError> {
        let cached = self
            .operator_versions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|s| s.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)));
        match cached {
            Some(ov) => Ok(Some((*ov).clone())),
            None => self.cluster.get_resource_opt(namespace, name).await,
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
    #[error("instance {namespace}/{name}: reading OperatorVersion {operator_version}: {source}")]
    ReadOperatorVersion {
        namespace: String,
        name: String,
        operator_version: String,
        source: ClusterError,
    },
    #[error("instance {namespace}/{name}: writing {what}: {source}")]
    Write {
        namespace: String,
        name: String,
        what: &'static str,
        source: ClusterError,
    },
}

impl ReconcileError {
    /// Every value [`Self::category`] returns.
    pub const CATEGORIES: [&'static str; 2] = ["dereference", "write"];

    /// Bounded category for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            ReconcileError::ReadOperatorVersion { .. } => "dereference",
            ReconcileError::Write { .. } => "write",
        }
    }

    /// The cluster layer's error underneath (its [`ErrorKind`] says whether a retry helps).
    pub fn cluster_error(&self) -> &ClusterError {
        match self {
            ReconcileError::ReadOperatorVersion { source, .. }
            | ReconcileError::Write { source, .. } => source,
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
    /// Merge-patches the Instance (guarded by `expect_version` when given) and notes the
    /// resourceVersion the write left it at.
    async fn patch(
        &self,
        ctx: &Context,
        what: &'static str,
        patch: &serde_json::Value,
        expect_version: Option<&str>,
    ) -> Result<(), ReconcileError> {
        let written = ctx
            .cluster
            .merge_patch_resource::<Instance>(&self.namespace, &self.name, patch, expect_version)
            .await
            .map_err(|source| self.write_error(what, source))?;
        self.wrote(&written);
        Ok(())
    }

    /// Merge-patches the Instance's status subresource.
    async fn patch_status(
        &self,
        ctx: &Context,
        patch: &serde_json::Value,
    ) -> Result<(), ReconcileError> {
        let written = ctx
            .cluster
            .merge_patch_resource_status::<Instance>(&self.namespace, &self.name, patch)
            .await
            .map_err(|source| self.write_error("status", source))?;
        self.wrote(&written);
        Ok(())
    }

    /// Notes the Instance as an engine write returned it.
    fn wrote(&self, written: &Instance) {
        *self.wrote.lock().unwrap_or_else(|p| p.into_inner()) = written.resource_version();
    }

    fn write_error(&self, what: &'static str, source: ClusterError) -> ReconcileError {
        ReconcileError::Write {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            what,
            source,
        }
    }
}

/// Reconciles one Instance. Returns when to look again.
pub async fn reconcile(inst: Arc<Instance>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let names = Names {
        cluster: ctx.cluster.name().to_string(),
        namespace: inst.namespace().unwrap_or_default(),
        name: inst.name_any(),
        wrote: Mutex::new(None),
    };
    let key = format!("{}/{}", names.namespace, names.name);
    if let Some(next) = decide::gate(&inst, &ctx.control_plane, || {
        ctx.own_writes
            .behind(&key, inst.resource_version().as_deref())
    }) {
        if next != Next::AwaitChange {
            debug!(cluster = %names.cluster, instance = %key, "copy older than the engine's last write; waiting for it");
        }
        return Ok(action(next));
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
    // A guarded write (plan start, finalizer) from a copy that is no longer current is
    // refused by the server (resourceVersion precondition): not a failure, the pass is run
    // again on a fresh copy.
    let result = match result {
        Err(ReconcileError::Write {
            ref source, what, ..
        }) if source.kind() == ErrorKind::Conflict => {
            info!(cluster = %names.cluster, instance = %key, what, "the Instance changed since it was read; looking again");
            Ok(action(Next::Requeue(decide::OWN_WRITE_WAIT)))
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

fn action(next: Next) -> Action {
    match next {
        Next::AwaitChange => Action::await_change(),
        Next::Requeue(after) => Action::requeue(after),
    }
}

/// Reads the OperatorVersion, asks [`decide::decide`] and performs its intents in order.
async fn reconcile_instance(
    inst: &Instance,
    ctx: &Context,
    names: &Names,
) -> Result<Action, ReconcileError> {
    let ov_ref = decide::operator_version_ref(inst);
    let ov = match &ov_ref {
        Some((namespace, name)) => {
            ctx.operator_version(namespace, name)
                .await
                .map_err(|source| ReconcileError::ReadOperatorVersion {
                    namespace: names.namespace.clone(),
                    name: names.name.clone(),
                    operator_version: name.clone(),
                    source,
                })?
        }
        None => None,
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let intents = decide::decide(Inputs {
        instance: inst,
        operator_version: ov.as_ref(),
        new_uid: &uid,
    });
    let mut status = inst.status.clone().unwrap_or_default();
    let before = status.clone();
    for intent in intents {
        match intent {
            Intent::Condition(condition) => {
                if matches!(condition.reason, "ChangeRejected" | "InvalidParameters") {
                    warn!(message = %condition.message, reason = condition.reason, "change not acted on");
                }
                condition.apply(&mut status);
            }
            Intent::StartPlan(start) => {
                start_plan(inst, ctx, names, ov.as_ref(), &start, &mut status).await?;
                info!(plan = %start.plan, reason = %start.reason, uid = %start.snapshot.plan_uid, "plan started");
            }
            Intent::SetFinalizer => set_finalizer(inst, ctx, names, true).await?,
            Intent::RemoveFinalizer => set_finalizer(inst, ctx, names, false).await?,
            Intent::DeleteClusterScoped { operator, objects } => {
                let uid = inst.uid().unwrap_or_default();
                let claim = crate::engine::prune::Claim {
                    operator: &operator,
                    instance: &names.name,
                    namespace: &names.namespace,
                    uid: &uid,
                };
                match super::prune::delete_owned(&ctx.cluster, &claim, &objects).await {
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
                        return Ok(action(Next::Requeue(decide::RETRY_SOON)));
                    }
                }
            }
            Intent::ExecutePass(pass) => {
                // `decide` runs a pass only for an Instance whose OperatorVersion it has.
                let (Some(ov), Some((ov_namespace, _))) = (ov, ov_ref) else {
                    return Ok(Action::await_change());
                };
                tracing::Span::current().record("plan", pass.active.plan.as_str());
                // A rejected version change keeps running the version last acted on.
                let ov = match &pass.run_version {
                    Some(version) => match ctx.operator_version(&ov_namespace, version).await {
                        Ok(Some(old)) => old,
                        _ => ov,
                    },
                    None => ov,
                };
                return run_active(inst, ctx, names, &ov, &pass, &before, status).await;
            }
            Intent::WriteStatus => write_status(ctx, names, &before, &status).await?,
            Intent::Then(next) => return Ok(action(next)),
        }
    }
    Ok(Action::await_change())
}

/// Records the new plan run: snapshot annotation and `spec.planExecution` (already
/// IN_PROGRESS: the same pass executes it), with kudo's finalizer when asked, first; then
/// a fresh status tree under the new uid.
async fn start_plan(
    inst: &Instance,
    ctx: &Context,
    names: &Names,
    ov: Option<&OperatorVersion>,
    start: &PlanStart,
    status: &mut InstanceStatus,
) -> Result<(), ReconcileError> {
    let uid = &start.snapshot.plan_uid;
    let snap_text = serde_json::to_string(&start.snapshot).unwrap_or_default();
    let mut patch = json!({
        "metadata": {"annotations": {LAST_APPLIED_ANNOTATION: snap_text}},
        "spec": {"planExecution": {"planName": start.plan, "uid": uid, "status": ExecutionStatus::InProgress}},
    });
    if start.add_finalizer {
        patch["metadata"]["finalizers"] = json!(finalizers_with(inst, true));
    }
    // Guarded by the resourceVersion that was read: a plan is started from the current
    // Instance only, never twice from a copy that predates an earlier start.
    names
        .patch(
            ctx,
            "plan start",
            &patch,
            inst.resource_version().as_deref(),
        )
        .await?;
    let plan_spec = ov
        .and_then(|ov| ov.spec.plans.get(&start.plan))
        .cloned()
        .unwrap_or_default();
    let mut tree = new_plan_status(&start.plan, &plan_spec, uid);
    tree.last_updated_timestamp = Some(now());
    status.plan_status.insert(start.plan.clone(), tree);
    Ok(())
}

/// Executes one pass of the active plan and writes what changed.
async fn run_active(
    inst: &Instance,
    ctx: &Context,
    names: &Names,
    ov: &OperatorVersion,
    pass: &Pass,
    before: &InstanceStatus,
    mut status: InstanceStatus,
) -> Result<Action, ReconcileError> {
    let active = &pass.active;
    let (plan_before, request, parameters) =
        match decide::prepare_pass(inst, ov, active, &mut status) {
            PassStart::PlanNotFound(condition) => {
                condition.apply(&mut status);
                write_status(ctx, names, before, &status).await?;
                return Ok(Action::await_change());
            }
            PassStart::Run {
                plan_before,
                request,
                execute,
            } => (plan_before, request, execute),
        };
    if let Some(request) = request {
        match &request.refused {
            None => {
                info!(plan = %active.plan, request = %request.request, "plan request carried out");
            }
            Some(message) => {
                warn!(plan = %active.plan, request = %request.request, %message, "plan request refused");
            }
        }
        let patch = json!({"metadata": {"annotations": {PLAN_REQUEST_ANNOTATION: null}}});
        names.patch(ctx, "plan request", &patch, None).await?;
    }
    let key = format!("{}/{}", names.namespace, names.name);
    let mut report = Default::default();
    // Objects pruning left in place, when it ran in this pass.
    let mut unpruned: Option<Vec<String>> = None;
    if let Some(parameters) = parameters
        && let Some(plan) = ov.spec.plans.get(&active.plan)
        && let Some(tree) = status.plan_status.get_mut(&active.plan)
    {
        let info = instance_info(inst, ov, names, ctx);
        let mut runner = ClusterRunner {
            cluster: &ctx.cluster,
            ov: &ov.spec,
            info: &info,
            params: &parameters.params,
            values: &parameters.values,
            applied: Default::default(),
            newly_adopted: Default::default(),
        };
        report = execute(plan, &ov.spec.tasks, tree, &mut runner).await;
        let applied =
            std::mem::take(&mut *runner.applied.lock().unwrap_or_else(|p| p.into_inner()));
        crate::engine::prune::merge(&mut status.applied, &applied);
        let after = decide::after_execute(inst, tree.status, &applied);
        if after.prune {
            unpruned = Some(prune_stale(&runner, &mut status.applied).await);
        }
        if after.add_finalizer {
            let mut finalizers = inst.finalizers().to_vec();
            finalizers.push(CLEANUP_FINALIZER.to_string());
            let patch = json!({"metadata": {"finalizers": finalizers}});
            names.patch(ctx, "finalizer", &patch, None).await?;
        }
    }
    if let Some(tree) = status.plan_status.get(&active.plan) {
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
    }
    for (phase, step) in &report.completed_steps {
        debug!(%phase, %step, "step complete");
    }
    let finish = decide::finish_pass(
        active,
        before,
        plan_before,
        pass.written,
        report.has_error,
        unpruned.as_deref(),
        &mut status,
    );
    let plan_now = status.plan_status.get(&active.plan).and_then(|t| t.status);
    if plan_now != plan_before {
        info!(
            status = plan_now.map(ExecutionStatus::as_str).unwrap_or("none"),
            "plan status changed"
        );
    }
    // Written when the Instance does not say it yet (not on every change of the tree).
    if let Some(plan_now) = finish.write_plan_execution {
        let patch = json!({"spec": {"planExecution": {"status": plan_now}}});
        names.patch(ctx, "planExecution", &patch, None).await?;
    }
    if finish.drift == DriftWork::Check {
        // Watched kinds on every pass (from the cache); every kind when the period is up.
        let full = std::time::Instant::now() >= ctx.next_full_check(&key);
        check_drift(inst, ctx, names, ov, active, &mut status, full).await;
        if full {
            ctx.full_check_done(&key);
        }
    }
    write_status(ctx, names, before, &status).await?;
    Ok(match finish.end {
        PassEnd::UntilFullCheck => {
            ctx.next_attempt(&key, false);
            let until = ctx
                .next_full_check(&key)
                .saturating_duration_since(std::time::Instant::now());
            Action::requeue(until.max(Duration::from_secs(1)))
        }
        PassEnd::AwaitChange => {
            ctx.next_attempt(&key, false);
            Action::await_change()
        }
        PassEnd::Backoff => Action::requeue(retry_delay(ctx.next_attempt(&key, true))),
        PassEnd::Poll => {
            ctx.next_attempt(&key, false);
            Action::requeue(ctx.poll)
        }
    })
}

/// Writes the status subresource when it changed.
async fn write_status(
    ctx: &Context,
    names: &Names,
    before: &InstanceStatus,
    status: &InstanceStatus,
) -> Result<(), ReconcileError> {
    if before == status {
        return Ok(());
    }
    names.patch_status(ctx, &json!({ "status": status })).await
}

/// Adds or removes kudo's finalizer, guarded by the resourceVersion that was read (a
/// concurrent change makes the write fail and the reconcile look again).
async fn set_finalizer(
    inst: &Instance,
    ctx: &Context,
    names: &Names,
    present: bool,
) -> Result<(), ReconcileError> {
    let patch = json!({"metadata": {"finalizers": finalizers_with(inst, present)}});
    names
        .patch(ctx, "finalizer", &patch, inst.resource_version().as_deref())
        .await
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
