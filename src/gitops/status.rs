//! What the status API tells people about one instance on one cluster: the plan that runs
//! (or ran last), where it stands (phase, step, steps done of total) and the revision that
//! applied it. Pure reads of a live Instance.

use serde::{Deserialize, Serialize};

use crate::api::{ExecutionStatus, Instance, OperatorVersion, PlanStatus};

/// The active (or last) plan of an instance on a cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanDetail {
    pub plan: String,
    /// KUDO's status (`IN_PROGRESS`, `COMPLETE`, `FATAL_ERROR`, ...); empty when never run.
    pub status: String,
    /// The first unfinished phase and step (the failed ones after FATAL_ERROR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub steps_done: usize,
    pub steps_total: usize,
    /// The deepest message (step, else phase, else plan).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time the run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// The plan to show: the running one, else the one `spec.planExecution` names, else the
/// most recently updated.
pub fn active_plan(inst: &Instance) -> Option<(&String, &PlanStatus)> {
    let plans = &inst.status.as_ref()?.plan_status;
    plans
        .iter()
        .find(|(_, p)| p.status.is_some_and(ExecutionStatus::is_running))
        .or_else(|| {
            let named = &inst.spec.plan_execution.plan_name;
            plans.get_key_value(named)
        })
        .or_else(|| {
            plans
                .iter()
                .filter(|(_, p)| p.status.is_some())
                .max_by_key(|(_, p)| p.last_updated_timestamp.as_ref().map(|t| t.0))
        })
}

pub fn plan_detail(inst: &Instance) -> Option<PlanDetail> {
    let (name, p) = active_plan(inst)?;
    let mut d = PlanDetail {
        plan: name.clone(),
        status: p.status.map(|s| s.to_string()).unwrap_or_default(),
        message: p.message.clone(),
        started_at: p.started_at.as_ref().map(|t| t.0.to_string()),
        ..Default::default()
    };
    for phase in &p.phases {
        for step in &phase.steps {
            d.steps_total += 1;
            if step.status == Some(ExecutionStatus::Complete) {
                d.steps_done += 1;
            } else if d.step.is_none() {
                d.phase = Some(phase.name.clone());
                d.step = Some(step.name.clone());
                if !step.message.is_empty() {
                    d.message = step.message.clone();
                } else if !phase.message.is_empty() {
                    d.message = phase.message.clone();
                }
            }
        }
    }
    Some(d)
}

/// One instance on every cluster it targets, for `kudo plan status --server`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceDetail {
    pub namespace: String,
    pub name: String,
    /// The desired-state revision.
    pub revision: String,
    /// The rollout across clusters: `Progressing`, `Complete` or `Halted`.
    pub rollout: String,
    pub clusters: std::collections::BTreeMap<String, ClusterInstance>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInstance {
    /// The live Instance (None: not applied there yet, or the cluster was never observed).
    pub instance: Option<Instance>,
    /// The OperatorVersion the live Instance runs, from the desired state.
    pub operator_version: Option<OperatorVersion>,
    pub progress: String,
    pub up: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn detail_names_the_unfinished_step_and_counts() {
        let inst: Instance = serde_json::from_value(json!({
            "apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "i", "namespace": "ns"},
            "spec": {"operatorVersion": {"name": "ov"}, "planExecution": {"planName": "deploy"}},
            "status": {"planStatus": {
                "update": {"name": "update", "status": "COMPLETE", "lastUpdatedTimestamp": "2024-01-01T00:00:00Z"},
                "deploy": {"name": "deploy", "status": "IN_PROGRESS", "phases": [
                    {"name": "main", "status": "IN_PROGRESS", "steps": [
                        {"name": "a", "status": "COMPLETE"},
                        {"name": "b", "status": "ERROR", "message": "waiting for Job x"},
                        {"name": "c", "status": "PENDING"}]}]}
            }}
        }))
        .expect("instance");
        let d = plan_detail(&inst).expect("detail");
        assert_eq!(d.plan, "deploy");
        assert_eq!(d.status, "IN_PROGRESS");
        assert_eq!(
            (d.phase.as_deref(), d.step.as_deref()),
            (Some("main"), Some("b"))
        );
        assert_eq!((d.steps_done, d.steps_total), (1, 3));
        assert_eq!(d.message, "waiting for Job x");
    }
}
