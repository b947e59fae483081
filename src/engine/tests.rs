use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::api::{ExecutionStatus as S, InstanceSpec, OperatorVersionSpec, Plan, Task};

use super::status::new_plan_status;
use super::trigger::{Decision, Reason, Snapshot, decide, on_deletion};
use super::workflow::{StepRef, TaskOutcome, TaskRunner, execute};

fn ov(yaml: &str) -> OperatorVersionSpec {
    serde_saphyr::from_str(yaml).expect("test OperatorVersion spec")
}

/// Runs tasks from a script: each (step, task) pops its next outcome (the last one repeats);
/// unscripted tasks are done at once. Every call is recorded.
#[derive(Default)]
struct Script {
    outcomes: HashMap<(String, String), VecDeque<TaskOutcome>>,
    calls: Vec<String>,
}

impl Script {
    fn on(mut self, step: &str, task: &str, outcomes: Vec<TaskOutcome>) -> Self {
        self.outcomes
            .insert((step.into(), task.into()), outcomes.into());
        self
    }
}

impl TaskRunner for Script {
    async fn run(&mut self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        self.calls
            .push(format!("{}/{}/{}", at.phase, at.step, task.name));
        match self
            .outcomes
            .get_mut(&(at.step.to_string(), task.name.clone()))
        {
            Some(q) if q.len() > 1 => q.pop_front().expect("non-empty"),
            Some(q) => q.front().cloned().unwrap_or(TaskOutcome::Done),
            None => TaskOutcome::Done,
        }
    }
}

const TWO_PHASES: &str = r#"
tasks:
  - {name: a, kind: Dummy, spec: {done: true}}
  - {name: b, kind: Dummy, spec: {done: true}}
  - {name: c, kind: Dummy, spec: {done: true}}
plans:
  deploy:
    strategy: serial
    phases:
      - name: one
        strategy: serial
        steps:
          - {name: s1, tasks: [a]}
          - {name: s2, tasks: [b, c]}
      - name: two
        strategy: parallel
        steps:
          - {name: p1, tasks: [a]}
          - {name: p2, tasks: [b]}
"#;

fn plan_of(spec: &OperatorVersionSpec, name: &str) -> Plan {
    spec.plans.get(name).cloned().expect("plan")
}

fn step_states(status: &crate::api::PlanStatus) -> Vec<(String, S)> {
    status
        .phases
        .iter()
        .flat_map(|p| {
            p.steps
                .iter()
                .map(|s| (s.name.clone(), s.status.expect("status")))
        })
        .collect()
}

#[tokio::test]
async fn serial_plan_runs_to_completion_in_one_pass_when_everything_is_ready() {
    let spec = ov(TWO_PHASES);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u1");
    let mut runner = Script::default();
    let report = execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert!(report.finished);
    assert_eq!(status.status, Some(S::Complete));
    assert_eq!(
        runner.calls,
        ["one/s1/a", "one/s2/b", "one/s2/c", "two/p1/a", "two/p2/b"]
    );
    assert_eq!(report.completed_steps.len(), 4);
}

#[tokio::test]
async fn serial_step_waits_for_the_previous_one() {
    let spec = ov(TWO_PHASES);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u1");
    let mut runner = Script::default().on(
        "s1",
        "a",
        vec![
            TaskOutcome::InProgress("waiting for Deployment x".into()),
            TaskOutcome::Done,
        ],
    );
    let report = execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert!(!report.finished);
    assert_eq!(status.status, Some(S::InProgress));
    assert_eq!(status.phases[0].status, Some(S::InProgress));
    assert_eq!(
        status.phases[1].status,
        Some(S::Pending),
        "serial plan: phase two waits"
    );
    assert_eq!(status.phases[0].steps[0].status, Some(S::InProgress));
    assert!(
        status.phases[0].steps[0]
            .message
            .contains("waiting for Deployment x")
    );
    assert_eq!(status.phases[0].steps[1].status, Some(S::Pending));
    assert_eq!(runner.calls, ["one/s1/a"]);

    runner.calls.clear();
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert_eq!(status.status, Some(S::Complete));
    assert_eq!(runner.calls[0], "one/s1/a");
}

