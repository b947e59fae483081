//! Staged fleet rollouts as one pure function: which clusters get an instance's desired spec
//! now, given its stages and gates, what the clusters report, what the control plane
//! remembers (when a stage finished, when a cluster got the spec, approvals), and the clock.
//!
//! Guarantees:
//! - Stages run in order; a cluster belongs to the first stage that names or selects it, and
//!   targets no stage takes form a last stage, `remaining`, with the rollout's own
//!   `maxUnavailable`. Today's forms (`parallel`, `serial`, `{maxUnavailable}`, `canary`) are
//!   stages too ([`RolloutSpec::legacy`]), with the same waves as before.
//! - Within a stage, waves of at most `maxUnavailable` clusters; a wave advances when each of
//!   its clusters is COMPLETE or counted failed.
//! - An `approval` gate holds its stage's start; `bake`, `prometheus` and `plan` gates hold
//!   everything after their stage until they open, in the order written. A stage that has
//!   started is never held by its approval again (a restart mid-stage does not ask twice).
//! - A failed cluster (FATAL_ERROR, a refused spec, or not COMPLETE within
//!   `progressDeadline` of getting the spec) counts once; more than `maxFailures` halt the
//!   rollout: no cluster gets the spec any more.
//! - `paused` applies nothing; what runs keeps running.
//! - A `plan` gate asks for its plan on the stage's clusters ([`Decision::run_plan`]); the
//!   caller triggers it and reports the verdict (every cluster ran it on this spec).
//! - With `onFailure: revert`, a halt on a spec other than the last one that completed
//!   everywhere reverts: [`Memory::reverted`] quarantines this spec (nothing applies it any
//!   more) and names the spec to go back to; the caller gives it back to the clusters that
//!   took the failed one. A new spec (a commit that changes the instance) lifts it.
//! - Time is an input (`now`, Unix milliseconds): nothing here reads a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::rollout::State as Phase;
use super::rollout::{Count, Progress, Strategy};

/// What to do when more than `maxFailures` clusters failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum OnFailure {
    #[default]
    Halt,
    Revert,
}

/// A condition between stages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Gate {
    /// The stage stays COMPLETE this long.
    Bake(#[serde(with = "secs")] Duration),
    /// A person approves before the stage starts.
    Approval,
    /// A plan of the framework that must COMPLETE on every cluster of the stage.
    Plan(String),
    /// A PromQL query whose result must be non-empty and all non-zero.
    Prometheus {
        query: String,
        #[serde(with = "opt_secs")]
        timeout: Option<Duration>,
    },
}

impl Gate {
    pub fn kind(&self) -> &'static str {
        match self {
            Gate::Bake(_) => "bake",
            Gate::Approval => "approval",
            Gate::Plan(_) => "plan",
            Gate::Prometheus { .. } => "prometheus",
        }
    }
}

/// One stage, its clusters resolved against the instance's targets (in target order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stage {
    pub name: String,
    pub clusters: Vec<String>,
    pub strategy: Strategy,
    pub gates: Vec<Gate>,
}

/// An instance's rollout model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    pub stages: Vec<Stage>,
    pub max_failures: u32,
    #[serde(with = "opt_secs")]
    pub progress_deadline: Option<Duration>,
    pub on_failure: OnFailure,
    pub paused: bool,
}

impl RolloutSpec {
    /// Today's forms: the canaries as one stage, then the other targets in waves of the
    /// strategy (a percentage counts every target, as it always did).
    pub fn legacy(strategy: Strategy, targets: &[String], canary: &[String]) -> RolloutSpec {
        let (first, rest): (Vec<String>, Vec<String>) =
            targets.iter().cloned().partition(|t| canary.contains(t));
        let strategy = match strategy {
            Strategy::MaxUnavailable(Count::Percent(p)) => Strategy::MaxUnavailable(Count::Fixed(
                (targets.len() * p as usize).div_ceil(100).max(1) as u32,
            )),
            s => s,
        };
        let mut stages = Vec::new();
        if !first.is_empty() {
            stages.push(Stage {
                name: "canary".into(),
                clusters: first,
                strategy: Strategy::Parallel,
                gates: Vec::new(),
            });
        }
        stages.push(Stage {
            name: REMAINING.into(),
            clusters: rest,
            strategy,
            gates: Vec::new(),
        });
        RolloutSpec {
            stages,
            max_failures: 0,
            progress_deadline: None,
            on_failure: OnFailure::Halt,
            paused: false,
        }
    }

    /// The waves of every stage, in order (what the status shows as `wave i of n`).
    pub fn waves(&self) -> Vec<Vec<String>> {
        self.stages.iter().flat_map(stage_waves).collect()
    }
}

