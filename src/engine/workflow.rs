//! One execution pass over an active plan, KUDO's `workflow.Execute`.
//!
//! Guarantees:
//! - A step or phase that is `COMPLETE` or `FATAL_ERROR` is never run again in the same plan
//!   run (same uid); this is what makes a restarted manager resume without repeating work.
//! - Serial strategies stop at the first unfinished child; a child that finishes during the
//!   pass lets the next one start in the same pass. Parallel strategies run every unfinished
//!   child each pass.
//! - All tasks of a step run in every pass until each reports done; the step completes when
//!   all are done in one pass (tasks are idempotent: apply and check health).
//! - A transient task error marks the step `ERROR` (with the message) and leaves the phase
//!   and plan `IN_PROGRESS`; the step is retried on a later pass.
//! - A fatal task error marks step, phase and plan `FATAL_ERROR` with the message and stops
//!   the pass; the plan is terminal until a new trigger.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{ExecutionStatus, Ordering, Plan, PlanStatus, Task};

use super::status::{align, is_finished};

/// Where a task runs, for rendering (`.PlanName/.PhaseName/.StepName`), object annotations
/// and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRef<'a> {
    pub plan: &'a str,
    pub phase: &'a str,
    pub step: &'a str,
    /// When the step first ran in this plan run (bounded waits inside a task measure from it).
    pub started: Timestamp,
}

/// What a task reported in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Applied/deleted and healthy: nothing left to do.
    Done,
    /// Still converging (objects not yet healthy); the message says what is awaited.
    InProgress(String),
    /// A transient failure: retried on a later pass.
    Error(String),
    /// A terminal failure (render error, failed Job, missing task): stops the plan.
    Fatal(String),
}

/// Runs tasks. The production runner renders, applies and reads health on a cluster; tests
/// use plain functions. Runners must be idempotent: a task is run once per pass until done.
pub trait TaskRunner {
    fn run(
        &mut self,
        at: &StepRef<'_>,
        task: &Task,
    ) -> impl std::future::Future<Output = TaskOutcome> + Send;
}

/// What a pass did, for logs, metrics and requeue decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Steps that completed in this pass, as (phase, step).
    pub completed_steps: Vec<(String, String)>,
    /// The plan reached a terminal state in this pass (COMPLETE or FATAL_ERROR).
    pub finished: bool,
    /// Some step is in ERROR: the caller should retry with backoff.
    pub has_error: bool,
}

/// Executes one pass of `plan` (named by `status.name`) and updates `status` in place.
/// `tasks` are the OperatorVersion's tasks; a step naming a missing task is fatal.
pub async fn execute<R: TaskRunner>(
    plan: &Plan,
    tasks: &[Task],
    status: &mut PlanStatus,
    runner: &mut R,
) -> PassReport {
    execute_at(plan, tasks, status, runner, Timestamp::now()).await
}

