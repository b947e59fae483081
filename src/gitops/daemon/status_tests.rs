//! The status views over plain snapshots: what each target shows, the errors naming what is
//! desired, and sensitive parameters masked.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::REVISION_ANNOTATION;
use super::planner_tests::{CP, K, desired, instance, live, observed};
use super::state::{ClusterStatus, RepoStatus};
use super::status::{Snapshot, instance_detail, status_doc};
use crate::api::{
    ExecutionStatus, Instance, LAST_APPLIED_ANNOTATION, Operator, OperatorSpec, OperatorVersion,
    OperatorVersionSpec, Parameter,
};
use crate::gitops::desired::{DesiredState, Framework};
use crate::gitops::rollout::{Progress, State, Strategy};
use crate::package::redact::MASK;

fn cluster(name: &str, up: bool) -> ClusterStatus {
    ClusterStatus {
        name: name.into(),
        up,
        ..Default::default()
    }
}

/// K's Instance with its plan COMPLETE, applied by `revision`.
fn complete_at(revision: &str) -> Instance {
    let mut done = live(K, CP, Some(ExecutionStatus::Complete));
    done.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(REVISION_ANNOTATION.into(), revision.into());
    done
}

fn snapshot(d: DesiredState, o: super::planner_tests::Observed) -> Snapshot {
    Snapshot {
        repositories: vec![RepoStatus {
            name: "r".into(),
            revision: Some(d.revision.clone()),
            ..Default::default()
        }],
        clusters: o.keys().map(|c| cluster(c, true)).collect(),
        desired: Some(Arc::new(d)),
        observed: o,
        rollouts: BTreeMap::new(),
        memory: BTreeMap::new(),
        pauses: BTreeMap::new(),
    }
}

#[test]
fn status_shows_each_targets_progress_plans_and_revision() {
    let d = desired(
        "r1",
        vec![
            instance(K, &["a", "b", "unknown"], Strategy::Parallel, &[]),
            instance("ns/cache", &["a"], Strategy::Parallel, &[]),
        ],
    );
    let done = complete_at("r0");
    let mut s = snapshot(d, observed(&[("a", Some(vec![done])), ("b", None)]));
    s.rollouts.insert(K.into(), State::Complete);
    let doc = status_doc(s);
    assert_eq!(doc.repositories.len(), 1);
    assert_eq!(doc.clusters.len(), 2);
    let db = doc
        .instances
        .iter()
        .find(|i| i.name == "db")
        .expect("db in the status");
    assert_eq!(db.rollout, State::Complete);
    assert_eq!(db.revision, "r1");
    assert_eq!(
        db.clusters.keys().collect::<Vec<_>>(),
        ["a", "b"],
        "a target that is no configured cluster is not shown"
    );
    let a = &db.clusters["a"];
    assert_eq!(a.progress, Progress::Complete);
    assert_eq!(a.revision.as_deref(), Some("r0"));
    assert_eq!(
        a.plans.get("deploy"),
        Some(&ExecutionStatus::Complete.to_string())
    );
    assert_eq!(a.detail.as_ref().map(|d| d.plan.as_str()), Some("deploy"));
    let b = &db.clusters["b"];
    assert_eq!(b.progress, Progress::NotApplied);
    assert!(b.plans.is_empty() && b.revision.is_none() && b.detail.is_none());
    let cache = doc
        .instances
        .iter()
        .find(|i| i.name == "cache")
        .expect("cache in the status");
    assert_eq!(
        cache.rollout,
        State::Progressing { wave: 0, waves: 0 },
        "no pass yet: the first wave of none"
    );
}