#[tokio::test]
async fn finished_steps_never_run_again() {
    let spec = ov(TWO_PHASES);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u1");
    let mut runner = Script::default().on(
        "p2",
        "b",
        vec![
            TaskOutcome::InProgress("not ready".into()),
            TaskOutcome::Done,
        ],
    );
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert_eq!(status.phases[0].status, Some(S::Complete));
    assert_eq!(status.phases[1].steps[0].status, Some(S::Complete));
    runner.calls.clear();
    // A restarted manager reads this status back and runs a pass: only p2 runs.
    let reread: crate::api::PlanStatus =
        serde_json::from_value(serde_json::to_value(&status).expect("ser")).expect("de");
    let mut status = reread;
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert_eq!(runner.calls, ["two/p2/b"]);
    assert_eq!(status.status, Some(S::Complete));
}

#[tokio::test]
async fn parallel_phase_runs_all_steps_each_pass() {
    let spec = ov(TWO_PHASES);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u1");
    // Finish phase one first.
    let mut runner = Script::default()
        .on("p1", "a", vec![TaskOutcome::InProgress("x".into())])
        .on("p2", "b", vec![TaskOutcome::InProgress("y".into())]);
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert_eq!(
        &runner.calls[3..],
        ["two/p1/a", "two/p2/b"],
        "both parallel steps started in the same pass"
    );
    assert_eq!(status.phases[1].steps[0].status, Some(S::InProgress));
    assert_eq!(status.phases[1].steps[1].status, Some(S::InProgress));
}

#[tokio::test]
async fn parallel_plan_starts_all_phases() {
    let spec = ov(r#"
tasks: [{name: a, kind: Dummy}]
plans:
  deploy:
    strategy: parallel
    phases:
      - {name: x, steps: [{name: x1, tasks: [a]}]}
      - {name: y, steps: [{name: y1, tasks: [a]}]}
"#);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u");
    let mut runner = Script::default().on("x1", "a", vec![TaskOutcome::InProgress("w".into())]);
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert_eq!(runner.calls, ["x/x1/a", "y/y1/a"]);
    assert_eq!(status.phases[0].status, Some(S::InProgress));
    assert_eq!(status.phases[1].status, Some(S::Complete));
    assert_eq!(status.status, Some(S::InProgress));
}

#[tokio::test]
async fn transient_error_marks_step_error_and_plan_stays_in_progress() {
    let spec = ov(TWO_PHASES);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u1");
    let mut runner = Script::default().on(
        "s1",
        "a",
        vec![
            TaskOutcome::Error("cluster unreachable".into()),
            TaskOutcome::Done,
        ],
    );
    let report = execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert!(report.has_error && !report.finished);
    assert_eq!(status.phases[0].steps[0].status, Some(S::Error));
    assert!(
        status.phases[0].steps[0]
            .message
            .contains("cluster unreachable")
    );
    assert_eq!(status.phases[0].status, Some(S::InProgress));
    assert_eq!(status.status, Some(S::InProgress));
    // Retried on the next pass.
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert_eq!(status.status, Some(S::Complete));
}

#[tokio::test]
async fn fatal_error_propagates_and_is_terminal() {
    let spec = ov(TWO_PHASES);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u1");
    let mut runner = Script::default().on(
        "s2",
        "b",
        vec![TaskOutcome::Fatal(
            "template deployment.yaml:3: map has no entry for key \"X\"".into(),
        )],
    );
    let report = execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert!(report.finished);
    assert_eq!(status.status, Some(S::FatalError));
    assert_eq!(status.phases[0].status, Some(S::FatalError));
    assert_eq!(status.phases[0].steps[1].status, Some(S::FatalError));
    assert_eq!(status.phases[1].status, Some(S::Pending));
    for msg in [
        &status.message,
        &status.phases[0].message,
        &status.phases[0].steps[1].message,
    ] {
        assert!(
            msg.contains("deployment.yaml:3") && msg.contains("step s2"),
            "{msg}"
        );
    }
    // Task c of the same step is not run after b's fatal error; nothing runs afterwards.
    assert!(!runner.calls.contains(&"one/s2/c".to_string()));
    runner.calls.clear();
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert!(runner.calls.is_empty());
}

