//! What one reconcile of an Instance must do, decided without I/O: [`decide`] for the part
//! before the plan's workflow runs, [`prepare_pass`] and [`after_execute`] around the
//! workflow, [`finish_pass`] after it. [`crate::manager::reconcile`] performs the intents in
//! the order given and nothing else, so every branch of a reconcile is a unit-testable
//! function of the Instance, its OperatorVersion and the snapshot recorded in it.
//!
//! Restart safety: the snapshot of what was acted on (annotation) is written before the new
//! plan's status, and the active plan is always read back from that snapshot, so a manager
//! killed between any two writes resumes the same plan run (same uid) and never re-runs a
//! finished step.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde_json::Value;

use crate::api::{
    AppliedObject, Condition, ExecutionStatus, Instance, InstanceStatus, OperatorVersion,
};
use crate::package::{params_value, resolve_parameters};

use super::objects::{CONTROL_PLANE_LABEL, OPERATOR_LABEL};
use super::status::{cancel, new_plan_status, retry};
use super::trigger::{self, LAST_APPLIED_ANNOTATION, Reason, Snapshot};

/// Annotation a person (or `kudo plan cancel|retry`) sets to `cancel` or `retry` the
/// instance's current plan; the manager carries it out and removes it.
pub const PLAN_REQUEST_ANNOTATION: &str = "kudo.dev/plan-request";
/// Finalizer held while an instance with a `cleanup` plan is being deleted.
pub const CLEANUP_FINALIZER: &str = "kudo.dev/cleanup";
/// Instance condition naming objects with the instance's labels that pruning left in place.
pub const UNMANAGED_CONDITION: &str = "UnmanagedObjects";
/// How long a pass skipped on an outdated copy of its Instance waits when no event comes.
pub const OWN_WRITE_WAIT: Duration = Duration::from_secs(1);
/// How soon an instance is looked at again while its OperatorVersion is missing or its
/// cluster-scoped objects could not be deleted.
pub const RETRY_SOON: Duration = Duration::from_secs(5);

/// What [`decide`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub instance: &'a Instance,
    /// The OperatorVersion the spec names; `None` when it does not exist (or the name is
    /// empty, which is not looked up).
    pub operator_version: Option<&'a OperatorVersion>,
    /// The uid a plan started by this reconcile gets.
    pub new_uid: &'a str,
}

/// When to look at the instance again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    AwaitChange,
    Requeue(Duration),
}

/// A condition to set on the status (kept `lastTransitionTime` when its status stays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetCondition {
    pub type_: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl SetCondition {
    fn ready(status: &'static str, reason: &'static str, message: impl Into<String>) -> Self {
        SetCondition {
            type_: "Ready",
            status,
            reason,
            message: message.into(),
        }
    }

    /// Applies the condition to `status`.
    pub fn apply(&self, status: &mut InstanceStatus) {
        set_condition(status, self.type_, self.status, self.reason, &self.message);
    }
}

/// A plan run to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStart {
    pub plan: String,
    pub reason: Reason,
    /// The snapshot written with the start (its `plan_uid` is the run's uid).
    pub snapshot: Snapshot,
    /// kudo's finalizer rides on the start write (one write, not two).
    pub add_finalizer: bool,
}

/// One pass over the active plan's workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The plan run the snapshot says is active.
    pub active: Snapshot,
    /// Another OperatorVersion to run it with than the one the spec names: the version the
    /// run was started with (a rejected version change keeps running the old version).
    /// Falls back to the spec's when it cannot be read.
    pub run_version: Option<String>,
    /// The `spec.planExecution.status` the Instance already carries for this run.
    pub written: Option<ExecutionStatus>,
}

