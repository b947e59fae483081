//! The plan status tree: creation on a new trigger, lookups and roll-up.

use crate::api::{ExecutionStatus, PhaseStatus, Plan, PlanStatus, StepStatus};

/// A fresh status tree for a newly triggered plan: everything `PENDING` under the new uid.
/// A new uid always resets the tree; nothing of a previous run survives.
pub fn new_plan_status(plan_name: &str, plan: &Plan, uid: &str) -> PlanStatus {
    PlanStatus {
        name: plan_name.to_string(),
        status: Some(ExecutionStatus::Pending),
        message: String::new(),
        last_updated_timestamp: None,
        started_at: None,
        uid: uid.to_string(),
        phases: plan
            .phases
            .iter()
            .map(|phase| PhaseStatus {
                name: phase.name.clone(),
                status: Some(ExecutionStatus::Pending),
                message: String::new(),
                steps: phase
                    .steps
                    .iter()
                    .map(|step| StepStatus {
                        name: step.name.clone(),
                        status: Some(ExecutionStatus::Pending),
                        message: String::new(),
                        started_at: None,
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The status of a phase or step that is done and must never run again in this plan run.
pub fn is_finished(status: Option<ExecutionStatus>) -> bool {
    status.is_some_and(ExecutionStatus::is_terminal)
}

/// Brings an existing tree in line with the plan's shape (a phase or step missing from the
/// status, e.g. after a status was written by an older version, is added as `PENDING`),
/// keeping every recorded state.
pub fn align(status: &mut PlanStatus, plan: &Plan) {
    let fresh = new_plan_status(&status.name, plan, &status.uid);
    let mut phases = Vec::with_capacity(fresh.phases.len());
    for fresh_phase in fresh.phases {
        let mut phase = status
            .phases
            .iter()
            .find(|p| p.name == fresh_phase.name)
            .cloned()
            .unwrap_or_else(|| fresh_phase.clone());
        let steps = fresh_phase
            .steps
            .into_iter()
            .map(|fresh_step| {
                phase
                    .steps
                    .iter()
                    .find(|s| s.name == fresh_step.name)
                    .cloned()
                    .unwrap_or(fresh_step)
            })
            .collect();
        phase.steps = steps;
        phases.push(phase);
    }
    status.phases = phases;
}

/// Cancels a running plan: the plan and every phase and step not yet finished become
/// CANCELLED (a kudo extension); objects already applied stay.
pub fn cancel(status: &mut PlanStatus) -> Result<(), String> {
    if !status.status.is_some_and(ExecutionStatus::is_running) {
        return Err(format!(
            "plan {} is not running (status {}); nothing to cancel",
            status.name,
            status.status.map(ExecutionStatus::as_str).unwrap_or("none")
        ));
    }
    status.status = Some(ExecutionStatus::Cancelled);
    status.message = "cancelled".into();
    for phase in &mut status.phases {
        if !is_finished(phase.status) {
            phase.status = Some(ExecutionStatus::Cancelled);
        }
        for step in &mut phase.steps {
            if !is_finished(step.status) {
                step.status = Some(ExecutionStatus::Cancelled);
            }
        }
    }
    Ok(())
}

/// Resumes a plan that ended FATAL_ERROR or CANCELLED from its first unfinished step: the
/// same run (uid) continues, COMPLETE steps stay complete, the rest are PENDING again.
pub fn retry(status: &mut PlanStatus) -> Result<(), String> {
    if !matches!(
        status.status,
        Some(ExecutionStatus::FatalError) | Some(ExecutionStatus::Cancelled)
    ) {
        return Err(format!(
            "plan {} ended neither FATAL_ERROR nor CANCELLED (status {}); nothing to retry",
            status.name,
            status.status.map(ExecutionStatus::as_str).unwrap_or("none")
        ));
    }
    status.status = Some(ExecutionStatus::InProgress);
    status.message.clear();
    status.started_at = None;
    for phase in &mut status.phases {
        if phase.status != Some(ExecutionStatus::Complete) {
            phase.status = Some(ExecutionStatus::Pending);
            phase.message.clear();
        }
        for step in &mut phase.steps {
            if step.status != Some(ExecutionStatus::Complete) {
                step.status = Some(ExecutionStatus::Pending);
                step.message.clear();
                step.started_at = None;
            }
        }
    }
    Ok(())
}
