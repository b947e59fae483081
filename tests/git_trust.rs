//! Git sync and its trust, end to end with real Git repositories (git CLI), `git daemon` and
//! real HTTP on 127.0.0.1: a remote that never answers, the webhook's secret and rate limit,
//! hooks against the failure backoff, branches moved back, and trust files that cannot be read.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kudo::gitops::config::Config;
use kudo::gitops::git::GitSource;
use kudo::gitops::serve::{Daemon, Options, RepoStatus, Shared, serve_http};
use kudo::gitops::webhook::github_signature;

const TIMEOUT: Duration = Duration::from_secs(90);

// ---- real Git repositories ----

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

/// A repository at `<dir>/fleet` with one commit (`git daemon` serves `<dir>`).
fn fleet(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("fleet");
    std::fs::create_dir_all(&path).expect("mkdir");
    git(&path, &["init", "-q", "-b", "main"]);
    (path.clone(), commit(&path, "first", None))
}

/// Commits a change (a new line in NOTES.md); signed with the SSH `key` or unsigned.
fn commit(repo: &Path, message: &str, key: Option<&Path>) -> String {
    let notes = repo.join("NOTES.md");
    let mut text = std::fs::read_to_string(&notes).unwrap_or_default();
    text.push_str(message);
    text.push('\n');
    std::fs::write(&notes, text).expect("write");
    git(repo, &["add", "-A"]);
    match key {
        Some(key) => git(
            repo,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("user.signingkey={}", key.display()),
                "commit",
                "-q",
                "-S",
                "-m",
                message,
            ],
        ),
        None => git(repo, &["commit", "-q", "-m", message]),
    };
    git(repo, &["rev-parse", "HEAD"])
}

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
    TcpListener::bind("127.0.0.1:0")
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
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "git daemon did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    GitDaemon { child, port }
}

/// A TCP server on 127.0.0.1 that accepts every connection and never says a word.
struct SilentServer {
    port: u16,
    accepted: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
    done: Arc<AtomicBool>,
}

impl SilentServer {
    fn start() -> SilentServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicBool::new(false));
        let (a, h, d) = (accepted.clone(), held.clone(), done.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if d.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(s) = stream {
                    a.fetch_add(1, Ordering::SeqCst);
                    h.lock().expect("held").push(s);
                }
            }
        });
        SilentServer {
            port,
            accepted,
            held,
            done,
        }
    }
}

impl Drop for SilentServer {
    /// Closes every held connection (a thread stuck reading one ends) and the listener.
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

// ---- the daemon ----

async fn start(config_text: &str, base: &Path) -> (Daemon, SocketAddr) {
    let config = Config::parse("kudo.yaml", config_text, base).expect("config");
    let options = Options {
        observe_interval: Duration::from_millis(200),
        probe_interval: Duration::from_secs(1),
        clock: Default::default(),
        engine_poll: Duration::from_millis(200),
        debounce: Duration::from_millis(100),
        ..Default::default()
    };
    let daemon = Daemon::start(config, options).await.expect("daemon starts");
    let (addr, _http) = serve_http(
        daemon.shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        async { std::future::pending::<()>().await },
    )
    .await
    .expect("http");
    (daemon, addr)
}

const CLUSTERS: &str = "clusters:\n  - {name: sim, sim: {}, labels: {fleet: sim}}\n";

fn repo_status(shared: &Shared, name: &str) -> RepoStatus {
    shared
        .status()
        .repositories
        .into_iter()
        .find(|r| r.name == name)
        .expect("repository in status")
}

/// Waits (syncing now on every look) until the repository's status satisfies `done`.
async fn wait_repo(
    shared: &Arc<Shared>,
    name: &str,
    what: &str,
    done: impl Fn(&RepoStatus) -> bool,
) -> RepoStatus {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = repo_status(shared, name);
        if done(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {r:?}"
        );
        shared.sync_now(Some(&[name.to_string()]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One HTTP/1.1 request; returns the status code and the whole response text.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
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
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    (code, out)
}

fn hook(addr: SocketAddr, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    http(addr, "POST", "/api/v1/hooks/git", headers, body)
}

/// `kudo_git_syncs_total` of one repository and result, from `/metrics`.
fn syncs(addr: SocketAddr, repo: &str, result: &str) -> u64 {
    let (code, text) = http(addr, "GET", "/metrics", &[], "");
    assert_eq!(code, 200, "{text}");
    let labels = [
        format!("repository=\"{repo}\""),
        format!("result=\"{result}\""),
    ];
    text.lines()
        .filter(|l| l.starts_with("kudo_git_syncs_total{"))
        .filter(|l| labels.iter().all(|x| l.contains(x.as_str())))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .map(|v| v as u64)
        .sum()
}

// ---- defect 9: a remote that never answers ----

/// A fetch from a remote that accepts and never answers ends with an error (libgit2's
/// timeouts: at most `DEFAULT_NETWORK_TIMEOUT` without a byte, lower when a daemon of this
/// process set it) instead of holding its thread forever.
#[test]
fn a_fetch_from_a_silent_remote_fails_instead_of_hanging() {
    let silent = SilentServer::start();
    let cache = tempfile::tempdir().expect("cache");
    let mut waiting = Vec::new();
    for url in [
        format!("http://127.0.0.1:{}/fleet.git", silent.port),
        format!("git://127.0.0.1:{}/fleet", silent.port),
        format!("ssh://git@127.0.0.1:{}/fleet.git", silent.port),
    ] {
        let repo = repository("silent", &url);
        let src = GitSource::new(
            &repo,
            &url,
            &cache.path().join(url.replace([':', '/'], "_")),
        );
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(src.sync());
        });
        waiting.push((url, rx));
    }
    let mut results = Vec::new();
    for (url, rx) in waiting {
        let result = rx
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("a fetch of {url} from a silent remote never returned"));
        let err = result.expect_err("a silent remote is an error");
        assert!(err.to_string().contains(&url), "{err}");
        results.push(err.to_string());
    }
    println!("silent remotes: {results:?}");
    assert!(silent.accepted.load(Ordering::SeqCst) >= 3);
}