/// One thing a reconcile must do, in the order [`decide`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Set a condition (written by a later [`Intent::WriteStatus`]).
    Condition(SetCondition),
    /// Record a new plan run: snapshot annotation and `spec.planExecution` (already
    /// IN_PROGRESS: the same reconcile executes it), guarded by the resourceVersion read (a
    /// conflict means a fresher copy exists: look again soon, not an error); then a fresh
    /// status tree under the new uid.
    StartPlan(PlanStart),
    /// Add kudo's finalizer, guarded by the resourceVersion read.
    SetFinalizer,
    /// Remove kudo's finalizer, guarded by the resourceVersion read.
    RemoveFinalizer,
    /// Delete the cluster-scoped objects of the inventory (namespaced ones go with the
    /// Instance through owner references). On failure: look again after [`RETRY_SOON`]
    /// and do nothing further.
    DeleteClusterScoped {
        operator: String,
        objects: Vec<AppliedObject>,
    },
    /// Run one pass of the active plan ([`prepare_pass`], the workflow, [`finish_pass`]):
    /// it writes what changed and says when to look again. Always last.
    ExecutePass(Pass),
    /// Write the status subresource when it changed.
    WriteStatus,
    /// The end of the reconcile.
    Then(Next),
}

/// Where the Instance's OperatorVersion lives: (namespace, name); `None` when the spec
/// names none. KUDO resolves it in `spec.operatorVersion.namespace` when given (e.g. a
/// shared one in `default`), else in the instance's namespace.
pub fn operator_version_ref(inst: &Instance) -> Option<(String, String)> {
    let name = inst.spec.operator_version.name.clone().unwrap_or_default();
    if name.is_empty() {
        return None;
    }
    let namespace = inst
        .spec
        .operator_version
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| inst.namespace().unwrap_or_default());
    Some((namespace, name))
}

/// The snapshot of what the engine last acted on, recorded in the Instance.
pub fn snapshot_of(inst: &Instance) -> Option<Snapshot> {
    inst.annotations()
        .get(LAST_APPLIED_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok())
}

/// Whether the Instance belongs to another control plane (not ours to run, write or delete).
pub fn foreign(inst: &Instance, control_plane: &str) -> bool {
    inst.labels()
        .get(CONTROL_PLANE_LABEL)
        .is_some_and(|other| other != control_plane)
}

/// Whether a reconcile of this copy happens at all (`None`), or ends at once, before any
/// read: an Instance labelled for another control plane is left alone; a copy older than
/// the engine's own last write to it (`behind_own_write`, asked only for our Instances; see
/// `manager::freshness`) waits for the write's own event, which wakes the instance (the
/// requeue is the fallback while the watch is down): a pass on it would act on a state the
/// engine already left (start the plan again, run a finished step again).
pub fn gate(
    inst: &Instance,
    control_plane: &str,
    behind_own_write: impl FnOnce() -> bool,
) -> Option<Next> {
    if foreign(inst, control_plane) {
        return Some(Next::AwaitChange);
    }
    if behind_own_write() {
        return Some(Next::Requeue(OWN_WRITE_WAIT));
    }
    None
}

/// What a reconcile does before the plan's workflow runs (after [`gate`]): dereference →
/// deletion → trigger (pure, [`trigger::decide`]) → validate parameters → start → execute.
pub fn decide(input: Inputs<'_>) -> Vec<Intent> {
    let inst = input.instance;
    let Some((ov_namespace, ov_name)) = operator_version_ref(inst) else {
        return vec![
            Intent::Condition(SetCondition::ready(
                "False",
                "InvalidSpec",
                "spec.operatorVersion.name is empty",
            )),
            Intent::WriteStatus,
            Intent::Then(Next::AwaitChange),
        ];
    };
    let status = inst.status.clone().unwrap_or_default();
    let snapshot = snapshot_of(inst);
    let has_finalizer = inst.finalizers().iter().any(|f| f == CLEANUP_FINALIZER);
    let ov = input.operator_version;

    if inst.meta().deletion_timestamp.is_some() {
        return deletion(inst, ov, snapshot, &status, has_finalizer, input.new_uid);
    }
    let Some(ov) = ov else {
        return vec![
            Intent::Condition(SetCondition::ready(
                "False",
                "OperatorVersionNotFound",
                format!(
                    "OperatorVersion {ov_name} not found in namespace {ov_namespace}; retrying until it appears"
                ),
            )),
            Intent::WriteStatus,
            Intent::Then(Next::Requeue(RETRY_SOON)),
        ];
    };
    // The finalizer is held while the instance has a cleanup plan or owns cluster-scoped
    // objects: both need the manager before the Instance may go.
    let add_finalizer = !has_finalizer && needs_finalizer(ov, &status);
    let mut intents = Vec::new();
    let mut active = snapshot.clone();
    let mut started = false;
    match trigger::decide(&ov.spec, &inst.spec, snapshot.as_ref()) {
        trigger::Decision::Nothing => {}
        trigger::Decision::Reject { message } => {
            intents.push(Intent::Condition(SetCondition::ready(
                "False",
                "ChangeRejected",
                message,
            )));
        }
        trigger::Decision::Run { plan, reason } => {
            let old = snapshot.as_ref().map(|s| &s.parameters);
            match resolve_parameters(&ov.spec.parameters, &inst.spec.parameters, old) {
                Err(errors) => intents.push(Intent::Condition(SetCondition::ready(
                    "False",
                    "InvalidParameters",
                    format!("plan {plan} not started: {errors}"),
                ))),
                Ok(_) => {
                    let snap = Snapshot::of(&inst.spec, &plan, input.new_uid);
                    intents.push(Intent::StartPlan(PlanStart {
                        plan,
                        reason,
                        snapshot: snap.clone(),
                        add_finalizer,
                    }));
                    active = Some(snap);
                    started = true;
                }
            }
        }
    }
    if add_finalizer && !started {
        intents.push(Intent::SetFinalizer);
    }
    let Some(active) = active else {
        intents.push(Intent::WriteStatus);
        intents.push(Intent::Then(Next::AwaitChange));
        return intents;
    };
    let run_version =
        (active.operator_version != ov.name_any()).then(|| active.operator_version.clone());
    let written = if started {
        Some(ExecutionStatus::InProgress)
    } else {
        written_status(inst, &active)
    };
    intents.push(Intent::ExecutePass(Pass {
        active,
        run_version,
        written,
    }));
    intents
}

