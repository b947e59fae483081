//! Package repositories and notifications over real HTTP on loopback: a package repository
//! served by the test (with ETags), `kudo repo index/add` and `kudo install` from it on a
//! real API server (envtest-1), tampered packages refused, and `kudo serve` posting commit
//! statuses to a recording server playing GitHub's API and plan events to a webhook, with a
//! hanging sink not holding plans back.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use kudo::cluster::{Cluster, ObjectRef};
use kudo::gitops::config::Config;
use kudo::gitops::rollout::State;
use kudo::gitops::serve::{Daemon, Options};
use kudo::metrics::notify::DropReason;
use kudo::notify::{Event, EventKind, Notifier, NotifyConfig};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(120);

// ---- a package ----

fn write_package(dir: &Path, version: &str, message: &str) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("operator.yaml"),
        format!(
            "apiVersion: kudo.dev/v1beta1\nname: hello\noperatorVersion: {version}\nappVersion: 0.1.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {{name: config, kind: Apply, spec: {{resources: [config.yaml]}}}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - {{name: config, tasks: [config]}}\n"
        ),
    )
    .expect("operator.yaml");
    std::fs::write(
        dir.join("params.yaml"),
        format!(
            "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {{name: MESSAGE, default: {message}}}\n"
        ),
    )
    .expect("params.yaml");
    std::fs::write(
        dir.join("templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  message: {{ .Params.MESSAGE | quote }}\n",
    )
    .expect("template");
}

fn kudo(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(args)
        .env("KUDO_HOME", home)
        .env("RUST_LOG", "warn")
        .output()
        .expect("kudo runs")
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn failed(out: &Output, what: &str) -> String {
    assert!(
        !out.status.success(),
        "{what} should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// Packages `version` of hello into `pkgs/hello-<version>.tgz` with `kudo package create`.
fn create_tgz(home: &Path, work: &Path, pkgs: &Path, version: &str, message: &str) -> PathBuf {
    let src = work.join(format!("src-{version}-{message}"));
    write_package(&src, version, message);
    let out = pkgs.join(format!("hello-{version}.tgz"));
    ok(
        &kudo(
            home,
            &[
                "package",
                "create",
                src.to_str().expect("utf8"),
                "-o",
                out.to_str().expect("utf8"),
            ],
        ),
        "package create",
    );
    out
}

// ---- HTTP servers on loopback ----

#[derive(Default)]
struct FileServerStats {
    /// (path, status) of every request.
    requests: Vec<(String, u16)>,
}

/// Serves a folder with strong ETags (sha256 of the content) and 304 on If-None-Match.
async fn file_server(root: PathBuf) -> (SocketAddr, Arc<Mutex<FileServerStats>>) {
    let stats = Arc::new(Mutex::new(FileServerStats::default()));
    let st = stats.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let root = root.clone();
        let st = st.clone();
        async move {
            let rel = uri.path().trim_start_matches('/').to_string();
            let (status, resp) = match std::fs::read(root.join(&rel)) {
                Err(_) => (404, (StatusCode::NOT_FOUND, "no such file").into_response()),
                Ok(bytes) => {
                    let etag = format!("\"{}\"", kudo::repo::sha256_hex(&bytes));
                    let hit = headers
                        .get("if-none-match")
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v == etag);
                    if hit {
                        (
                            304,
                            (StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response(),
                        )
                    } else {
                        (200, ([("etag", etag)], bytes).into_response())
                    }
                }
            };
            st.lock().expect("stats").requests.push((rel, status));
            resp
        }
    });
    (serve(app).await, stats)
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// Records every request; answers with the next status of `script` (the last one repeats).
async fn recorder(script: Vec<u16>) -> (SocketAddr, Arc<Mutex<Vec<Recorded>>>) {
    let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let s = s.clone();
            let script = script.clone();
            async move {
                let mut seen = s.lock().expect("recorder");
                let status = script
                    .get(seen.len())
                    .or(script.last())
                    .copied()
                    .unwrap_or(200);
                seen.push(Recorded {
                    method: method.to_string(),
                    path: uri.path().to_string(),
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                        .collect(),
                    body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                });
                let code = StatusCode::from_u16(status).expect("status");
                Response::builder()
                    .status(code)
                    .body(axum::body::Body::from(format!(
                        "status {status} from the recorder"
                    )))
                    .expect("response")
            }
        },
    );
    (serve(app).await, seen)
}

