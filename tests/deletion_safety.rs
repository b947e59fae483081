//! Issue 18, deletion safety: `kudo serve` never deletes what Git still declares, never
//! touches another control plane's Instances, never deletes an object another instance
//! lists or one that existed before kudo, and holds mass deletions for confirmation.
//! Real Git repositories (git CLI), the real daemon and HTTP API, simulated clusters that
//! outlive each daemon (so a restart is a restart).

#[path = "support/gitfleet.rs"]
mod gitfleet;

use std::process::Command;

use gitfleet::*;
use kudo::cluster::ObjectRef;
use kudo::gitops::serve::{Daemon, serve_http};
use serde_json::{Value, json};

// ---- defect 1: a repository down at restart deletes nothing ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_with_one_remote_down_deletes_nothing_it_declares() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Repo::new(dir.path(), "a");
    let b = Repo::new(dir.path(), "b");
    a.write(
        "instances/one.yaml",
        &instance_doc("one", "team-a", &[], ""),
    );
    a.commit("a");
    b.write(
        "instances/two.yaml",
        &instance_doc("two", "team-b", &[], ""),
    );
    b.commit("b");
    let fleet = Fleet::new(&["c1"]);
    let c1 = fleet.cluster("c1");
    let repos = [("a", a.url(), ""), ("b", b.url(), "")];
    let daemon = Daemon::start(fleet.config(dir.path(), "", &repos), fleet.options())
        .await
        .expect("daemon");
    wait_complete(&c1, "team-a", "one").await;
    wait_complete(&c1, "team-b", "two").await;
    let two = instance_ref("team-b", "two");
    let before = uid(&c1, &two).await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );

    // Repository b's remote stops being a repository; the daemon restarts.
    let moved = dir.path().join("b-git-away");
    std::fs::rename(b.path.join(".git"), &moved).expect("mv");
    let daemon = Daemon::start(fleet.config(dir.path(), "", &repos), fleet.options())
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    wait_until("two kept while b has not loaded", || async {
        let k = kept(&shared, "c1");
        if k.contains("team-b/two: repository b has not loaded a good revision since start") {
            Ok(())
        } else {
            Err(format!("kept: {k:?}"))
        }
    })
    .await;
    wait_passes(&shared, 5).await;
    assert_eq!(uid(&c1, &two).await, before, "b's instance must survive");
    let status = shared.status();
    let b_status = status
        .repositories
        .iter()
        .find(|r| r.name == "b")
        .expect("b");
    assert!(
        !b_status.errors.is_empty(),
        "b's failure is shown: {b_status:?}"
    );

    // Back online: still nothing deleted; then b removes it for real and it goes.
    std::fs::rename(&moved, b.path.join(".git")).expect("mv back");
    shared.sync_now(None);
    wait_until("b loads again", || async {
        if kept(&shared, "c1").is_empty()
            && shared
                .status()
                .repositories
                .iter()
                .all(|r| r.errors.is_empty())
        {
            Ok(())
        } else {
            Err(kept(&shared, "c1"))
        }
    })
    .await;
    assert_eq!(uid(&c1, &two).await, before);
    b.remove("instances/two.yaml");
    b.commit("drop two");
    shared.sync_now(None);
    wait_gone(&c1, &two).await;
    assert!(get(&c1, &instance_ref("team-a", "one")).await.is_some());
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

