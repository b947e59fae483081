//! The orderings a restarted or racing manager depends on, as pure decisions: no cluster.

use serde_json::{Value, json};

use super::*;
use crate::api::{ExecutionStatus as S, Task};
use crate::engine::workflow::{StepRef, TaskOutcome, TaskRunner, execute};

const OV_NAME: &str = "demo-1.0";
const UID: &str = "uid-new";

/// Two steps, a `cleanup` plan when `cleanup`, a parameter `replicas` (updates run
/// `deploy`) and an immutable `storage`.
fn operator_version(name: &str, cleanup: bool) -> OperatorVersion {
    let mut plans = json!({
        "deploy": {"strategy": "serial", "phases": [{"name": "main", "strategy": "serial", "steps": [
            {"name": "s1", "tasks": ["a"]},
            {"name": "s2", "tasks": ["b"]}
        ]}]},
        "backup": {"strategy": "serial", "phases": [{"name": "main", "strategy": "serial", "steps": [
            {"name": "dump", "tasks": ["a"]}
        ]}]}
    });
    if cleanup {
        plans["cleanup"] = json!({"strategy": "serial", "phases": [{"name": "main", "strategy": "serial", "steps": [
            {"name": "drop", "tasks": ["a"]}
        ]}]});
    }
    serde_json::from_value(json!({
        "apiVersion": "kudo.dev/v1beta1",
        "kind": "OperatorVersion",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "operator": {"name": "demo"},
            "version": "1.0",
            "tasks": [
                {"name": "a", "kind": "Dummy", "spec": {"done": true}},
                {"name": "b", "kind": "Dummy", "spec": {"done": true}}
            ],
            "parameters": [
                {"name": "replicas", "default": "1"},
                {"name": "storage", "default": "1Gi", "immutable": true}
            ],
            "plans": plans
        }
    }))
    .expect("test OperatorVersion")
}

