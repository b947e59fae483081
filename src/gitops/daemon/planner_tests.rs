//! The planner's pass over plain inputs: placement, waves, halts, ownership and clocks,
//! without a cluster or a lock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::planner::{Inputs, PlanActions, pass};
use super::state::{Observation, Seen};
use crate::api::{
    ExecutionStatus, Instance, InstanceSpec, LAST_APPLIED_ANNOTATION, PlanStatus, Snapshot,
};
use crate::engine::objects::{CONTROL_PLANE_LABEL, REPOSITORY_LABEL};
use crate::gitops::desired::{DesiredInstance, DesiredState};
use crate::gitops::ownership::{DELETION_PROTECTION_ANNOTATION, RepoState};
use crate::gitops::rollout::{Count, Progress, State, Strategy};
use crate::metrics::gitops::RolloutState;

pub(super) const CP: &str = "cp";
const OV: &str = "f-1";

pub(super) fn instance(
    key: &str,
    targets: &[&str],
    strategy: Strategy,
    canary: &[&str],
) -> DesiredInstance {
    let (ns, name) = key.split_once('/').expect("key");
    DesiredInstance {
        file: format!("instances/{name}.yaml"),
        name: name.into(),
        namespace: ns.into(),
        framework: "f".into(),
        version: "1".into(),
        operator_version: OV.into(),
        parameters: BTreeMap::new(),
        strategy,
        canary: canary.iter().map(|c| c.to_string()).collect(),
        depends_on: Vec::new(),
        rollout: crate::gitops::stages::RolloutSpec::legacy(
            strategy,
            &targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            &canary.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        ),
        targets: targets.iter().map(|t| t.to_string()).collect(),
        self_heal: true,
        deletion_protection: false,
        repository: "r".into(),
    }
}

pub(super) fn desired(revision: &str, instances: Vec<DesiredInstance>) -> DesiredState {
    DesiredState {
        revision: revision.into(),
        frameworks: BTreeMap::new(),
        instances: instances.into_iter().map(|i| (i.key(), i)).collect(),
    }
}

/// A live Instance of the desired spec owned by `control_plane`; `plan` is the status of the
/// plan the engine started for it (None: applied, not started yet).
pub(super) fn live(key: &str, control_plane: &str, plan: Option<ExecutionStatus>) -> Instance {
    let (ns, name) = key.split_once('/').expect("key");
    let mut i = Instance::new(name, InstanceSpec::default());
    i.metadata.namespace = Some(ns.into());
    i.spec.operator_version.name = Some(OV.into());
    i.metadata.labels = Some(
        [
            (CONTROL_PLANE_LABEL.to_string(), control_plane.to_string()),
            (REPOSITORY_LABEL.to_string(), "r".to_string()),
        ]
        .into(),
    );
    if let Some(status) = plan {
        let snap = Snapshot::of(&i.spec, "deploy", "u1");
        i.metadata.annotations = Some(
            [(
                LAST_APPLIED_ANNOTATION.to_string(),
                serde_json::to_string(&snap).expect("json"),
            )]
            .into(),
        );
        let mut s = crate::api::InstanceStatus::default();
        s.plan_status.insert(
            "deploy".into(),
            PlanStatus {
                name: "deploy".into(),
                uid: "u1".into(),
                status: Some(status),
                message: "step failed: image pull".into(),
                ..Default::default()
            },
        );
        i.status = Some(s);
    }
    i
}

/// Cluster → its observation (None: never answered).
pub(super) type Observed = BTreeMap<String, Option<Arc<Observation>>>;

pub(super) fn observed(clusters: &[(&str, Option<Vec<Instance>>)]) -> Observed {
    clusters
        .iter()
        .map(|(name, seen)| {
            let seen = seen.as_ref().map(|list| {
                Arc::new(
                    list.iter()
                        .map(|i| {
                            let key = format!(
                                "{}/{}",
                                i.metadata.namespace.clone().unwrap_or_default(),
                                i.metadata.name.clone().unwrap_or_default()
                            );
                            (key, Seen::new(i.clone(), CP))
                        })
                        .collect::<Observation>(),
                )
            });
            (name.to_string(), seen)
        })
        .collect()
}