// ---- defect 2: two control planes on one cluster ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_control_planes_never_delete_each_others_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blue_repo = Repo::new(dir.path(), "blue");
    let green_repo = Repo::new(dir.path(), "green");
    blue_repo.write("instances/b.yaml", &instance_doc("b", "blue", &[], ""));
    blue_repo.commit("blue");
    green_repo.write("instances/g.yaml", &instance_doc("g", "green", &[], ""));
    green_repo.commit("green");
    let fleet = Fleet::new(&["shared"]);
    let cluster = fleet.cluster("shared");
    let blue_dir = dir.path().join("blue-cp");
    let green_dir = dir.path().join("green-cp");
    let blue = Daemon::start(
        fleet.config(
            &blue_dir,
            "controlPlane: blue\n",
            &[("fleet", blue_repo.url(), "")],
        ),
        fleet.options(),
    )
    .await
    .expect("blue");
    let green = Daemon::start(
        fleet.config(
            &green_dir,
            "controlPlane: green\n",
            &[("fleet", green_repo.url(), "")],
        ),
        fleet.options(),
    )
    .await
    .expect("green");
    wait_complete(&cluster, "blue", "b").await;
    wait_complete(&cluster, "green", "g").await;
    wait_passes(&blue.shared, 5).await;
    wait_passes(&green.shared, 5).await;
    let b = get(&cluster, &instance_ref("blue", "b"))
        .await
        .expect("blue's instance");
    let g = get(&cluster, &instance_ref("green", "g"))
        .await
        .expect("green's instance");
    assert_eq!(b["metadata"]["labels"]["kudo.dev/control-plane"], "blue");
    assert_eq!(g["metadata"]["labels"]["kudo.dev/control-plane"], "green");
    assert_eq!(b["metadata"]["labels"]["kudo.dev/repository"], "fleet");
    // Objects carry their control plane too.
    let cm = get(
        &cluster,
        &ObjectRef::new("v1", "ConfigMap", Some("green"), "g-config"),
    )
    .await
    .expect("configmap");
    assert_eq!(cm["metadata"]["labels"]["kudo.dev/control-plane"], "green");
    // Green now declares blue's instance too: it is reported as a conflict, not taken.
    green_repo.write(
        "instances/b.yaml",
        &instance_doc("b", "blue", &[("ROLE", "x")], ""),
    );
    green_repo.commit("claim b");
    green.shared.sync_now(None);
    wait_until("green reports the conflict", || async {
        let doc = green.shared.status();
        let c = doc.clusters[0].conflicts.join("\n");
        if c.contains("blue/b: owned by control plane \"blue\"") {
            Ok(())
        } else {
            Err(c)
        }
    })
    .await;
    let after = get(&cluster, &instance_ref("blue", "b"))
        .await
        .expect("still there");
    assert_eq!(after["metadata"]["uid"], b["metadata"]["uid"]);
    assert_eq!(
        after["metadata"]["labels"]["kudo.dev/control-plane"],
        "blue"
    );
    assert_eq!(
        after["spec"]["parameters"], b["spec"]["parameters"],
        "not applied over"
    );
    // A dry run of a third control plane reports nothing about either one's Instances.
    let probe_repo = Repo::new(dir.path(), "probe");
    probe_repo.commit("nothing declared");
    let dry = Daemon::start_dry_run(
        fleet.config(
            &dir.path().join("probe-cp"),
            "controlPlane: probe\n",
            &[("fleet", probe_repo.url(), "")],
        ),
        fleet.options(),
    )
    .await
    .expect("dry run");
    wait_passes(&dry.shared, 5).await;
    let pending = dry.shared.status().clusters[0].pending_changes.join("\n");
    assert!(
        !pending.contains("blue/b") && !pending.contains("green/g"),
        "{pending}"
    );
    let late = dry.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    let late = blue.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    let late = green.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

// ---- defect 3: a cluster-scoped object two instances render ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_scoped_object_another_instance_lists_survives_deletion() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "fleet");
    let off = "  selfHeal: false\n";
    repo.write(
        "instances/a.yaml",
        &instance_doc("db", "team-a", &[("ROLE", "db-shared")], ""),
    );
    repo.write(
        "instances/b.yaml",
        &instance_doc("db", "team-b", &[("ROLE", "db-shared")], off),
    );
    repo.commit("two instances of one name");
    let fleet = Fleet::new(&["c1"]);
    let c1 = fleet.cluster("c1");
    let daemon = Daemon::start(
        fleet.config(dir.path(), "", &[("fleet", repo.url(), "")]),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&c1, "team-a", "db").await;
    wait_complete(&c1, "team-b", "db").await;
    let role = ObjectRef::new(
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        None,
        "db-shared",
    );
    assert!(get(&c1, &role).await.is_some());
    repo.remove("instances/a.yaml");
    repo.commit("drop team-a/db");
    daemon.shared.sync_now(None);
    wait_gone(&c1, &instance_ref("team-a", "db")).await;
    wait_passes(&daemon.shared, 3).await;
    assert!(
        get(&c1, &role).await.is_some(),
        "team-b/db still renders the ClusterRole"
    );
    // The last one listing it takes it along.
    repo.remove("instances/b.yaml");
    repo.commit("drop team-b/db");
    daemon.shared.sync_now(None);
    wait_gone(&c1, &instance_ref("team-b", "db")).await;
    wait_gone(&c1, &role).await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

