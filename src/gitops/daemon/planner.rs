//! The rollout planner: after observations, decides per instance which clusters get its spec
//! now, and which Instances are deleted or relabelled.
//!
//! The decision is [`pass`], a pure function of plain inputs (desired state, what each cluster
//! showed, the repositories' load state, the previous pass's rollouts, the clock); `Shared::plan`
//! only gathers those inputs under its locks, calls it, and publishes the result to the
//! cluster slots, the status, the metrics and the notifications.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::state::{Observation, PlanSummary, Seen, Shared, lock};
use crate::gitops::desired::{DesiredState, short};
use crate::gitops::ownership::{self, Decision, Owner, RepoState};
use crate::gitops::rollout::{self, Progress, State};
use crate::gitops::stages;
use crate::metrics::gitops::RolloutState;

/// Runs a planner pass whenever one was requested, and at least every observe interval
/// (workers of quiet clusters request none), until stopped.
pub(super) async fn planner(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = shared
        .options
        .observe_interval
        .max(Duration::from_millis(10));
    loop {
        tokio::select! {
            _ = shared.plan_wake.notified() => {}
            _ = tokio::time::sleep(every) => {}
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

/// Everything one planner pass decides from. Plain data: no locks, no clients.
pub(super) struct Inputs<'a> {
    pub desired: &'a DesiredState,
    /// Cluster name → its managed Instances from the worker's last successful observation;
    /// `None` for a cluster that never answered. A cluster that went down keeps its last
    /// observation (what it completed stays complete).
    pub observed: &'a BTreeMap<String, Option<Arc<Observation>>>,
    /// Repository → what the deletion rules need (see [`ownership::decide`]).
    pub repos: &'a BTreeMap<String, RepoState>,
    /// The previous pass's rollout states (transitions are reported once).
    pub previous: &'a BTreeMap<String, State>,
    /// Instances the planner applied a new spec for whose rollout has not completed yet.
    pub converging: &'a BTreeSet<String>,
    /// Revision → Unix time of its commit (or of it being first seen).
    pub revision_times: &'a BTreeMap<String, i64>,
    /// Unix seconds now (for the commit-to-converged time).
    pub now: i64,
    /// Unix milliseconds now (bake, progress deadlines).
    pub now_ms: i64,
    /// Instance key → what the control plane remembers of its rollout (see
    /// [`stages::Memory`]).
    pub memory: &'a BTreeMap<String, stages::Memory>,
    /// Instance key → who paused its rollout through the API (beside `paused` in Git).
    pub pauses: &'a BTreeMap<String, stages::Approval>,
    /// Instance key → the verdicts of its `prometheus` gates (see `super::gates`).
    pub external: &'a super::gates::Verdicts,
    /// Cluster → what holds every new spec there now (`clusterPaused` or `window`, and why).
    pub cluster_holds: &'a BTreeMap<String, (&'static str, String)>,
    /// Instance key → its last spec that completed everywhere, while this process saw it
    /// (after a restart a revert reads it back from a cluster that still runs it).
    pub good: &'a BTreeMap<String, Arc<GoodInstance>>,
}

/// A spec that completed on every target, whole (see [`stages::GoodSpec`] for what is saved).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct GoodInstance {
    pub spec: String,
    pub revision: String,
    pub instance: crate::gitops::desired::DesiredInstance,
}

/// What a cluster is given back when a spec is reverted: the good spec as a desired state of
/// one instance (its framework's objects when the desired state still has them), and the
/// plan to run instead of the trigger plan (the framework's `rollback`, when it has one).
#[derive(Clone)]
pub(super) struct RevertTo {
    pub state: DesiredState,
    pub plan: Option<String>,
}

/// The plan a revert runs when the framework defines it.
pub const ROLLBACK_PLAN: &str = "rollback";