#[test]
fn instance_detail_errors_name_what_is_desired() {
    let none = Snapshot::default();
    assert_eq!(
        instance_detail(&none, None, "db").expect_err("no desired state"),
        "no desired state yet (no repository synced)"
    );
    let d = desired(
        "r1",
        vec![
            instance("a/db", &["x"], Strategy::Parallel, &[]),
            instance("b/db", &["x"], Strategy::Parallel, &[]),
        ],
    );
    let s = snapshot(d, observed(&[("x", Some(vec![]))]));
    let unknown = instance_detail(&s, None, "web").expect_err("unknown");
    assert!(unknown.contains("\"web\""), "{unknown}");
    assert!(unknown.contains("instances: a/db, b/db"), "{unknown}");
    let ambiguous = instance_detail(&s, None, "db").expect_err("two namespaces");
    assert!(
        ambiguous.contains("several namespaces (a/db, b/db)"),
        "{ambiguous}"
    );
    let wrong_ns = instance_detail(&s, Some("c"), "db").expect_err("not in c");
    assert!(wrong_ns.contains("in namespace \"c\""), "{wrong_ns}");
    let one = instance_detail(&s, Some("b"), "db").expect("b/db");
    assert_eq!((one.namespace.as_str(), one.name.as_str()), ("b", "db"));
    assert_eq!(one.clusters["x"].progress, "NotApplied");
    assert!(one.clusters["x"].instance.is_none());
}

/// `i` with these parameters, as the engine would have acted on them.
fn with_parameters(mut i: Instance, params: &[(&str, &str)]) -> Instance {
    i.spec.parameters = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let snap = crate::api::Snapshot::of(&i.spec, "deploy", "u1");
    i.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            LAST_APPLIED_ANNOTATION.into(),
            serde_json::to_string(&snap).expect("json"),
        );
    i
}