/// Deletion: run cleanup (if any), then delete the cluster-scoped objects the inventory
/// lists, then let the Instance go.
fn deletion(
    inst: &Instance,
    ov: Option<&OperatorVersion>,
    snapshot: Option<Snapshot>,
    status: &InstanceStatus,
    has_finalizer: bool,
    new_uid: &str,
) -> Vec<Intent> {
    if !has_finalizer {
        return vec![Intent::Then(Next::AwaitChange)];
    }
    if let Some(ov) = ov
        && trigger::on_deletion(&ov.spec).is_some()
    {
        let running_cleanup = snapshot
            .as_ref()
            .is_some_and(|s| s.plan == trigger::CLEANUP);
        if !running_cleanup {
            let snap = Snapshot::of(&inst.spec, trigger::CLEANUP, new_uid);
            return vec![
                Intent::StartPlan(PlanStart {
                    plan: trigger::CLEANUP.to_string(),
                    reason: Reason::Deletion,
                    snapshot: snap.clone(),
                    add_finalizer: false,
                }),
                Intent::ExecutePass(Pass {
                    active: snap,
                    run_version: None,
                    written: Some(ExecutionStatus::InProgress),
                }),
            ];
        }
        let finished = snapshot.as_ref().is_none_or(|s| {
            status.plan_status.get(&s.plan).is_none_or(|p| {
                p.uid == s.plan_uid && p.status.is_some_and(ExecutionStatus::is_terminal)
            })
        });
        if !finished {
            let active = snapshot.unwrap_or_default();
            let written = written_status(inst, &active);
            return vec![Intent::ExecutePass(Pass {
                active,
                run_version: None,
                written,
            })];
        }
    }
    let objects = status
        .applied
        .iter()
        .filter(|o| o.namespace.is_empty())
        .cloned()
        .collect();
    let operator = match ov {
        Some(ov) => operator_name(inst, ov),
        None => inst
            .labels()
            .get(OPERATOR_LABEL)
            .cloned()
            .unwrap_or_default(),
    };
    vec![
        Intent::DeleteClusterScoped { operator, objects },
        Intent::RemoveFinalizer,
        Intent::Then(Next::AwaitChange),
    ]
}

/// The outcome of a plan request (`kudo.dev/plan-request`) carried out on the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    pub request: String,
    /// Why it was refused, if it was.
    pub refused: Option<String>,
}

