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
        ok && out.contains("waiting: stage prod gate approval"),
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
    daemon.shutdown().await;
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
    daemon.shutdown().await;
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
            d.shutdown().await;
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
    daemon.shutdown().await;
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
    daemon.shutdown().await;
}