/// The name of the stage that takes the targets no stage names or selects.
pub const REMAINING: &str = "remaining";

/// A stage's clusters in waves of its strategy.
pub fn stage_waves(stage: &Stage) -> Vec<Vec<String>> {
    let size = match stage.strategy {
        Strategy::Parallel => stage.clusters.len().max(1),
        Strategy::Serial => 1,
        Strategy::MaxUnavailable(Count::Fixed(n)) => (n as usize).max(1),
        Strategy::MaxUnavailable(Count::Percent(p)) => {
            (stage.clusters.len() * p as usize).div_ceil(100).max(1)
        }
    };
    stage
        .clusters
        .chunks(size)
        .map(<[String]>::to_vec)
        .collect()
}

/// Where a dependency must be COMPLETE before an instance's new spec reaches a cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Scope {
    /// On that same cluster.
    #[default]
    SameCluster,
    /// On every cluster the dependency targets.
    Everywhere,
}

/// `spec.dependsOn` of an instance document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// `namespace/name` of the instance depended on.
    pub instance: String,
    pub scope: Scope,
    /// The line of the entry in its file (for errors about it).
    #[serde(skip)]
    pub line: Option<u64>,
}

/// What the control plane remembers about one instance's rollout of one spec (the clusters
/// cannot tell it). Reset when the desired spec changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Memory {
    /// Identity of the desired spec this memory is about.
    pub spec: String,
    /// Cluster → when it got the spec (Unix ms), for `progressDeadline` (not saved).
    #[serde(skip)]
    pub applied_at: BTreeMap<String, i64>,
    /// Stage → since when every cluster of it is COMPLETE (Unix ms), for `bake`.
    #[serde(default)]
    pub complete_since: BTreeMap<String, i64>,
    /// Stage → who approved it and when.
    #[serde(default)]
    pub approvals: BTreeMap<String, Approval>,
    /// `stage#gate index` → since when a gate with a timeout has been closed (Unix ms).
    #[serde(default)]
    pub gate_since: BTreeMap<String, i64>,
    /// `stage#gate index` of the gates after a stage that have opened: an opened gate stays
    /// open for this spec (a later stage is not stopped by an earlier stage's bake or query).
    #[serde(default)]
    pub gates_passed: BTreeSet<String>,
    /// The last spec that completed on every target: what a revert goes back to. Carried
    /// over when the spec changes (the one field that is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_good: Option<GoodSpec>,
    /// This spec failed and was reverted: it is quarantined until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Reverted>,
}

/// A spec that completed everywhere. Only its identity and revision are kept (parameters may
/// be secret): the spec itself is read back from a cluster that runs it, or from memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GoodSpec {
    pub spec: String,
    pub revision: String,
}

/// Why and to what a spec was reverted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reverted {
    pub to: GoodSpec,
    /// `onFailure` or the API token's name.
    pub by: String,
    pub at: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    pub by: String,
    pub at: i64,
}

/// A gate's verdict that the pure pass cannot compute itself (prometheus, plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum External {
    Open,
    Closed(String),
}

/// One pass's decision for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub apply_now: Vec<String>,
    pub phase: Phase,
    /// Clusters counted failed (cluster → reason).
    pub failed: BTreeMap<String, String>,
    pub memory: Memory,
    /// (stage, plan): a `plan` gate holds the rollout; its plan should run on the stage's
    /// clusters that have not run it on this spec.
    pub run_plan: Option<(String, String)>,
    /// Set when this pass started a revert (the caller notifies it once).
    pub reverted_now: bool,
}

/// Everything [`decide`] reads.
pub struct Input<'a> {
    /// `namespace/name` (for messages).
    pub instance: &'a str,
    pub spec: &'a RolloutSpec,
    /// Identity of the desired spec ([`Memory::spec`]).
    pub spec_id: &'a str,
    /// Target cluster → progress of the desired spec there (a target missing is not reached).
    pub observed: &'a BTreeMap<String, Progress>,
    pub memory: Option<&'a Memory>,
    /// Paused through the API (beside `spec.paused` from Git).
    pub paused: bool,
    /// Clusters the new spec may not reach yet, with what holds them (`dependsOn`,
    /// `clusterPaused`, `window`) and why.
    pub blocked: &'a BTreeMap<String, (&'static str, String)>,
    /// (stage, gate index) → the verdict of a gate computed outside (prometheus, plan).
    pub external: &'a BTreeMap<(String, usize), External>,
    /// The revision of the desired spec (kept with it once it completes).
    pub revision: &'a str,
    /// Unix milliseconds.
    pub now: i64,
}