fn loaded_repo(revision: &str) -> BTreeMap<String, RepoState> {
    [(
        "r".to_string(),
        RepoState {
            loaded: Some(revision.into()),
            max_deletions: 5,
            confirmed: None,
            waiting_for: Vec::new(),
        },
    )]
    .into()
}

/// A pass with no previous rollout, no clock history and every repository loaded.
fn run(d: &DesiredState, o: &Observed) -> PlanActions {
    pass(&Inputs {
        desired: d,
        observed: o,
        repos: &loaded_repo(&d.revision),
        previous: &BTreeMap::new(),
        converging: &BTreeSet::new(),
        revision_times: &BTreeMap::new(),
        now: 0,
        now_ms: 0,
        memory: &BTreeMap::new(),
        pauses: &BTreeMap::new(),
        external: &BTreeMap::new(),
        cluster_holds: &BTreeMap::new(),
        good: &BTreeMap::new(),
    })
}

fn applied_on(a: &PlanActions, key: &str) -> Vec<String> {
    a.apply
        .iter()
        .filter(|(_, keys)| keys.contains(key))
        .map(|(c, _)| c.clone())
        .collect()
}

fn state(a: &PlanActions, key: &str) -> State {
    a.rollouts.get(key).expect("rollout").state.clone()
}

pub(super) const K: &str = "ns/db";

#[test]
fn places_the_spec_only_on_the_instance_targets() {
    let d = desired(
        "r1",
        vec![instance(K, &["a", "b"], Strategy::Parallel, &[])],
    );
    let o = observed(&[
        ("a", Some(vec![])),
        ("b", Some(vec![])),
        ("c", Some(vec![])),
    ]);
    let a = run(&d, &o);
    assert_eq!(applied_on(&a, K), ["a", "b"]);
    assert_eq!(state(&a, K), State::Progressing { wave: 0, waves: 1 });
    assert_eq!(
        a.rollouts[K].observed.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "only targets are observed for the rollout"
    );
    assert!(
        a.converging.contains(K),
        "a spec was applied: the clock runs"
    );
}

#[test]
fn serial_applies_one_cluster_per_wave_after_the_previous_completes() {
    let d = desired(
        "r1",
        vec![instance(K, &["a", "b", "c"], Strategy::Serial, &[])],
    );
    let empty = observed(&[
        ("a", Some(vec![])),
        ("b", Some(vec![])),
        ("c", Some(vec![])),
    ]);
    assert_eq!(applied_on(&run(&d, &empty), K), ["a"]);
    let running = observed(&[
        (
            "a",
            Some(vec![live(K, CP, Some(ExecutionStatus::InProgress))]),
        ),
        ("b", Some(vec![])),
        ("c", Some(vec![])),
    ]);
    let a = run(&d, &running);
    assert!(a.apply.is_empty(), "b waits while a runs: {:?}", a.apply);
    assert_eq!(state(&a, K), State::Progressing { wave: 0, waves: 3 });
    let a_done = observed(&[
        (
            "a",
            Some(vec![live(K, CP, Some(ExecutionStatus::Complete))]),
        ),
        ("b", Some(vec![])),
        ("c", Some(vec![])),
    ]);
    let a = run(&d, &a_done);
    assert_eq!(applied_on(&a, K), ["b"]);
    assert_eq!(state(&a, K), State::Progressing { wave: 1, waves: 3 });
}