/// One instance's rollout as a pass sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InstanceRollout {
    /// Target cluster → progress of the desired spec there.
    pub observed: BTreeMap<String, Progress>,
    pub state: State,
    /// The rollout gauge: one entry per target, by state.
    pub counts: Vec<(RolloutState, i64)>,
    /// Whether `state` differs from the previous pass's (logged and notified once).
    pub changed: bool,
}

/// What one planner pass decided; `Shared::plan` publishes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct PlanActions {
    /// Cluster → Instance keys to apply the desired spec to now.
    pub apply: BTreeMap<String, BTreeSet<String>>,
    /// Instance key → its rollout.
    pub rollouts: BTreeMap<String, InstanceRollout>,
    /// Rollouts of the previous pass whose instance is no longer desired.
    pub gone: Vec<String>,
    /// The new set of converging instances (see [`Inputs::converging`]).
    pub converging: BTreeSet<String>,
    /// Rollouts the planner started that completed in this pass: (framework, seconds from
    /// commit to converged).
    pub converged: Vec<(String, i64)>,
    pub summary: PlanSummary,
    /// Deletions, relabels, held deletions, kept Instances, repositories to resync.
    pub ownership: Decision,
    /// Cluster → desired Instances another control plane owns there (`key: why`).
    pub conflicts: BTreeMap<String, Vec<String>>,
    /// The rollouts' memory after this pass (desired instances only).
    pub memory: BTreeMap<String, stages::Memory>,
    /// Cluster → (Instance key, plan) a `plan` gate runs there now.
    pub trigger: BTreeMap<String, BTreeSet<(String, String)>>,
    /// Cluster → Instance key → the good spec to give back (a revert).
    pub revert: BTreeMap<String, BTreeMap<String, Arc<RevertTo>>>,
    /// Instance key → its spec, for the instances complete in this pass.
    pub good: BTreeMap<String, Arc<GoodInstance>>,
    /// Reverts that started in this pass: (Instance key, why).
    pub reverted: Vec<(String, String)>,
}

impl std::fmt::Debug for RevertTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RevertTo({}, {:?})", self.state.revision, self.plan)
    }
}

impl PartialEq for RevertTo {
    fn eq(&self, other: &Self) -> bool {
        self.state.revision == other.state.revision
            && self.plan == other.plan
            && self.state.instances == other.state.instances
    }
}

impl Eq for RevertTo {}
impl Eq for GoodInstance {}