/// What a pass does before its workflow runs.
#[derive(Debug, Clone, PartialEq)]
pub enum PassStart {
    /// The plan is not defined by the OperatorVersion: set this condition, write status,
    /// await a change.
    PlanNotFound(SetCondition),
    Run {
        /// The plan's status before this pass (after a reset to the run's uid).
        plan_before: Option<ExecutionStatus>,
        /// A plan request was carried out (or refused): remove its annotation.
        request: Option<PlanRequest>,
        /// Run the workflow with these parameters (`None`: the plan is finished, or failed
        /// now because its parameters do not resolve).
        execute: Option<Parameters>,
    },
}

/// The active run's parameters, resolved and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    pub values: BTreeMap<String, Option<String>>,
    pub params: Value,
}

/// Prepares a pass over `active` (run with `ov`): its status tree (reset when it belongs
/// to another run), a plan request carried out on it, and whether the workflow runs.
pub fn prepare_pass(
    inst: &Instance,
    ov: &OperatorVersion,
    active: &Snapshot,
    status: &mut InstanceStatus,
) -> PassStart {
    let Some(plan) = ov.spec.plans.get(&active.plan) else {
        return PassStart::PlanNotFound(SetCondition::ready(
            "False",
            "PlanNotFound",
            format!(
                "plan {} is not defined by OperatorVersion {}",
                active.plan,
                ov.name_any()
            ),
        ));
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
    let request = inst
        .annotations()
        .get(PLAN_REQUEST_ANNOTATION)
        .map(|request| {
            let result = match request.as_str() {
                "cancel" => cancel(tree),
                "retry" => retry(tree),
                other => Err(format!("unknown plan request {other:?} (cancel or retry)")),
            };
            PlanRequest {
                request: request.clone(),
                refused: result.err(),
            }
        });
    let mut execute = None;
    if !tree.status.is_some_and(ExecutionStatus::is_terminal) {
        let resolved = resolve_parameters(&ov.spec.parameters, &active.parameters, None)
            .map_err(|e| e.to_string())
            .and_then(|values| {
                params_value(&ov.spec.parameters, &values)
                    .map(|params| Parameters { values, params })
                    .map_err(|e| e.to_string())
            });
        match resolved {
            Ok(p) => execute = Some(p),
            Err(errors) => {
                tree.status = Some(ExecutionStatus::FatalError);
                tree.message = format!("parameters invalid: {errors}");
            }
        }
    }
    PassStart::Run {
        plan_before,
        request,
        execute,
    }
}

/// What follows the workflow in the same pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AfterExecute {
    /// The plan completed: delete what the instance no longer renders.
    pub prune: bool,
    /// A cluster-scoped object was just applied: hold the finalizer now, not on the next
    /// reconcile, so a deletion in between cannot leak it. Unguarded: this reconcile may
    /// already have written the Instance.
    pub add_finalizer: bool,
}

/// Decides pruning and the finalizer after the workflow ran and applied `applied`.
pub fn after_execute(
    inst: &Instance,
    plan_now: Option<ExecutionStatus>,
    applied: &[AppliedObject],
) -> AfterExecute {
    let prune_off = inst
        .annotations()
        .get(super::prune::PRUNE_ANNOTATION)
        .is_some_and(|v| v == "false");
    let has_finalizer = inst.finalizers().iter().any(|f| f == CLEANUP_FINALIZER);
    AfterExecute {
        prune: plan_now == Some(ExecutionStatus::Complete) && !prune_off,
        add_finalizer: !has_finalizer && applied.iter().any(|o| o.namespace.is_empty()),
    }
}

/// Drift work at the end of a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftWork {
    None,
    /// The plan that ran last was already complete: look for drift (watched kinds from
    /// the cache; every kind when the periodic full check is due).
    Check,
}

/// How the pass ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassEnd {
    /// Complete: look again when the next full drift check is due.
    UntilFullCheck,
    /// Failed or cancelled: only a change helps.
    AwaitChange,
    /// A step failed transiently: retry with backoff.
    Backoff,
    /// In progress: look again after the poll interval.
    Poll,
}

/// The rest of a pass after its workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finish {
    /// Write `spec.planExecution.status` (the Instance does not say it yet).
    pub write_plan_execution: Option<Option<ExecutionStatus>>,
    pub drift: DriftWork,
    pub end: PassEnd,
}