#[test]
fn max_unavailable_rolls_out_in_waves_of_that_size() {
    let targets = ["a", "b", "c", "d", "e"];
    let d = desired(
        "r1",
        vec![instance(
            K,
            &targets,
            Strategy::MaxUnavailable(Count::Fixed(2)),
            &[],
        )],
    );
    let all_empty: Vec<(&str, Option<Vec<Instance>>)> =
        targets.iter().map(|t| (*t, Some(vec![]))).collect();
    assert_eq!(applied_on(&run(&d, &observed(&all_empty)), K), ["a", "b"]);
    let done = || Some(vec![live(K, CP, Some(ExecutionStatus::Complete))]);
    let first_done = observed(&[
        ("a", done()),
        ("b", done()),
        ("c", Some(vec![])),
        ("d", Some(vec![])),
        ("e", Some(vec![])),
    ]);
    let a = run(&d, &first_done);
    assert_eq!(applied_on(&a, K), ["c", "d"]);
    assert_eq!(state(&a, K), State::Progressing { wave: 1, waves: 3 });
    let all_done: Vec<(&str, Option<Vec<Instance>>)> =
        targets.iter().map(|t| (*t, done())).collect();
    let a = run(&d, &observed(&all_done));
    assert_eq!(state(&a, K), State::Complete);
    assert_eq!(a.summary.complete, 1);
    assert!(a.apply.is_empty());
}

#[test]
fn the_canary_goes_first_then_the_rest_in_parallel() {
    let d = desired(
        "r1",
        vec![instance(K, &["a", "b", "c"], Strategy::Parallel, &["c"])],
    );
    let empty = observed(&[
        ("a", Some(vec![])),
        ("b", Some(vec![])),
        ("c", Some(vec![])),
    ]);
    assert_eq!(applied_on(&run(&d, &empty), K), ["c"]);
    let canary_done = observed(&[
        ("a", Some(vec![])),
        ("b", Some(vec![])),
        (
            "c",
            Some(vec![live(K, CP, Some(ExecutionStatus::Complete))]),
        ),
    ]);
    let a = run(&d, &canary_done);
    assert_eq!(applied_on(&a, K), ["a", "b"]);
    assert_eq!(state(&a, K), State::Progressing { wave: 1, waves: 2 });
}

#[test]
fn a_fatal_error_halts_the_rollout_and_is_reported_once() {
    let d = desired(
        "r1",
        vec![instance(K, &["a", "b", "c"], Strategy::Serial, &[])],
    );
    let o = observed(&[
        (
            "a",
            Some(vec![live(K, CP, Some(ExecutionStatus::Complete))]),
        ),
        (
            "b",
            Some(vec![live(K, CP, Some(ExecutionStatus::FatalError))]),
        ),
        ("c", Some(vec![])),
    ]);
    let a = run(&d, &o);
    match state(&a, K) {
        State::Halted { cluster, reason } => {
            assert_eq!(cluster, "b");
            assert!(reason.contains("FATAL_ERROR"), "{reason}");
        }
        other => panic!("expected a halt, got {other:?}"),
    }
    assert!(
        a.apply.is_empty(),
        "nothing further is applied: {:?}",
        a.apply
    );
    assert_eq!(a.summary.halted, 1);
    assert!(a.rollouts[K].changed);
    // c was never reached: counted as halted, not pending.
    let counts: Vec<RolloutState> = a.rollouts[K].counts.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        counts,
        [
            RolloutState::complete,
            RolloutState::halted,
            RolloutState::halted
        ]
    );
    let previous: BTreeMap<String, State> = [(K.to_string(), state(&a, K))].into();
    let again = pass(&Inputs {
        desired: &d,
        observed: &o,
        repos: &loaded_repo("r1"),
        previous: &previous,
        converging: &BTreeSet::new(),
        revision_times: &BTreeMap::new(),
        now: 0,
        now_ms: 0,
        memory: &BTreeMap::new(),
        pauses: &BTreeMap::new(),
        external: &BTreeMap::new(),
        cluster_holds: &BTreeMap::new(),
        good: &BTreeMap::new(),
    });
    assert!(!again.rollouts[K].changed, "a halt is reported once");
}