fn repository(name: &str, url: &str) -> kudo::gitops::config::Repository {
    kudo::gitops::config::Repository {
        name: name.into(),
        source: kudo::gitops::config::Source::Git(url.into()),
        reference: Some("main".into()),
        path: String::new(),
        interval: Duration::from_secs(60),
        credentials: Default::default(),
        webhook_secret_file: None,
        max_deletions: kudo::gitops::config::DEFAULT_MAX_DELETIONS,
        verify: None,
        timeout: Duration::from_secs(1),
        allow_rollback: false,
    }
}

/// Repositories whose remotes accept and never answer (over http://, git:// and ssh://) fail
/// their syncs within their `timeout`, again and again with backoff, in status and metrics;
/// the daemon is ready meanwhile once another repository gave it a desired state (a stuck
/// repository shows in status, not in readiness).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_never_answers_fails_each_sync_within_its_timeout() {
    let silent = SilentServer::start();
    let work = tempfile::tempdir().expect("tempdir");
    let port = silent.port;
    // One good repository gives the daemon a desired state: without any, it cannot do its
    // job and is not ready (that is readiness's meaning, tested in tests/daemon_safety.rs).
    let good = work.path().join("good");
    std::fs::create_dir_all(good.join("instances")).expect("mkdir");
    let text = format!(
        "cacheDir: {cache}\nrepositories:\n  - {{name: good, url: {good}}}\n  - {{name: over-http, url: http://127.0.0.1:{port}/fleet.git, ref: main, interval: 1h, timeout: 1s}}\n  - {{name: over-git, url: git://127.0.0.1:{port}/fleet, ref: main, interval: 1h, timeout: 1s}}\n  - {{name: over-ssh, url: ssh://git@127.0.0.1:{port}/fleet.git, ref: main, interval: 1h, timeout: 1s}}\n{CLUSTERS}",
        cache = work.path().join("cache").display(),
        good = good.display(),
    );
    let (daemon, addr) = start(&text, work.path()).await;
    let shared = daemon.shared.clone();
    for name in ["over-http", "over-git", "over-ssh"] {
        let r = wait_repo(&shared, name, "two failed syncs", |r| {
            r.consecutive_failures >= 2
        })
        .await;
        assert!(
            r.revision.is_none() && r.applied_revision.is_none(),
            "{r:?}"
        );
        let errors = r.errors.join("\n");
        assert!(
            errors.contains(&format!("repository {name}")) || errors.contains("127.0.0.1"),
            "{errors}"
        );
        assert!(syncs(addr, name, "failed") >= 2, "{name}");
        println!("{name}: {errors}");
    }
    let (code, body) = http(addr, "GET", "/readyz", &[], "");
    assert_eq!(
        code, 200,
        "a stuck repository is not a readiness failure: {body}"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    drop(silent);
}

// ---- defect 11: the webhook ----

