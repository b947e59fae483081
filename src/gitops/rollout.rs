//! Progressive rollout across clusters, as pure functions: the waves an instance's targets
//! form, what each cluster's Instance says about the desired spec ([`observe`]), and which
//! clusters get the desired spec now ([`plan`]).
//!
//! Progress is derived from the clusters' own Instance status every time, never stored, so a
//! restarted daemon continues where the rollout was. A cluster counts as done only when the
//! plan the engine started *for this spec* is COMPLETE: the engine's snapshot annotation must
//! name this spec's OperatorVersion and parameters, and the plan status must carry the
//! snapshot's uid. A COMPLETE from an earlier spec is never taken as progress.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::{ExecutionStatus, Instance};
use crate::engine::trigger::{LAST_APPLIED_ANNOTATION, Snapshot};

/// How many clusters a wave may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Count {
    Fixed(u32),
    Percent(u32),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum Strategy {
    /// Every target at once.
    #[default]
    Parallel,
    /// One cluster at a time.
    Serial,
    /// Waves of at most this many clusters.
    MaxUnavailable(Count),
}

/// What one cluster's Instance says about the desired spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "message", rename_all = "camelCase")]
pub enum Progress {
    /// The cluster runs another spec (or none): not reached yet.
    NotApplied,
    /// The spec is applied; the engine has not started its plan yet.
    Pending,
    /// The plan started for this spec is running.
    InProgress,
    /// The plan started for this spec is COMPLETE.
    Complete,
    /// The plan ended FATAL_ERROR, or the engine refused the change.
    Failed(String),
}

impl Progress {
    pub fn as_str(&self) -> &'static str {
        match self {
            Progress::NotApplied => "NotApplied",
            Progress::Pending => "Pending",
            Progress::InProgress => "InProgress",
            Progress::Complete => "Complete",
            Progress::Failed(_) => "Failed",
        }
    }
}

/// The rollout as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum State {
    /// Wave `wave` (0-based) of `waves` is being rolled out.
    Progressing {
        wave: usize,
        waves: usize,
    },
    /// A gate of a stage holds the rollout (see [`super::stages`]).
    Waiting {
        stage: String,
        gate: String,
        reason: String,
    },
    /// `paused`: nothing more is applied; what runs keeps running.
    Paused,
    Complete,
    /// More clusters failed than the rollout tolerates; no further cluster gets the spec.
    Halted {
        cluster: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutPlan {
    /// Clusters to apply the desired spec to now.
    pub apply_now: Vec<String>,
    pub state: State,
}

/// Orders the targets into waves: the canaries first (as one wave), then the rest in the
/// given order, chunked by the strategy.
pub fn waves(strategy: Strategy, targets: &[String], canary: &[String]) -> Vec<Vec<String>> {
    let first: Vec<String> = targets
        .iter()
        .filter(|t| canary.contains(t))
        .cloned()
        .collect();
    let rest: Vec<String> = targets
        .iter()
        .filter(|t| !canary.contains(t))
        .cloned()
        .collect();
    let size = match strategy {
        Strategy::Parallel => rest.len().max(1),
        Strategy::Serial => 1,
        Strategy::MaxUnavailable(Count::Fixed(n)) => (n as usize).max(1),
        Strategy::MaxUnavailable(Count::Percent(p)) => {
            (targets.len() * p as usize).div_ceil(100).max(1)
        }
    };
    let mut out = Vec::new();
    if !first.is_empty() {
        out.push(first);
    }
    out.extend(rest.chunks(size).map(<[String]>::to_vec));
    out
}

/// Which clusters get the desired spec now. A failed cluster halts everything; otherwise
/// the first wave not yet complete is the current one and its clusters not yet reached get
/// the spec.
pub fn plan(waves: &[Vec<String>], observed: &BTreeMap<String, Progress>) -> RolloutPlan {
    let get = |c: &String| observed.get(c).cloned().unwrap_or(Progress::NotApplied);
    for wave in waves {
        for c in wave {
            if let Progress::Failed(reason) = get(c) {
                return RolloutPlan {
                    apply_now: Vec::new(),
                    state: State::Halted {
                        cluster: c.clone(),
                        reason,
                    },
                };
            }
        }
    }
    for (i, wave) in waves.iter().enumerate() {
        if wave.iter().all(|c| get(c) == Progress::Complete) {
            continue;
        }
        return RolloutPlan {
            apply_now: wave
                .iter()
                .filter(|c| get(c) == Progress::NotApplied)
                .cloned()
                .collect(),
            state: State::Progressing {
                wave: i,
                waves: waves.len(),
            },
        };
    }
    RolloutPlan {
        apply_now: Vec::new(),
        state: State::Complete,
    }
}

/// Reasons the engine gives (Ready condition) when it refuses a spec change.
const REFUSALS: &[&str] = &["ChangeRejected", "InvalidParameters", "InvalidSpec"];

/// Reads one cluster's Instance against the desired OperatorVersion and parameters.
pub fn observe(
    live: Option<&Instance>,
    operator_version: &str,
    parameters: &BTreeMap<String, String>,
) -> Progress {
    let Some(live) = live else {
        return Progress::NotApplied;
    };
    if live.spec.operator_version.name.as_deref() != Some(operator_version)
        || &live.spec.parameters != parameters
    {
        return Progress::NotApplied;
    }
    let snapshot: Option<Snapshot> = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok());
    // Borrowed: the planner observes every instance × cluster on every pass.
    let empty = crate::api::InstanceStatus::default();
    let status = live.status.as_ref().unwrap_or(&empty);
    let acted_on = snapshot
        .as_ref()
        .filter(|s| s.operator_version == operator_version && &s.parameters == parameters);
    let Some(snap) = acted_on else {
        let refused = status.conditions.iter().find(|c| {
            c.type_ == "Ready" && c.status == "False" && REFUSALS.contains(&c.reason.as_str())
        });
        return match refused {
            Some(c) => Progress::Failed(format!("{}: {}", c.reason, c.message)),
            None => Progress::Pending,
        };
    };
    match status.plan_status.get(&snap.plan) {
        Some(p) if p.uid == snap.plan_uid => match p.status {
            Some(ExecutionStatus::Complete) => Progress::Complete,
            Some(ExecutionStatus::FatalError) => Progress::Failed(format!(
                "plan {} FATAL_ERROR: {}",
                snap.plan,
                fatal_detail(p)
            )),
            _ => Progress::InProgress,
        },
        _ => Progress::Pending,
    }
}