#[test]
fn an_instance_dropped_from_git_is_deleted_only_when_ownership_allows() {
    let gone = "ns/old";
    let d = desired("r2", vec![instance(K, &["a"], Strategy::Parallel, &[])]);
    let o = observed(&[(
        "a",
        Some(vec![live(gone, CP, Some(ExecutionStatus::Complete))]),
    )]);
    let a = run(&d, &o);
    assert_eq!(
        a.ownership
            .delete
            .get("a")
            .map(|s| s.iter().cloned().collect::<Vec<_>>()),
        Some(vec![gone.to_string()])
    );
    // Its repository has not loaded a good revision since start: kept.
    let not_loaded: BTreeMap<String, RepoState> = [(
        "r".to_string(),
        RepoState {
            loaded: None,
            max_deletions: 5,
            confirmed: None,
            waiting_for: Vec::new(),
        },
    )]
    .into();
    let a = pass(&Inputs {
        desired: &d,
        observed: &o,
        repos: &not_loaded,
        previous: &BTreeMap::new(),
        converging: &BTreeSet::new(),
        revision_times: &BTreeMap::new(),
        now: 0,
        now_ms: 0,
        memory: &BTreeMap::new(),
        pauses: &BTreeMap::new(),
        external: &BTreeMap::new(),
        cluster_holds: &BTreeMap::new(),
        good: &BTreeMap::new(),
    });
    assert!(a.ownership.delete.is_empty(), "{:?}", a.ownership.delete);
    assert!(
        a.ownership.kept["a"][0].contains("has not loaded a good revision"),
        "{:?}",
        a.ownership.kept
    );
    // Deletion protection on the live Instance: kept.
    let mut protected = live(gone, CP, Some(ExecutionStatus::Complete));
    protected
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(DELETION_PROTECTION_ANNOTATION.into(), "true".into());
    let a = run(&d, &observed(&[("a", Some(vec![protected]))]));
    assert!(a.ownership.delete.is_empty(), "{:?}", a.ownership.delete);
    assert!(a.ownership.kept["a"][0].contains("deletionProtection"));
    // Over maxDeletions: held for confirmation, nothing deleted.
    let many: Vec<Instance> = (0..6)
        .map(|n| live(&format!("ns/old{n}"), CP, Some(ExecutionStatus::Complete)))
        .collect();
    let a = run(&d, &observed(&[("a", Some(many))]));
    assert!(a.ownership.delete.is_empty(), "{:?}", a.ownership.delete);
    assert_eq!(a.ownership.held["r"].count, 6);
}

#[test]
fn another_control_planes_instance_is_left_alone() {
    let d = desired(
        "r1",
        vec![instance(K, &["a", "b"], Strategy::Parallel, &[])],
    );
    let o = observed(&[
        (
            "a",
            Some(vec![
                live(K, "other", None),
                live("ns/theirs", "other", None),
            ]),
        ),
        ("b", Some(vec![])),
    ]);
    let a = run(&d, &o);
    assert!(applied_on(&a, K).is_empty(), "{:?}", a.apply);
    match state(&a, K) {
        State::Halted { cluster, reason } => {
            assert_eq!(cluster, "a");
            assert!(
                reason.contains("belongs to control plane \"other\""),
                "{reason}"
            );
        }
        other => panic!("expected a halt, got {other:?}"),
    }
    assert_eq!(
        a.conflicts["a"],
        [format!("{K}: owned by control plane \"other\"")]
    );
    assert!(a.ownership.delete.is_empty(), "{:?}", a.ownership.delete);
    assert!(a.ownership.relabel.is_empty(), "{:?}", a.ownership.relabel);
}

#[test]
fn a_cluster_that_never_answered_is_not_counted_as_progressed() {
    let d = desired("r1", vec![instance(K, &["a", "b"], Strategy::Serial, &[])]);
    let o = observed(&[("a", None), ("b", Some(vec![]))]);
    let a = run(&d, &o);
    assert_eq!(a.rollouts[K].observed["a"], Progress::Pending);
    assert!(
        a.apply.is_empty(),
        "neither a (unknown) nor b (next wave): {:?}",
        a.apply
    );
    assert_eq!(state(&a, K), State::Progressing { wave: 0, waves: 2 });
    // In parallel, the other cluster completing does not complete the rollout.
    let d = desired(
        "r1",
        vec![instance(K, &["a", "b"], Strategy::Parallel, &[])],
    );
    let o = observed(&[
        ("a", None),
        (
            "b",
            Some(vec![live(K, CP, Some(ExecutionStatus::Complete))]),
        ),
    ]);
    let a = run(&d, &o);
    assert_eq!(state(&a, K), State::Progressing { wave: 0, waves: 1 });
    assert_eq!(a.summary.complete, 0);
    // Nothing is deleted on a cluster without an observation.
    assert!(!a.ownership.delete.contains_key("a"));
}