/// Accepts connections and never answers.
async fn hanging_server() -> (SocketAddr, Arc<Mutex<u32>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(Mutex::new(0u32));
    let c = count.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            *c.lock().expect("count") += 1;
            held.push(sock);
        }
    });
    (addr, count)
}

async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- repository + install on a real API server ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repo_index_add_install_on_the_real_api_server() {
    let kubeconfig = common::envtest_kubeconfig();
    let client = common::client("envtest-1").await;
    common::install_crds(&client).await;
    let ns = common::Namespace::create(&client, "kudo-repo").await;
    let cluster = Cluster::from_kubeconfig("envtest-1", &kubeconfig, Some("envtest-1"))
        .await
        .expect("cluster");

    let work = tempfile::tempdir().expect("tmp");
    let home = work.path().join("home");
    let root = work.path().join("served");
    let pkgs = root.join("community");
    std::fs::create_dir_all(&pkgs).expect("mkdir");

    // Index 1.0.0, then add 1.1.0 with --merge: both listed, newest first.
    create_tgz(&home, work.path(), &pkgs, "1.0.0", "one");
    let out = kudo(&home, &["repo", "index", pkgs.to_str().expect("utf8")]);
    assert!(ok(&out, "repo index").contains("1 version(s)"));
    create_tgz(&home, work.path(), &pkgs, "1.1.0", "eleven");
    ok(
        &kudo(
            &home,
            &["repo", "index", pkgs.to_str().expect("utf8"), "--merge"],
        ),
        "repo index --merge",
    );
    let index_text = std::fs::read_to_string(pkgs.join("index.yaml")).expect("index.yaml");
    let index = kudo::repo::Index::parse("index.yaml", &index_text).expect("index parses");
    let versions: Vec<&str> = index.entries["hello"]
        .iter()
        .map(|v| v.operator_version.as_str())
        .collect();
    assert_eq!(versions, ["1.1.0", "1.0.0"], "{index_text}");

    let (addr, stats) = file_server(root.clone()).await;
    let url = format!("http://{addr}/community");
    ok(
        &kudo(&home, &["repo", "add", "community", &url]),
        "repo add",
    );
    let listed = ok(&kudo(&home, &["repo", "list"]), "repo list");
    assert!(
        listed.contains("community") && listed.contains(&url),
        "{listed}"
    );

    let kc = kubeconfig.to_str().expect("utf8");
    let install = |extra: &[&str]| {
        let mut args = vec![
            "install",
            "hello",
            "--kubeconfig",
            kc,
            "--context",
            "envtest-1",
            "-n",
            &ns.name,
        ];
        args.extend_from_slice(extra);
        kudo(&home, &args)
    };

    // A pinned version, then the newest.
    ok(
        &install(&["--repo", "community", "--operator-version", "1.0.0"]),
        "install 1.0.0",
    );
    ok(&install(&["--instance", "hello-newest"]), "install newest");
    for (ov, instance) in [
        ("hello-0.1.0-1.0.0", "hello-instance"),
        ("hello-0.1.0-1.1.0", "hello-newest"),
    ] {
        let v = cluster
            .get_opt(&ObjectRef::new(
                "kudo.dev/v1beta1",
                "OperatorVersion",
                Some(&ns.name),
                ov,
            ))
            .await
            .expect("get ov");
        assert!(v.is_some(), "OperatorVersion {ov} installed");
        let i = cluster
            .get_opt(&ObjectRef::new(
                "kudo.dev/v1beta1",
                "Instance",
                Some(&ns.name),
                instance,
            ))
            .await
            .expect("get instance")
            .expect("instance created");
        assert_eq!(i["spec"]["operatorVersion"]["name"], ov);
    }
    // The index was fetched conditionally: at least one 304 after the first download.
    let not_modified = stats
        .lock()
        .expect("stats")
        .requests
        .iter()
        .filter(|(p, s)| p == "community/index.yaml" && *s == 304)
        .count();
    assert!(
        not_modified >= 1,
        "{:?}",
        stats.lock().expect("stats").requests
    );

    // Unknown version and unknown package: the available ones are listed.
    let err = failed(
        &install(&["--operator-version", "9.9.9", "--instance", "x"]),
        "unknown version",
    );
    assert!(
        err.contains("9.9.9") && err.contains("1.1.0 (app 0.1.0), 1.0.0 (app 0.1.0)"),
        "{err}"
    );
    let mut args = vec!["install", "helo", "--kubeconfig", kc, "-n", &ns.name];
    args.extend(["--context", "envtest-1"]);
    let err = failed(&kudo(&home, &args), "unknown package");
    assert!(err.contains("\"helo\"") && err.contains("hello"), "{err}");

    // A tampered package: indexed, then replaced by other (valid) bytes. Refused, nothing
    // installed.
    create_tgz(&home, work.path(), &pkgs, "1.2.0", "twelve");
    ok(
        &kudo(&home, &["repo", "index", pkgs.to_str().expect("utf8")]),
        "reindex",
    );
    let good = std::fs::read(pkgs.join("hello-1.2.0.tgz")).expect("tgz");
    // `-o` naming a folder writes the default file name inside it.
    let evil_src = work.path().join("evil-src");
    write_package(&evil_src, "1.2.0", "evil");
    let evil_dir = work.path().join("evil");
    std::fs::create_dir_all(&evil_dir).expect("mkdir");
    ok(
        &kudo(
            &home,
            &[
                "package",
                "create",
                evil_src.to_str().expect("utf8"),
                "-o",
                evil_dir.to_str().expect("utf8"),
            ],
        ),
        "package create -o DIR",
    );
    let evil = evil_dir.join("hello-0.1.0_1.2.0.tgz");
    std::fs::copy(&evil, pkgs.join("hello-1.2.0.tgz")).expect("tamper");
    assert_ne!(
        good,
        std::fs::read(pkgs.join("hello-1.2.0.tgz")).expect("tgz")
    );
    let err = failed(
        &install(&["--operator-version", "1.2.0", "--instance", "tampered"]),
        "tampered package",
    );
    assert!(
        err.contains("digest mismatch") && err.contains("hello-1.2.0.tgz"),
        "{err}"
    );
    for r in [
        ObjectRef::new(
            "kudo.dev/v1beta1",
            "OperatorVersion",
            Some(&ns.name),
            "hello-0.1.0-1.2.0",
        ),
        ObjectRef::new("kudo.dev/v1beta1", "Instance", Some(&ns.name), "tampered"),
    ] {
        assert!(
            cluster.get_opt(&r).await.expect("get").is_none(),
            "{r:?} must not exist"
        );
    }

    // An index that does not parse: named with its URL.
    let broken = root.join("broken");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(
        broken.join("index.yaml"),
        "apiVersion: v1\nentries: [oops\n",
    )
    .expect("w");
    let broken_url = format!("http://{addr}/broken");
    let err = failed(
        &kudo(&home, &["repo", "add", "broken", &broken_url]),
        "broken index",
    );
    assert!(
        err.contains(&format!("{broken_url}/index.yaml")) && err.contains("does not parse"),
        "{err}"
    );
    let listed = ok(&kudo(&home, &["repo", "list"]), "repo list");
    assert!(
        !listed.contains("broken"),
        "a broken repository is not added: {listed}"
    );
    ok(
        &kudo(&home, &["repo", "remove", "community"]),
        "repo remove",
    );
    ns.cleanup().await;
}