/// Where a named plan stands on one cluster for a spec (a `plan` gate's view).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanRun {
    /// It ran on this spec and completed.
    Done,
    /// It runs now (or ended other than COMPLETE: the spec's progress says FATAL_ERROR).
    Running,
    /// Asked for (`spec.planExecution.planName` set, no uid yet): the engine starts it next.
    Requested,
    /// Not run on this spec yet.
    NotRun,
}

/// Whether `plan` ran on the live Instance after it took the spec (`operator_version`,
/// `parameters`): the engine's snapshot records the last plan started and for which spec.
pub fn plan_run(
    live: &Instance,
    operator_version: &str,
    parameters: &BTreeMap<String, String>,
    plan: &str,
) -> PlanRun {
    let snapshot: Option<Snapshot> = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok());
    let execution = &live.spec.plan_execution;
    if execution.plan_name == plan && execution.uid.is_empty() {
        return PlanRun::Requested;
    }
    match snapshot {
        Some(snap)
            if snap.plan == plan
                && snap.operator_version == operator_version
                && &snap.parameters == parameters =>
        {
            let done = live
                .status
                .as_ref()
                .and_then(|s| s.plan_status.get(plan))
                .is_some_and(|p| {
                    p.uid == snap.plan_uid && p.status == Some(ExecutionStatus::Complete)
                });
            if done {
                PlanRun::Done
            } else {
                PlanRun::Running
            }
        }
        _ => PlanRun::NotRun,
    }
}