/// An Instance of [`OV_NAME`]; `extra` is merged into it (JSON merge patch semantics for
/// objects, replacing anything else).
fn instance(extra: Value) -> Instance {
    let mut base = json!({
        "apiVersion": "kudo.dev/v1beta1",
        "kind": "Instance",
        "metadata": {"name": "demo", "namespace": "ns", "uid": "inst-uid", "resourceVersion": "5"},
        "spec": {"operatorVersion": {"name": OV_NAME}, "parameters": {"replicas": "1"}}
    });
    merge(&mut base, extra);
    serde_json::from_value(base).expect("test Instance")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

/// The snapshot annotation recording that `plan` ran as `uid` for the default spec.
fn snapshot(plan: &str, uid: &str, version: &str) -> Value {
    let snap = Snapshot {
        operator_version: version.into(),
        parameters: [("replicas".to_string(), "1".to_string())].into(),
        plan: plan.into(),
        plan_uid: uid.into(),
    };
    json!({"metadata": {"annotations": {LAST_APPLIED_ANNOTATION: serde_json::to_string(&snap).expect("snapshot")}}})
}

fn decide_for(inst: &Instance, ov: Option<&OperatorVersion>) -> Vec<Intent> {
    decide(Inputs {
        instance: inst,
        operator_version: ov,
        new_uid: UID,
    })
}

fn starts(intents: &[Intent]) -> Vec<&PlanStart> {
    intents
        .iter()
        .filter_map(|i| match i {
            Intent::StartPlan(s) => Some(s),
            _ => None,
        })
        .collect()
}

fn the_pass(intents: &[Intent]) -> &Pass {
    match intents.last() {
        Some(Intent::ExecutePass(p)) => p,
        other => panic!("expected a pass last, got {other:?} in {intents:?}"),
    }
}

fn ready(intents: &[Intent]) -> Option<&SetCondition> {
    intents.iter().find_map(|i| match i {
        Intent::Condition(c) if c.type_ == "Ready" => Some(c),
        _ => None,
    })
}

/// Records every task it runs; every task is done at once.
#[derive(Default)]
struct Recorder(Vec<String>);

impl TaskRunner for Recorder {
    async fn run(&mut self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        self.0.push(format!("{}/{}", at.step, task.name));
        TaskOutcome::Done
    }
}

#[test]
fn a_new_instance_starts_deploy_with_the_finalizer_in_the_same_write_and_runs_it() {
    let ov = operator_version(OV_NAME, true);
    let inst = instance(json!({}));
    let intents = decide_for(&inst, Some(&ov));
    assert_eq!(intents.len(), 2, "{intents:?}");
    let start = starts(&intents)[0];
    assert_eq!(start.plan, "deploy");
    assert_eq!(start.reason, Reason::NewInstance);
    assert_eq!(start.snapshot.plan_uid, UID);
    assert!(start.add_finalizer, "a cleanup plan needs the finalizer");
    assert!(
        !intents.contains(&Intent::SetFinalizer),
        "the finalizer rides on the plan start, not a write of its own"
    );
    let pass = the_pass(&intents);
    assert_eq!(pass.active, start.snapshot);
    assert_eq!(pass.written, Some(S::InProgress));
    assert_eq!(pass.run_version, None);
}

#[test]
fn without_cleanup_or_cluster_scoped_objects_no_finalizer_is_added() {
    let ov = operator_version(OV_NAME, false);
    let intents = decide_for(&instance(json!({})), Some(&ov));
    assert!(!starts(&intents)[0].add_finalizer);
    assert!(!intents.contains(&Intent::SetFinalizer));
}

#[test]
fn a_finalizer_needed_without_a_plan_start_gets_its_own_guarded_write() {
    let ov = operator_version(OV_NAME, false);
    // Nothing changed since deploy ran, but the inventory now holds a cluster-scoped object.
    let inst = instance(json!({
        "metadata": snapshot("deploy", "u1", OV_NAME)["metadata"].clone(),
        "spec": {"planExecution": {"planName": "deploy", "uid": "u1", "status": "COMPLETE"}},
        "status": {"applied": [{"apiVersion": "v1", "kind": "Namespace", "name": "extra"}]}
    }));
    let intents = decide_for(&inst, Some(&ov));
    assert!(starts(&intents).is_empty());
    assert!(intents.contains(&Intent::SetFinalizer), "{intents:?}");
}

#[test]
fn killed_after_the_snapshot_write_before_the_status_write_resumes_the_same_uid() {
    let ov = operator_version(OV_NAME, false);
    // The plan start was written (annotation + planExecution), the status never was.
    let inst = instance(json!({
        "metadata": snapshot("deploy", "u1", OV_NAME)["metadata"].clone(),
        "spec": {"planExecution": {"planName": "deploy", "uid": "u1", "status": "IN_PROGRESS"}}
    }));
    let intents = decide_for(&inst, Some(&ov));
    assert!(starts(&intents).is_empty(), "no new plan: {intents:?}");
    let pass = the_pass(&intents);
    assert_eq!(pass.active.plan_uid, "u1");
    assert_eq!(
        pass.written,
        Some(S::InProgress),
        "planExecution already says so"
    );
    let mut status = InstanceStatus::default();
    let PassStart::Run { execute, .. } = prepare_pass(&inst, &ov, &pass.active, &mut status) else {
        panic!("plan exists");
    };
    assert!(execute.is_some());
    assert_eq!(
        status.plan_status["deploy"].uid, "u1",
        "the tree is the run's"
    );
}

/// The status tree of `deploy` run `uid` with step s1 COMPLETE and s2 PENDING.
fn half_done(uid: &str) -> Value {
    json!({"planStatus": {"deploy": {
        "name": "deploy", "status": "IN_PROGRESS", "uid": uid,
        "phases": [{"name": "main", "status": "IN_PROGRESS", "steps": [
            {"name": "s1", "status": "COMPLETE"},
            {"name": "s2", "status": "PENDING"}
        ]}]
    }}})
}

#[tokio::test]
async fn a_finished_step_is_never_run_again_in_the_same_uid() {
    let ov = operator_version(OV_NAME, false);
    let inst = instance(json!({
        "metadata": snapshot("deploy", "u1", OV_NAME)["metadata"].clone(),
        "spec": {"planExecution": {"planName": "deploy", "uid": "u1", "status": "IN_PROGRESS"}},
        "status": half_done("u1")
    }));
    let intents = decide_for(&inst, Some(&ov));
    assert!(starts(&intents).is_empty());
    let pass = the_pass(&intents);
    let mut status = inst.status.clone().unwrap_or_default();
    prepare_pass(&inst, &ov, &pass.active, &mut status);
    let tree = status.plan_status.get_mut("deploy").expect("tree");
    let mut runner = Recorder::default();
    execute(&ov.spec.plans["deploy"], &ov.spec.tasks, tree, &mut runner).await;
    assert_eq!(runner.0, vec!["s2/b"], "s1 was complete in this uid");
    assert_eq!(tree.status, Some(S::Complete));
}

#[test]
fn a_tree_from_another_run_is_reset_to_the_active_uid() {
    let ov = operator_version(OV_NAME, false);
    let inst = instance(json!({"status": half_done("old")}));
    let active = Snapshot::of(&inst.spec, "deploy", "u2");
    let mut status = inst.status.clone().unwrap_or_default();
    prepare_pass(&inst, &ov, &active, &mut status);
    let tree = &status.plan_status["deploy"];
    assert_eq!(tree.uid, "u2");
    assert!(
        tree.phases[0]
            .steps
            .iter()
            .all(|s| s.status == Some(S::Pending)),
        "a new run starts every step again: {tree:?}"
    );
}

#[test]
fn deletion_with_a_cleanup_plan_starts_cleanup_first() {
    let ov = operator_version(OV_NAME, true);
    let inst = instance(json!({
        "metadata": {
            "deletionTimestamp": "2024-01-01T00:00:00Z",
            "finalizers": [CLEANUP_FINALIZER],
            "annotations": snapshot("deploy", "u1", OV_NAME)["metadata"]["annotations"].clone()
        },
        "status": {"applied": [{"apiVersion": "v1", "kind": "Namespace", "name": "extra"}]}
    }));
    let intents = decide_for(&inst, Some(&ov));
    let start = starts(&intents)[0];
    assert_eq!(start.plan, "cleanup");
    assert_eq!(start.reason, Reason::Deletion);
    assert!(!start.add_finalizer);
    assert_eq!(the_pass(&intents).active.plan, "cleanup");
    assert!(
        !intents.iter().any(|i| matches!(
            i,
            Intent::DeleteClusterScoped { .. } | Intent::RemoveFinalizer
        )),
        "nothing is deleted while cleanup has not run: {intents:?}"
    );
}

#[test]
fn deletion_keeps_running_an_unfinished_cleanup_in_its_uid() {
    let ov = operator_version(OV_NAME, true);
    let inst = instance(json!({
        "metadata": {
            "deletionTimestamp": "2024-01-01T00:00:00Z",
            "finalizers": [CLEANUP_FINALIZER],
            "annotations": snapshot("cleanup", "c1", OV_NAME)["metadata"]["annotations"].clone()
        },
        "spec": {"planExecution": {"planName": "cleanup", "uid": "c1", "status": "IN_PROGRESS"}},
        "status": {"planStatus": {"cleanup": {"name": "cleanup", "status": "IN_PROGRESS", "uid": "c1"}}}
    }));
    let intents = decide_for(&inst, Some(&ov));
    assert!(starts(&intents).is_empty(), "{intents:?}");
    assert_eq!(intents.len(), 1);
    let pass = the_pass(&intents);
    assert_eq!(pass.active.plan_uid, "c1");
    assert_eq!(pass.written, Some(S::InProgress));
}

#[test]
fn deletion_after_cleanup_deletes_cluster_scoped_objects_then_removes_the_finalizer() {
    let ov = operator_version(OV_NAME, true);
    let inst = instance(json!({
        "metadata": {
            "deletionTimestamp": "2024-01-01T00:00:00Z",
            "finalizers": ["other", CLEANUP_FINALIZER],
            "annotations": snapshot("cleanup", "c1", OV_NAME)["metadata"]["annotations"].clone()
        },
        "status": {
            "planStatus": {"cleanup": {"name": "cleanup", "status": "COMPLETE", "uid": "c1"}},
            "applied": [
                {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "ns", "name": "cm"},
                {"apiVersion": "v1", "kind": "Namespace", "name": "extra"}
            ]
        }
    }));
    let intents = decide_for(&inst, Some(&ov));
    assert_eq!(
        intents,
        vec![
            Intent::DeleteClusterScoped {
                operator: "demo".into(),
                objects: vec![AppliedObject {
                    api_version: "v1".into(),
                    kind: "Namespace".into(),
                    namespace: String::new(),
                    name: "extra".into(),
                }],
            },
            Intent::RemoveFinalizer,
            Intent::Then(Next::AwaitChange),
        ]
    );
    assert_eq!(finalizers_with(&inst, false), vec!["other"]);
}

#[test]
fn deletion_without_kudos_finalizer_is_left_to_kubernetes() {
    let ov = operator_version(OV_NAME, true);
    let inst = instance(json!({"metadata": {
        "deletionTimestamp": "2024-01-01T00:00:00Z",
        "finalizers": ["other"]
    }}));
    assert_eq!(
        decide_for(&inst, Some(&ov)),
        vec![Intent::Then(Next::AwaitChange)]
    );
}

#[test]
fn a_rejected_version_change_keeps_running_the_old_version() {
    let new = operator_version("demo-2.0", false);
    // storage is immutable: changing it with the version is refused.
    let inst = instance(json!({
        "metadata": snapshot("deploy", "u1", OV_NAME)["metadata"].clone(),
        "spec": {
            "operatorVersion": {"name": "demo-2.0"},
            "parameters": {"storage": "5Gi"},
            "planExecution": {"planName": "deploy", "uid": "u1", "status": "IN_PROGRESS"}
        }
    }));
    let intents = decide_for(&inst, Some(&new));
    assert!(starts(&intents).is_empty(), "{intents:?}");
    let rejected = ready(&intents).expect("a Ready condition");
    assert_eq!(
        (rejected.status, rejected.reason),
        ("False", "ChangeRejected")
    );
    let pass = the_pass(&intents);
    assert_eq!(pass.active.plan_uid, "u1");
    assert_eq!(pass.run_version.as_deref(), Some(OV_NAME));
}

#[test]
fn an_accepted_version_change_starts_a_new_run() {
    let new = operator_version("demo-2.0", false);
    let inst = instance(json!({
        "metadata": snapshot("deploy", "u1", OV_NAME)["metadata"].clone(),
        "spec": {"operatorVersion": {"name": "demo-2.0"}}
    }));
    let intents = decide_for(&inst, Some(&new));
    let start = starts(&intents)[0];
    assert_eq!(start.plan, "deploy", "no upgrade or update plan: deploy");
    assert!(matches!(start.reason, Reason::VersionChanged { .. }));
    assert_eq!(the_pass(&intents).run_version, None);
}

#[test]
fn a_manual_trigger_starts_the_named_plan() {
    let ov = operator_version(OV_NAME, false);
    let inst = instance(json!({
        "metadata": snapshot("deploy", "u1", OV_NAME)["metadata"].clone(),
        "spec": {"planExecution": {"planName": "backup"}}
    }));
    let intents = decide_for(&inst, Some(&ov));
    let start = starts(&intents)[0];
    assert_eq!(
        (start.plan.as_str(), &start.reason),
        ("backup", &Reason::Manual)
    );
    assert_eq!(the_pass(&intents).active.plan_uid, UID);
}

#[test]
fn a_manual_trigger_of_an_unknown_plan_is_rejected() {
    let ov = operator_version(OV_NAME, false);
    let inst = instance(json!({
        "metadata": snapshot("deploy", "u1", OV_NAME)["metadata"].clone(),
        "spec": {"planExecution": {"planName": "nope"}}
    }));
    let intents = decide_for(&inst, Some(&ov));
    assert!(starts(&intents).is_empty());
    assert_eq!(ready(&intents).map(|c| c.reason), Some("ChangeRejected"));
}

#[test]
fn parameters_the_version_does_not_declare_start_no_plan() {
    let ov = operator_version(OV_NAME, false);
    let inst = instance(json!({
        "metadata": snapshot("deploy", "u1", OV_NAME)["metadata"].clone(),
        "spec": {"parameters": {"unknown": "x"}}
    }));
    let intents = decide_for(&inst, Some(&ov));
    assert!(starts(&intents).is_empty(), "{intents:?}");
    assert!(ready(&intents).is_some_and(|c| c.status == "False"));
}

fn running(request: &str, plan_status: &str) -> (Instance, Snapshot) {
    let inst = instance(json!({
        "metadata": {"annotations": {PLAN_REQUEST_ANNOTATION: request}},
        "status": {"planStatus": {"deploy": {
            "name": "deploy", "status": plan_status, "uid": "u1",
            "phases": [{"name": "main", "status": plan_status, "steps": [
                {"name": "s1", "status": "COMPLETE"},
                {"name": "s2", "status": plan_status}
            ]}]
        }}}
    }));
    let active = Snapshot::of(&inst.spec, "deploy", "u1");
    (inst, active)
}

#[test]
fn cancel_ends_the_run_clears_the_request_and_runs_nothing() {
    let ov = operator_version(OV_NAME, false);
    let (inst, active) = running("cancel", "IN_PROGRESS");
    let mut status = inst.status.clone().unwrap_or_default();
    let start = prepare_pass(&inst, &ov, &active, &mut status);
    let PassStart::Run {
        request, execute, ..
    } = start
    else {
        panic!("plan exists");
    };
    assert_eq!(request.map(|r| r.refused), Some(None), "carried out");
    assert!(execute.is_none(), "a cancelled plan does not run");
    assert_eq!(status.plan_status["deploy"].status, Some(S::Cancelled));
}

#[test]
fn retry_resumes_a_failed_run_in_its_uid() {
    let ov = operator_version(OV_NAME, false);
    let (inst, active) = running("retry", "FATAL_ERROR");
    let mut status = inst.status.clone().unwrap_or_default();
    let PassStart::Run {
        plan_before,
        request,
        execute,
    } = prepare_pass(&inst, &ov, &active, &mut status)
    else {
        panic!("plan exists");
    };
    assert_eq!(plan_before, Some(S::FatalError));
    assert_eq!(request.map(|r| r.refused), Some(None));
    assert!(execute.is_some(), "the run goes on");
    let tree = &status.plan_status["deploy"];
    assert_eq!(tree.uid, "u1");
    assert_eq!(tree.phases[0].steps[0].status, Some(S::Complete));
    assert_eq!(tree.phases[0].steps[1].status, Some(S::Pending));
}

#[test]
fn an_unknown_plan_request_is_refused_and_still_cleared() {
    let ov = operator_version(OV_NAME, false);
    let (inst, active) = running("pause", "IN_PROGRESS");
    let mut status = inst.status.clone().unwrap_or_default();
    let PassStart::Run {
        request, execute, ..
    } = prepare_pass(&inst, &ov, &active, &mut status)
    else {
        panic!("plan exists");
    };
    let request = request.expect("request seen");
    assert!(request.refused.is_some_and(|m| m.contains("pause")));
    assert!(execute.is_some(), "the plan carries on");
}

#[test]
fn an_instance_labelled_for_another_control_plane_is_left_alone() {
    let inst = instance(json!({"metadata": {"labels": {CONTROL_PLANE_LABEL: "other"}}}));
    let mut asked = false;
    let gated = gate(&inst, "mine", || {
        asked = true;
        false
    });
    assert_eq!(gated, Some(Next::AwaitChange));
    assert!(!asked, "freshness is not even looked at");
    let ours = instance(json!({"metadata": {"labels": {CONTROL_PLANE_LABEL: "mine"}}}));
    assert_eq!(gate(&ours, "mine", || false), None);
    assert_eq!(
        gate(&instance(json!({})), "mine", || false),
        None,
        "an unlabelled Instance is ours"
    );
}

#[test]
fn a_copy_older_than_the_engines_own_write_waits_for_it() {
    assert_eq!(
        gate(&instance(json!({})), "mine", || true),
        Some(Next::Requeue(OWN_WRITE_WAIT))
    );
}

#[test]
fn an_empty_operator_version_name_is_an_invalid_spec() {
    let inst = instance(json!({"spec": {"operatorVersion": {"name": ""}}}));
    assert_eq!(operator_version_ref(&inst), None, "nothing to read");
    let intents = decide_for(&inst, None);
    assert_eq!(
        intents,
        vec![
            Intent::Condition(SetCondition {
                type_: "Ready",
                status: "False",
                reason: "InvalidSpec",
                message: "spec.operatorVersion.name is empty".into(),
            }),
            Intent::WriteStatus,
            Intent::Then(Next::AwaitChange),
        ]
    );
}

#[test]
fn a_missing_operator_version_is_reported_and_looked_for_again() {
    let inst = instance(json!({"spec": {"operatorVersion": {"namespace": "shared"}}}));
    assert_eq!(
        operator_version_ref(&inst),
        Some(("shared".into(), OV_NAME.into()))
    );
    let intents = decide_for(&inst, None);
    let condition = ready(&intents).expect("Ready");
    assert_eq!(
        (condition.status, condition.reason),
        ("False", "OperatorVersionNotFound")
    );
    assert!(condition.message.contains("demo-1.0") && condition.message.contains("shared"));
    assert_eq!(
        &intents[1..],
        &[Intent::WriteStatus, Intent::Then(Next::Requeue(RETRY_SOON))]
    );
}

#[test]
fn a_plan_the_version_does_not_define_is_reported() {
    let ov = operator_version(OV_NAME, false);
    let inst = instance(json!({}));
    let active = Snapshot::of(&inst.spec, "gone", "u1");
    let mut status = InstanceStatus::default();
    match prepare_pass(&inst, &ov, &active, &mut status) {
        PassStart::PlanNotFound(c) => assert_eq!(c.reason, "PlanNotFound"),
        other => panic!("expected PlanNotFound, got {other:?}"),
    }
}

fn status_with(plan_status: S) -> InstanceStatus {
    let mut status = InstanceStatus::default();
    let mut tree = new_plan_status("deploy", &Default::default(), "u1");
    tree.status = Some(plan_status);
    status.plan_status.insert("deploy".into(), tree);
    status
}

#[test]
fn drift_is_checked_only_when_the_plan_that_ran_last_was_already_complete() {
    let active = Snapshot {
        plan: "deploy".into(),
        plan_uid: "u1".into(),
        ..Default::default()
    };
    // The pass that completed the plan: no check, the Drifted condition says no drift.
    let before = status_with(S::InProgress);
    let mut status = status_with(S::Complete);
    let finish = finish_pass(
        &active,
        &before,
        Some(S::InProgress),
        Some(S::InProgress),
        false,
        None,
        &mut status,
    );
    assert_eq!(finish.drift, DriftWork::None);
    assert_eq!(finish.write_plan_execution, Some(Some(S::Complete)));
    assert_eq!(finish.end, PassEnd::UntilFullCheck);
    assert!(
        status
            .conditions
            .iter()
            .any(|c| c.type_ == super::super::drift::DRIFT_CONDITION && c.status == "False")
    );
    // The next pass: complete before and after, checked.
    let before = status.clone();
    let finish = finish_pass(
        &active,
        &before,
        Some(S::Complete),
        Some(S::Complete),
        false,
        None,
        &mut status,
    );
    assert_eq!(finish.drift, DriftWork::Check);
    assert_eq!(finish.write_plan_execution, None, "already says COMPLETE");
    assert_eq!(before, status, "nothing changed: no status write");
}

#[test]
fn a_pass_ends_by_the_plans_status() {
    let active = Snapshot {
        plan: "deploy".into(),
        plan_uid: "u1".into(),
        ..Default::default()
    };
    let end = |now: S, has_error: bool| {
        let mut status = status_with(now);
        let before = status.clone();
        finish_pass(
            &active,
            &before,
            Some(S::InProgress),
            Some(now),
            has_error,
            None,
            &mut status,
        )
        .end
    };
    assert_eq!(end(S::InProgress, false), PassEnd::Poll);
    assert_eq!(end(S::InProgress, true), PassEnd::Backoff);
    assert_eq!(end(S::FatalError, false), PassEnd::AwaitChange);
    assert_eq!(end(S::Cancelled, false), PassEnd::AwaitChange);
}

#[test]
fn after_execute_prunes_a_completed_plan_unless_turned_off_and_holds_the_finalizer() {
    let namespace = AppliedObject {
        api_version: "v1".into(),
        kind: "Namespace".into(),
        namespace: String::new(),
        name: "extra".into(),
    };
    let inst = instance(json!({}));
    let after = after_execute(&inst, Some(S::Complete), std::slice::from_ref(&namespace));
    assert_eq!(
        after,
        AfterExecute {
            prune: true,
            add_finalizer: true
        }
    );
    let off = instance(json!({"metadata": {
        "annotations": {super::super::prune::PRUNE_ANNOTATION: "false"},
        "finalizers": [CLEANUP_FINALIZER]
    }}));
    assert_eq!(
        after_execute(&off, Some(S::Complete), &[namespace]),
        AfterExecute::default()
    );
    assert!(!after_execute(&inst, Some(S::InProgress), &[]).prune);
}