#[tokio::test]
async fn missing_task_is_fatal() {
    let spec = ov(
        "plans:\n  deploy:\n    phases:\n      - {name: p, steps: [{name: s, tasks: [nope]}]}\n",
    );
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u");
    execute(&plan, &spec.tasks, &mut status, &mut Script::default()).await;
    assert_eq!(status.status, Some(S::FatalError));
    assert!(
        status.message.contains("\"nope\" is not defined"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn empty_plan_completes() {
    let spec = ov("plans:\n  deploy: {}\n  update: {}\n");
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u");
    let report = execute(&plan, &spec.tasks, &mut status, &mut Script::default()).await;
    assert!(report.finished);
    assert_eq!(status.status, Some(S::Complete));
}

#[test]
fn new_uid_resets_the_tree() {
    let spec = ov(TWO_PHASES);
    let plan = plan_of(&spec, "deploy");
    let fresh = new_plan_status("deploy", &plan, "u2");
    assert_eq!(fresh.uid, "u2");
    assert!(step_states(&fresh).iter().all(|(_, s)| *s == S::Pending));
}

// ---- triggers ----

const TRIGGERS: &str = r#"
parameters:
  - {name: REPLICAS, trigger: scale}
  - {name: IMAGE}
  - {name: CLIENT_IP, immutable: true}
  - {name: OTHER, trigger: other}
plans:
  deploy: {}
  update: {}
  scale: {}
  other: {}
"#;

fn instance(version: &str, params: &[(&str, &str)]) -> InstanceSpec {
    let mut spec = InstanceSpec::default();
    spec.operator_version.name = Some(version.into());
    spec.parameters = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    spec
}

fn snap(version: &str, params: &[(&str, &str)]) -> Snapshot {
    Snapshot::of(&instance(version, params), "deploy", "u0")
}

#[test]
fn new_instance_runs_deploy() {
    let d = decide(&ov(TRIGGERS), &instance("v1", &[]), None);
    assert_eq!(
        d,
        Decision::Run {
            plan: "deploy".into(),
            reason: Reason::NewInstance
        }
    );
}

#[test]
fn unchanged_instance_runs_nothing() {
    let spec = instance("v1", &[("IMAGE", "a")]);
    assert_eq!(
        decide(&ov(TRIGGERS), &spec, Some(&snap("v1", &[("IMAGE", "a")]))),
        Decision::Nothing
    );
}

#[test]
fn parameter_with_trigger_runs_its_plan_else_update_else_deploy() {
    let o = ov(TRIGGERS);
    let d = decide(
        &o,
        &instance("v1", &[("REPLICAS", "3")]),
        Some(&snap("v1", &[])),
    );
    assert_eq!(
        d,
        Decision::Run {
            plan: "scale".into(),
            reason: Reason::ParametersChanged(vec!["REPLICAS".into()])
        }
    );
    let d = decide(
        &o,
        &instance("v1", &[("IMAGE", "b")]),
        Some(&snap("v1", &[("IMAGE", "a")])),
    );
    assert!(
        matches!(d, Decision::Run { ref plan, .. } if plan == "update"),
        "{d:?}"
    );
    let no_update = ov("parameters: [{name: IMAGE}]\nplans:\n  deploy: {}\n");
    let d = decide(
        &no_update,
        &instance("v1", &[("IMAGE", "b")]),
        Some(&snap("v1", &[])),
    );
    assert!(
        matches!(d, Decision::Run { ref plan, .. } if plan == "deploy"),
        "{d:?}"
    );
}

#[test]
fn removed_parameter_counts_as_changed() {
    let d = decide(
        &ov(TRIGGERS),
        &instance("v1", &[]),
        Some(&snap("v1", &[("IMAGE", "a")])),
    );
    assert!(
        matches!(d, Decision::Run { ref plan, .. } if plan == "update"),
        "{d:?}"
    );
}

#[test]
fn parameters_triggering_two_plans_are_rejected() {
    let d = decide(
        &ov(TRIGGERS),
        &instance("v1", &[("REPLICAS", "3"), ("OTHER", "x")]),
        Some(&snap("v1", &[])),
    );
    let Decision::Reject { message } = d else {
        panic!("expected reject, got {d:?}")
    };
    assert!(message.contains("REPLICAS → plan scale"), "{message}");
    assert!(message.contains("OTHER → plan other"), "{message}");
}

#[test]
fn immutable_parameter_change_is_rejected() {
    let d = decide(
        &ov(TRIGGERS),
        &instance("v1", &[("CLIENT_IP", "10.0.0.2")]),
        Some(&snap("v1", &[("CLIENT_IP", "10.0.0.1")])),
    );
    let Decision::Reject { message } = d else {
        panic!("expected reject, got {d:?}")
    };
    assert!(
        message.contains("immutable") && message.contains("CLIENT_IP"),
        "{message}"
    );
}

#[test]
fn undeclared_parameter_is_rejected() {
    let d = decide(
        &ov(TRIGGERS),
        &instance("v1", &[("NOPE", "1")]),
        Some(&snap("v1", &[])),
    );
    let Decision::Reject { message } = d else {
        panic!("expected reject, got {d:?}")
    };
    assert!(message.contains("NOPE"), "{message}");
}

#[test]
fn version_change_runs_upgrade_else_update_else_deploy() {
    let with_upgrade = ov("plans:\n  deploy: {}\n  update: {}\n  upgrade: {}\n");
    let d = decide(&with_upgrade, &instance("v2", &[]), Some(&snap("v1", &[])));
    assert_eq!(
        d,
        Decision::Run {
            plan: "upgrade".into(),
            reason: Reason::VersionChanged {
                from: "v1".into(),
                to: "v2".into()
            }
        }
    );
    let d = decide(
        &ov("plans:\n  deploy: {}\n  update: {}\n"),
        &instance("v2", &[]),
        Some(&snap("v1", &[])),
    );
    assert!(
        matches!(d, Decision::Run { ref plan, .. } if plan == "update"),
        "{d:?}"
    );
    let d = decide(
        &ov("plans:\n  deploy: {}\n"),
        &instance("v2", &[]),
        Some(&snap("v1", &[])),
    );
    assert!(
        matches!(d, Decision::Run { ref plan, .. } if plan == "deploy"),
        "{d:?}"
    );
}

#[test]
fn manual_trigger_runs_the_named_plan_once() {
    let o = ov(TRIGGERS);
    let mut spec = instance("v1", &[]);
    spec.plan_execution.plan_name = "other".into();
    let d = decide(&o, &spec, Some(&snap("v1", &[])));
    assert_eq!(
        d,
        Decision::Run {
            plan: "other".into(),
            reason: Reason::Manual
        }
    );
    // Once the manager records the uid it assigned, the trigger is consumed.
    spec.plan_execution.uid = "u9".into();
    assert_eq!(decide(&o, &spec, Some(&snap("v1", &[]))), Decision::Nothing);
    spec.plan_execution = Default::default();
    spec.plan_execution.plan_name = "missing".into();
    let Decision::Reject { message } = decide(&o, &spec, Some(&snap("v1", &[]))) else {
        panic!("expected reject")
    };
    assert!(message.contains("\"missing\""), "{message}");
}

#[test]
fn deletion_runs_cleanup_only_when_defined() {
    assert_eq!(
        on_deletion(&ov("plans:\n  deploy: {}\n  cleanup: {}\n")).as_deref(),
        Some("cleanup")
    );
    assert_eq!(on_deletion(&ov(TRIGGERS)), None);
}

#[test]
fn backoff_doubles_and_caps() {
    use super::backoff::retry_delay;
    use std::time::Duration;
    assert_eq!(retry_delay(1), Duration::from_secs(1));
    assert_eq!(retry_delay(2), Duration::from_secs(2));
    assert_eq!(retry_delay(4), Duration::from_secs(8));
    assert_eq!(retry_delay(40), Duration::from_secs(300));
}

// ---- timeouts, cancel, retry ----

fn at(secs: i64) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + secs).expect("timestamp")
}

const TIMED: &str = r#"
tasks: [{name: a, kind: Dummy}, {name: b, kind: Dummy}]
plans:
  deploy:
    timeout: 1h
    phases:
      - name: p
        steps:
          - {name: s1, tasks: [a], timeout: 10m}
          - {name: s2, tasks: [b]}
"#;

#[tokio::test]
async fn step_timeout_ends_fatal_naming_what_is_not_healthy() {
    use super::workflow::execute_at;
    let spec = ov(TIMED);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u");
    let mut runner = Script::default().on(
        "s1",
        "a",
        vec![TaskOutcome::InProgress(
            "Deployment web: 1/3 available".into(),
        )],
    );
    execute_at(&plan, &spec.tasks, &mut status, &mut runner, at(0)).await;
    execute_at(&plan, &spec.tasks, &mut status, &mut runner, at(599)).await;
    assert_eq!(status.status, Some(S::InProgress), "not yet timed out");
    execute_at(&plan, &spec.tasks, &mut status, &mut runner, at(601)).await;
    assert_eq!(status.status, Some(S::FatalError));
    let msg = &status.phases[0].steps[0].message;
    assert!(
        msg.contains("timed out after 10m") && msg.contains("Deployment web: 1/3 available"),
        "{msg}"
    );
}

#[tokio::test]
async fn plan_timeout_counts_from_the_plan_start() {
    use super::workflow::execute_at;
    let spec = ov(TIMED);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u");
    // s1 finishes quickly, s2 (no step timeout) never does.
    let mut runner =
        Script::default().on("s2", "b", vec![TaskOutcome::InProgress("waiting".into())]);
    execute_at(&plan, &spec.tasks, &mut status, &mut runner, at(0)).await;
    execute_at(&plan, &spec.tasks, &mut status, &mut runner, at(3599)).await;
    assert_eq!(status.status, Some(S::InProgress));
    execute_at(&plan, &spec.tasks, &mut status, &mut runner, at(3601)).await;
    assert_eq!(status.status, Some(S::FatalError));
    assert!(
        status.message.contains("plan deploy timed out after 1h"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("step s2: task b: waiting"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn invalid_timeout_is_fatal_at_run_time() {
    let spec = ov(
        "tasks: [{name: a, kind: Dummy}]\nplans:\n  deploy:\n    phases: [{name: p, steps: [{name: s, tasks: [a], timeout: soon}]}]\n",
    );
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u");
    let mut runner = Script::default().on("s", "a", vec![TaskOutcome::InProgress("w".into())]);
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert_eq!(status.status, Some(S::FatalError));
    assert!(
        status.message.contains("invalid timeout"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn cancel_stops_a_running_plan_and_retry_resumes_it() {
    use super::status::{cancel, retry};
    let spec = ov(TWO_PHASES);
    let plan = plan_of(&spec, "deploy");
    let mut status = new_plan_status("deploy", &plan, "u");
    let mut runner = Script::default().on("s2", "b", vec![TaskOutcome::InProgress("w".into())]);
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    cancel(&mut status).expect("cancel a running plan");
    assert_eq!(status.status, Some(S::Cancelled));
    assert_eq!(
        status.phases[0].steps[0].status,
        Some(S::Complete),
        "done stays done"
    );
    assert_eq!(status.phases[0].steps[1].status, Some(S::Cancelled));
    runner.calls.clear();
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert!(runner.calls.is_empty(), "a cancelled plan does not run");
    assert!(
        cancel(&mut status)
            .expect_err("twice")
            .contains("not running")
    );

    retry(&mut status).expect("retry a cancelled plan");
    let mut runner = Script::default();
    execute(&plan, &spec.tasks, &mut status, &mut runner).await;
    assert_eq!(status.status, Some(S::Complete));
    assert_eq!(
        runner.calls[0], "one/s2/b",
        "resumed from the first unfinished step"
    );
    assert!(
        retry(&mut status)
            .expect_err("complete")
            .contains("nothing to retry")
    );
}
