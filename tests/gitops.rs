//! `kudo serve` end to end: a real Git repository (git CLI commits) served over `git daemon`
//! and `file://`, three real API servers (envtest) and 100 simulated clusters.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kudo::cluster::{Cluster, ObjectRef};
use kudo::gitops::config::Config;
use kudo::gitops::git::{GitError, GitSource};
use kudo::gitops::serve::{Daemon, Options, Shared, StatusDoc, serve_http};
use kudo::gitops::webhook::github_signature;
use kudo::package::FileTree;
use support::envtest;

const TIMEOUT: Duration = Duration::from_secs(120);

// ---- a real Git repository ----

struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kudo-test",
            "-c",
            "user.email=test@kudo.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Repo {
    fn new() -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fleet");
        std::fs::create_dir(&path).expect("mkdir");
        git(&path, &["init", "-q", "-b", "main"]);
        Repo { _dir: dir, path }
    }

    fn write(&self, file: &str, text: &str) {
        let p = self.path.join(file);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    fn remove(&self, file: &str) {
        std::fs::remove_file(self.path.join(file)).expect("rm");
    }

    fn commit(&self, msg: &str) -> String {
        git(&self.path, &["add", "-A"]);
        git(&self.path, &["commit", "-q", "-m", msg]);
        git(&self.path, &["rev-parse", "HEAD"])
    }

    fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// A small framework for the tests: a ConfigMap holding MESSAGE, a Deployment, and a Job
/// that the workload simulator fails when FAIL=true (recreated by every plan).
fn write_probe(repo: &Repo) {
    let base = "frameworks/probe/1.0.0";
    repo.write(
        &format!("{base}/operator.yaml"),
        r#"apiVersion: kudo.dev/v1beta1
name: probe
operatorVersion: 1.0.0
kubernetesVersion: 1.20.0
tasks:
  - {name: config, kind: Apply, spec: {resources: [config.yaml, deployment.yaml]}}
  - {name: job-cleanup, kind: Delete, spec: {resources: [job.yaml]}}
  - {name: job, kind: Apply, spec: {resources: [job.yaml]}}
plans:
  deploy:
    strategy: serial
    phases:
      - name: main
        strategy: serial
        steps:
          - {name: config, tasks: [config]}
          - {name: cleanup, tasks: [job-cleanup]}
          - {name: check, tasks: [job]}
  update:
    strategy: serial
    phases:
      - name: main
        strategy: serial
        steps:
          - {name: config, tasks: [config]}
          - {name: cleanup, tasks: [job-cleanup]}
          - {name: check, tasks: [job]}
  upgrade:
    strategy: serial
    phases:
      - name: main
        strategy: serial
        steps:
          - {name: config, tasks: [config]}
"#,
    );
    repo.write(
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: MESSAGE, default: hello}\n  - {name: FAIL, type: boolean, default: false}\n",
    );
    repo.write(
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  message: {{ .Params.MESSAGE | quote }}\n",
    );
    repo.write(
        &format!("{base}/templates/deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Name }}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: probe}\n  template:\n    metadata:\n      labels: {app: probe}\n    spec:\n      containers:\n        - name: probe\n          image: busybox\n          args: [\"echo\", {{ .Params.MESSAGE | quote }}]\n",
    );
    repo.write(
        &format!("{base}/templates/job.yaml"),
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Name }}-check\n  annotations:\n    sim.kudo.dev/fail: {{ .Params.FAIL | quote }}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: check\n          image: busybox\n",
    );
}

fn instance_doc(name: &str, namespace: &str, message: &str, fail: bool, rollout: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  framework: probe\n  version: 1.0.0\n  parameters:\n    MESSAGE: {message}\n    FAIL: {fail}\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: test}}\n    rollout: {rollout}\n"
    )
}

// ---- git daemon ----