// ---- sinks: 4xx not retried, 5xx retried ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sinks_retry_5xx_with_backoff_and_give_up_on_4xx_at_once() {
    let (flaky, flaky_seen) = recorder(vec![500, 502, 200]).await;
    let (refusing, refusing_seen) = recorder(vec![404]).await;
    let text = format!(
        "sinks:\n- name: flaky\n  webhook: {{url: 'http://{flaky}/hook'}}\n  backoff: 50ms\n  retries: 4\n- name: refusing\n  webhook: {{url: 'http://{refusing}/hook'}}\n  backoff: 50ms\n"
    );
    let value: Value = serde_saphyr::from_str(&text).expect("yaml");
    let config: NotifyConfig =
        kudo::notify::config::parse(Some(&value), Path::new("/")).expect("config");
    let mut registry = prometheus_client::registry::Registry::default();
    let notifier = Notifier::start(&config, &mut registry);
    let started = Instant::now();
    notifier.emit(Event::new(EventKind::PlanComplete, "COMPLETE", "done").cluster("c1"));
    eventually("the flaky sink to get it on the third try", || {
        (notifier.metrics().delivered("flaky") == 1).then_some(())
    })
    .await;
    let took = started.elapsed();
    eventually("the refusing sink to be counted", || {
        (notifier.metrics().dropped("refusing", DropReason::rejected) == 1).then_some(())
    })
    .await;
    let flaky_seen = flaky_seen.lock().expect("seen").clone();
    assert_eq!(flaky_seen.len(), 3, "two 5xx then 200: {flaky_seen:?}");
    assert!(
        took >= Duration::from_millis(50),
        "two backoffs of ≥25ms each happened: {took:?}"
    );
    println!("5xx, 5xx, 200 delivered after {took:?} (backoff 50ms base)");
    // Give a wrong retry the time to show up, then check the 4xx was tried once only.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refusing_seen = refusing_seen.lock().expect("seen").clone();
    assert_eq!(
        refusing_seen.len(),
        1,
        "4xx is not retried: {refusing_seen:?}"
    );
    assert_eq!(refusing_seen[0].body["event"], "planComplete");
    assert_eq!(notifier.metrics().dropped("flaky", DropReason::gave_up), 0);
}