/// The deepest message of a failed plan (the step's, else the phase's, else the plan's).
fn fatal_detail(p: &crate::api::PlanStatus) -> String {
    for phase in &p.phases {
        for step in &phase.steps {
            if step.status == Some(ExecutionStatus::FatalError) && !step.message.is_empty() {
                return format!("{}/{}: {}", phase.name, step.name, step.message);
            }
        }
        if phase.status == Some(ExecutionStatus::FatalError) && !phase.message.is_empty() {
            return format!("{}: {}", phase.name, phase.message);
        }
    }
    p.message.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Condition, InstanceSpec, InstanceStatus, PlanStatus};

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn observed(pairs: &[(&str, Progress)]) -> BTreeMap<String, Progress> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn waves_by_strategy() {
        let t = names(&["a", "b", "c", "d", "e"]);
        assert_eq!(waves(Strategy::Parallel, &t, &[]), vec![t.clone()]);
        assert_eq!(waves(Strategy::Serial, &t, &[]).len(), 5);
        assert_eq!(
            waves(Strategy::MaxUnavailable(Count::Fixed(2)), &t, &[]),
            vec![names(&["a", "b"]), names(&["c", "d"]), names(&["e"])]
        );
        // 40% of 5 = 2 per wave; canary c first on its own.
        assert_eq!(
            waves(
                Strategy::MaxUnavailable(Count::Percent(40)),
                &t,
                &names(&["c"])
            ),
            vec![names(&["c"]), names(&["a", "b"]), names(&["d", "e"])]
        );
        // A canary that is not a target is ignored.
        assert_eq!(
            waves(Strategy::Parallel, &t, &names(&["zz"])),
            vec![t.clone()]
        );
        assert!(waves(Strategy::Serial, &[], &[]).is_empty());
    }

    #[test]
    fn serial_advances_one_cluster_per_completed_wave() {
        let w = waves(Strategy::Serial, &names(&["a", "b", "c"]), &[]);
        let p = plan(&w, &BTreeMap::new());
        assert_eq!(p.apply_now, ["a"]);
        assert_eq!(p.state, State::Progressing { wave: 0, waves: 3 });
        let p = plan(&w, &observed(&[("a", Progress::InProgress)]));
        assert!(p.apply_now.is_empty(), "a still running: {p:?}");
        let p = plan(&w, &observed(&[("a", Progress::Complete)]));
        assert_eq!(p.apply_now, ["b"]);
        let p = plan(
            &w,
            &observed(&[
                ("a", Progress::Complete),
                ("b", Progress::Complete),
                ("c", Progress::Complete),
            ]),
        );
        assert_eq!(p.state, State::Complete);
        assert!(p.apply_now.is_empty());
    }

    #[test]
    fn parallel_applies_everything_at_once() {
        let w = waves(Strategy::Parallel, &names(&["a", "b", "c"]), &[]);
        let p = plan(&w, &observed(&[("b", Progress::Pending)]));
        assert_eq!(p.apply_now, ["a", "c"]);
    }

    #[test]
    fn a_failure_halts_the_rollout() {
        let w = waves(Strategy::Serial, &names(&["a", "b", "c"]), &[]);
        let p = plan(&w, &observed(&[("a", Progress::Failed("boom".into()))]));
        assert!(p.apply_now.is_empty());
        assert_eq!(
            p.state,
            State::Halted {
                cluster: "a".into(),
                reason: "boom".into()
            }
        );
        // Even in a parallel wave where other clusters are not reached yet.
        let w = waves(Strategy::Parallel, &names(&["a", "b"]), &[]);
        let p = plan(&w, &observed(&[("a", Progress::Failed("x".into()))]));
        assert!(p.apply_now.is_empty());
    }

    fn instance(ov: &str, params: &[(&str, &str)]) -> Instance {
        let mut i = Instance::new(
            "i",
            InstanceSpec {
                parameters: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
        );
        i.spec.operator_version.name = Some(ov.to_string());
        i
    }

    fn with_snapshot(mut i: Instance, plan: &str, uid: &str) -> Instance {
        let snap = Snapshot::of(&i.spec, plan, uid);
        i.metadata.annotations = Some(
            [(
                LAST_APPLIED_ANNOTATION.to_string(),
                serde_json::to_string(&snap).expect("json"),
            )]
            .into(),
        );
        i
    }

    fn with_plan(mut i: Instance, plan: &str, uid: &str, status: ExecutionStatus) -> Instance {
        let mut s = i.status.take().unwrap_or_default();
        s.plan_status.insert(
            plan.to_string(),
            PlanStatus {
                name: plan.into(),
                uid: uid.into(),
                status: Some(status),
                message: "m".into(),
                ..Default::default()
            },
        );
        i.status = Some(s);
        i
    }

    #[test]
    fn observe_never_takes_a_stale_complete() {
        let want: BTreeMap<String, String> = [("N".to_string(), "2".to_string())].into();
        assert_eq!(observe(None, "op-1", &want), Progress::NotApplied);
        // Old spec on the cluster, its plan COMPLETE: not reached.
        let old = with_plan(
            with_snapshot(instance("op-1", &[("N", "1")]), "deploy", "u1"),
            "deploy",
            "u1",
            ExecutionStatus::Complete,
        );
        assert_eq!(observe(Some(&old), "op-1", &want), Progress::NotApplied);
        // New spec applied, engine has not acted: the old COMPLETE (snapshot N=1) is stale.
        let mut applied = old.clone();
        applied.spec.parameters = want.clone();
        assert_eq!(observe(Some(&applied), "op-1", &want), Progress::Pending);
        // Engine acted (snapshot N=2, uid u2) but the tree still shows u1 COMPLETE: pending.
        let acted = with_snapshot(applied.clone(), "update", "u2");
        let acted = with_plan(acted, "update", "u1", ExecutionStatus::Complete);
        assert_eq!(observe(Some(&acted), "op-1", &want), Progress::Pending);
        let running = with_plan(acted.clone(), "update", "u2", ExecutionStatus::InProgress);
        assert_eq!(observe(Some(&running), "op-1", &want), Progress::InProgress);
        let done = with_plan(acted.clone(), "update", "u2", ExecutionStatus::Complete);
        assert_eq!(observe(Some(&done), "op-1", &want), Progress::Complete);
        let failed = with_plan(acted, "update", "u2", ExecutionStatus::FatalError);
        assert!(
            matches!(observe(Some(&failed), "op-1", &want), Progress::Failed(m) if m.contains("FATAL_ERROR"))
        );
    }

    #[test]
    fn observe_refused_change_is_a_failure() {
        let want: BTreeMap<String, String> = [("N".to_string(), "2".to_string())].into();
        let mut i = with_snapshot(instance("op-1", &[("N", "1")]), "deploy", "u1");
        i.spec.parameters = want.clone();
        i.status = Some(InstanceStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "ChangeRejected".into(),
                message: "parameter N is immutable".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(
            matches!(observe(Some(&i), "op-1", &want), Progress::Failed(m) if m.contains("immutable"))
        );
    }
}