/// The decision for one instance (see the module's guarantees).
pub fn decide(input: &Input<'_>) -> Decision {
    let spec = input.spec;
    let paused = spec.paused || input.paused;
    let mut memory = match input.memory {
        Some(m) if m.spec == input.spec_id => m.clone(),
        other => Memory {
            spec: input.spec_id.to_string(),
            last_good: other.and_then(|m| m.last_good.clone()),
            ..Memory::default()
        },
    };
    if let Some(r) = &memory.reverted {
        let reason = r.reason.clone();
        return Decision {
            apply_now: Vec::new(),
            phase: Phase::Halted {
                cluster: String::new(),
                reason,
            },
            failed: BTreeMap::new(),
            memory,
            run_plan: None,
            reverted_now: false,
        };
    }
    let progress = |c: &String| {
        input
            .observed
            .get(c)
            .cloned()
            .unwrap_or(Progress::NotApplied)
    };
    // When each cluster got the spec: recorded on first sight (a restart starts the clock
    // anew for clusters already running, never earlier).
    let members: BTreeSet<&String> = spec.stages.iter().flat_map(|s| &s.clusters).collect();
    memory.applied_at.retain(|c, _| members.contains(c));
    for c in &members {
        match progress(c) {
            // Complete stops the clock; a plan run after it (a `plan` gate's) gets a new one.
            Progress::NotApplied | Progress::Complete => {
                memory.applied_at.remove(*c);
            }
            _ => {
                memory.applied_at.entry((*c).clone()).or_insert(input.now);
            }
        }
    }
    let mut failed = BTreeMap::new();
    for c in &members {
        match progress(c) {
            Progress::Failed(reason) => {
                failed.insert((*c).clone(), reason);
            }
            Progress::Pending | Progress::InProgress => {
                if let (Some(deadline), Some(at)) =
                    (spec.progress_deadline, memory.applied_at.get(*c))
                    && input.now - at >= deadline.as_millis() as i64
                {
                    failed.insert(
                        (*c).clone(),
                        format!(
                            "not COMPLETE within progressDeadline {}",
                            crate::util::duration::format(deadline)
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    let done = |c: &String| progress(c) == Progress::Complete || failed.contains_key(c);
    let total_waves: usize = spec.stages.iter().map(|s| stage_waves(s).len()).sum();
    let mut decision = Decision {
        apply_now: Vec::new(),
        phase: Phase::Complete,
        failed: failed.clone(),
        memory: Memory::default(),
        run_plan: None,
        reverted_now: false,
    };
    if failed.len() > spec.max_failures as usize {
        let (cluster, reason) = failed
            .iter()
            .next()
            .map(|(c, r)| (c.clone(), r.clone()))
            .unwrap_or_default();
        decision.phase = Phase::Halted {
            cluster,
            reason: if spec.max_failures == 0 {
                reason
            } else {
                format!(
                    "{} clusters failed, more than maxFailures {} (first: {reason})",
                    failed.len(),
                    spec.max_failures
                )
            },
        };
        decision.memory = memory;
        revert_on_failure(input, &mut decision);
        return decision;
    }
    let mut wave_index = 0;
    for stage in spec.stages.iter().filter(|s| !s.clusters.is_empty()) {
        let waves = stage_waves(stage);
        let started = stage
            .clusters
            .iter()
            .any(|c| progress(c) != Progress::NotApplied);
        if !started {
            if paused {
                decision.phase = Phase::Paused;
                break;
            }
            if stage.gates.contains(&Gate::Approval) && !memory.approvals.contains_key(&stage.name)
            {
                decision.phase = Phase::Waiting {
                    stage: stage.name.clone(),
                    gate: "approval".into(),
                    reason: format!(
                        "waiting for approval: kudo rollout approve {} --stage {}",
                        input.instance, stage.name
                    ),
                };
                break;
            }
        }
        let mut current = None;
        for (i, wave) in waves.iter().enumerate() {
            if !wave.iter().all(&done) {
                current = Some((i, wave));
                break;
            }
        }
        if let Some((i, wave)) = current {
            if paused {
                decision.phase = Phase::Paused;
            } else {
                let due: Vec<&String> = wave
                    .iter()
                    .filter(|c| progress(c) == Progress::NotApplied)
                    .collect();
                decision.apply_now = due
                    .iter()
                    .filter(|c| !input.blocked.contains_key(**c))
                    .map(|c| (*c).clone())
                    .collect();
                let running = wave
                    .iter()
                    .any(|c| matches!(progress(c), Progress::Pending | Progress::InProgress));
                decision.phase = match due.iter().find_map(|c| input.blocked.get(*c)) {
                    // Nothing of the wave can move: say what it waits for.
                    Some((gate, reason)) if decision.apply_now.is_empty() && !running => {
                        Phase::Waiting {
                            stage: stage.name.clone(),
                            gate: (*gate).to_string(),
                            reason: reason.clone(),
                        }
                    }
                    _ => Phase::Progressing {
                        wave: wave_index + i,
                        waves: total_waves,
                    },
                };
            }
            memory.complete_since.remove(&stage.name);
            break;
        }
        wave_index += waves.len();
        // Every cluster of the stage is done: the gates after it, in order.
        let since = *memory
            .complete_since
            .entry(stage.name.clone())
            .or_insert(input.now);
        let mut held = None;
        let mut timed_out = None;
        for (g, gate) in stage.gates.iter().enumerate() {
            let since_key = format!("{}#{g}", stage.name);
            if memory.gates_passed.contains(&since_key) {
                continue;
            }
            let closed = match gate {
                Gate::Approval => None,
                Gate::Bake(d) => {
                    let left = d.as_millis() as i64 - (input.now - since);
                    (left > 0).then(|| {
                        format!(
                            "baking: {} of {} left",
                            crate::util::duration::format(Duration::from_millis(left as u64)),
                            crate::util::duration::format(*d)
                        )
                    })
                }
                Gate::Plan(_) | Gate::Prometheus { .. } => {
                    match input.external.get(&(stage.name.clone(), g)) {
                        Some(External::Open) => None,
                        Some(External::Closed(reason)) => Some(reason.clone()),
                        None => Some("not evaluated yet".into()),
                    }
                }
            };
            if let Some(reason) = closed {
                if let Gate::Plan(plan) = gate {
                    decision.run_plan = Some((stage.name.clone(), plan.clone()));
                }
                let timeout = match gate {
                    Gate::Prometheus { timeout, .. } => *timeout,
                    _ => None,
                };
                let since = *memory.gate_since.entry(since_key).or_insert(input.now);
                if let Some(t) = timeout
                    && input.now - since >= t.as_millis() as i64
                {
                    timed_out = Some(format!(
                        "stage {}: {} gate still closed after its timeout {}: {reason}",
                        stage.name,
                        gate.kind(),
                        crate::util::duration::format(t)
                    ));
                }
                held = Some((gate.kind(), reason));
                break;
            }
            memory.gate_since.remove(&since_key);
            if *gate != Gate::Approval {
                memory.gates_passed.insert(since_key);
            }
        }
        if let Some(reason) = timed_out {
            decision.phase = Phase::Halted {
                cluster: String::new(),
                reason,
            };
            decision.run_plan = None;
            decision.memory = memory;
            revert_on_failure(input, &mut decision);
            return decision;
        }

        if let Some((gate, reason)) = held {
            decision.phase = Phase::Waiting {
                stage: stage.name.clone(),
                gate: gate.into(),
                reason,
            };
            break;
        }
    }
    if decision.phase == Phase::Complete {
        memory.last_good = Some(GoodSpec {
            spec: input.spec_id.to_string(),
            revision: input.revision.to_string(),
        });
    }
    decision.memory = memory;
    decision
}

/// A halted rollout with `onFailure: revert`: quarantine this spec and go back to the last
/// good one, when there is one other than this spec (else it stays halted and says why).
fn revert_on_failure(input: &Input<'_>, decision: &mut Decision) {
    if input.spec.on_failure != OnFailure::Revert {
        return;
    }
    let Phase::Halted { reason, .. } = &mut decision.phase else {
        return;
    };
    match revert(&mut decision.memory, "onFailure", reason, input.now) {
        Ok(()) => {
            decision.reverted_now = true;
            decision.apply_now.clear();
            if let Some(r) = &decision.memory.reverted {
                *reason = r.reason.clone();
            }
        }
        Err(why) => reason.push_str(&format!(" (onFailure: revert: {why})")),
    }
}

/// Marks the spec of `memory` reverted to its last good spec (see [`Memory::reverted`]).
/// Refused when there is nothing to go back to, or it was reverted already.
pub fn revert(memory: &mut Memory, by: &str, why: &str, now: i64) -> Result<(), String> {
    if memory.reverted.is_some() {
        return Err("this spec was reverted already".into());
    }
    let to = match &memory.last_good {
        None => {
            return Err(
                "nothing to revert to: no earlier spec of it completed on every cluster".into(),
            );
        }
        Some(g) if g.spec == memory.spec => {
            return Err("the spec it runs is the last one that completed everywhere".into());
        }
        Some(g) => g.clone(),
    };
    memory.reverted = Some(Reverted {
        reason: format!(
            "reverted to revision {} by {by}: {why}; this spec stays quarantined until a commit changes the instance",
            super::desired::short(&to.revision)
        ),
        to,
        by: by.to_string(),
        at: now,
    });
    Ok(())
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }
}

mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
#[path = "stages_tests.rs"]
mod tests;