// ---- the HTTP client: size limit, connection errors ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_size_limited_and_connection_errors_retried() {
    use kudo::repo::http::{HttpClient, HttpOptions, Request};
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("big.tgz"), vec![7u8; 64 * 1024]).expect("write");
    let (addr, _) = file_server(dir.path().to_path_buf()).await;
    let small = HttpClient::new(HttpOptions {
        max_bytes: 1024,
        ..Default::default()
    })
    .expect("client");
    let url = format!("http://{addr}/big.tgz");
    let e = small.send(&Request::get(&url)).await.unwrap_err();
    assert!(
        e.to_string().contains(&url) && e.to_string().contains("1024 bytes"),
        "{e}"
    );

    // Nothing listens: retried, then named with the URL and the attempts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let client = HttpClient::new(HttpOptions {
        retries: 2,
        backoff: Duration::from_millis(10),
        ..Default::default()
    })
    .expect("client");
    let url = format!("http://127.0.0.1:{port}/index.yaml");
    let e = client.send(&Request::get(&url)).await.unwrap_err();
    let m = e.to_string();
    assert!(m.contains(&url) && m.contains("3 attempt(s)"), "{m}");
}

// ---- kudo serve: commit statuses per cluster, webhook events in order ----

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

/// A Git repository whose instance takes `hello` 1.0.0 from the package repository `pkgs`,
/// rolled out serially over two simulated clusters. Returns (repo dir, commit).
fn fleet_repo(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("instances")).expect("mkdir");
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(
        dir.join("instances/hello.yaml"),
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: hello\n  namespace: apps\nspec:\n  framework: hello\n  version: 1.0.0\n  repository: pkgs\n  parameters:\n    MESSAGE: hi\n  placement:\n    clusterSelector:\n      matchLabels: {fleet: test}\n    rollout: serial\n",
    )
    .expect("instance");
    git(dir, &["add", "-A"]);
    git(
        dir,
        &["commit", "-q", "-m", "hello from the package repository"],
    );
    git(dir, &["rev-parse", "HEAD"])
}

/// Starts a daemon and returns how long the rollout took to complete.
async fn run_serve(config_text: &str, base: &Path) -> (Daemon, Duration) {
    let config = Config::parse("kudo.yaml", config_text, base).expect("config");
    let options = Options {
        observe_interval: Duration::from_millis(200),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_millis(200),
        debounce: Duration::from_millis(50),
        ..Default::default()
    };
    let started = Instant::now();
    let daemon = Daemon::start(config, options).await.expect("daemon");
    let shared = daemon.shared.clone();
    eventually("the rollout to complete", || {
        let doc = shared.status();
        let errors: Vec<String> = doc
            .repositories
            .iter()
            .flat_map(|r| r.errors.clone())
            .collect();
        assert!(
            errors.iter().all(|e| !e.contains("spec.repository")),
            "{errors:?}"
        );
        doc.instances
            .iter()
            .any(|i| i.name == "hello" && i.rollout == State::Complete)
            .then_some(())
    })
    .await;
    (daemon, started.elapsed())
}