struct GitDaemon {
    child: Child,
    port: u16,
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn git_daemon(base: &Path) -> GitDaemon {
    let port = free_port();
    let child = Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
            &base.display().to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("git daemon starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "git daemon did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    GitDaemon { child, port }
}

fn repository(name: &str, reference: Option<&str>) -> kudo::gitops::config::Repository {
    kudo::gitops::config::Repository {
        name: name.into(),
        source: kudo::gitops::config::Source::Dir(PathBuf::new()),
        reference: reference.map(str::to_string),
        path: String::new(),
        interval: Duration::from_secs(60),
        credentials: Default::default(),
        webhook_secret_file: None,
        max_deletions: kudo::gitops::config::DEFAULT_MAX_DELETIONS,
        verify: None,
        timeout: Duration::from_secs(120),
        allow_rollback: false,
    }
}

#[test]
fn git_sync_over_git_daemon_and_file_url() {
    let repo = Repo::new();
    write_probe(&repo);
    let first = repo.commit("first");
    git(&repo.path, &["tag", "v1"]);
    let cache = tempfile::tempdir().expect("cache");
    let daemon = git_daemon(repo.path.parent().expect("base"));
    let git_url = format!("git://127.0.0.1:{}/fleet", daemon.port);

    for url in [git_url.clone(), repo.url()] {
        let src = GitSource::new(&repository("fleet", Some("main")), &url, cache.path());
        assert_eq!(src.sync().expect("sync main"), first, "{url}");
        let tree = src.tree(&first).expect("tree");
        let files = tree.paths().expect("paths");
        assert!(
            files.contains(&"frameworks/probe/1.0.0/operator.yaml".to_string()),
            "{files:?}"
        );
        let text = tree
            .read("frameworks/probe/1.0.0/params.yaml")
            .expect("read");
        assert!(String::from_utf8_lossy(&text).contains("MESSAGE"));
        // The desired-state cache keys files by blob id, without reading them.
        let id = tree.content_id("frameworks/probe/1.0.0/params.yaml");
        assert!(
            id.as_deref().is_some_and(|i| i.starts_with("blob:")),
            "{id:?}"
        );
        let shallow = git2::Repository::open_bare(&src.mirror)
            .expect("mirror")
            .is_shallow();
        println!("mirror of {url}: shallow = {shallow}");
        if url == git_url {
            assert!(shallow, "a branch is fetched at depth 1 over git://");
        }
    }
    // A new commit is fetched; tags and pinned commits resolve.
    repo.write("instances/a.yaml", "x: 1\n");
    let second = repo.commit("second");
    let main = GitSource::new(&repository("fleet", Some("main")), &git_url, cache.path());
    assert_eq!(main.sync().expect("sync"), second);
    let tag = GitSource::new(&repository("fleet", Some("v1")), &git_url, cache.path());
    assert_eq!(tag.sync().expect("tag"), first);
    let pinned = GitSource::new(&repository("fleet", Some(&first)), &git_url, cache.path());
    assert_eq!(pinned.sync().expect("commit"), first);
    // A commit behind the shallow tip is fetched in full; the mirror is no longer shallow.
    repo.write("instances/b.yaml", "x: 2\n");
    let middle = repo.commit("middle");
    repo.write("instances/c.yaml", "x: 3\n");
    let third = repo.commit("third");
    assert_eq!(main.sync().expect("sync third"), third);
    let mirror = git2::Repository::open_bare(&main.mirror).expect("mirror");
    assert!(mirror.is_shallow(), "the tip alone is fetched");
    assert!(
        mirror
            .find_commit(git2::Oid::from_str(&middle).expect("oid"))
            .is_err()
    );
    let pinned = GitSource::new(&repository("fleet", Some(&middle)), &git_url, cache.path());
    assert_eq!(pinned.sync().expect("pinned behind the tip"), middle);
    let tree = pinned.tree(&middle).expect("tree at middle");
    assert!(
        tree.paths()
            .expect("paths")
            .contains(&"instances/b.yaml".to_string())
    );
    let mirror = git2::Repository::open_bare(&main.mirror).expect("mirror");
    assert!(
        !mirror.is_shallow(),
        "a pinned commit unshallows the mirror"
    );
    // A ref that does not exist is named.
    let missing = GitSource::new(&repository("fleet", Some("nope")), &git_url, cache.path());
    match missing.sync() {
        Err(e @ GitError::RefNotFound { .. }) => {
            assert!(e.to_string().contains("ref \"nope\" does not exist"), "{e}");
        }
        other => panic!("expected RefNotFound, got {other:?}"),
    }
    // An unreachable remote is an error naming the repository and URL.
    drop(daemon);
    let gone = format!("git://127.0.0.1:{}/fleet", free_port());
    let src = GitSource::new(&repository("fleet", Some("main")), &gone, cache.path());
    let e = src.sync().expect_err("unreachable");
    assert!(matches!(e, GitError::Fetch { .. }), "{e:?}");
    assert!(e.to_string().contains(&gone), "{e}");
}

// ---- the daemon ----

fn status(shared: &Shared) -> StatusDoc {
    shared.status()
}

/// Per cluster progress state of one instance (empty when not desired).
fn progress(doc: &StatusDoc, name: &str) -> BTreeMap<String, String> {
    doc.instances
        .iter()
        .find(|i| i.name == name)
        .map(|i| {
            i.clusters
                .iter()
                .map(|(c, v)| (c.clone(), v.progress.as_str().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the daemon's status until `done`, checking on every sample that a serial rollout
/// over `order` never reaches a cluster before the previous one is Complete.
async fn wait_serial(
    shared: &Shared,
    name: &str,
    order: &[String],
    what: &str,
    done: impl Fn(&StatusDoc) -> bool,
) -> StatusDoc {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let doc = status(shared);
        let p = progress(&doc, name);
        for (i, c) in order.iter().enumerate() {
            let state = p.get(c).map(String::as_str).unwrap_or("NotApplied");
            if state != "NotApplied" {
                for earlier in &order[..i] {
                    let e = p.get(earlier).map(String::as_str).unwrap_or("NotApplied");
                    assert!(
                        e == "Complete",
                        "serial order broken: {c} is {state} while {earlier} is {e}"
                    );
                }
            }
        }
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all(p: &BTreeMap<String, String>, n: usize, state: &str) -> bool {
    p.len() == n && p.values().all(|s| s == state)
}

/// POSTs to the webhook; returns the HTTP status code.
fn post_hook(addr: std::net::SocketAddr, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let mut req = format!(
        "POST /api/v1/hooks/git HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line")
}

async fn live_message(cluster: &Cluster, ns: &str, name: &str) -> Option<String> {
    let r = ObjectRef::new("kudo.dev/v1beta1", "Instance", Some(ns), name);
    cluster
        .get_opt(&r)
        .await
        .expect("get instance")
        .and_then(|v| {
            v["spec"]["parameters"]["MESSAGE"]
                .as_str()
                .map(str::to_string)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_on_three_real_clusters() {
    let kubeconfig = envtest::kubeconfig().to_path_buf();
    let repo = Repo::new();
    write_probe(&repo);
    let ns = envtest::unique("gitops");
    let name = "probe";
    let file = "instances/probe.yaml";
    repo.write(file, &instance_doc(name, &ns, "one", false, "serial"));
    repo.commit("deploy probe");

    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("hook-secret"), "s3cret\n").expect("secret");
    let names: Vec<String> = (1..=3).map(|i| format!("c{i}")).collect();
    let mut clusters_yaml = String::new();
    for i in 1..=3 {
        clusters_yaml.push_str(&format!(
            "  - name: c{i}\n    kubeconfig: {}\n    context: envtest-{i}\n    labels: {{fleet: test}}\n",
            kubeconfig.display()
        ));
    }
    let config_text = format!(
        "listen: 127.0.0.1:0\ncacheDir: {}\nrepositories:\n  - name: fleet\n    url: {}\n    ref: main\n    interval: 1h\n    webhookSecretFile: hook-secret\nclusters:\n{clusters_yaml}",
        work.path().join("cache").display(),
        repo.url()
    );
    let config = Config::parse("kudo.yaml", &config_text, work.path()).expect("config");
    // Workloads become ready (and Jobs finish) through the simulator, on the real servers.
    let mut sims = Vec::new();
    let mut handles = Vec::new();
    for i in 1..=3 {
        let c = envtest::cluster(i).await;
        sims.push(kudo::sim::workload::spawn(
            c.client().clone(),
            kudo::sim::workload::WorkloadConfig {
                ready_delay: Duration::from_millis(200),
                job_duration: Duration::from_millis(200),
            },
        ));
        handles.push(c);
    }
    let options = Options {
        observe_interval: Duration::from_millis(300),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_millis(500),
        debounce: Duration::from_millis(100),
        ..Default::default()
    };
    let daemon = Daemon::start(config, options).await.expect("daemon starts");
    let shared = daemon.shared.clone();
    let (addr, _http) = serve_http(
        shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        async { std::future::pending::<()>().await },
    )
    .await
    .expect("http");

    // 1. Converges on all three clusters.
    wait_serial(&shared, name, &names, "first rollout", |d| {
        all(&progress(d, name), 3, "Complete")
    })
    .await;

    // A bad signature is refused and changes nothing.
    let body = r#"{"ref":"refs/heads/main"}"#;
    assert_eq!(
        post_hook(
            addr,
            &[(
                "X-Hub-Signature-256",
                &github_signature("wrong", body.as_bytes())
            )],
            body
        ),
        401
    );
    assert_eq!(post_hook(addr, &[("X-Gitlab-Token", "nope")], body), 401);

    // 2. A parameter change rolls out serially, in order; webhook-triggered.
    repo.write(file, &instance_doc(name, &ns, "two", false, "serial"));
    let rev2 = repo.commit("message two");
    let t0 = Instant::now();
    assert_eq!(
        post_hook(
            addr,
            &[(
                "X-Hub-Signature-256",
                &github_signature("s3cret", body.as_bytes())
            )],
            body
        ),
        202
    );
    wait_serial(
        &shared,
        name,
        &names,
        "serial rollout of MESSAGE=two",
        |d| {
            d.instances
                .iter()
                .any(|i| i.name == name && i.revision == rev2)
                && all(&progress(d, name), 3, "Complete")
        },
    )
    .await;
    let converged = t0.elapsed();
    println!("commit-to-converged (webhook, 3 envtest clusters, serial): {converged:?}");
    for c in &handles {
        assert_eq!(live_message(c, &ns, name).await.as_deref(), Some("two"));
    }

    // 3. FATAL on the first cluster halts the rest.
    repo.write(file, &instance_doc(name, &ns, "three", true, "serial"));
    repo.commit("a failing check");
    assert_eq!(post_hook(addr, &[("X-Gitlab-Token", "s3cret")], body), 202);
    // (The cluster's progress is read live; the rollout state is the planner's next pass.)
    let doc = wait_serial(&shared, name, &names, "halt on c1", |d| {
        progress(d, name).get("c1").map(String::as_str) == Some("Failed")
            && d.instances.iter().any(|i| {
                i.name == name && matches!(i.rollout, kudo::gitops::rollout::State::Halted { .. })
            })
    })
    .await;
    let inst = doc
        .instances
        .iter()
        .find(|i| i.name == name)
        .expect("instance");
    assert!(
        matches!(&inst.rollout, kudo::gitops::rollout::State::Halted { cluster, .. } if cluster == "c1"),
        "{:?}",
        inst.rollout
    );
    // Several more planner passes later, c2 and c3 still run the previous spec.
    let passes = shared.passes();
    wait_serial(&shared, name, &names, "more planner passes", |_| {
        shared.passes() >= passes + 10
    })
    .await;
    assert_eq!(
        live_message(&handles[0], &ns, name).await.as_deref(),
        Some("three")
    );
    assert_eq!(
        live_message(&handles[1], &ns, name).await.as_deref(),
        Some("two")
    );
    assert_eq!(
        live_message(&handles[2], &ns, name).await.as_deref(),
        Some("two")
    );

    // 4. A bad commit changes nothing and is reported with commit, file and reason.
    repo.write(
        file,
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata: [broken\n",
    );
    let bad = repo.commit("broken yaml");
    shared.sync_now(None);
    let deadline = Instant::now() + TIMEOUT;
    let errors = loop {
        let doc = status(&shared);
        let r = &doc.repositories[0];
        if r.revision.as_deref() == Some(bad.as_str()) {
            break r.errors.clone();
        }
        assert!(Instant::now() < deadline, "bad commit never seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = errors.join("\n");
    assert!(
        text.contains(&bad[..12]) && text.contains("instances/probe.yaml:"),
        "{text}"
    );
    assert_ne!(
        status(&shared).repositories[0].applied_revision.as_deref(),
        Some(bad.as_str())
    );
    assert_eq!(
        live_message(&handles[1], &ns, name).await.as_deref(),
        Some("two")
    );

    // 5. A fixed commit applies: the rollout starts again at c1 and converges.
    repo.write(file, &instance_doc(name, &ns, "four", false, "serial"));
    let fixed = repo.commit("fixed");
    shared.sync_now(None);
    wait_serial(&shared, name, &names, "fixed rollout", |d| {
        d.instances
            .iter()
            .any(|i| i.name == name && i.revision == fixed)
            && all(&progress(d, name), 3, "Complete")
    })
    .await;
    for c in &handles {
        assert_eq!(live_message(c, &ns, name).await.as_deref(), Some("four"));
    }

    // 6. Deleting the instance file removes the Instance from every cluster.
    repo.remove(file);
    repo.commit("remove probe");
    shared.sync_now(None);
    let deadline = Instant::now() + TIMEOUT;
    for c in &handles {
        while live_message(c, &ns, name).await.is_some() {
            assert!(Instant::now() < deadline, "instance still on {}", c.name());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    drop(sims);
    for c in &handles {
        let _ = c
            .delete(&ObjectRef::new("v1", "Namespace", None, ns.as_str()))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_on_hundred_simulated_clusters() {
    let repo = Repo::new();
    write_probe(&repo);
    let file = "instances/probe.yaml";
    repo.write(
        file,
        &instance_doc("fleet-probe", "apps", "one", false, "parallel"),
    );
    repo.commit("deploy");
    let work = tempfile::tempdir().expect("tempdir");
    let mut clusters_yaml = String::new();
    for i in 0..100 {
        clusters_yaml.push_str(&format!(
            "  - name: sim-{i:03}\n    sim: {{readyDelay: 200ms}}\n    labels: {{fleet: test}}\n"
        ));
    }
    let config_text = format!(
        "cacheDir: {}\nrepositories:\n  - name: fleet\n    url: {}\n    interval: 1h\nclusters:\n{clusters_yaml}",
        work.path().join("cache").display(),
        repo.url()
    );
    let config = Config::parse("kudo.yaml", &config_text, work.path()).expect("config");
    let options = Options {
        observe_interval: Duration::from_millis(500),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_secs(1),
        debounce: Duration::from_millis(100),
        ..Default::default()
    };
    let started = Instant::now();
    let daemon = Daemon::start(config, options).await.expect("daemon");
    let shared = daemon.shared.clone();
    let (addr, _http) = serve_http(
        shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        async { std::future::pending::<()>().await },
    )
    .await
    .expect("http");
    let wait = |what: &'static str, rev: Option<String>, target: &'static str| {
        let shared = shared.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                let doc = shared.status();
                let rev_ok = rev
                    .as_ref()
                    .is_none_or(|r| doc.instances.iter().any(|i| &i.revision == r));
                if rev_ok && all(&progress(&doc, "fleet-probe"), 100, target) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out: {what}: {:?}",
                    progress(&doc, "fleet-probe").values().fold(
                        BTreeMap::<String, usize>::new(),
                        |mut m, s| {
                            *m.entry(s.clone()).or_default() += 1;
                            m
                        }
                    )
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait("initial deploy on 100 clusters", None, "Complete").await;
    println!(
        "100 simulated clusters: start to converged: {:?}",
        started.elapsed()
    );

    // Webhook-triggered parameter change, waves of 25%.
    let doc = instance_doc(
        "fleet-probe",
        "apps",
        "two",
        false,
        "{maxUnavailable: \"25%\"}",
    );
    repo.write(file, &doc);
    let rev = repo.commit("two");
    let t0 = Instant::now();
    assert_eq!(
        post_hook(addr, &[], "{}"),
        202,
        "repository without a secret takes unsigned hooks"
    );
    wait("25% waves of MESSAGE=two", Some(rev), "Complete").await;
    println!(
        "commit-to-converged (webhook, 100 simulated clusters, 4 waves of 25%): {:?}",
        t0.elapsed()
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// A cluster whose credentials are rejected is down with `unauthorized`; another cluster of
/// the same rollout converges regardless.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejected_credentials_mark_only_that_cluster_down() {
    let envtest_config =
        kube::config::Kubeconfig::read_from(envtest::kubeconfig()).expect("envtest kubeconfig");
    let server = envtest_config.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("server");
    let repo = Repo::new();
    write_probe(&repo);
    let name = "guarded";
    repo.write(
        "instances/guarded.yaml",
        &instance_doc(name, "apps", "one", false, "parallel"),
    );
    repo.commit("deploy");
    let work = tempfile::tempdir().expect("tempdir");
    let bad_kubeconfig = work.path().join("bad-kubeconfig");
    std::fs::write(
        &bad_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
             insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: not-a-token\n\
             contexts:\n- name: bad\n  context:\n    cluster: c\n    user: u\ncurrent-context: bad\n"
        ),
    )
    .expect("write kubeconfig");
    let config_text = format!(
        "cacheDir: {}\nrepositories:\n  - name: fleet\n    url: {}\n    interval: 1h\nclusters:\n  \
         - name: locked-out\n    kubeconfig: {}\n    labels: {{fleet: test}}\n  \
         - name: good\n    sim: {{readyDelay: 100ms}}\n    labels: {{fleet: test}}\n",
        work.path().join("cache").display(),
        repo.url(),
        bad_kubeconfig.display()
    );
    let config = Config::parse("kudo.yaml", &config_text, work.path()).expect("config");
    let options = Options {
        observe_interval: Duration::from_millis(200),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_millis(200),
        debounce: Duration::from_millis(100),
        ..Default::default()
    };
    let daemon = Daemon::start(config, options).await.expect("daemon starts");
    let shared = daemon.shared.clone();
    let (addr, _http) = serve_http(
        shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        async { std::future::pending::<()>().await },
    )
    .await
    .expect("http");

    let deadline = Instant::now() + TIMEOUT;
    loop {
        let doc = status(&shared);
        let bad = doc.clusters.iter().find(|c| c.name == "locked-out");
        let bad_down = bad.is_some_and(|c| {
            !c.up
                && c.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("unauthorized"))
        });
        let good_done = progress(&doc, name).get("good").map(String::as_str) == Some("Complete");
        if bad_down && good_done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected locked-out down (unauthorized) and good Complete: clusters {:?}, progress {:?}",
            doc.clusters,
            progress(&doc, name)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same, as the HTTP status API reports it.
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(
        format!("GET /api/v1/status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let body = out.split("\r\n\r\n").nth(1).expect("body");
    let doc: serde_json::Value = serde_json::from_str(body).expect("status JSON");
    let clusters = doc["clusters"].as_array().expect("clusters");
    let bad = clusters
        .iter()
        .find(|c| c["name"] == "locked-out")
        .expect("locked-out listed");
    assert_eq!(bad["up"], false, "{bad}");
    let reason = bad["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("unauthorized"), "{reason}");
    let good = clusters
        .iter()
        .find(|c| c["name"] == "good")
        .expect("good listed");
    assert_eq!(good["up"], true, "{good}");
    // The engine's metrics are served beside the status API; labels stay bounded (no error
    // text such as the locked-out cluster's reason ever becomes a label).
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let metrics = out.split("\r\n\r\n").nth(1).expect("body");
    assert!(
        metrics.contains("kudo_plan_executions_total{cluster=\"good\"")
            && metrics.contains("result=\"complete\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kudo_plan_status{cluster=\"good\""),
        "{metrics}"
    );
    // The bounded category is a label (kudo_cluster_errors_total{category="unauthorized"});
    // the reason's text never is.
    assert!(
        metrics.contains("category=\"unauthorized\""),
        "the category is counted:\n{metrics}"
    );
    let bad_labels = kudo::metrics::suspicious_label_values(metrics);
    assert!(
        bad_labels.is_empty(),
        "error text in a label: {bad_labels:?}"
    );
    let message = reason
        .trim_start_matches("unauthorized")
        .trim_start_matches(':')
        .trim();
    assert!(
        message.is_empty() || !metrics.contains(message),
        "the reason {message:?} leaked into the metrics:\n{metrics}"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A plain local directory is watched: with polling at 1h, only the `notify` watch can
/// notice an edited instance file, and the edit becomes the applied revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_local_directory_applies_each_settled_edit() {
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("repo");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("repos-example"),
        &dir,
    );
    let config_text = format!(
        "cacheDir: {}\nrepositories:\n  - name: local\n    url: {}\n    interval: 1h\nclusters:\n  - name: dev\n    sim: {{readyDelay: 100ms}}\n    labels: {{env: dev}}\n  - name: staging\n    sim: {{readyDelay: 100ms}}\n    labels: {{env: staging}}\n  - name: prod\n    sim: {{readyDelay: 100ms}}\n    labels: {{env: prod}}\n",
        work.path().join("cache").display(),
        dir.display()
    );
    let config = Config::parse("kudo.yaml", &config_text, work.path()).expect("config");
    let options = Options {
        observe_interval: Duration::from_millis(500),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_millis(500),
        debounce: Duration::from_millis(100),
        ..Default::default()
    };
    let daemon = Daemon::start(config, options).await.expect("daemon");
    let shared = daemon.shared.clone();
    let applied = |shared: &std::sync::Arc<Shared>| {
        shared
            .status()
            .repositories
            .first()
            .and_then(|r| r.applied_revision.clone())
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        if let Some(rev) = applied(&shared) {
            break rev;
        }
        assert!(
            Instant::now() < deadline,
            "the directory was never applied: {:?}",
            shared.status().repositories
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let file = dir.join("instances/dev/session-cache.yaml");
    let text = std::fs::read_to_string(&file).expect("instance");
    std::fs::write(&file, text.replace("REPLICAS: 1", "REPLICAS: 2")).expect("edit");
    let second = loop {
        match applied(&shared) {
            Some(rev) if rev != first => break rev,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "the edit was not picked up by the watch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(second.starts_with("dir-"), "{second}");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}
