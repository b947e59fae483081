//! Issue 21, staged fleet rollouts on simulated clusters, end to end: the real daemon, a real
//! Git repository, the HTTP API and the `kudo rollout` CLI. Time is a manual clock the test
//! moves, so a 10-minute bake takes no wall-clock minutes.

#[path = "support/gitfleet.rs"]
mod gitfleet;

use std::time::Duration;

use gitfleet::*;
use kudo::gitops::rollout::State;
use kudo::gitops::serve::{Daemon, serve_http};
use kudo::util::clock::Clock;

const STAGES: &str = "    rollout:
      stages:
        - name: canary
          clusters: [c1]
          gates:
            - bake: 10m
        - name: prod
          clusters: [c2]
          gates:
            - approval: {}
";

fn rollout(daemon: &Daemon, key: &str) -> Option<State> {
    let (ns, name) = key.split_once('/').expect("key");
    daemon
        .shared
        .status()
        .instances
        .into_iter()
        .find(|i| i.namespace == ns && i.name == name)
        .map(|i| i.rollout)
}

async fn wait_state(daemon: &Daemon, key: &str, what: &str, ok: impl Fn(&State) -> bool) {
    wait_until(what, || async {
        match rollout(daemon, key) {
            Some(s) if ok(&s) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// The Instance's parameter `ROLE` on a cluster (which spec it has), `None` when absent.
async fn role_on(fleet: &Fleet, cluster: &str) -> Option<String> {
    get(&fleet.cluster(cluster), &instance_ref("apps", "db"))
        .await
        .map(|v| {
            v.pointer("/spec/parameters/ROLE")
                .and_then(|r| r.as_str())
                .unwrap_or("")
                .to_string()
        })
}

/// Runs the `kudo` binary; (exit success, stdout + stderr).
async fn kudo(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kudo"))
            .args(&args)
            .env_remove("KUDO_TOKEN_FILE")
            .output()
            .expect("run kudo");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .expect("join")
}

fn rollout_cmd(server: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec!["rollout".to_string()];
    v.extend(args.iter().map(|a| a.to_string()));
    v.push("--server".into());
    v.push(server.to_string());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stages_bake_then_wait_for_approval_and_pauses_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_store(&repo);
    repo.write(
        "instances/db.yaml",
        &instance_doc("db", "apps", &[("ROLE", "")], STAGES),
    );
    repo.commit("staged");
    let fleet = Fleet::new(&["c1", "c2", "c3"]);
    let clock = Clock::manual(1_000_000);
    let mut options = fleet.options();
    options.clock = clock.clone();
    let config = || fleet.config(dir.path(), "", &[("a", repo.url(), "")]);
    let daemon = Daemon::start(config(), options.clone())
        .await
        .expect("daemon");
    let (addr, _http) = serve_http(
        daemon.shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        std::future::pending::<()>(),
    )
    .await
    .expect("http");
    let server = format!("http://{addr}");
    let key = "apps/db";

    // Canary first; the bake holds prod for 10 minutes of the clock, which stands still.
    wait_complete(&fleet.cluster("c1"), "apps", "db").await;
    wait_state(
        &daemon,
        key,
        "canary baking",
        |s| matches!(s, State::Waiting { stage, gate, .. } if stage == "canary" && gate == "bake"),
    )
    .await;
    wait_passes(&daemon.shared, 5).await;
    assert_eq!(
        role_on(&fleet, "c2").await,
        None,
        "prod reached during the bake"
    );
    clock.advance(Duration::from_secs(600));

    // Then prod waits for a person.
    wait_state(&daemon, key, "prod waiting for approval", |s| {
        matches!(s, State::Waiting { stage, gate, .. } if stage == "prod" && gate == "approval")
    })
    .await;
    let (ok, out) = kudo(rollout_cmd(&server, &["status", key])).await;
    assert!(
        ok && out.contains("waiting: stage prod gate approval")
            && out.contains("stage canary [c1]: done\n    gate bake 10m: open")
            && out.contains(
                "stage prod [c2]: active\n    gate approval: waiting (waiting for approval"
            ),
        "{out}"
    );
    // Approving a stage that is not waiting: 409 with the reason; an unknown instance: 404.
    let (ok, out) = kudo(rollout_cmd(&server, &["approve", key, "--stage", "canary"])).await;
    assert!(
        !ok && out.contains("409")
            && out.contains("stage \"canary\" of apps/db is not waiting for approval"),
        "{out}"
    );
    let (ok, out) = kudo(rollout_cmd(
        &server,
        &["approve", "apps/nope", "--stage", "prod"],
    ))
    .await;
    assert!(
        !ok && out.contains("404") && out.contains("no instance apps/nope"),
        "{out}"
    );
    let (ok, out) = kudo(rollout_cmd(
        &server,
        &["approve", "nope", "--stage", "prod"],
    ))
    .await;
    assert!(!ok && out.contains("must be NAMESPACE/NAME"), "{out}");
    wait_passes(&daemon.shared, 3).await;
    assert_eq!(
        role_on(&fleet, "c2").await,
        None,
        "prod reached before approval"
    );
    let (ok, out) = kudo(rollout_cmd(&server, &["approve", key, "--stage", "prod"])).await;
    assert!(ok, "{out}");
    for c in ["c2", "c3"] {
        wait_complete(&fleet.cluster(c), "apps", "db").await;
    }
    wait_state(&daemon, key, "complete", |s| *s == State::Complete).await;
    let saved = std::fs::read_to_string(dir.path().join("cache/rollout-state.json"))
        .expect("rollout state file");
    assert!(saved.contains("\"by\": \"anonymous\""), "{saved}");

    // Paused through the API: a new spec reaches no cluster, and a restart keeps the pause.
    let (ok, out) = kudo(rollout_cmd(&server, &["pause", key])).await;
    assert!(ok, "{out}");
    repo.write(
        "instances/db.yaml",
        &instance_doc("db", "apps", &[("ROLE", "reader")], STAGES),
    );
    repo.commit("new role");
    daemon.shared.sync_now(None);
    wait_state(&daemon, key, "paused", |s| *s == State::Paused).await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    let daemon = Daemon::start(config(), options.clone())
        .await
        .expect("daemon");
    wait_state(&daemon, key, "still paused after a restart", |s| {
        *s == State::Paused
    })
    .await;
    wait_passes(&daemon.shared, 5).await;
    assert_eq!(
        role_on(&fleet, "c1").await.as_deref(),
        Some(""),
        "a paused rollout applied"
    );
    let (addr, _http2) = serve_http(
        daemon.shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        std::future::pending::<()>(),
    )
    .await
    .expect("http");
    let server = format!("http://{addr}");
    let (ok, out) = kudo(rollout_cmd(&server, &["resume", key])).await;
    assert!(ok, "{out}");
    // The new spec starts over: canary, bake, approval (an approval is for one spec).
    wait_until("c1 gets the new spec", || async {
        match role_on(&fleet, "c1").await.as_deref() {
            Some("reader") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_state(
        &daemon,
        key,
        "the new spec bakes on the canary",
        |s| matches!(s, State::Waiting { stage, gate, .. } if stage == "canary" && gate == "bake"),
    )
    .await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_rollout_state_file_stops_the_start_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_store(&repo);
    repo.commit("empty");
    let fleet = Fleet::new(&["c1"]);
    std::fs::create_dir_all(dir.path().join("cache")).expect("mkdir");
    let file = dir.path().join("cache/rollout-state.json");
    std::fs::write(&file, "{\"version\": 1, \"pauses\": [").expect("write");
    let err = match Daemon::start(
        fleet.config(dir.path(), "", &[("a", repo.url(), "")]),
        fleet.options(),
    )
    .await
    {
        Ok(d) => {
            let late = d.shutdown().await;
            assert!(
                late.is_empty(),
                "tasks that did not stop on shutdown: {late:?}"
            );
            panic!("started over a corrupt rollout state");
        }
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&file.display().to_string()) && err.contains("approvals and pauses"),
        "{err}"
    );
    // The file is left as it was, for a person to look at.
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "{\"version\": 1, \"pauses\": ["
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_waits_on_each_cluster_for_its_dependency_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_store(&repo);
    // zk reaches c2 only after approval; db depends on zk on the same cluster.
    repo.write(
        "instances/zk.yaml",
        &instance_doc(
            "zk",
            "apps",
            &[],
            "    rollout:\n      stages:\n        - name: first\n          clusters: [c1]\n        - name: second\n          clusters: [c2]\n          gates: [{approval: {}}]\n",
        ),
    );
    repo.write(
        "instances/db.yaml",
        &format!(
            "{}  dependsOn:\n    - instance: apps/zk\n",
            instance_doc("db", "apps", &[("ROLE", "")], "")
        ),
    );
    repo.commit("zk and db");
    let fleet = Fleet::new(&["c1", "c2"]);
    let daemon = Daemon::start(
        fleet.config(dir.path(), "", &[("a", repo.url(), "")]),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&fleet.cluster("c1"), "apps", "zk").await;
    wait_complete(&fleet.cluster("c1"), "apps", "db").await;
    wait_state(&daemon, "apps/db", "db waits for zk on c2", |s| {
        matches!(s, State::Waiting { gate, reason, .. }
            if gate == "dependsOn" && reason == "waiting for apps/zk on c2: NotApplied")
    })
    .await;
    assert_eq!(role_on(&fleet, "c2").await, None, "db reached c2 before zk");
    daemon
        .shared
        .approve_stage("apps/zk", "second", "test")
        .expect("approve");
    wait_complete(&fleet.cluster("c2"), "apps", "zk").await;
    wait_complete(&fleet.cluster("c2"), "apps", "db").await;
    wait_state(&daemon, "apps/db", "db complete", |s| *s == State::Complete).await;
    // A dependency no repository declares (a typo): the only repository has loaded, so the
    // revision is refused naming the file and line, and the last good one keeps running.
    repo.write(
        "instances/db.yaml",
        &format!(
            "{}  dependsOn:\n    - instance: apps/zookeper\n",
            instance_doc("db", "apps", &[("ROLE", "x")], "")
        ),
    );
    let bad = repo.commit("typo in dependsOn");
    daemon.shared.sync_now(None);
    wait_until("the typo refused", || async {
        let st = daemon.shared.status();
        let r = &st.repositories[0];
        if r.revision.as_deref() == Some(bad.as_str()) && !r.errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{:?} {:?}", r.revision, r.errors))
        }
    })
    .await;
    let errors = daemon.shared.status().repositories[0].errors.join("\n");
    assert!(
        errors.contains("instances/db.yaml:15: dependsOn apps/zookeper: no instance of that name"),
        "{errors}"
    );
    assert_eq!(role_on(&fleet, "c1").await.as_deref(), Some(""));
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paused_clusters_and_maintenance_windows_in_kudo_yaml_hold_new_specs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_store(&repo);
    repo.write(
        "instances/db.yaml",
        &instance_doc("db", "apps", &[("ROLE", "")], ""),
    );
    repo.commit("db");
    let fleet = Fleet::new(&["c1", "c2", "c3"]);
    let text = format!(
        "cacheDir: {cache}\nrepositories:\n  - {{name: a, url: '{url}', interval: 1h}}\nclusters:\n  - {{name: c1, sim: {{}}, labels: {{fleet: test}}}}\n  - name: c2\n    sim: {{}}\n    labels: {{fleet: test}}\n    windows: [{{schedule: '0 22 * * *', duration: 1h, timezone: Europe/Berlin}}]\n  - {{name: c3, sim: {{}}, labels: {{fleet: test}}, paused: true}}\n",
        cache = dir.path().join("cache").display(),
        url = repo.url()
    );
    let config =
        kudo::gitops::config::Config::parse("kudo.yaml", &text, dir.path()).expect("config");
    // Noon UTC on a Wednesday: Berlin's 22:00 window is 9 hours away.
    let noon = chrono::DateTime::parse_from_rfc3339("2026-12-02T12:00:00Z")
        .expect("time")
        .timestamp_millis();
    let clock = Clock::manual(noon);
    let mut options = fleet.options();
    options.clock = clock.clone();
    let daemon = Daemon::start(config, options).await.expect("daemon");
    wait_complete(&fleet.cluster("c1"), "apps", "db").await;
    wait_state(&daemon, "apps/db", "c2 outside its window", |s| {
        matches!(s, State::Waiting { gate, reason, .. } if gate == "window"
            && reason == "cluster c2 is outside its maintenance windows (next opens 2026-12-02T22:00:00+01:00)")
    })
    .await;
    assert_eq!(
        role_on(&fleet, "c2").await,
        None,
        "c2 got the spec outside its window"
    );
    // 21:30 UTC is 22:30 in Berlin: the window is open.
    clock.advance(Duration::from_secs(9 * 3600 + 1800));
    wait_complete(&fleet.cluster("c2"), "apps", "db").await;
    wait_state(&daemon, "apps/db", "c3 paused in kudo.yaml", |s| {
        matches!(s, State::Waiting { gate, reason, .. } if gate == "clusterPaused"
            && reason == "cluster c3 is paused in kudo.yaml")
    })
    .await;
    assert_eq!(
        role_on(&fleet, "c3").await,
        None,
        "a paused cluster got the spec"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// A framework with a smoke-test plan (a Job the workload simulator fails when
/// SMOKE_FAIL=true) and a rollback plan (the config step only).
fn write_checked(repo: &Repo) {
    let base = "frameworks/checked/1.0.0";
    repo.write(
        &format!("{base}/operator.yaml"),
        r#"apiVersion: kudo.dev/v1beta1
name: checked
operatorVersion: 1.0.0
kubernetesVersion: 1.20.0
tasks:
  - {name: config, kind: Apply, spec: {resources: [config.yaml]}}
  - {name: smoke-cleanup, kind: Delete, spec: {resources: [smoke.yaml]}}
  - {name: smoke, kind: Apply, spec: {resources: [smoke.yaml]}}
plans:
  deploy:
    strategy: serial
    phases:
      - {name: main, strategy: serial, steps: [{name: config, tasks: [config]}]}
  smoke-test:
    strategy: serial
    phases:
      - name: main
        strategy: serial
        steps:
          - {name: cleanup, tasks: [smoke-cleanup]}
          - {name: smoke, tasks: [smoke]}
  rollback:
    strategy: serial
    phases:
      - {name: main, strategy: serial, steps: [{name: config, tasks: [config]}]}
"#,
    );
    repo.write(
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: MESSAGE, default: hello}\n  - {name: SMOKE_FAIL, type: boolean, default: false}\n",
    );
    repo.write(
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  message: {{ .Params.MESSAGE | quote }}\n",
    );
    repo.write(
        &format!("{base}/templates/smoke.yaml"),
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Name }}-smoke\n  annotations:\n    sim.kudo.dev/fail: {{ .Params.SMOKE_FAIL | quote }}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: smoke\n          image: busybox\n",
    );
}

fn checked_doc(message: &str, smoke_fail: bool) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: db\n  namespace: apps\nspec:\n  framework: checked\n  version: 1.0.0\n  parameters:\n    MESSAGE: {message}\n    SMOKE_FAIL: \"{smoke_fail}\"\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: test}}\n    rollout:\n      onFailure: revert\n      stages:\n        - name: canary\n          clusters: [c1]\n          gates:\n            - plan: smoke-test\n        - name: prod\n          clusters: [c2, c3]\n          gates:\n            - approval: {{}}\n"
    )
}

/// `MESSAGE` of the Instance on a cluster, and the status of `plan` there.
async fn message_and_plan(
    fleet: &Fleet,
    cluster: &str,
    plan: &str,
) -> (Option<String>, Option<String>) {
    let v = get(&fleet.cluster(cluster), &instance_ref("apps", "db")).await;
    let at = |p: &str| {
        v.as_ref()
            .and_then(|v| v.pointer(p))
            .and_then(|s| s.as_str())
            .map(str::to_string)
    };
    (
        at("/spec/parameters/MESSAGE"),
        at(&format!("/status/planStatus/{plan}/status")),
    )
}

async fn wait_message_and_plan(
    fleet: &Fleet,
    cluster: &str,
    message: &str,
    plan: &str,
    status: &str,
) {
    wait_until(
        &format!("{cluster}: MESSAGE {message}, plan {plan} {status}"),
        || async {
            match message_and_plan(fleet, cluster, plan).await {
                (Some(m), Some(s)) if m == message && s == status => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plan_gate_runs_the_smoke_test_and_a_failed_one_reverts_with_the_rollback_plan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_checked(&repo);
    repo.write("instances/db.yaml", &checked_doc("one", false));
    repo.commit("one");
    let fleet = Fleet::new(&["c1", "c2", "c3"]);
    let config = fleet.config(dir.path(), "", &[("a", repo.url(), "")]);
    let daemon = Daemon::start(config, fleet.options())
        .await
        .expect("daemon");
    let (addr, _http) = serve_http(
        daemon.shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        std::future::pending::<()>(),
    )
    .await
    .expect("http");
    let server = format!("http://{addr}");
    let key = "apps/db";

    // The canary deploys, then its smoke test runs there (only there) before prod may start.
    wait_message_and_plan(&fleet, "c1", "one", "smoke-test", "COMPLETE").await;
    wait_state(&daemon, key, "prod waiting for approval", |s| {
        matches!(s, State::Waiting { stage, gate, .. } if stage == "prod" && gate == "approval")
    })
    .await;
    daemon
        .shared
        .approve_stage(key, "prod", "test")
        .expect("approve");
    wait_state(&daemon, key, "complete", |s| *s == State::Complete).await;
    for c in ["c2", "c3"] {
        assert_eq!(
            message_and_plan(&fleet, c, "smoke-test").await,
            (Some("one".into()), None),
            "{c}: the smoke test runs on the canary stage only"
        );
    }

    // A spec whose smoke test fails: the canary takes it, the smoke test fails, and
    // onFailure: revert gives the canary "one" back through the rollback plan.
    repo.write("instances/db.yaml", &checked_doc("two", true));
    repo.commit("two, with a failing smoke test");
    daemon.shared.sync_now(None);
    wait_message_and_plan(&fleet, "c1", "one", "rollback", "COMPLETE").await;
    wait_state(&daemon, key, "halted, reverted", |s| {
        matches!(s, State::Halted { reason, .. } if reason.contains("reverted to revision") && reason.contains("smoke-test FATAL_ERROR") && reason.contains("3 of 3 clusters on the good spec"))
    })
    .await;
    let metrics = daemon.shared.metrics_text();
    assert!(
        metrics.contains("kudo_rollout_reverts_total{namespace=\"apps\",instance=\"db\"} 1"),
        "{metrics}"
    );
    // Quarantined: passes go by, nothing gets "two" again; prod never saw it.
    wait_passes(&daemon.shared, 10).await;
    for c in ["c1", "c2", "c3"] {
        assert_eq!(
            message_and_plan(&fleet, c, "deploy").await.0.as_deref(),
            Some("one"),
            "{c}"
        );
    }
    let (ok, out) = kudo(rollout_cmd(&server, &["revert", key])).await;
    assert!(
        !ok && out.contains("409") && out.contains("reverted already"),
        "{out}"
    );

    // A new commit lifts the quarantine; it completes, then a person reverts the next one
    // by hand while prod waits for approval.
    repo.write("instances/db.yaml", &checked_doc("three", false));
    repo.commit("three");
    daemon.shared.sync_now(None);
    wait_state(&daemon, key, "three waits for approval", |s| {
        matches!(s, State::Waiting { stage, gate, .. } if stage == "prod" && gate == "approval")
    })
    .await;
    daemon
        .shared
        .approve_stage(key, "prod", "test")
        .expect("approve");
    wait_state(&daemon, key, "three complete", |s| *s == State::Complete).await;
    repo.write("instances/db.yaml", &checked_doc("four", false));
    repo.commit("four");
    daemon.shared.sync_now(None);
    wait_message_and_plan(&fleet, "c1", "four", "smoke-test", "COMPLETE").await;
    wait_state(&daemon, key, "four waits for approval", |s| {
        matches!(s, State::Waiting { stage, gate, .. } if stage == "prod" && gate == "approval")
    })
    .await;
    let (ok, out) = kudo(rollout_cmd(&server, &["revert", key])).await;
    assert!(ok && out.contains("reverted to revision"), "{out}");
    wait_until("c1 back on three", || async {
        match message_and_plan(&fleet, "c1", "rollback").await {
            (Some(m), Some(s)) if m == "three" && s == "COMPLETE" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        message_and_plan(&fleet, "c2", "deploy").await.0.as_deref(),
        Some("three")
    );
    let saved = std::fs::read_to_string(dir.path().join("cache/rollout-state.json"))
        .expect("rollout state file");
    assert!(
        saved.contains("\"reverted\"") && saved.contains("\"by\": \"anonymous\""),
        "{saved}"
    );
    assert!(
        !saved.contains("three") && !saved.contains("four"),
        "parameters are never saved: {saved}"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// A framework whose deploy plan waits for a Deployment: on a cluster without the workload
/// simulator it stays IN_PROGRESS.
fn write_service(repo: &Repo) {
    let base = "frameworks/svc/1.0.0";
    repo.write(
        &format!("{base}/operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: svc\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {name: app, kind: Apply, spec: {resources: [deployment.yaml]}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - {name: main, strategy: serial, steps: [{name: app, tasks: [app]}]}\n",
    );
    repo.write(
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: MESSAGE, default: hello}\n",
    );
    repo.write(
        &format!("{base}/templates/deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Name }}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: svc}\n  template:\n    metadata:\n      labels: {app: svc}\n    spec:\n      containers:\n        - name: app\n          image: busybox\n          args: [\"echo\", {{ .Params.MESSAGE | quote }}]\n",
    );
}

fn svc_doc(name: &str, rollout: &str, extra: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: apps\nspec:\n  framework: svc\n  version: 1.0.0\n{extra}  placement:\n    clusterSelector:\n      matchLabels: {{fleet: test}}\n    rollout:\n{rollout}"
    )
}

async fn exists_on(fleet: &Fleet, cluster: &str, name: &str) -> bool {
    get(&fleet.cluster(cluster), &instance_ref("apps", name))
        .await
        .is_some()
}

/// `progressDeadline` counts a cluster whose plan does not complete in time as failed;
/// up to `maxFailures` failed clusters the rollout goes on, one more halts it. The clock is
/// moved by hand: no test waits ten minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_deadline_failures_count_against_max_failures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_service(&repo);
    repo.write(
        "instances/web.yaml",
        &svc_doc(
            "web",
            "      maxFailures: 1\n      progressDeadline: 10m\n      stages:\n        - {name: all, clusters: [c1, c2, c3, c4], maxUnavailable: 1}\n",
            "",
        ),
    );
    repo.commit("web");
    // c2 and c3 never get a ready Deployment.
    let fleet = Fleet::with_workloads_on(&["c1", "c2", "c3", "c4"], &["c1", "c4"]);
    let clock = Clock::manual(1_000_000);
    let mut options = fleet.options();
    options.clock = clock.clone();
    let daemon = Daemon::start(
        fleet.config(dir.path(), "", &[("a", repo.url(), "")]),
        options,
    )
    .await
    .expect("daemon");
    let key = "apps/web";
    wait_complete(&fleet.cluster("c1"), "apps", "web").await;
    wait_until("c2 gets the spec", || async {
        if exists_on(&fleet, "c2", "web").await {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    // The planner has seen c2 running (its deadline clock started) before time moves.
    wait_state(&daemon, key, "wave 2 in progress", |s| {
        matches!(s, State::Progressing { wave: 1, .. })
    })
    .await;
    wait_passes(&daemon.shared, 3).await;
    clock.advance(Duration::from_secs(600));
    // One failure is tolerated: the next wave starts.
    wait_until("c3 gets the spec after c2 failed", || async {
        if exists_on(&fleet, "c3", "web").await {
            Ok(())
        } else {
            Err(format!("{:?}", rollout(&daemon, key)))
        }
    })
    .await;
    wait_state(&daemon, key, "wave 3 in progress", |s| {
        matches!(s, State::Progressing { wave: 2, .. })
    })
    .await;
    wait_passes(&daemon.shared, 3).await;
    clock.advance(Duration::from_secs(600));
    wait_state(&daemon, key, "halted after the second failure", |s| {
        matches!(s, State::Halted { reason, .. }
            if reason.contains("2 clusters failed, more than maxFailures 1")
                && reason.contains("not COMPLETE within progressDeadline 10m"))
    })
    .await;
    wait_passes(&daemon.shared, 5).await;
    assert!(
        !exists_on(&fleet, "c4", "web").await,
        "a halted rollout reached c4"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// `dependsOn` with `scope: everywhere`: the dependent's spec reaches no cluster until the
/// dependency is COMPLETE on every cluster it targets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_everywhere_dependency_holds_every_cluster_until_it_is_complete_on_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_store(&repo);
    repo.write(
        "instances/zk.yaml",
        &instance_doc(
            "zk",
            "apps",
            &[],
            "    rollout:\n      stages:\n        - name: first\n          clusters: [c1]\n        - name: second\n          clusters: [c2]\n          gates: [{approval: {}}]\n",
        ),
    );
    repo.write(
        "instances/db.yaml",
        &format!(
            "{}  dependsOn:\n    - {{instance: apps/zk, scope: everywhere}}\n",
            instance_doc("db", "apps", &[("ROLE", "")], "")
        ),
    );
    repo.commit("zk and db");
    let fleet = Fleet::new(&["c1", "c2"]);
    let daemon = Daemon::start(
        fleet.config(dir.path(), "", &[("a", repo.url(), "")]),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&fleet.cluster("c1"), "apps", "zk").await;
    wait_state(&daemon, "apps/db", "db waits for zk everywhere", |s| {
        matches!(s, State::Waiting { gate, reason, .. }
            if gate == "dependsOn" && reason == "waiting for apps/zk on c2: NotApplied")
    })
    .await;
    wait_passes(&daemon.shared, 5).await;
    // zk is COMPLETE on c1, but not everywhere: db is held on c1 too.
    assert_eq!(role_on(&fleet, "c1").await, None, "db reached c1 early");
    daemon
        .shared
        .approve_stage("apps/zk", "second", "test")
        .expect("approve");
    wait_complete(&fleet.cluster("c2"), "apps", "zk").await;
    for c in ["c1", "c2"] {
        wait_complete(&fleet.cluster(c), "apps", "db").await;
    }
    wait_state(&daemon, "apps/db", "db complete", |s| *s == State::Complete).await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}