/// One planner pass: per desired instance, the progress on each target, the rollout plan and
/// state; then who owns what (deletions only where [`ownership::decide`] allows).
pub(super) fn pass(inputs: &Inputs<'_>) -> PlanActions {
    let desired = inputs.desired;
    let mut out = PlanActions {
        converging: inputs
            .converging
            .iter()
            .filter(|k| desired.instances.contains_key(*k))
            .cloned()
            .collect(),
        ..Default::default()
    };
    // Every instance's progress first: dependencies read each other's.
    let mut progress: BTreeMap<&String, BTreeMap<String, Progress>> = BTreeMap::new();
    for (key, inst) in &desired.instances {
        let mut observed = BTreeMap::new();
        for name in &inst.targets {
            let Some(seen) = inputs.observed.get(name) else {
                continue;
            };
            observed.insert(name.clone(), progress_on(key, name, seen.as_deref(), inst));
        }
        progress.insert(key, observed);
    }
    // What holds a cluster for every instance (kudo.yaml), then per instance (dependsOn).
    let blocked: BTreeMap<&String, BTreeMap<String, (&'static str, String)>> = desired
        .instances
        .iter()
        .filter(|(_, inst)| !inst.depends_on.is_empty() || !inputs.cluster_holds.is_empty())
        .map(|(key, inst)| {
            let mut holds: BTreeMap<String, (&'static str, String)> = inst
                .targets
                .iter()
                .filter_map(|c| Some((c.clone(), inputs.cluster_holds.get(c)?.clone())))
                .collect();
            if !inst.depends_on.is_empty() {
                for (c, reason) in blocked_by_dependencies(inst, inputs, &progress) {
                    holds.entry(c).or_insert(("dependsOn", reason));
                }
            }
            (key, holds)
        })
        .collect();
    let none = BTreeMap::new();
    let no_verdicts = BTreeMap::new();
    for (key, inst) in &desired.instances {
        let observed = progress.remove(key).unwrap_or_default();
        let spec_id = spec_id(inst);
        let live = |c: &str| {
            inputs
                .observed
                .get(c)
                .and_then(|o| o.as_deref())
                .and_then(|o| o.get(key))
                .filter(|s| matches!(s.owner, Owner::Ours { .. }))
                .map(|s| &s.instance)
        };
        let runs = plan_gate_runs(inst, &observed, &live);
        let mut external = inputs.external.get(key).unwrap_or(&no_verdicts).clone();
        for ((stage, g), (_, verdict)) in &runs {
            external.insert((stage.clone(), *g), verdict.clone());
        }
        let d = stages::decide(&stages::Input {
            instance: key,
            spec: &inst.rollout,
            spec_id: &spec_id,
            observed: &observed,
            memory: inputs.memory.get(key),
            paused: inputs.pauses.contains_key(key),
            blocked: blocked.get(key).unwrap_or(&none),
            external: &external,
            revision: &desired.revision,
            now: inputs.now_ms,
        });
        if let Some((stage, plan)) = &d.run_plan {
            let not_run = runs
                .iter()
                .filter(|((s, _), _)| s == stage)
                .flat_map(|(_, (not_run, _))| not_run);
            for c in not_run {
                if foreign(inputs.observed.get(c), key).is_none() {
                    out.trigger
                        .entry(c.clone())
                        .or_default()
                        .insert((key.clone(), plan.clone()));
                }
            }
        }
        let mut state = d.phase;
        if let Some(reverted) = &d.memory.reverted {
            if d.reverted_now {
                out.reverted.push((key.clone(), reverted.reason.clone()));
            }
            let good = good_instance(inputs, key, inst, &reverted.to, &live);
            let (assign, progress) = revert_work(desired, inst, good.as_deref(), &live);
            for (c, to) in assign {
                out.revert.entry(c).or_default().insert(key.clone(), to);
            }
            if let State::Halted { reason, .. } = &mut state {
                reason.push_str(&format!(" ({progress})"));
            }
        } else if state == State::Complete {
            out.good.insert(
                key.clone(),
                Arc::new(GoodInstance {
                    spec: spec_id.clone(),
                    revision: desired.revision.clone(),
                    instance: inst.clone(),
                }),
            );
        }
        out.memory.insert(key.clone(), d.memory);
        let p = rollout::RolloutPlan {
            apply_now: d.apply_now,
            state,
        };
        for c in &p.apply_now {
            // Never applied over another control plane's Instance.
            if foreign(inputs.observed.get(c), key).is_none() {
                out.apply.entry(c.clone()).or_default().insert(key.clone());
            }
        }
        if !p.apply_now.is_empty() {
            out.converging.insert(key.clone());
        }
        if p.state == State::Complete && out.converging.remove(key) {
            // A combined revision ("a,b") converged when its newest part did.
            let since = desired
                .revision
                .split(',')
                .filter_map(|r| inputs.revision_times.get(r))
                .max();
            if let Some(since) = since {
                out.converged
                    .push((inst.framework.clone(), (inputs.now - since).max(0)));
            }
        }
        let counts = gauge_counts(&observed, &p.state);
        let changed = inputs.previous.get(key) != Some(&p.state);
        out.rollouts.insert(
            key.clone(),
            InstanceRollout {
                observed,
                state: p.state,
                counts,
                changed,
            },
        );
    }
    out.gone = inputs
        .previous
        .keys()
        .filter(|k| !out.rollouts.contains_key(*k))
        .cloned()
        .collect();
    let states = || out.rollouts.values().map(|r| &r.state);
    out.summary = PlanSummary {
        revision: desired.revision.clone(),
        instances: out.rollouts.len(),
        complete: states().filter(|s| **s == State::Complete).count(),
        halted: states()
            .filter(|s| matches!(s, State::Halted { .. }))
            .count(),
    };
    let mut lives = BTreeMap::new();
    for (cluster, seen) in inputs.observed {
        let Some(seen) = seen else { continue };
        lives.insert(
            cluster.clone(),
            seen.iter().map(|(k, s)| (k.clone(), s.live())).collect(),
        );
        let conflicts: Vec<String> = seen
            .iter()
            .filter(|(key, _)| desired.instances.contains_key(*key))
            .filter_map(|(key, s)| match &s.owner {
                Owner::Foreign(other) => Some(format!("{key}: owned by control plane {other:?}")),
                _ => None,
            })
            .collect();
        if !conflicts.is_empty() {
            out.conflicts.insert(cluster.clone(), conflicts);
        }
    }
    out.ownership = ownership::decide(&desired.instances, inputs.repos, &lives);
    out
}

/// The targets of `inst` its new spec may not reach yet, each with what it waits for: a
/// dependency not declared by any loaded repository, not placed on that cluster, or whose
/// desired spec is not COMPLETE there (`sameCluster`) or on one of its clusters
/// (`everywhere`).
fn blocked_by_dependencies(
    inst: &crate::gitops::desired::DesiredInstance,
    inputs: &Inputs<'_>,
    progress: &BTreeMap<&String, BTreeMap<String, Progress>>,
) -> BTreeMap<String, String> {
    let state_on = |dep: &str, cluster: &str| -> String {
        let live = inputs
            .observed
            .get(cluster)
            .and_then(|o| o.as_deref())
            .and_then(|o| o.get(dep))
            .and_then(|s| crate::gitops::status::plan_detail(&s.instance));
        let p = progress
            .get(&dep.to_string())
            .and_then(|p| p.get(cluster))
            .map_or("not observed yet", Progress::as_str);
        match live {
            Some(d) if p != "NotApplied" => {
                format!("{} {} {}/{}", d.plan, d.status, d.steps_done, d.steps_total)
            }
            _ => p.to_string(),
        }
    };
    let complete = |dep: &str, cluster: &str| {
        progress.get(&dep.to_string()).and_then(|p| p.get(cluster)) == Some(&Progress::Complete)
    };
    // Per dependency: why it holds every cluster (absent, or `everywhere` not complete).
    let mut everywhere: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for dep in &inst.depends_on {
        let reason = match inputs.desired.instances.get(&dep.instance) {
            None => Some(format!(
                "waiting for {}: not declared by any loaded repository",
                dep.instance
            )),
            Some(d) if dep.scope == stages::Scope::Everywhere => d
                .targets
                .iter()
                .find(|c| !complete(&dep.instance, c))
                .map(|c| {
                    format!(
                        "waiting for {} on {c}: {}",
                        dep.instance,
                        state_on(&dep.instance, c)
                    )
                }),
            Some(_) => None,
        };
        everywhere.insert(&dep.instance, reason);
    }
    let mut out = BTreeMap::new();
    for c in &inst.targets {
        for dep in &inst.depends_on {
            let reason = match everywhere.get(dep.instance.as_str()) {
                Some(Some(r)) => Some(r.clone()),
                _ if dep.scope == stages::Scope::Everywhere => None,
                _ => match inputs.desired.instances.get(&dep.instance) {
                    Some(d) if !d.targets.contains(c) => Some(format!(
                        "waiting for {} on {c}: it is not placed there",
                        dep.instance
                    )),
                    _ if complete(&dep.instance, c) => None,
                    _ => Some(format!(
                        "waiting for {} on {c}: {}",
                        dep.instance,
                        state_on(&dep.instance, c)
                    )),
                },
            };
            if let Some(r) = reason {
                out.insert(c.clone(), r);
                break;
            }
        }
    }
    out
}

/// Per `plan` gate of an instance ((stage, gate index)): the stage's clusters that have not
/// run the plan on this spec (to trigger), and the gate's verdict: open when every cluster of
/// the stage not counted failed ran it to COMPLETE.
fn plan_gate_runs<'a>(
    inst: &crate::gitops::desired::DesiredInstance,
    observed: &BTreeMap<String, Progress>,
    live: &dyn Fn(&str) -> Option<&'a crate::api::Instance>,
) -> BTreeMap<(String, usize), (Vec<String>, stages::External)> {
    let mut out = BTreeMap::new();
    for stage in &inst.rollout.stages {
        for (g, gate) in stage.gates.iter().enumerate() {
            let stages::Gate::Plan(plan) = gate else {
                continue;
            };
            let (mut done, mut running, mut not_run) = (Vec::new(), Vec::new(), Vec::new());
            for c in &stage.clusters {
                if matches!(observed.get(c), Some(Progress::Failed(_))) {
                    continue;
                }
                match live(c)
                    .map(|l| rollout::plan_run(l, &inst.operator_version, &inst.parameters, plan))
                {
                    Some(rollout::PlanRun::Done) => done.push(c.clone()),
                    Some(rollout::PlanRun::Running | rollout::PlanRun::Requested) => {
                        running.push(c.clone());
                    }
                    Some(rollout::PlanRun::NotRun) | None => not_run.push(c.clone()),
                }
            }
            let verdict = if running.is_empty() && not_run.is_empty() {
                stages::External::Open
            } else {
                let mut reason = format!(
                    "plan {plan} COMPLETE on {} of {} clusters",
                    done.len(),
                    done.len() + running.len() + not_run.len()
                );
                if !running.is_empty() {
                    reason.push_str(&format!("; running on {}", running.join(", ")));
                }
                if !not_run.is_empty() {
                    reason.push_str(&format!("; starting on {}", not_run.join(", ")));
                }
                stages::External::Closed(reason)
            };
            out.insert((stage.name.clone(), g), (not_run, verdict));
        }
    }
    out
}

/// The good spec a revert goes back to: from this process's memory when it saw that spec
/// complete, else read back from a cluster whose Instance still runs it (parameters are never
/// saved: they may be secret).
fn good_instance<'a>(
    inputs: &Inputs<'_>,
    key: &str,
    inst: &crate::gitops::desired::DesiredInstance,
    to: &stages::GoodSpec,
    live: &dyn Fn(&str) -> Option<&'a crate::api::Instance>,
) -> Option<Arc<GoodInstance>> {
    if let Some(g) = inputs.good.get(key).filter(|g| g.spec == to.spec) {
        return Some(g.clone());
    }
    inst.targets.iter().filter_map(|c| live(c)).find_map(|l| {
        let ov = l.spec.operator_version.name.clone()?;
        (spec_id_of(&ov, &l.spec.parameters) == to.spec).then(|| {
            let mut instance = inst.clone();
            if let Some(fw) = inputs.desired.frameworks.values().find(|f| {
                f.name == inst.framework
                    && f.operator_version.metadata.name.as_deref() == Some(ov.as_str())
            }) {
                instance.version = fw.version.clone();
            }
            instance.operator_version = ov;
            instance.parameters = l.spec.parameters.clone();
            Arc::new(GoodInstance {
                spec: to.spec.clone(),
                revision: to.revision.clone(),
                instance,
            })
        })
    })
}