// ---- defect 4: adopted objects, kept objects and claims outlive the instance ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adopted_kept_and_claim_objects_get_no_owner_and_are_never_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "fleet");
    let fleet = Fleet::new(&["c1"]);
    let c1 = fleet.cluster("c1");
    // Someone else's namespace and ConfigMap exist before kudo.
    c1.apply_as(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        "person",
    )
    .await
    .expect("namespace");
    c1.apply_as(
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "preexisting", "namespace": "team"}, "data": {"from": "person"}}),
        "person",
    )
    .await
    .expect("configmap");
    let params = [("ADOPT", "true"), ("DATA", "true")];
    repo.write(
        "instances/db.yaml",
        &instance_doc("db", "team", &params, ""),
    );
    repo.commit("db");
    let daemon = Daemon::start(
        fleet.config(dir.path(), "", &[("fleet", repo.url(), "")]),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&c1, "team", "db").await;
    let pre = ObjectRef::new("v1", "ConfigMap", Some("team"), "preexisting");
    let pvc = ObjectRef::new("v1", "PersistentVolumeClaim", Some("team"), "db-data");
    let keep = ObjectRef::new("v1", "ConfigMap", Some("team"), "db-keep");
    let own = ObjectRef::new("v1", "ConfigMap", Some("team"), "db-config");
    let adopted = get(&c1, &pre).await.expect("preexisting");
    assert_eq!(adopted["data"]["from"], "kudo", "kudo applied its fields");
    assert_eq!(
        adopted["metadata"]["annotations"]["kudo.dev/adopted"],
        "true"
    );
    for r in [&pre, &pvc, &keep] {
        let v = get(&c1, r).await.expect("exists");
        assert!(
            v.pointer("/metadata/ownerReferences").is_none(),
            "{r} must have no owner reference: {v}"
        );
    }
    assert!(
        get(&c1, &own)
            .await
            .expect("own")
            .pointer("/metadata/ownerReferences/0")
            .is_some()
    );
    let inst = get(&c1, &instance_ref("team", "db"))
        .await
        .expect("instance");
    assert!(
        inst["metadata"]["annotations"]["kudo.dev/adopted-objects"]
            .as_str()
            .is_some_and(|a| a.contains("preexisting")),
        "{inst}"
    );
    repo.remove("instances/db.yaml");
    repo.commit("drop db");
    daemon.shared.sync_now(None);
    wait_gone(&c1, &instance_ref("team", "db")).await;
    wait_gone(&c1, &own).await;
    for r in [&pre, &pvc, &keep] {
        assert!(get(&c1, r).await.is_some(), "{r} must survive its instance");
    }
    let ns = ObjectRef::new("v1", "Namespace", None, "team");
    assert!(get(&c1, &ns).await.is_some());
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

// ---- the safety valve, deletion protection, moves, and who may write ----

fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mass_deletions_wait_for_a_write_token_to_confirm_that_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "fleet");
    for i in 0..3 {
        repo.write(
            &format!("instances/i{i}.yaml"),
            &instance_doc(&format!("i{i}"), "apps", &[], ""),
        );
    }
    repo.write(
        "instances/guarded.yaml",
        &instance_doc("guarded", "apps", &[], "  deletionProtection: true\n"),
    );
    repo.commit("four");
    std::fs::write(dir.path().join("read.token"), "reader-secret\n").expect("token");
    std::fs::write(dir.path().join("write.token"), "writer-secret\n").expect("token");
    let fleet = Fleet::new(&["c1", "c2"]);
    let top = "apiTokens:\n  - {name: viewer, file: read.token, role: read}\n  - {name: alice, file: write.token, role: write}\n";
    let daemon = Daemon::start(
        fleet.config(
            dir.path(),
            top,
            &[("fleet", repo.url(), "    maxDeletions: 3\n")],
        ),
        fleet.options(),
    )
    .await
    .expect("daemon");
    let shared = daemon.shared.clone();
    let (addr, _http) = serve_http(
        shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        async { std::future::pending::<()>().await },
    )
    .await
    .expect("http");
    for c in ["c1", "c2"] {
        for i in ["i0", "i1", "i2", "guarded"] {
            wait_complete(&fleet.cluster(c), "apps", i).await;
        }
    }
    // Two instances × two clusters = 4 deletions > 3: all held.
    repo.remove("instances/i0.yaml");
    repo.remove("instances/i1.yaml");
    repo.remove("instances/guarded.yaml");
    let rev = repo.commit("drop three");
    shared.sync_now(None);
    wait_until("deletions held", || async {
        let doc = shared.status();
        match doc.repositories[0].held_deletions.as_ref() {
            Some(h) if h.revision == rev && h.count == 4 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_passes(&shared, 3).await;
    for c in ["c1", "c2"] {
        for i in ["i0", "i1", "guarded"] {
            assert!(
                get(&fleet.cluster(c), &instance_ref("apps", i))
                    .await
                    .is_some(),
                "{c} {i}"
            );
        }
        assert!(
            kept(&shared, c).contains(
                "apps/guarded: no longer declared by fleet, but deletionProtection is set"
            )
        );
    }
    let status_json = http(addr, "GET", "/api/v1/status", Some("reader-secret"), "");
    assert_eq!(status_json.0, 200);
    assert!(status_json.1.contains("heldDeletions"), "{}", status_json.1);

    let path = "/api/v1/repositories/fleet/confirm-deletions";
    let body = format!("{{\"revision\": \"{rev}\"}}");
    assert_eq!(http(addr, "POST", path, None, &body).0, 401, "no token");
    assert_eq!(
        http(addr, "POST", path, Some("wrong"), &body).0,
        401,
        "bad token"
    );
    let (code, text) = http(addr, "POST", path, Some("reader-secret"), &body);
    assert_eq!(code, 403, "a read token cannot write: {text}");
    assert!(text.contains("read-only"), "{text}");
    let (code, text) = http(
        addr,
        "POST",
        path,
        Some("writer-secret"),
        "{\"revision\": \"0000000\"}",
    );
    assert_eq!(code, 409, "another revision confirms nothing: {text}");
    assert!(text.contains(&rev), "the held revision is named: {text}");
    wait_passes(&shared, 2).await;
    assert!(
        get(&fleet.cluster("c1"), &instance_ref("apps", "i0"))
            .await
            .is_some()
    );

    // The CLI, with the write token.
    let out = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["deletions", "confirm", "fleet", "--revision", &rev[..12]])
        .arg("--server")
        .arg(format!("http://{addr}"))
        .arg("--token-file")
        .arg(dir.path().join("write.token"))
        .output()
        .expect("kudo runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("confirmed 4 deletions"));
    for c in ["c1", "c2"] {
        let cluster = fleet.cluster(c);
        wait_gone(&cluster, &instance_ref("apps", "i0")).await;
        wait_gone(&cluster, &instance_ref("apps", "i1")).await;
        assert!(get(&cluster, &instance_ref("apps", "i2")).await.is_some());
        assert!(
            get(&cluster, &instance_ref("apps", "guarded"))
                .await
                .is_some()
        );
    }
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_moved_to_another_repository_changes_owner_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Repo::new(dir.path(), "a");
    let b = Repo::new(dir.path(), "b");
    a.write("instances/db.yaml", &instance_doc("db", "data", &[], ""));
    a.commit("db in a");
    b.commit("empty b");
    let fleet = Fleet::new(&["c1"]);
    let c1 = fleet.cluster("c1");
    let daemon = Daemon::start(
        fleet.config(dir.path(), "", &[("a", a.url(), ""), ("b", b.url(), "")]),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&c1, "data", "db").await;
    let r = instance_ref("data", "db");
    let before = get(&c1, &r).await.expect("db");
    assert_eq!(before["metadata"]["labels"]["kudo.dev/repository"], "a");
    // Moved: b declares it, a drops it (two commits, two repositories, synced in any order).
    b.write("instances/db.yaml", &instance_doc("db", "data", &[], ""));
    b.commit("db moves to b");
    a.remove("instances/db.yaml");
    a.commit("db left a");
    daemon.shared.sync_now(None);
    wait_until("owner label moves to b", || async {
        let v = get(&c1, &r).await;
        match v
            .as_ref()
            .map(|v| v["metadata"]["labels"]["kudo.dev/repository"].clone())
        {
            Some(Value::String(s)) if s == "b" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_passes(&daemon.shared, 3).await;
    let after = get(&c1, &r).await.expect("db");
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "never re-created"
    );
    assert_eq!(
        after["status"]["planStatus"]["deploy"]["uid"],
        before["status"]["planStatus"]["deploy"]["uid"],
        "no plan re-ran"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_writes_need_a_loopback_listener() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "fleet");
    repo.commit("empty");
    let fleet = Fleet::new(&["c1"]);
    let config = fleet.config(
        dir.path(),
        "listen: 0.0.0.0:0\n",
        &[("fleet", repo.url(), "")],
    );
    let daemon = Daemon::start(config, fleet.options())
        .await
        .expect("daemon");
    assert!(!daemon.shared.loopback_listener());
    let app = kudo::gitops::serve::router(daemon.shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = "{\"revision\": \"0123456789\"}";
    let path = "/api/v1/repositories/fleet/confirm-deletions";
    let (code, text) = tokio::task::spawn_blocking(move || http(addr, "POST", path, None, body))
        .await
        .expect("join");
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("loopback"), "{text}");
    let (code, _) =
        tokio::task::spawn_blocking(move || http(addr, "GET", "/api/v1/status", None, ""))
            .await
            .expect("join");
    assert_eq!(code, 200, "reads stay open");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}