#[test]
fn commit_to_converged_is_measured_once_for_rollouts_the_planner_started() {
    let d = desired("r1,r2", vec![instance(K, &["a"], Strategy::Parallel, &[])]);
    let times: BTreeMap<String, i64> = [("r1".to_string(), 100), ("r2".to_string(), 130)].into();
    let repos = loaded_repo("r2");
    let inputs = |o: &'_ Observed, converging: &'_ BTreeSet<String>| -> PlanActions {
        pass(&Inputs {
            desired: &d,
            observed: o,
            repos: &repos,
            previous: &BTreeMap::new(),
            converging,
            revision_times: &times,
            now: 190,
            now_ms: 190 * 1000,
            memory: &BTreeMap::new(),
            pauses: &BTreeMap::new(),
            external: &BTreeMap::new(),
            cluster_holds: &BTreeMap::new(),
            good: &BTreeMap::new(),
        })
    };
    let started = inputs(&observed(&[("a", Some(vec![]))]), &BTreeSet::new());
    assert!(started.converging.contains(K));
    assert!(started.converged.is_empty());
    let done = observed(&[(
        "a",
        Some(vec![live(K, CP, Some(ExecutionStatus::Complete))]),
    )]);
    let finished = inputs(&done, &started.converging);
    // The newest part of the combined revision counts: 190 - 130.
    assert_eq!(finished.converged, [("f".to_string(), 60)]);
    assert!(finished.converging.is_empty());
    // Complete without the planner having applied it (a restart): no measurement.
    assert!(inputs(&done, &finished.converging).converged.is_empty());
}

#[test]
fn rollouts_of_instances_no_longer_desired_are_gone() {
    let d = desired("r1", vec![instance(K, &["a"], Strategy::Parallel, &[])]);
    let previous: BTreeMap<String, State> = [
        (K.to_string(), State::Complete),
        ("ns/removed".to_string(), State::Complete),
    ]
    .into();
    let converging: BTreeSet<String> = ["ns/removed".to_string()].into();
    let a = pass(&Inputs {
        desired: &d,
        observed: &observed(&[("a", Some(vec![]))]),
        repos: &loaded_repo("r1"),
        previous: &previous,
        converging: &converging,
        revision_times: &BTreeMap::new(),
        now: 0,
        now_ms: 0,
        memory: &BTreeMap::new(),
        pauses: &BTreeMap::new(),
        external: &BTreeMap::new(),
        cluster_holds: &BTreeMap::new(),
        good: &BTreeMap::new(),
    });
    assert_eq!(a.gone, ["ns/removed"]);
    assert!(!a.converging.contains("ns/removed"));
    assert_eq!(a.summary.instances, 1);
}