/// The clusters a revert gives the good spec back to (every target whose Instance runs
/// another spec; a cluster the instance never reached is left alone), and how far it got.
fn revert_work<'a>(
    desired: &DesiredState,
    inst: &crate::gitops::desired::DesiredInstance,
    good: Option<&GoodInstance>,
    live: &dyn Fn(&str) -> Option<&'a crate::api::Instance>,
) -> (Vec<(String, Arc<RevertTo>)>, String) {
    let Some(good) = good else {
        return (
            Vec::new(),
            "cannot revert yet: no cluster runs the last good spec any more and this process did not see it complete".into(),
        );
    };
    let g = &good.instance;
    let framework = desired
        .frameworks
        .get(&(g.framework.clone(), g.version.clone()))
        .filter(|f| {
            f.operator_version.metadata.name.as_deref() == Some(g.operator_version.as_str())
        });
    let plan = framework
        .filter(|f| f.operator_version.spec.plans.contains_key(ROLLBACK_PLAN))
        .map(|_| ROLLBACK_PLAN.to_string());
    let to = Arc::new(RevertTo {
        state: DesiredState {
            revision: good.revision.clone(),
            frameworks: framework
                .map(|f| ((g.framework.clone(), g.version.clone()), f.clone()))
                .into_iter()
                .collect(),
            instances: [(g.key(), g.clone())].into_iter().collect(),
        },
        plan,
    });
    let (mut assign, mut back, mut running, mut total) = (Vec::new(), 0, Vec::new(), 0);
    for c in &inst.targets {
        let Some(l) = live(c) else { continue };
        total += 1;
        match rollout::observe(Some(l), &g.operator_version, &g.parameters) {
            Progress::NotApplied => assign.push((c.clone(), to.clone())),
            Progress::Complete => back += 1,
            Progress::Failed(why) => running.push(format!("{c} failed: {why}")),
            Progress::Pending | Progress::InProgress => running.push(c.clone()),
        }
    }
    let mut progress = format!("{back} of {total} clusters on the good spec");
    if !assign.is_empty() {
        let names: Vec<&str> = assign.iter().map(|(c, _)| c.as_str()).collect();
        progress.push_str(&format!("; reverting {}", names.join(", ")));
    }
    if !running.is_empty() {
        progress.push_str(&format!("; running: {}", running.join(", ")));
    }
    (assign, progress)
}