#[test]
fn instance_detail_masks_sensitive_parameters_and_shows_the_cluster_up() {
    let mut inst = instance(K, &["a", "b"], Strategy::Parallel, &[]);
    inst.parameters = [("PASSWORD".to_string(), "hunter2".to_string())].into();
    let mut d = desired("r1", vec![inst]);
    let ov = OperatorVersion::new(
        "f-1",
        OperatorVersionSpec {
            parameters: vec![Parameter {
                name: "PASSWORD".into(),
                sensitive: Some(true),
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    d.frameworks.insert(
        ("f".into(), "1".into()),
        Framework {
            name: "f".into(),
            version: "1".into(),
            operator: Operator::new("f", OperatorSpec::default()),
            operator_version: ov,
        },
    );
    let running = with_parameters(
        live(K, CP, Some(ExecutionStatus::FatalError)),
        &[("PASSWORD", "hunter2")],
    );
    let mut s = snapshot(
        d,
        observed(&[("a", Some(vec![running])), ("b", Some(vec![]))]),
    );
    s.clusters = vec![cluster("a", true), cluster("b", false)];
    s.rollouts.insert(
        K.into(),
        State::Halted {
            cluster: "a".into(),
            reason: "plan deploy FATAL_ERROR".into(),
        },
    );
    let detail = instance_detail(&s, None, "db").expect("db");
    assert_eq!(detail.rollout, "Halted");
    let a = &detail.clusters["a"];
    assert!(a.up && !detail.clusters["b"].up);
    assert_eq!(a.progress, "Failed");
    let shown = a.instance.as_ref().expect("live instance shown");
    assert_eq!(shown.spec.parameters["PASSWORD"], MASK);
    assert!(a.operator_version.is_some(), "the OperatorVersion it runs");
    let text = serde_json::to_string(&detail).expect("json");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_staged_rollout_shows_each_stage_and_gate_with_its_state_and_reason() {
    use super::state::{ClusterProgressView, GateView};
    use super::status::stage_views;
    use crate::gitops::stages::{Gate, Memory, RolloutSpec, Stage};
    let mut inst = instance(K, &["a", "b"], Strategy::Parallel, &[]);
    inst.rollout = RolloutSpec {
        stages: vec![
            Stage {
                name: "canary".into(),
                clusters: vec!["a".into()],
                strategy: Strategy::Parallel,
                gates: vec![
                    Gate::Bake(std::time::Duration::from_secs(600)),
                    Gate::Plan("smoke".into()),
                ],
            },
            Stage {
                name: "prod".into(),
                clusters: vec!["b".into()],
                strategy: Strategy::Parallel,
                gates: vec![Gate::Approval],
            },
        ],
        ..RolloutSpec::legacy(Strategy::Parallel, &[], &[])
    };
    let view = |p: Progress| ClusterProgressView {
        progress: p,
        plans: BTreeMap::new(),
        revision: None,
        detail: None,
    };
    let per = BTreeMap::from([
        ("a".to_string(), view(Progress::Complete)),
        ("b".to_string(), view(Progress::NotApplied)),
    ]);
    let mut memory = Memory {
        spec: "s1".into(),
        ..Default::default()
    };
    memory.gates_passed.insert("canary#0".into());
    let waiting = State::Waiting {
        stage: "canary".into(),
        gate: "plan".into(),
        reason: "plan smoke COMPLETE on 0 of 1 clusters; running on a".into(),
    };
    let stages = stage_views(&inst, &per, Some(&memory), &waiting);
    assert_eq!(stages.len(), 2);
    assert_eq!(
        (stages[0].name.as_str(), stages[0].state),
        ("canary", "done")
    );
    assert_eq!(
        stages[0].gates,
        vec![
            GateView {
                gate: "bake",
                detail: "10m".into(),
                state: "open",
                reason: None
            },
            GateView {
                gate: "plan",
                detail: "smoke".into(),
                state: "waiting",
                reason: Some("plan smoke COMPLETE on 0 of 1 clusters; running on a".into())
            },
        ]
    );
    assert_eq!(
        (stages[1].state, stages[1].gates[0].state),
        ("pending", "pending")
    );
    // Approved: the approval shows who gave it.
    memory.approvals.insert(
        "prod".into(),
        crate::gitops::stages::Approval {
            by: "alice".into(),
            at: 0,
        },
    );
    let stages = stage_views(&inst, &per, Some(&memory), &State::Complete);
    assert_eq!(stages[1].gates[0].state, "open");
    assert_eq!(
        stages[1].gates[0].reason.as_deref(),
        Some("approved by alice")
    );
    // The legacy one-stage forms show no stages.
    let plain = instance(K, &["a", "b"], Strategy::Parallel, &[]);
    assert!(stage_views(&plain, &per, None, &State::Complete).is_empty());
}

#[test]
fn the_console_fleet_shows_the_same_targets_and_statuses_as_the_status_doc() {
    let d = desired(
        "r1",
        vec![
            instance(K, &["a", "b", "c"], Strategy::Parallel, &[]),
            instance("ns/cache", &["a"], Strategy::Parallel, &[]),
        ],
    );
    let done = complete_at("r0");
    let running = live(K, CP, Some(ExecutionStatus::InProgress));
    let mut s = snapshot(
        d,
        observed(&[
            ("a", Some(vec![done])),
            ("b", Some(vec![running])),
            ("c", None),
        ]),
    );
    s.observed.insert("c".into(), None);
    s.rollouts.insert(
        K.into(),
        State::Halted {
            cluster: "b".into(),
            reason: "2 failed".into(),
        },
    );
    let fleet = super::console::fleet_of(&s);
    let doc = status_doc(s);
    assert_eq!(fleet.clusters.len(), doc.clusters.len());
    let cell = |c: &str, k: &str| fleet.cell(c, k).map(|c| c.status.as_str());
    assert_eq!(cell("a", K), Some("COMPLETE"));
    assert_eq!(cell("b", K), Some("IN_PROGRESS"));
    assert_eq!(cell("c", K), Some("UNKNOWN"), "never observed");
    assert_eq!(cell("a", "ns/cache"), Some("NOT_APPLIED"));
    assert_eq!(cell("b", "ns/cache"), None, "not a target");
    assert_eq!(
        fleet.cell("a", K).and_then(|c| c.revision.as_deref()),
        Some("r0")
    );
    let db = fleet.instances.iter().find(|i| i.key() == K).expect("db");
    assert_eq!(db.rollout, "Halted: 2 failed (at cluster b)");
    // Every cell the status document reports has the same status in the fleet.
    for inst in &doc.instances {
        let key = format!("{}/{}", inst.namespace, inst.name);
        for (c, p) in &inst.clusters {
            if let Some(d) = &p.detail {
                assert_eq!(cell(c, &key), Some(d.status.as_str()), "{c} × {key}");
            }
        }
    }
}