fn serve_config(work: &Path, fleet: &Path, pkgs: SocketAddr, sinks: &str) -> String {
    format!(
        "cacheDir: {cache}\nrepositories:\n  - name: fleet\n    url: file://{fleet}\n    interval: 1h\nclusters:\n  - name: east\n    sim: {{readyDelay: 100ms}}\n    labels: {{fleet: test}}\n  - name: west\n    sim: {{readyDelay: 100ms}}\n    labels: {{fleet: test}}\npackageRepositories:\n  - name: pkgs\n    url: http://{pkgs}/repo\n{sinks}",
        cache = work.join("cache").display(),
        fleet = fleet.display(),
    )
}

/// A package repository with hello 1.0.0, served on loopback.
async fn package_repo(work: &Path) -> SocketAddr {
    let home = work.join("home");
    let root = work.join("served");
    let pkgs = root.join("repo");
    std::fs::create_dir_all(&pkgs).expect("mkdir");
    create_tgz(&home, work, &pkgs, "1.0.0", "hello");
    ok(
        &kudo(&home, &["repo", "index", pkgs.to_str().expect("utf8")]),
        "repo index",
    );
    file_server(root).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_posts_commit_statuses_per_cluster_and_plan_events_in_order() {
    let work = tempfile::tempdir().expect("tmp");
    let pkgs = package_repo(work.path()).await;
    let fleet = work.path().join("fleet");
    let commit = fleet_repo(&fleet);
    let (api, api_seen) = recorder(vec![201]).await;
    std::fs::write(work.path().join("gh-token"), "s3cret\n").expect("token");
    let sinks = format!(
        "notifications:\n  sinks:\n    - name: github\n      github: {{apiUrl: 'http://{api}/gh', owner: acme, repo: fleet, tokenFile: gh-token}}\n    - name: hook\n      webhook: {{url: 'http://{api}/hook'}}\n      events: [planStarted, planComplete, planFatalError]\n      instances: ['apps/*']\n    - name: gitlab\n      gitlab: {{apiUrl: 'http://{api}/gl/api/v4', project: acme/fleet, tokenFile: gh-token}}\n      events: [planComplete]\n"
    );
    let text = serve_config(work.path(), &fleet, pkgs, &sinks);
    let (daemon, took) = run_serve(&text, work.path()).await;
    println!("serve with recording sinks: rollout complete after {took:?}");

    let status_path = format!("/gh/repos/acme/fleet/statuses/{commit}");
    let statuses = eventually("a success status for both clusters", || {
        let seen = api_seen.lock().expect("seen").clone();
        let gh: Vec<Recorded> = seen.into_iter().filter(|r| r.path == status_path).collect();
        let done = ["kudo/east", "kudo/west"].iter().all(|c| {
            gh.iter()
                .any(|r| r.body["context"] == *c && r.body["state"] == "success")
        });
        done.then_some(gh)
    })
    .await;
    for r in &statuses {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.headers.get("authorization").map(String::as_str),
            Some("Bearer s3cret")
        );
    }
    for c in ["kudo/east", "kudo/west"] {
        let states: Vec<&str> = statuses
            .iter()
            .filter(|r| r.body["context"] == c)
            .map(|r| r.body["state"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(states, ["pending", "success"], "{c}");
    }

    let gitlab_path = format!("/gl/api/v4/projects/acme%2Ffleet/statuses/{commit}");
    let gitlab = eventually("GitLab statuses for both clusters", || {
        let seen = api_seen.lock().expect("seen").clone();
        let gl: Vec<Recorded> = seen.into_iter().filter(|r| r.path == gitlab_path).collect();
        (gl.len() >= 2).then_some(gl)
    })
    .await;
    let mut names: Vec<&str> = gitlab
        .iter()
        .map(|r| r.body["name"].as_str().unwrap_or_default())
        .collect();
    names.sort();
    assert_eq!(names, ["kudo/east", "kudo/west"]);
    for r in &gitlab {
        assert_eq!(r.body["state"], "success");
        assert_eq!(
            r.headers.get("private-token").map(String::as_str),
            Some("s3cret")
        );
    }

    let hooks: Vec<Value> = eventually("plan events at the webhook", || {
        let seen = api_seen.lock().expect("seen").clone();
        let hooks: Vec<Value> = seen
            .into_iter()
            .filter(|r| r.path == "/hook")
            .map(|r| r.body)
            .collect();
        (hooks
            .iter()
            .filter(|h| h["event"] == "planComplete")
            .count()
            >= 2)
            .then_some(hooks)
    })
    .await;
    let order: Vec<String> = hooks
        .iter()
        .map(|h| {
            format!(
                "{} {} {}",
                h["cluster"].as_str().unwrap_or("-"),
                h["event"].as_str().unwrap_or("-"),
                h["plan"].as_str().unwrap_or("-")
            )
        })
        .collect();
    println!("webhook events: {order:?}");
    // Serial rollout: east's deploy runs and completes before west's starts.
    assert_eq!(
        order,
        [
            "east planStarted deploy",
            "east planComplete deploy",
            "west planStarted deploy",
            "west planComplete deploy"
        ]
    );
    for h in &hooks {
        assert_eq!(h["instance"], "apps/hello");
        assert_eq!(h["revision"], commit.as_str());
    }

    // A bad commit is refused: its commit gets an error status (context `kudo`), and the
    // plan-only webhook hears nothing of it.
    std::fs::write(fleet.join("instances/broken.yaml"), "kind: [\n").expect("write");
    git(&fleet, &["add", "-A"]);
    git(&fleet, &["commit", "-q", "-m", "broken"]);
    let bad = git(&fleet, &["rev-parse", "HEAD"]);
    daemon.shared.sync_now(None);
    let bad_path = format!("/gh/repos/acme/fleet/statuses/{bad}");
    let refused = eventually("an error status for the refused commit", || {
        let seen = api_seen.lock().expect("seen").clone();
        seen.into_iter().find(|r| r.path == bad_path)
    })
    .await;
    assert_eq!(refused.body["state"], "error");
    assert_eq!(refused.body["context"], "kudo");
    assert!(
        refused.body["description"]
            .as_str()
            .is_some_and(|d| d.contains("instances/broken.yaml")),
        "{:?}",
        refused.body
    );
    let hook_events = api_seen
        .lock()
        .expect("seen")
        .iter()
        .filter(|r| r.path == "/hook")
        .count();
    assert_eq!(hook_events, 4, "the webhook only wants plan events");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_sink_does_not_delay_plans() {
    let work = tempfile::tempdir().expect("tmp");
    let pkgs = package_repo(work.path()).await;
    let fleet = work.path().join("fleet");
    fleet_repo(&fleet);

    let (daemon, without) =
        run_serve(&serve_config(work.path(), &fleet, pkgs, ""), work.path()).await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );

    let work2 = tempfile::tempdir().expect("tmp");
    let (hang, connections) = hanging_server().await;
    let sinks = format!(
        "notifications:\n  queueSize: 2\n  sinks:\n    - name: hang\n      webhook: {{url: 'http://{hang}/hook'}}\n      timeout: 60s\n      retries: 0\n"
    );
    let (daemon, with) = run_serve(
        &serve_config(work2.path(), &fleet, pkgs, &sinks),
        work2.path(),
    )
    .await;
    println!(
        "rollout over 2 simulated clusters: without sinks {without:?}, with a hanging sink {with:?}"
    );
    // The sink was reached and is stuck on its first delivery; later events overflowed its
    // queue of 2 and were counted as dropped, while every plan completed.
    assert!(*connections.lock().expect("count") >= 1);
    let dropped = daemon
        .shared
        .notifier()
        .metrics()
        .dropped("hang", DropReason::queue_full);
    assert!(dropped >= 1, "events past the queue are dropped: {dropped}");
    assert_eq!(daemon.shared.notifier().metrics().delivered("hang"), 0);
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

// ---- hostile package repositories ----

/// An index whose digest is a path (64 characters, so it passes a length check) pointing at
/// a `.tgz` outside the cache: fetching must refuse the index and delete nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_that_is_a_path_is_refused() {
    use kudo::repo::{HttpOptions, RepoClient, RepoEntry};
    let work = tempfile::tempdir().expect("tmp");
    let cache = work.path().join("home/cache");
    std::fs::create_dir_all(cache.join("packages")).expect("mkdir");
    let victim = work.path().join("victim.tgz");
    std::fs::write(&victim, b"precious").expect("victim");
    // cache/packages/<digest>.tgz with <digest> = ././…/../../../victim
    let tail = "../../../victim";
    let pad = 64 - tail.len();
    let digest = format!("{}{}{tail}", "./".repeat(pad / 2), "/".repeat(pad % 2));
    assert_eq!(digest.len(), 64);
    let served = work.path().join("served");
    std::fs::create_dir_all(&served).expect("mkdir");
    std::fs::write(served.join("hello-0.1.0.tgz"), b"not the victim").expect("tgz");
    std::fs::write(
        served.join("index.yaml"),
        format!(
            "apiVersion: v1\nentries:\n  hello:\n  - name: hello\n    operatorVersion: 0.1.0\n    urls: [hello-0.1.0.tgz]\n    digest: '{digest}'\n"
        ),
    )
    .expect("index");
    let (addr, _) = file_server(served).await;
    let entry = RepoEntry {
        name: "hostile".into(),
        url: format!("http://{addr}"),
        ca_file: None,
    };
    let client = RepoClient::new(
        &entry,
        &cache,
        HttpOptions {
            retries: 0,
            ..Default::default()
        },
    )
    .expect("client");
    let result = async {
        let index = client.index().await?;
        let pv = index.resolve("hostile", "hello", None, None)?.clone();
        client.download(&pv).await
    }
    .await;
    let e = result.expect_err("a path digest is refused").to_string();
    assert_eq!(
        std::fs::read(&victim).ok().as_deref(),
        Some(&b"precious"[..]),
        "the file outside the cache survives ({e})"
    );
    assert!(
        e.contains(&format!("http://{addr}/index.yaml")) && e.contains("digest"),
        "{e}"
    );
}

/// Log lines of this thread, for tests that check what is (not) logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// A Slack webhook URL is a secret: a delivery failing with 500 is logged with the sink's
/// name, the status and `scheme://host/…` only.
#[tokio::test]
async fn slack_url_is_not_logged_when_delivery_fails() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    // The current-thread runtime runs the sink worker on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let (addr, seen) = recorder(vec![500]).await;
    let secret = "T000SECRET/B000SECRET/XXXXSECRET";
    let text = format!(
        "sinks:\n- name: chat\n  slack: {{url: 'http://{addr}/services/{secret}'}}\n  backoff: 10ms\n  retries: 1\n"
    );
    let value: Value = serde_saphyr::from_str(&text).expect("yaml");
    let config: NotifyConfig =
        kudo::notify::config::parse(Some(&value), Path::new("/")).expect("config");
    let mut registry = prometheus_client::registry::Registry::default();
    let notifier = Notifier::start(&config, &mut registry);
    notifier.emit(Event::new(EventKind::PlanFatalError, "FATAL_ERROR", "boom").cluster("c1"));
    eventually("the failed delivery to be counted", || {
        (notifier.metrics().dropped("chat", DropReason::gave_up) == 1).then_some(())
    })
    .await;
    assert_eq!(seen.lock().expect("seen").len(), 2, "tried twice");
    let logged = String::from_utf8_lossy(&logs.0.lock().expect("log")).to_string();
    assert!(
        logged.contains("chat") && logged.contains("500"),
        "the failure is logged: {logged}"
    );
    assert!(
        !logged.contains("SECRET") && !logged.contains("/services"),
        "the sink URL's path is not logged: {logged}"
    );
    assert!(logged.contains(&format!("http://{addr}/…")), "{logged}");

    // The error of the HTTP client used for sinks says the same.
    let client = kudo::repo::http::HttpClient::new(kudo::repo::http::HttpOptions {
        retries: 0,
        redact_urls: true,
        ..Default::default()
    })
    .expect("client");
    let url = format!("http://{addr}/services/{secret}");
    let e = client
        .send(&kudo::repo::http::Request::post_json(&url, &Value::Null))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("500") && !e.contains("SECRET"), "{e}");
    // Nothing listening: the transport error hides the path too.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/services/{secret}");
    let e = client
        .send(&kudo::repo::http::Request::post_json(&url, &Value::Null))
        .await
        .unwrap_err()
        .to_string();
    assert!(!e.contains("SECRET"), "{e}");
}