/// What identifies a desired spec for the rollout's memory: a new version or parameter
/// starts a new rollout (approvals and bake times do not carry over).
fn spec_id(inst: &crate::gitops::desired::DesiredInstance) -> String {
    spec_id_of(&inst.operator_version, &inst.parameters)
}

/// [`spec_id`] of an OperatorVersion name and parameters (a live Instance's too).
pub(super) fn spec_id_of(operator_version: &str, parameters: &BTreeMap<String, String>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(operator_version.as_bytes());
    for (k, v) in parameters {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([1]);
        h.update(v.as_bytes());
    }
    hex::encode(&h.finalize()[..8])
}

/// The desired spec's progress on one cluster. A cluster never observed is unknown: it is
/// not applied to until it answers; another control plane's Instance halts the rollout.
fn progress_on(
    key: &str,
    cluster: &str,
    seen: Option<&Observation>,
    inst: &crate::gitops::desired::DesiredInstance,
) -> Progress {
    let Some(seen) = seen else {
        return Progress::Pending;
    };
    match seen.get(key) {
        Some(Seen {
            owner: Owner::Foreign(other),
            ..
        }) => Progress::Failed(format!(
            "Instance {key} on cluster {cluster} belongs to control plane {other:?}; not touched"
        )),
        live => rollout::observe(
            live.map(|s| &s.instance),
            &inst.operator_version,
            &inst.parameters,
        ),
    }
}

