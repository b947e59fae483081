use super::*;

const MIN: i64 = 60_000;

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn stage(name: &str, clusters: &[&str], strategy: Strategy, gates: Vec<Gate>) -> Stage {
    Stage {
        name: name.into(),
        clusters: names(clusters),
        strategy,
        gates,
    }
}

fn spec(stages: Vec<Stage>) -> RolloutSpec {
    RolloutSpec {
        stages,
        max_failures: 0,
        progress_deadline: None,
        on_failure: OnFailure::Halt,
        paused: false,
    }
}

fn observed(pairs: &[(&str, Progress)]) -> BTreeMap<String, Progress> {
    pairs
        .iter()
        .map(|(c, p)| (c.to_string(), p.clone()))
        .collect()
}

fn run(
    spec: &RolloutSpec,
    observed: &BTreeMap<String, Progress>,
    memory: Option<&Memory>,
    now: i64,
) -> Decision {
    decide(&Input {
        instance: "ns/x",
        spec,
        spec_id: "v1",
        observed,
        memory,
        paused: false,
        blocked: &BTreeMap::new(),
        external: &BTreeMap::new(),
        revision: "r1",
        now,
    })
}

use Progress::{Complete, Failed, InProgress, NotApplied};

#[test]
fn legacy_forms_keep_their_waves() {
    let targets = names(&["a", "b", "c", "d", "e"]);
    let s = RolloutSpec::legacy(
        Strategy::MaxUnavailable(Count::Percent(40)),
        &targets,
        &names(&["c"]),
    );
    assert_eq!(
        s.waves(),
        vec![names(&["c"]), names(&["a", "b"]), names(&["d", "e"])]
    );
    assert_eq!(
        super::super::rollout::waves(
            Strategy::MaxUnavailable(Count::Percent(40)),
            &targets,
            &names(&["c"])
        ),
        s.waves()
    );
    let serial = RolloutSpec::legacy(Strategy::Serial, &targets, &[]);
    assert_eq!(serial.waves().len(), 5);
}

#[test]
fn stages_run_in_order_in_waves() {
    let s = spec(vec![
        stage("canary", &["a"], Strategy::Parallel, vec![]),
        stage(
            "prod",
            &["b", "c", "d"],
            Strategy::MaxUnavailable(Count::Fixed(2)),
            vec![],
        ),
    ]);
    let d = run(&s, &observed(&[]), None, 0);
    assert_eq!(d.apply_now, names(&["a"]));
    assert_eq!(d.phase, Phase::Progressing { wave: 0, waves: 3 });
    let d = run(&s, &observed(&[("a", Complete)]), Some(&d.memory), MIN);
    assert_eq!(d.apply_now, names(&["b", "c"]));
    let d = run(
        &s,
        &observed(&[("a", Complete), ("b", Complete), ("c", InProgress)]),
        Some(&d.memory),
        2 * MIN,
    );
    assert!(d.apply_now.is_empty(), "{d:?}");
    let all = observed(&[
        ("a", Complete),
        ("b", Complete),
        ("c", Complete),
        ("d", Complete),
    ]);
    assert_eq!(
        run(&s, &all, Some(&d.memory), 3 * MIN).phase,
        Phase::Complete
    );
}

#[test]
fn bake_holds_the_next_stage_for_its_duration_from_when_the_stage_completed() {
    let s = spec(vec![
        stage(
            "canary",
            &["a"],
            Strategy::Parallel,
            vec![Gate::Bake(Duration::from_secs(600))],
        ),
        stage("prod", &["b"], Strategy::Parallel, vec![]),
    ]);
    let done = observed(&[("a", Complete)]);
    let d = run(&s, &done, None, 0);
    assert!(d.apply_now.is_empty());
    assert_eq!(
        d.phase,
        Phase::Waiting {
            stage: "canary".into(),
            gate: "bake".into(),
            reason: "baking: 10m of 10m left".into(),
        }
    );
    let d = run(&s, &done, Some(&d.memory), 9 * MIN);
    assert!(d.apply_now.is_empty());
    // A failure-free but no longer complete canary restarts the bake.
    let d2 = run(
        &s,
        &observed(&[("a", InProgress)]),
        Some(&d.memory),
        9 * MIN + 1,
    );
    assert!(!d2.memory.complete_since.contains_key("canary"));
    let d = run(&s, &done, Some(&d.memory), 10 * MIN);
    assert_eq!(d.apply_now, names(&["b"]));
}