#[test]
fn a_dependency_holds_each_cluster_until_complete_there_or_everywhere() {
    const ZK: &str = "data/zk";
    let zk = instance(ZK, &["a", "b"], Strategy::Parallel, &[]);
    let mut db = instance(K, &["a", "b"], Strategy::Parallel, &[]);
    db.depends_on = vec![crate::gitops::stages::Dependency {
        instance: ZK.into(),
        scope: crate::gitops::stages::Scope::SameCluster,
        line: None,
    }];
    let d = desired("r1", vec![zk.clone(), db.clone()]);
    // zk COMPLETE on a, running on b: db goes to a only, and says what b waits for.
    let o = observed(&[
        (
            "a",
            Some(vec![live(ZK, CP, Some(ExecutionStatus::Complete))]),
        ),
        (
            "b",
            Some(vec![live(ZK, CP, Some(ExecutionStatus::InProgress))]),
        ),
    ]);
    let a = run(&d, &o);
    assert_eq!(applied_on(&a, K), ["a"]);
    let o = observed(&[
        (
            "a",
            Some(vec![
                live(ZK, CP, Some(ExecutionStatus::Complete)),
                live(K, CP, Some(ExecutionStatus::Complete)),
            ]),
        ),
        (
            "b",
            Some(vec![live(ZK, CP, Some(ExecutionStatus::InProgress))]),
        ),
    ]);
    let a = run(&d, &o);
    assert!(applied_on(&a, K).is_empty());
    assert_eq!(
        state(&a, K),
        State::Waiting {
            stage: "remaining".into(),
            gate: "dependsOn".into(),
            reason: "waiting for data/zk on b: deploy IN_PROGRESS 0/0".into()
        }
    );
    // `everywhere`: nothing until zk is COMPLETE on all its clusters.
    db.depends_on[0].scope = crate::gitops::stages::Scope::Everywhere;
    let d = desired("r1", vec![zk.clone(), db.clone()]);
    let o = observed(&[
        (
            "a",
            Some(vec![live(ZK, CP, Some(ExecutionStatus::Complete))]),
        ),
        (
            "b",
            Some(vec![live(ZK, CP, Some(ExecutionStatus::InProgress))]),
        ),
    ]);
    assert!(applied_on(&run(&d, &o), K).is_empty());
    let o = observed(&[
        (
            "a",
            Some(vec![live(ZK, CP, Some(ExecutionStatus::Complete))]),
        ),
        (
            "b",
            Some(vec![live(ZK, CP, Some(ExecutionStatus::Complete))]),
        ),
    ]);
    assert_eq!(applied_on(&run(&d, &o), K), ["a", "b"]);
    // A dependency no loaded repository declares blocks, naming it.
    let d = desired("r1", vec![db]);
    let a = run(&d, &o);
    assert!(applied_on(&a, K).is_empty());
    match state(&a, K) {
        State::Waiting { reason, .. } => assert_eq!(
            reason,
            "waiting for data/zk: not declared by any loaded repository"
        ),
        other => panic!("{other:?}"),
    }
}

// ---- plan gates and revert ----

fn staged(key: &str) -> DesiredInstance {
    use crate::gitops::stages::{Gate, RolloutSpec, Stage};
    let mut inst = instance(key, &["a", "b"], Strategy::Parallel, &[]);
    inst.rollout = RolloutSpec {
        stages: vec![
            Stage {
                name: "canary".into(),
                clusters: vec!["a".into()],
                strategy: Strategy::Parallel,
                gates: vec![Gate::Plan("smoke".into())],
            },
            Stage {
                name: "prod".into(),
                clusters: vec!["b".into()],
                strategy: Strategy::Parallel,
                gates: vec![],
            },
        ],
        ..RolloutSpec::legacy(Strategy::Parallel, &[], &[])
    };
    inst
}

fn pass_with(
    d: &DesiredState,
    o: &Observed,
    memory: &BTreeMap<String, crate::gitops::stages::Memory>,
) -> PlanActions {
    pass(&Inputs {
        desired: d,
        observed: o,
        repos: &loaded_repo(&d.revision),
        previous: &BTreeMap::new(),
        converging: &BTreeSet::new(),
        revision_times: &BTreeMap::new(),
        now: 0,
        now_ms: 0,
        memory,
        pauses: &BTreeMap::new(),
        external: &BTreeMap::new(),
        cluster_holds: &BTreeMap::new(),
        good: &BTreeMap::new(),
    })
}

/// `live` after the engine ran `plan` (uid u2) on it, with that plan's status.
fn ran(mut i: Instance, plan: &str, status: ExecutionStatus) -> Instance {
    let snap = Snapshot::of(&i.spec, plan, "u2");
    i.metadata.annotations = Some(
        [(
            LAST_APPLIED_ANNOTATION.to_string(),
            serde_json::to_string(&snap).expect("json"),
        )]
        .into(),
    );
    let s = i.status.get_or_insert_with(Default::default);
    s.plan_status.insert(
        plan.into(),
        PlanStatus {
            name: plan.into(),
            uid: "u2".into(),
            status: Some(status),
            ..Default::default()
        },
    );
    i
}