/// Ends a pass: the Ready condition from the plan's status, the objects pruning left in
/// place (`unpruned`, when pruning ran), the Drifted condition of a first completion, and
/// what is written and when the instance is looked at again.
pub fn finish_pass(
    active: &Snapshot,
    before: &InstanceStatus,
    plan_before: Option<ExecutionStatus>,
    written: Option<ExecutionStatus>,
    has_error: bool,
    unpruned: Option<&[String]>,
    status: &mut InstanceStatus,
) -> Finish {
    let (plan_now, plan_message) = match status.plan_status.get_mut(&active.plan) {
        Some(tree) => {
            if before.plan_status.get(&active.plan) != Some(&*tree) {
                tree.last_updated_timestamp = Some(now());
            }
            (tree.status, tree.message.clone())
        }
        None => (None, String::new()),
    };
    let ready = match plan_now {
        Some(ExecutionStatus::Complete) => SetCondition::ready(
            "True",
            "PlanComplete",
            format!("plan {} complete", active.plan),
        ),
        Some(ExecutionStatus::FatalError) => {
            SetCondition::ready("False", "PlanFailed", plan_message)
        }
        Some(ExecutionStatus::Cancelled) => SetCondition::ready(
            "False",
            "PlanCancelled",
            format!("plan {} was cancelled", active.plan),
        ),
        _ => SetCondition::ready(
            "False",
            "PlanInProgress",
            format!("plan {} in progress", active.plan),
        ),
    };
    ready.apply(status);
    if let Some(left) = unpruned {
        report_unpruned(status, left);
    }
    // Drift is looked for once the plan that ran last has completed (and not in the pass
    // that completed it: what was just applied matches by construction).
    let complete = plan_now == Some(ExecutionStatus::Complete);
    let mut drift = DriftWork::None;
    if complete && plan_before == Some(ExecutionStatus::Complete) {
        drift = DriftWork::Check;
    } else if complete
        && !status
            .conditions
            .iter()
            .any(|c| c.type_ == super::drift::DRIFT_CONDITION)
    {
        // A first completion: what was just applied matches, and saying so now spares the
        // next pass a status write of its own.
        let (value, reason, message) =
            super::drift::condition(&super::drift::Check::default(), true);
        set_condition(
            status,
            super::drift::DRIFT_CONDITION,
            value,
            reason,
            &message,
        );
    }
    let end = if complete {
        PassEnd::UntilFullCheck
    } else if plan_now.is_some_and(ExecutionStatus::is_terminal) {
        PassEnd::AwaitChange
    } else if has_error {
        PassEnd::Backoff
    } else {
        PassEnd::Poll
    };
    Finish {
        write_plan_execution: (plan_now != written).then_some(plan_now),
        drift,
        end,
    }
}

/// The `UnmanagedObjects` condition (a kudo extension): objects pruning left in place.
pub fn report_unpruned(status: &mut InstanceStatus, left: &[String]) {
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

/// The `spec.planExecution.status` the Instance carries for the run `active` (none for
/// another run).
pub fn written_status(inst: &Instance, active: &Snapshot) -> Option<ExecutionStatus> {
    let execution = &inst.spec.plan_execution;
    if execution.uid == active.plan_uid {
        execution.status
    } else {
        None
    }
}

/// Whether the instance needs kudo's finalizer: a cleanup plan or cluster-scoped objects.
pub fn needs_finalizer(ov: &OperatorVersion, status: &InstanceStatus) -> bool {
    trigger::on_deletion(&ov.spec).is_some()
        || status.applied.iter().any(|o| o.namespace.is_empty())
}

/// The Instance's finalizers with kudo's present or not.
pub fn finalizers_with(inst: &Instance, present: bool) -> Vec<String> {
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

/// The operator's name: the OperatorVersion's, else the Instance's label, else the
/// OperatorVersion's own name.
pub fn operator_name(inst: &Instance, ov: &OperatorVersion) -> String {
    ov.spec
        .operator
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| inst.labels().get(OPERATOR_LABEL).cloned())
        .unwrap_or_else(|| ov.name_any())
}

/// Now, as Kubernetes writes times.
pub fn now() -> Time {
    Time(Timestamp::now())
}

/// Sets a condition, keeping lastTransitionTime when the status is unchanged.
pub fn set_condition(
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

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