#[test]
fn approval_holds_its_stage_until_given_and_never_again_once_started() {
    let s = spec(vec![
        stage("canary", &["a"], Strategy::Parallel, vec![]),
        stage("prod", &["b"], Strategy::Parallel, vec![Gate::Approval]),
    ]);
    let d = run(&s, &observed(&[("a", Complete)]), None, 0);
    assert!(d.apply_now.is_empty());
    assert!(
        matches!(&d.phase, Phase::Waiting { stage, gate, .. } if stage == "prod" && gate == "approval")
    );
    let mut m = d.memory.clone();
    m.approvals.insert(
        "prod".into(),
        Approval {
            by: "alice".into(),
            at: 1,
        },
    );
    let d = run(&s, &observed(&[("a", Complete)]), Some(&m), 1);
    assert_eq!(d.apply_now, names(&["b"]));
    // Started without the approval in memory (a restart without the state): not held.
    let d = run(
        &s,
        &observed(&[("a", Complete), ("b", InProgress)]),
        None,
        2,
    );
    assert!(matches!(d.phase, Phase::Progressing { .. }), "{d:?}");
}

#[test]
fn external_gates_hold_with_their_reason_in_order() {
    let s = spec(vec![
        stage(
            "canary",
            &["a"],
            Strategy::Parallel,
            vec![
                Gate::Prometheus {
                    query: "up".into(),
                    timeout: None,
                },
                Gate::Plan("smoke".into()),
            ],
        ),
        stage("prod", &["b"], Strategy::Parallel, vec![]),
    ]);
    let done = observed(&[("a", Complete)]);
    let mut external = BTreeMap::new();
    external.insert(
        ("canary".to_string(), 0),
        External::Closed("query returned 0".into()),
    );
    external.insert(("canary".to_string(), 1), External::Open);
    let d = decide(&Input {
        instance: "ns/x",
        spec: &s,
        spec_id: "v1",
        observed: &done,
        memory: None,
        paused: false,
        blocked: &BTreeMap::new(),
        external: &external,
        revision: "r1",
        now: 0,
    });
    assert_eq!(
        d.phase,
        Phase::Waiting {
            stage: "canary".into(),
            gate: "prometheus".into(),
            reason: "query returned 0".into()
        }
    );
    external.insert(("canary".to_string(), 0), External::Open);
    let d = decide(&Input {
        instance: "ns/x",
        spec: &s,
        spec_id: "v1",
        observed: &done,
        memory: None,
        paused: false,
        blocked: &BTreeMap::new(),
        external: &external,
        revision: "r1",
        now: 0,
    });
    assert_eq!(d.apply_now, names(&["b"]));
}