/// The other control plane owning `key` on a cluster, if any.
fn foreign<'a>(seen: Option<&'a Option<Arc<Observation>>>, key: &str) -> Option<&'a str> {
    match &seen?.as_ref()?.get(key)?.owner {
        Owner::Foreign(other) => Some(other),
        _ => None,
    }
}

/// The rollout gauge of one instance: each target counted under its state (clusters not
/// reached count as halted once the rollout halted).
fn gauge_counts(observed: &BTreeMap<String, Progress>, state: &State) -> Vec<(RolloutState, i64)> {
    let halted = matches!(state, State::Halted { .. });
    observed
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
        .collect()
}

impl Shared {
    /// One planner pass: gathers the inputs under the locks, decides ([`pass`]), publishes.
    /// Passes never overlap (the sync task and the planner task both call this).
    pub(super) fn plan(&self) {
        let _one_at_a_time = lock(&self.pass_lock);
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
        let observed: BTreeMap<String, Option<Arc<Observation>>> = self
            .slots()
            .iter()
            .map(|slot| (slot.info.name.clone(), lock(&slot.seen).clone()))
            .collect();
        let repos = self.repo_states();
        let previous = lock(&self.rollouts).clone();
        let memory = lock(&self.rollout_memory).clone();
        let pauses = lock(&self.rollout_pauses).clone();
        let good = lock(&self.good_specs).clone();
        let external = lock(&self.gate_verdicts).clone();
        let now_ms = self.options.clock.now_ms();
        let cluster_holds: BTreeMap<String, (&'static str, String)> = self
            .config()
            .clusters
            .iter()
            .filter_map(|c| {
                if c.paused {
                    return Some((
                        c.name.clone(),
                        (
                            "clusterPaused",
                            format!("cluster {} is paused in kudo.yaml", c.name),
                        ),
                    ));
                }
                let reason = crate::gitops::windows::closed_reason(&c.windows, now_ms)?;
                Some((
                    c.name.clone(),
                    ("window", format!("cluster {} is {reason}", c.name)),
                ))
            })
            .collect();
        let converging = lock(&self.converging).clone();
        let revision_times: BTreeMap<String, i64> = {
            let times = lock(&self.revision_times);
            desired
                .revision
                .split(',')
                .filter_map(|r| times.get(r).map(|t| (r.to_string(), *t)))
                .collect()
        };
        let actions = pass(&Inputs {
            desired: &desired,
            observed: &observed,
            repos: &repos,
            previous: &previous,
            converging: &converging,
            revision_times: &revision_times,
            now: jiff::Timestamp::now().as_second(),
            now_ms,
            memory: &memory,
            pauses: &pauses,
            external: &external,
            cluster_holds: &cluster_holds,
            good: &good,
        });
        self.publish(&desired, actions);
    }

    /// Makes a pass's decisions take effect: metrics, logs and notifications, the status,
    /// then the workers' assignments (woken when they have new work).
    fn publish(&self, desired: &DesiredState, actions: PlanActions) {
        let PlanActions {
            mut apply,
            rollouts,
            gone,
            converging,
            converged,
            summary,
            ownership,
            mut conflicts,
            memory,
            mut trigger,
            mut revert,
            good,
            reverted,
        } = actions;
        *lock(&self.rollout_memory) = memory;
        let current = self.rollout_state_current();
        if !current {
            // A standby, or a new leader still reading the rollout state: its memory may
            // lack a pause or an approval given since it read it, so no cluster gets a spec,
            // a plan trigger or a revert from this pass (the read asks for a pass of its own).
            apply.clear();
            trigger.clear();
            revert.clear();
        }
        lock(&self.good_specs).extend(good);
        for (key, reason) in reverted.into_iter().filter(|_| current) {
            warn!(instance = %key, %reason, "rollout reverted");
            if let Some(inst) = desired.instances.get(&key) {
                self.metrics
                    .gitops
                    .count_revert(&inst.namespace, &inst.name);
            }
            self.notifier.emit(
                crate::notify::Event::new(
                    crate::notify::EventKind::RolloutReverted,
                    "reverted",
                    reason,
                )
                .instance(&key)
                .revision(&desired.revision),
            );
        }
        let gm = &self.metrics.gitops;
        let before = lock(&self.rollouts).clone();
        for (key, r) in &rollouts {
            if let Some(inst) = desired.instances.get(key) {
                gm.set_rollout(&inst.namespace, &inst.name, &r.counts);
                let waiting = match &r.state {
                    State::Waiting { stage, gate, .. } => Some((stage.as_str(), gate.as_str())),
                    _ => None,
                };
                gm.set_rollout_phase(
                    &inst.namespace,
                    &inst.name,
                    waiting,
                    r.state == State::Paused,
                );
            }
            if r.changed {
                if before.get(key) == Some(&State::Paused) {
                    self.notifier.emit(
                        crate::notify::Event::new(
                            crate::notify::EventKind::RolloutResumed,
                            "resumed",
                            format!("rollout of {key} resumed"),
                        )
                        .instance(key)
                        .revision(&desired.revision),
                    );
                }
                self.report_transition(key, &r.state, &desired.revision);
            }
        }
        self.save_rollout_state();
        for (framework, seconds) in converged {
            gm.commit_to_converged
                .get_or_create(&crate::metrics::gitops::OperatorLabels {
                    operator: framework,
                })
                .observe(seconds as f64);
        }
        *lock(&self.converging) = converging;
        for key in &gone {
            if let Some((ns, name)) = key.split_once('/') {
                gm.forget_rollout(ns, name);
            }
        }
        *lock(&self.planned) = summary;
        *lock(&self.rollouts) = rollouts.into_iter().map(|(k, r)| (k, r.state)).collect();
        for slot in &self.slots() {
            let name = &slot.info.name;
            let delete = ownership.delete.get(name).cloned().unwrap_or_default();
            let relabel = ownership.relabel.get(name).cloned().unwrap_or_default();
            let work = !delete.is_empty() || !relabel.is_empty();
            {
                let mut st = lock(&slot.status);
                st.kept_instances = ownership.kept.get(name).cloned().unwrap_or_default();
                st.conflicts = conflicts.remove(name).unwrap_or_default();
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
        for slot in &self.slots() {
            let name = &slot.info.name;
            let triggers = trigger.remove(name).unwrap_or_default();
            let reverts = revert.remove(name).unwrap_or_default();
            let work = {
                let mut t = lock(&slot.trigger);
                let mut r = lock(&slot.revert);
                let work = (!triggers.is_subset(&t)) || reverts.keys().any(|k| !r.contains_key(k));
                *t = triggers;
                *r = reverts;
                work
            };
            if work {
                slot.wake.notify_one();
            }
        }
        for slot in &self.slots() {
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

    /// Logs a rollout's new state, and notifies a halt.
    fn report_transition(&self, key: &str, state: &State, revision: &str) {
        match state {
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
                    .revision(revision),
                );
            }
            State::Complete => {
                info!(instance = %key, revision = short(revision), "rollout complete");
            }
            State::Progressing { wave, waves } => {
                info!(instance = %key, wave = wave + 1, waves, "rollout progressing");
            }
            State::Waiting {
                stage,
                gate,
                reason,
            } => {
                info!(instance = %key, %stage, %gate, %reason, "rollout waiting for a gate");
                let kind = match gate.as_str() {
                    "approval" => crate::notify::EventKind::ApprovalRequired,
                    "dependsOn" => crate::notify::EventKind::DependencyBlocked,
                    _ => crate::notify::EventKind::GateWaiting,
                };
                self.notifier.emit(
                    crate::notify::Event::new(
                        kind,
                        "waiting",
                        format!("stage {stage}: {gate}: {reason}"),
                    )
                    .instance(key)
                    .revision(revision),
                );
            }
            State::Paused => {
                info!(instance = %key, "rollout paused");
                self.notifier.emit(
                    crate::notify::Event::new(
                        crate::notify::EventKind::RolloutPaused,
                        "paused",
                        format!("rollout of {key} paused"),
                    )
                    .instance(key)
                    .revision(revision),
                );
            }
        }
    }

    /// The repositories as the deletion rules see them (see [`ownership::RepoState`]).
    fn repo_states(&self) -> BTreeMap<String, RepoState> {
        let confirmations = lock(&self.confirmations).clone();
        let statuses = lock(&self.repos);
        self.config()
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
                    RepoState {
                        loaded,
                        max_deletions: r.max_deletions,
                        confirmed: confirmations.get(&r.name).cloned(),
                        waiting_for,
                    },
                )
            })
            .collect()
    }

    /// Shows held deletions in each repository's status, and logs and notifies them once.
    pub(super) fn record_held(
        &self,
        revision: &str,
        held: BTreeMap<String, crate::gitops::ownership::HeldDeletions>,
    ) {
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
}