#[test]
fn a_plan_gate_runs_its_plan_on_the_stage_and_opens_when_it_completed_there() {
    let key = "ns/db";
    let d = desired("r1", vec![staged(key)]);
    let done = live(key, CP, Some(ExecutionStatus::Complete));
    let o = observed(&[("a", Some(vec![done.clone()])), ("b", Some(vec![]))]);
    let out = run(&d, &o);
    assert_eq!(
        out.trigger.get("a"),
        Some(&BTreeSet::from([(key.to_string(), "smoke".to_string())]))
    );
    assert!(out.apply.is_empty(), "{:?}", out.apply);
    assert!(
        matches!(&out.rollouts[key].state, State::Waiting { gate, reason, .. } if gate == "plan" && reason.contains("starting on a")),
        "{:?}",
        out.rollouts[key].state
    );
    // Running: no second trigger, still closed.
    let running = ran(done.clone(), "smoke", ExecutionStatus::InProgress);
    let out = run(
        &d,
        &observed(&[("a", Some(vec![running])), ("b", Some(vec![]))]),
    );
    assert!(out.trigger.is_empty(), "{:?}", out.trigger);
    assert!(out.apply.is_empty());
    // Complete on the stage: prod gets the spec.
    let smoked = ran(done, "smoke", ExecutionStatus::Complete);
    let out = run(
        &d,
        &observed(&[("a", Some(vec![smoked])), ("b", Some(vec![]))]),
    );
    assert!(out.trigger.is_empty());
    assert_eq!(out.apply.get("b").map(|s| s.len()), Some(1), "{out:?}");
}

#[test]
fn a_revert_gives_the_good_spec_back_to_the_clusters_that_took_the_failed_one() {
    use super::planner::spec_id_of;
    let key = "ns/db";
    let mut inst = staged(key);
    inst.parameters.insert("X".into(), "2".into());
    let d = desired("r2", vec![inst]);
    let good_params: BTreeMap<String, String> = [("X".to_string(), "1".to_string())].into();
    let failed_params: BTreeMap<String, String> = [("X".to_string(), "2".to_string())].into();
    let mut on_a = live(key, CP, None);
    on_a.spec.parameters = failed_params.clone();
    let mut on_b = live(key, CP, None);
    on_b.spec.parameters = good_params.clone();
    let on_b = ran(on_b, "deploy", ExecutionStatus::Complete);
    let to = crate::gitops::stages::GoodSpec {
        spec: spec_id_of(OV, &good_params),
        revision: "r1".into(),
    };
    let mut m = crate::gitops::stages::Memory {
        spec: spec_id_of(OV, &failed_params),
        last_good: Some(to.clone()),
        ..Default::default()
    };
    crate::gitops::stages::revert(&mut m, "onFailure", "plan update FATAL_ERROR", 0)
        .expect("revert");
    let memory = BTreeMap::from([(key.to_string(), m)]);
    let o = observed(&[("a", Some(vec![on_a])), ("b", Some(vec![on_b]))]);
    let out = pass_with(&d, &o, &memory);
    // The good spec is read back from b (this pass never saw it complete) and given to a.
    let back = out
        .revert
        .get("a")
        .and_then(|r| r.get(key))
        .expect("a reverts");
    assert_eq!(back.state.revision, "r1");
    assert_eq!(back.state.instances[key].parameters, good_params);
    assert_eq!(back.plan, None, "the framework has no rollback plan here");
    assert!(!out.revert.contains_key("b"), "{:?}", out.revert);
    assert!(
        out.apply.is_empty(),
        "the failed spec is quarantined: {:?}",
        out.apply
    );
    assert!(
        matches!(&out.rollouts[key].state, State::Halted { reason, .. } if reason.contains("reverted to revision r1") && reason.contains("1 of 2 clusters on the good spec; reverting a")),
        "{:?}",
        out.rollouts[key].state
    );
    // No cluster runs the good spec and this process never saw it: it says so, and waits.
    let mut on_a = live(key, CP, None);
    on_a.spec.parameters = failed_params;
    let o = observed(&[("a", Some(vec![on_a])), ("b", Some(vec![]))]);
    let out = pass_with(&d, &o, &memory);
    assert!(out.revert.is_empty());
    assert!(
        matches!(&out.rollouts[key].state, State::Halted { reason, .. } if reason.contains("cannot revert yet")),
        "{:?}",
        out.rollouts[key].state
    );
}