#[test]
fn failures_up_to_max_failures_are_tolerated_and_one_more_halts() {
    let mut s = spec(vec![stage(
        "all",
        &["a", "b", "c", "d"],
        Strategy::MaxUnavailable(Count::Fixed(2)),
        vec![],
    )]);
    s.max_failures = 1;
    let d = run(
        &s,
        &observed(&[
            ("a", Failed("plan deploy FATAL_ERROR".into())),
            ("b", Complete),
        ]),
        None,
        0,
    );
    assert_eq!(d.apply_now, names(&["c", "d"]));
    assert_eq!(d.failed.len(), 1);
    let d = run(
        &s,
        &observed(&[
            ("a", Failed("plan deploy FATAL_ERROR".into())),
            ("b", Complete),
            ("c", Failed("boom".into())),
            ("d", NotApplied),
        ]),
        Some(&d.memory),
        1,
    );
    assert!(d.apply_now.is_empty());
    match d.phase {
        Phase::Halted { cluster, reason } => {
            assert_eq!(cluster, "a");
            assert!(
                reason.contains("2 clusters failed, more than maxFailures 1"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn progress_deadline_counts_a_slow_cluster_failed_from_when_it_got_the_spec() {
    let mut s = spec(vec![
        stage("one", &["a"], Strategy::Parallel, vec![]),
        stage("two", &["b"], Strategy::Parallel, vec![]),
    ]);
    s.progress_deadline = Some(Duration::from_secs(1800));
    let d = run(&s, &observed(&[("a", InProgress)]), None, 0);
    assert_eq!(d.memory.applied_at.get("a"), Some(&0));
    let d = run(
        &s,
        &observed(&[("a", InProgress)]),
        Some(&d.memory),
        29 * MIN,
    );
    assert!(matches!(d.phase, Phase::Progressing { .. }));
    let d = run(
        &s,
        &observed(&[("a", InProgress)]),
        Some(&d.memory),
        30 * MIN,
    );
    match &d.phase {
        Phase::Halted { cluster, reason } => {
            assert_eq!(cluster, "a");
            assert!(reason.contains("progressDeadline 30m"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // maxFailures 1 lets the rollout go on past it.
    s.max_failures = 1;
    let d = run(
        &s,
        &observed(&[("a", InProgress)]),
        Some(&d.memory),
        30 * MIN,
    );
    assert_eq!(d.apply_now, names(&["b"]));
}

#[test]
fn paused_applies_nothing_and_resumes_where_it_was() {
    let mut s = spec(vec![stage("all", &["a", "b"], Strategy::Serial, vec![])]);
    s.paused = true;
    let d = run(&s, &observed(&[("a", Complete)]), None, 0);
    assert!(d.apply_now.is_empty());
    assert_eq!(d.phase, Phase::Paused);
    s.paused = false;
    let d = run(&s, &observed(&[("a", Complete)]), Some(&d.memory), 1);
    assert_eq!(d.apply_now, names(&["b"]));
}

#[test]
fn a_new_spec_starts_with_fresh_memory() {
    let s = spec(vec![stage(
        "prod",
        &["a"],
        Strategy::Parallel,
        vec![Gate::Approval],
    )]);
    let mut m = Memory {
        spec: "v0".into(),
        ..Memory::default()
    };
    m.approvals.insert(
        "prod".into(),
        Approval {
            by: "bob".into(),
            at: 0,
        },
    );
    // The approval was for another spec: v1 waits for its own.
    let d = run(&s, &observed(&[]), Some(&m), 5);
    assert!(d.apply_now.is_empty());
    assert_eq!(d.memory.spec, "v1");
    assert!(d.memory.approvals.is_empty());
}

#[test]
fn empty_stages_are_skipped() {
    let s = spec(vec![
        stage(
            "nothing",
            &[],
            Strategy::Parallel,
            vec![Gate::Approval, Gate::Bake(Duration::from_secs(60))],
        ),
        stage("prod", &["a"], Strategy::Parallel, vec![]),
    ]);
    assert_eq!(run(&s, &observed(&[]), None, 0).apply_now, names(&["a"]));
}

#[test]
fn blocked_clusters_wait_with_the_reason_and_the_others_go_on() {
    let s = spec(vec![stage("all", &["a", "b"], Strategy::Parallel, vec![])]);
    let mut blocked = BTreeMap::new();
    blocked.insert(
        "a".to_string(),
        (
            "dependsOn",
            "waiting for data/zk on a: deploy IN_PROGRESS 2/4".to_string(),
        ),
    );
    let input = |observed: &BTreeMap<String, Progress>,
                 blocked: &BTreeMap<String, (&'static str, String)>| {
        decide(&Input {
            instance: "ns/x",
            spec: &s,
            spec_id: "v1",
            observed,
            memory: None,
            paused: false,
            blocked,
            external: &BTreeMap::new(),
            revision: "r1",
            now: 0,
        })
    };
    let d = input(&observed(&[]), &blocked);
    assert_eq!(d.apply_now, names(&["b"]));
    assert!(matches!(d.phase, Phase::Progressing { .. }));
    blocked.insert(
        "b".to_string(),
        ("window", "outside its maintenance windows".to_string()),
    );
    let d = input(&observed(&[]), &blocked);
    assert!(d.apply_now.is_empty());
    assert_eq!(
        d.phase,
        Phase::Waiting {
            stage: "all".into(),
            gate: "dependsOn".into(),
            reason: "waiting for data/zk on a: deploy IN_PROGRESS 2/4".into()
        }
    );
    // A cluster already running the spec is not stopped by a dependency.
    let d = input(&observed(&[("a", InProgress)]), &blocked);
    assert!(matches!(d.phase, Phase::Progressing { .. }), "{d:?}");
}

#[test]
fn a_closed_prometheus_gate_halts_the_rollout_after_its_timeout() {
    let s = spec(vec![
        stage(
            "canary",
            &["a"],
            Strategy::Parallel,
            vec![Gate::Prometheus {
                query: "up".into(),
                timeout: Some(Duration::from_secs(1800)),
            }],
        ),
        stage("prod", &["b"], Strategy::Parallel, vec![]),
    ]);
    let done = observed(&[("a", Complete)]);
    let mut external = BTreeMap::new();
    external.insert(
        ("canary".to_string(), 0),
        External::Closed("query returned no samples".into()),
    );
    let at = |memory: Option<&Memory>, now: i64, external: &BTreeMap<(String, usize), External>| {
        decide(&Input {
            instance: "ns/x",
            spec: &s,
            spec_id: "v1",
            observed: &done,
            memory,
            paused: false,
            blocked: &BTreeMap::new(),
            external,
            revision: "r1",
            now,
        })
    };
    let d = at(None, 0, &external);
    assert!(matches!(d.phase, Phase::Waiting { .. }));
    let d = at(Some(&d.memory), 29 * MIN, &external);
    assert!(matches!(d.phase, Phase::Waiting { .. }));
    let halted = at(Some(&d.memory), 30 * MIN, &external);
    match &halted.phase {
        Phase::Halted { reason, .. } => assert_eq!(
            reason,
            "stage canary: prometheus gate still closed after its timeout 30m: query returned no samples"
        ),
        other => panic!("{other:?}"),
    }
    // Opened in time: the next stage goes, and the clock is forgotten.
    external.insert(("canary".to_string(), 0), External::Open);
    let d = at(Some(&d.memory), 29 * MIN, &external);
    assert_eq!(d.apply_now, names(&["b"]));
    assert!(d.memory.gate_since.is_empty());
}

// ---- plan gates and revert ----

fn with_memory(
    spec: &RolloutSpec,
    observed: &BTreeMap<String, Progress>,
    spec_id: &str,
    memory: Option<&Memory>,
    external: &BTreeMap<(String, usize), External>,
) -> Decision {
    decide(&Input {
        instance: "ns/x",
        spec,
        spec_id,
        observed,
        memory,
        paused: false,
        blocked: &BTreeMap::new(),
        external,
        revision: "r2",
        now: 0,
    })
}

#[test]
fn a_plan_gate_asks_for_its_plan_and_holds_the_next_stage_until_it_opens() {
    let s = spec(vec![
        stage(
            "canary",
            &["a"],
            Strategy::Parallel,
            vec![Gate::Plan("smoke".into())],
        ),
        stage("prod", &["b"], Strategy::Parallel, vec![]),
    ]);
    let o = observed(&[("a", Complete), ("b", NotApplied)]);
    let mut external = BTreeMap::new();
    external.insert(
        ("canary".to_string(), 0),
        External::Closed("plan smoke COMPLETE on 0 of 1 clusters; starting on a".into()),
    );
    let d = with_memory(&s, &o, "v1", None, &external);
    assert_eq!(d.run_plan, Some(("canary".into(), "smoke".into())));
    assert!(d.apply_now.is_empty(), "{d:?}");
    assert!(
        matches!(&d.phase, Phase::Waiting { stage, gate, reason } if stage == "canary" && gate == "plan" && reason.contains("starting on a")),
        "{:?}",
        d.phase
    );
    external.insert(("canary".to_string(), 0), External::Open);
    let d = with_memory(&s, &o, "v1", Some(&d.memory), &external);
    assert_eq!(d.run_plan, None);
    assert_eq!(d.apply_now, names(&["b"]));
}

#[test]
fn a_rollout_that_completes_remembers_its_spec_as_the_last_good_one_across_spec_changes() {
    let s = spec(vec![stage("all", &["a", "b"], Strategy::Parallel, vec![])]);
    let done = observed(&[("a", Complete), ("b", Complete)]);
    let d = with_memory(&s, &done, "v1", None, &BTreeMap::new());
    assert_eq!(d.phase, Phase::Complete);
    let good = d.memory.last_good.clone().expect("last good");
    assert_eq!((good.spec.as_str(), good.revision.as_str()), ("v1", "r2"));
    // A new spec starts a new memory, but keeps what to go back to.
    let fresh = observed(&[("a", NotApplied), ("b", NotApplied)]);
    let d = with_memory(&s, &fresh, "v2", Some(&d.memory), &BTreeMap::new());
    assert_eq!(d.memory.spec, "v2");
    assert_eq!(d.memory.last_good, Some(good));
}

#[test]
fn on_failure_revert_quarantines_the_failed_spec_and_applies_nothing_more() {
    let mut s = spec(vec![
        stage("canary", &["a"], Strategy::Parallel, vec![]),
        stage("prod", &["b"], Strategy::Parallel, vec![]),
    ]);
    s.on_failure = OnFailure::Revert;
    let mut m = Memory {
        spec: "v2".into(),
        last_good: Some(GoodSpec {
            spec: "v1".into(),
            revision: "r1abcdef".into(),
        }),
        ..Memory::default()
    };
    let o = observed(&[
        ("a", Failed("plan update FATAL_ERROR".into())),
        ("b", NotApplied),
    ]);
    let d = with_memory(&s, &o, "v2", Some(&m), &BTreeMap::new());
    assert!(d.reverted_now);
    assert!(d.apply_now.is_empty());
    let r = d.memory.reverted.clone().expect("reverted");
    assert_eq!(r.to.spec, "v1");
    assert!(
        matches!(&d.phase, Phase::Halted { reason, .. } if reason.contains("reverted to revision r1abcde") && reason.contains("onFailure") && reason.contains("plan update FATAL_ERROR")),
        "{:?}",
        d.phase
    );
    // Quarantined: even once the failure is gone (the cluster runs the good spec again),
    // nothing applies the failed spec, and no second revert starts.
    let healed = observed(&[("a", NotApplied), ("b", NotApplied)]);
    let d = with_memory(&s, &healed, "v2", Some(&d.memory), &BTreeMap::new());
    assert!(!d.reverted_now && d.apply_now.is_empty(), "{d:?}");
    assert!(matches!(d.phase, Phase::Halted { .. }));
    // A new spec (a commit) lifts the quarantine.
    let d = with_memory(&s, &healed, "v3", Some(&d.memory), &BTreeMap::new());
    assert_eq!(d.memory.reverted, None);
    assert_eq!(d.apply_now, names(&["a"]));
    // Without a last good spec: halted, and it says why it did not revert.
    m.last_good = None;
    let d = with_memory(&s, &o, "v2", Some(&m), &BTreeMap::new());
    assert!(!d.reverted_now && d.memory.reverted.is_none());
    assert!(
        matches!(&d.phase, Phase::Halted { reason, .. } if reason.contains("onFailure: revert: nothing to revert to")),
        "{:?}",
        d.phase
    );
}

#[test]
fn a_gate_timeout_with_on_failure_revert_reverts() {
    let mut s = spec(vec![
        stage(
            "canary",
            &["a"],
            Strategy::Parallel,
            vec![Gate::Prometheus {
                query: "up".into(),
                timeout: Some(std::time::Duration::from_secs(60)),
            }],
        ),
        stage("prod", &["b"], Strategy::Parallel, vec![]),
    ]);
    s.on_failure = OnFailure::Revert;
    let m = Memory {
        spec: "v2".into(),
        last_good: Some(GoodSpec {
            spec: "v1".into(),
            revision: "r1".into(),
        }),
        ..Memory::default()
    };
    let o = observed(&[("a", Complete), ("b", NotApplied)]);
    let mut external = BTreeMap::new();
    external.insert(
        ("canary".to_string(), 0),
        External::Closed("0 samples".into()),
    );
    let d = with_memory(&s, &o, "v2", Some(&m), &external);
    assert!(d.memory.reverted.is_none());
    let mut later = d.memory.clone();
    for v in later.gate_since.values_mut() {
        *v -= MIN;
    }
    let d = with_memory(&s, &o, "v2", Some(&later), &external);
    assert!(d.reverted_now, "{d:?}");
    assert!(d.apply_now.is_empty());
}

#[test]
fn a_revert_by_hand_is_refused_without_something_to_go_back_to() {
    let mut m = Memory {
        spec: "v1".into(),
        ..Memory::default()
    };
    let e = revert(&mut m, "alice", "by hand", 5).expect_err("no last good");
    assert!(e.contains("nothing to revert to"), "{e}");
    m.last_good = Some(GoodSpec {
        spec: "v1".into(),
        revision: "r1".into(),
    });
    let e = revert(&mut m, "alice", "by hand", 5).expect_err("same spec");
    assert!(e.contains("last one that completed everywhere"), "{e}");
    m.spec = "v2".into();
    revert(&mut m, "alice", "by hand", 5).expect("reverts");
    assert_eq!(m.reverted.as_ref().map(|r| r.by.as_str()), Some("alice"));
    let e = revert(&mut m, "alice", "by hand", 6).expect_err("twice");
    assert!(e.contains("reverted already"), "{e}");
}