/// [`execute`] at a given time, which step and plan timeouts are measured against.
pub async fn execute_at<R: TaskRunner>(
    plan: &Plan,
    tasks: &[Task],
    status: &mut PlanStatus,
    runner: &mut R,
    now: Timestamp,
) -> PassReport {
    let mut report = PassReport::default();
    if status.status.is_some_and(ExecutionStatus::is_terminal) {
        return report;
    }
    align(status, plan);
    let plan_started = status.started_at.get_or_insert(Time(now)).0;
    status.status = Some(ExecutionStatus::InProgress);
    status.message.clear();
    let plan_name = status.name.clone();
    let plan_serial = plan.strategy.unwrap_or_default() == Ordering::Serial;

    for (pi, phase) in plan.phases.iter().enumerate() {
        if is_finished(status.phases[pi].status) {
            continue;
        }
        status.phases[pi].status = Some(ExecutionStatus::InProgress);
        let phase_serial = phase.strategy.unwrap_or_default() == Ordering::Serial;

        for (si, step) in phase.steps.iter().enumerate() {
            if is_finished(status.phases[pi].steps[si].status) {
                continue;
            }
            let step_started = status.phases[pi].steps[si]
                .started_at
                .get_or_insert(Time(now))
                .0;
            let at = StepRef {
                plan: &plan_name,
                phase: &phase.name,
                step: &step.name,
                started: step_started,
            };
            let mut outcome = run_step(&at, &step.tasks, tasks, runner).await;
            if let StepOutcome::Waiting(why) | StepOutcome::Error(why) = &outcome {
                match timed_out(&step.timeout, step_started, now) {
                    Ok(Some(limit)) => {
                        outcome = StepOutcome::Fatal(format!(
                            "step {} timed out after {limit}: {why}",
                            step.name
                        ));
                    }
                    Ok(None) => {}
                    Err(e) => outcome = StepOutcome::Fatal(e),
                }
            }
            let step_status = &mut status.phases[pi].steps[si];
            match outcome {
                StepOutcome::Done => {
                    step_status.status = Some(ExecutionStatus::Complete);
                    step_status.message.clear();
                    report
                        .completed_steps
                        .push((phase.name.clone(), step.name.clone()));
                }
                StepOutcome::Waiting(msg) => {
                    step_status.status = Some(ExecutionStatus::InProgress);
                    step_status.message = msg;
                }
                StepOutcome::Error(msg) => {
                    step_status.status = Some(ExecutionStatus::Error);
                    step_status.message = msg;
                    report.has_error = true;
                }
                StepOutcome::Fatal(msg) => {
                    let msg = format!(
                        "plan {plan_name}, phase {}, step {}: {msg}",
                        phase.name, step.name
                    );
                    step_status.status = Some(ExecutionStatus::FatalError);
                    step_status.message = msg.clone();
                    status.phases[pi].status = Some(ExecutionStatus::FatalError);
                    status.phases[pi].message = msg.clone();
                    status.status = Some(ExecutionStatus::FatalError);
                    status.message = msg;
                    report.finished = true;
                    return report;
                }
            }
            if phase_serial && !is_finished(status.phases[pi].steps[si].status) {
                break;
            }
        }

        let phase_done = status.phases[pi]
            .steps
            .iter()
            .all(|s| s.status == Some(ExecutionStatus::Complete));
        if phase_done {
            status.phases[pi].status = Some(ExecutionStatus::Complete);
            status.phases[pi].message.clear();
        } else if plan_serial {
            break;
        }
    }

    if status
        .phases
        .iter()
        .all(|p| p.status == Some(ExecutionStatus::Complete))
    {
        status.status = Some(ExecutionStatus::Complete);
        report.finished = true;
        return report;
    }
    let plan_timeout = match timed_out(&plan.timeout, plan_started, now) {
        Ok(Some(limit)) => Some(format!("plan {plan_name} timed out after {limit}")),
        Ok(None) => None,
        Err(e) => Some(e),
    };
    if let Some(message) = plan_timeout {
        let waiting: Vec<String> = status
            .phases
            .iter()
            .flat_map(|p| &p.steps)
            .filter(|s| !is_finished(s.status) && !s.message.is_empty())
            .map(|s| format!("step {}: {}", s.name, s.message))
            .collect();
        let message = if waiting.is_empty() {
            message
        } else {
            format!("{message}: {}", waiting.join("; "))
        };
        for phase in &mut status.phases {
            if !is_finished(phase.status) {
                phase.status = Some(ExecutionStatus::FatalError);
                phase.message = message.clone();
            }
        }
        status.status = Some(ExecutionStatus::FatalError);
        status.message = message;
        report.finished = true;
    }
    report
}

/// `Ok(Some(limit))` when `timeout` (Go syntax; empty means none) has passed since `since`.
fn timed_out(timeout: &str, since: Timestamp, now: Timestamp) -> Result<Option<String>, String> {
    if timeout.is_empty() {
        return Ok(None);
    }
    let limit =
        crate::util::duration::parse_go(timeout).map_err(|e| format!("invalid timeout: {e}"))?;
    let elapsed = now.duration_since(since).unsigned_abs();
    Ok((elapsed > limit).then(|| timeout.to_string()))
}

enum StepOutcome {
    Done,
    Waiting(String),
    Error(String),
    Fatal(String),
}

/// Runs every task of a step (each one, even after an earlier one is still waiting, so a
/// step's objects converge together) and combines the outcomes: fatal beats error beats
/// waiting beats done.
async fn run_step<R: TaskRunner>(
    at: &StepRef<'_>,
    task_names: &[String],
    tasks: &[Task],
    runner: &mut R,
) -> StepOutcome {
    let mut waiting = Vec::new();
    let mut errors = Vec::new();
    for name in task_names {
        let Some(task) = tasks.iter().find(|t| &t.name == name) else {
            return StepOutcome::Fatal(format!("task {name:?} is not defined"));
        };
        match runner.run(at, task).await {
            TaskOutcome::Done => {}
            TaskOutcome::InProgress(msg) => waiting.push(format!("task {name}: {msg}")),
            TaskOutcome::Error(msg) => errors.push(format!("task {name}: {msg}")),
            TaskOutcome::Fatal(msg) => return StepOutcome::Fatal(format!("task {name}: {msg}")),
        }
    }
    if !errors.is_empty() {
        StepOutcome::Error(errors.join("; "))
    } else if !waiting.is_empty() {
        StepOutcome::Waiting(waiting.join("; "))
    } else {
        StepOutcome::Done
    }
}