/// A repository whose webhook secret file becomes unreadable, or holds only whitespace,
/// refuses every hook (unsigned, an empty token, an HMAC made with an empty key) and says why
/// in its status; the restored secret works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_or_blank_webhook_secret_refuses_every_hook() {
    let work = tempfile::tempdir().expect("tempdir");
    let (repo, first) = fleet(work.path());
    let secret = work.path().join("hook-secret");
    std::fs::write(&secret, "s3cret\n").expect("secret");
    let text = format!(
        "cacheDir: {cache}\nrepositories:\n  - name: fleet\n    url: file://{repo}\n    ref: main\n    interval: 1h\n    webhookSecretFile: hook-secret\n{CLUSTERS}",
        cache = work.path().join("cache").display(),
        repo = repo.display(),
    );
    let (daemon, addr) = start(&text, work.path()).await;
    let shared = daemon.shared.clone();
    wait_repo(&shared, "fleet", "the first commit", |r| {
        r.applied_revision.as_deref() == Some(first.as_str())
    })
    .await;
    let body = r#"{"ref":"refs/heads/main"}"#;
    let empty_hmac = github_signature("", body.as_bytes());
    let attempts: [&[(&str, &str)]; 3] = [
        &[],
        &[("X-Gitlab-Token", "")],
        &[("X-Hub-Signature-256", empty_hmac.as_str())],
    ];

    std::fs::rename(&secret, work.path().join("moved-away")).expect("move the secret away");
    for headers in attempts {
        let (code, text) = hook(addr, headers, body);
        assert!(code == 401 || code == 503, "{headers:?} accepted: {text}");
    }
    let (code, text) = hook(addr, &[("X-Gitlab-Token", "")], body);
    assert_eq!(code, 503, "{text}");
    assert!(
        text.contains("the webhook secret of fleet is unavailable"),
        "{text}"
    );
    let r = repo_status(&shared, "fleet");
    let why = r.webhook_error.unwrap_or_default();
    assert!(
        why.contains("hook-secret") && why.contains("is unreadable"),
        "{why}"
    );

    std::fs::write(&secret, "  \n\t\n").expect("blank secret");
    for headers in attempts {
        let (code, text) = hook(addr, headers, body);
        assert!(code == 401 || code == 503, "{headers:?} accepted: {text}");
    }
    let why = repo_status(&shared, "fleet")
        .webhook_error
        .unwrap_or_default();
    assert!(why.contains("is empty"), "{why}");

    std::fs::write(&secret, "s3cret\n").expect("restore");
    let (code, text) = hook(
        addr,
        &[(
            "X-Hub-Signature-256",
            &github_signature("s3cret", body.as_bytes()),
        )],
        body,
    );
    assert_eq!(code, 202, "{text}");
    assert_eq!(repo_status(&shared, "fleet").webhook_error, None);
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// Past `webhook.ratePerMinute` (after the burst) the endpoint answers 429 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_requests_past_the_rate_limit_get_429() {
    let work = tempfile::tempdir().expect("tempdir");
    let (repo, _) = fleet(work.path());
    let text = format!(
        "cacheDir: {cache}\nwebhook: {{ratePerMinute: 1, burst: 3}}\nrepositories:\n  - {{name: fleet, url: 'file://{repo}', ref: main, interval: 1h}}\n{CLUSTERS}",
        cache = work.path().join("cache").display(),
        repo = repo.display(),
    );
    let (daemon, addr) = start(&text, work.path()).await;
    let started = Instant::now();
    let mut accepted = 0;
    let mut limited = Vec::new();
    for _ in 0..20 {
        let (code, text) = hook(addr, &[], "{}");
        match code {
            202 => accepted += 1,
            429 => limited.push(text),
            other => panic!("unexpected {other}: {text}"),
        }
    }
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    let allowed = 3 + minutes.ceil() as usize;
    assert!(
        accepted <= allowed,
        "{accepted} accepted, at most {allowed}"
    );
    assert!(accepted >= 1);
    assert_eq!(accepted + limited.len(), 20);
    let first = limited.first().expect("some requests are limited");
    assert!(
        first.to_ascii_lowercase().contains("retry-after:")
            && first.contains("more than 1 webhook requests per minute (burst 3)"),
        "{first}"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// 300 hooks against a repository whose remote fails do not cause 300 syncs: a hook never
/// skips the failure backoff, and hooks arriving meanwhile coalesce into one sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_storm_does_not_skip_the_failure_backoff() {
    let work = tempfile::tempdir().expect("tempdir");
    let closed = free_port();
    let text = format!(
        "cacheDir: {cache}\nwebhook: {{ratePerMinute: 1000000, burst: 1000000}}\nrepositories:\n  - {{name: down, url: 'git://127.0.0.1:{closed}/fleet', ref: main, interval: 1h}}\n{CLUSTERS}",
        cache = work.path().join("cache").display(),
    );
    let started = Instant::now();
    let (daemon, addr) = start(&text, work.path()).await;
    for _ in 0..300 {
        let (code, text) = hook(addr, &[], "{}");
        assert_eq!(code, 202, "{text}");
    }
    let r = wait_repo(&daemon.shared, "down", "a failed sync", |r| {
        r.consecutive_failures >= 1
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let attempts = syncs(addr, "down", "failed");
    // Backoff after the n-th failure is at least 0.9 × 2^(n-1) s: in `elapsed` seconds at
    // most 1 + log2(elapsed / 0.9 + 1) attempts fit (one more for the attempt in flight).
    let bound = 2 + (elapsed / 0.9 + 1.0).log2().floor() as u64;
    println!("300 hooks over {elapsed:.1}s: {attempts} sync attempts (bound {bound}); {r:?}");
    assert!(attempts >= 1);
    assert!(
        attempts <= bound,
        "{attempts} sync attempts in {elapsed:.1}s: hooks skipped the backoff"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

// ---- defect 12: a branch moved back ----

fn rollback_config(work: &Path, port: u16, reference: &str, allow: bool) -> String {
    format!(
        "cacheDir: {cache}\nrepositories:\n  - name: fleet\n    url: git://127.0.0.1:{port}/fleet\n    ref: {reference}\n    interval: 1h\n    allowRollback: {allow}\n{CLUSTERS}",
        cache = work.join("cache").display(),
    )
}

/// Applies the first commit, then a second on top of it (through a shallow git:// mirror).
async fn applied_two(shared: &Arc<Shared>, repo: &Path, first: &str) -> String {
    wait_repo(shared, "fleet", "the first commit", |r| {
        r.applied_revision.as_deref() == Some(first)
    })
    .await;
    let second = commit(repo, "second", None);
    let r = wait_repo(shared, "fleet", "the second commit", |r| {
        r.revision.as_deref() == Some(second.as_str())
    })
    .await;
    assert_eq!(
        r.applied_revision.as_deref(),
        Some(second.as_str()),
        "{r:?}"
    );
    assert!(r.errors.is_empty(), "{r:?}");
    second
}

/// A branch force-moved back to an older commit is refused, naming both commits, and stays
/// refused after a restart (the last applied commit is kept under cacheDir); so is history
/// rewritten past it. A commit on top of the last applied one is applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_moved_back_is_refused_even_after_a_restart() {
    let work = tempfile::tempdir().expect("tempdir");
    let (repo, first) = fleet(work.path());
    let remote = git_daemon(work.path());
    let text = rollback_config(work.path(), remote.port, "main", false);
    let (daemon, _) = start(&text, work.path()).await;
    let shared = daemon.shared.clone();
    let second = applied_two(&shared, &repo, &first).await;

    git(&repo, &["reset", "-q", "--hard", &first]);
    let refused = |r: &RepoStatus| {
        let errors = r.errors.join("\n");
        r.revision.as_deref() == Some(first.as_str())
            && errors.contains(&format!(
                "commit {first} does not descend from commit {second}"
            ))
            && errors.contains("allowRollback")
            && errors.contains("/applied/fleet-")
    };
    let r = wait_repo(&shared, "fleet", "the rollback refused", refused).await;
    assert_eq!(
        r.applied_revision.as_deref(),
        Some(second.as_str()),
        "last good keeps running"
    );
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );

    let (daemon, _) = start(&text, work.path()).await;
    let shared = daemon.shared.clone();
    let r = wait_repo(
        &shared,
        "fleet",
        "the rollback refused after a restart",
        refused,
    )
    .await;
    assert_eq!(r.applied_revision, None, "{r:?}");
    // History rewritten past the last applied commit: refused as well.
    let rewritten = commit(&repo, "rewritten", None);
    let r = wait_repo(&shared, "fleet", "the rewrite refused", |r| {
        r.revision.as_deref() == Some(rewritten.as_str())
    })
    .await;
    assert!(
        r.errors.join("\n").contains(&format!(
            "commit {rewritten} does not descend from commit {second}"
        )),
        "{r:?}"
    );
    // Back on top of the last applied commit: applied.
    git(&repo, &["reset", "-q", "--hard", &second]);
    let third = commit(&repo, "third", None);
    let r = wait_repo(&shared, "fleet", "the third commit", |r| {
        r.revision.as_deref() == Some(third.as_str())
    })
    .await;
    assert_eq!(r.applied_revision.as_deref(), Some(third.as_str()), "{r:?}");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// `allowRollback: true` applies a branch moved back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_rollback_applies_a_branch_moved_back() {
    let work = tempfile::tempdir().expect("tempdir");
    let (repo, first) = fleet(work.path());
    let remote = git_daemon(work.path());
    let text = rollback_config(work.path(), remote.port, "main", true);
    let (daemon, _) = start(&text, work.path()).await;
    let shared = daemon.shared.clone();
    applied_two(&shared, &repo, &first).await;
    git(&repo, &["reset", "-q", "--hard", &first]);
    let r = wait_repo(&shared, "fleet", "the older commit", |r| {
        r.revision.as_deref() == Some(first.as_str())
    })
    .await;
    assert_eq!(r.applied_revision.as_deref(), Some(first.as_str()), "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// Changing `ref` in kudo.yaml starts afresh: an older commit on the new ref is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_ref_starts_afresh() {
    let work = tempfile::tempdir().expect("tempdir");
    let (repo, first) = fleet(work.path());
    git(&repo, &["branch", "release", &first]);
    let remote = git_daemon(work.path());
    let (daemon, _) = start(
        &rollback_config(work.path(), remote.port, "main", false),
        work.path(),
    )
    .await;
    applied_two(&daemon.shared, &repo, &first).await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
    let (daemon, _) = start(
        &rollback_config(work.path(), remote.port, "release", false),
        work.path(),
    )
    .await;
    let r = wait_repo(&daemon.shared, "fleet", "the release branch", |r| {
        r.revision.as_deref() == Some(first.as_str())
    })
    .await;
    assert_eq!(r.applied_revision.as_deref(), Some(first.as_str()), "{r:?}");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

// ---- defect 13: a trust file that cannot be read ----

fn ssh_keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    key
}

/// An allowed-signers file that cannot be read fails the sync (retried with backoff); it is no
/// verdict on the commit, which is applied once the file is back, without a new push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_allowed_signers_file_is_retried_not_held_against_the_commit() {
    let work = tempfile::tempdir().expect("tempdir");
    let key = ssh_keygen(work.path(), "alice");
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    let signers = work.path().join("allowed_signers");
    std::fs::write(&signers, format!("alice@example.com {}", public.trim())).expect("write");
    let repo = work.path().join("fleet");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    let first = commit(&repo, "first", Some(&key));
    let text = format!(
        "cacheDir: {cache}\nrepositories:\n  - name: fleet\n    url: file://{repo}\n    ref: main\n    interval: 1h\n    verify: {{allowedSignersFile: allowed_signers}}\n{CLUSTERS}",
        cache = work.path().join("cache").display(),
        repo = repo.display(),
    );
    let (daemon, _) = start(&text, work.path()).await;
    let shared = daemon.shared.clone();
    let r = wait_repo(&shared, "fleet", "the first signed commit", |r| {
        r.applied_revision.as_deref() == Some(first.as_str())
    })
    .await;
    // The status (and the console's revisions page) names the commit and its verified signer.
    let applied = r.applied_commit.clone().expect("the applied commit");
    assert_eq!(applied.subject, "first");
    assert!(applied.author.contains('<'), "{applied:?}");
    assert!(
        applied
            .signer
            .as_deref()
            .is_some_and(|s| s.contains("alice")),
        "{applied:?}"
    );
    assert_eq!(r.commit, r.applied_commit);

    let away = work.path().join("allowed_signers.away");
    std::fs::rename(&signers, &away).expect("move away");
    let second = commit(&repo, "second", Some(&key));
    let r = wait_repo(&shared, "fleet", "a failed sync", |r| {
        r.consecutive_failures >= 1
    })
    .await;
    let errors = r.errors.join("\n");
    assert!(
        errors.contains("allowed signers file") && errors.contains("allowed_signers"),
        "{errors}"
    );
    assert_eq!(r.applied_revision.as_deref(), Some(first.as_str()));

    std::fs::rename(&away, &signers).expect("restore");
    let r = wait_repo(
        &shared,
        "fleet",
        "the second commit applied without a push",
        |r| r.applied_revision.as_deref() == Some(second.as_str()),
    )
    .await;
    assert!(r.errors.is_empty(), "{r:?}");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}
