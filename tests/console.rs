//! Issue 22: the web console in a real browser (Debian's headless Chromium over WebDriver)
//! against real `kudo serve` processes with real Git repositories and simulated clusters.
//! Screenshots of every page go to `target/test-artifacts/console/`; with
//! `KUDO_UPDATE_DOCS=1` the fleet page's is also written to `docs/console.png` (the README's).

#[path = "support/browser.rs"]
mod browser;
#[path = "support/gitfleet.rs"]
mod gitfleet;

use std::path::{Path, PathBuf};

use browser::{Browser, Serve, free_port};
use gitfleet::{Repo, git};
use serde_json::Value;

/// A framework whose deploy plan waits for a Deployment (ready after the cluster's
/// `readyDelay`), so a plan is IN_PROGRESS long enough to be seen.
fn write_web(repo: &Repo) {
    let base = "frameworks/web/1.0.0";
    repo.write(
        &format!("{base}/operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: web\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {name: app, kind: Apply, spec: {resources: [deployment.yaml]}}\n  - {name: check, kind: Apply, spec: {resources: [check.yaml]}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - {name: app, tasks: [app]}\n  smoke:\n    strategy: serial\n    phases:\n      - name: smoke\n        strategy: serial\n        steps:\n          - {name: check, tasks: [check]}\n",
    );
    repo.write(
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: VERSION, default: \"1\"}\n  - {name: PASSWORD, default: \"hunter2\", sensitive: true}\n",
    );
    repo.write(
        &format!("{base}/templates/deployment.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Name }}\n  annotations: {version: \"{{ .Params.VERSION }}\"}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: {{ .Name }}}}\n  template:\n    metadata: {labels: {app: {{ .Name }}}, annotations: {version: \"{{ .Params.VERSION }}\"}}\n    spec:\n      containers:\n        - {name: web, image: \"nginx:{{ .Params.VERSION }}\"}\n",
    );
    repo.write(
        &format!("{base}/templates/check.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-smoke\ndata: {ok: \"true\"}\n",
    );
}

fn web_instance(version: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: db\n  namespace: apps\nspec:\n  framework: web\n  version: 1.0.0\n  parameters:\n    VERSION: \"{version}\"\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: test}}\n"
    )
}

/// A Git repository with the web framework and instance `apps/db`, and a kudo.yaml with
/// clusters `a` and `b` (`readyDelay` each).
fn setup(dir: &Path, ready: &str, extra: &str) -> (Repo, PathBuf) {
    let repo = Repo::new(dir, "git");
    write_web(&repo);
    repo.write("instances/db.yaml", &web_instance("1"));
    repo.commit("apps/db on the test fleet");
    let config = dir.join("kudo.yaml");
    std::fs::write(
        &config,
        format!(
            "repositories:\n  - {{name: main, url: {}, interval: 1s}}\ncacheDir: {}\n{extra}clusters:\n  - {{name: a, sim: {{readyDelay: {ready}}}, labels: {{fleet: test, env: prod}}}}\n  - {{name: b, sim: {{readyDelay: {ready}}}, labels: {{fleet: test, env: dev}}}}\n",
            repo.url(),
            dir.join("cache").display()
        ),
    )
    .expect("kudo.yaml");
    (repo, config)
}

fn cell_status(cluster: &str, key: &str) -> String {
    format!(
        "const c = document.getElementById('cell:{cluster}|{key}'); return c ? c.dataset.status : null;"
    )
}

/// Waits until the matrix cell of `key` on `cluster` shows `status`.
async fn wait_cell(b: &Browser, cluster: &str, key: &str, status: &str) {
    b.wait_js(
        &format!("{key} {status} on {cluster}"),
        &format!(
            "return (() => {{ {} }})() === '{status}'",
            cell_status(cluster, key)
        ),
    )
    .await;
}

/// What the matrix must show for an instance on a cluster, from the status API.
fn expected_status(progress: &Value) -> String {
    if let Some(s) = progress["detail"]["status"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        return s.to_string();
    }
    if progress["revision"].is_null() && progress["progress"]["state"] == "notApplied" {
        "NOT_APPLIED".into()
    } else {
        "PENDING".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_matrix_shows_every_instance_and_cluster_as_the_api_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copied = std::process::Command::new("cp")
        .args(["-r"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("repos-example"))
        .arg(dir.path())
        .status()
        .expect("cp");
    assert!(copied.success());
    let serve = Serve::start(dir.path(), None, free_port()).await;
    // The API settles first (the example's rollouts wait on an approval, so it stops
    // changing), then the page must show exactly what it says.
    let cells = |s: &Value| -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for i in s["instances"].as_array().into_iter().flatten() {
            let key = format!(
                "{}/{}",
                i["namespace"].as_str().unwrap_or(""),
                i["name"].as_str().unwrap_or("")
            );
            for (cluster, p) in i["clusters"].as_object().into_iter().flatten() {
                out.push((cluster.clone(), key.clone(), expected_status(p)));
            }
        }
        out
    };
    let mut expected = Vec::new();
    let mut stable = 0;
    let deadline = std::time::Instant::now() + browser::WAIT;
    while stable < 10 {
        let now = cells(&serve.status(None));
        assert!(
            std::time::Instant::now() < deadline,
            "the API never settled: {now:?}"
        );
        let settled = !now.is_empty()
            && now
                .iter()
                .all(|(_, _, s)| !matches!(s.as_str(), "IN_PROGRESS" | "PENDING"));
        stable = if settled && now == expected {
            stable + 1
        } else {
            0
        };
        expected = now;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(expected.len() >= 6, "{expected:?}");
    let b = Browser::start().await;
    b.goto(&serve.url("/")).await;
    b.wait_js(
        "the stream is live",
        "return document.getElementById('live').dataset.state === 'live'",
    )
    .await;
    for (cluster, key, status) in &expected {
        let shown = b.js(&cell_status(cluster, key)).await;
        assert_eq!(shown.as_str(), Some(status.as_str()), "{cluster} × {key}");
        let text = b
            .js(&format!(
                "return document.getElementById('cell:{cluster}|{key}').innerText"
            ))
            .await;
        assert!(
            text.as_str()
                .unwrap_or_default()
                .contains(&status.replace('_', " ")),
            "the status is written, not only coloured: {text}"
        );
    }
    let clusters = b
        .js("return document.querySelectorAll('#matrix tbody tr').length")
        .await;
    assert_eq!(clusters, 3, "dev, staging and prod");
    // Counts add up to the cells shown.
    let counted = b
        .js("return Array.from(document.querySelectorAll('#counts b')).reduce((n, b) => n + Number(b.textContent), 0)")
        .await;
    let targeted = b
        .js("return document.querySelectorAll('#matrix td:not([data-status=NOT_TARGETED])').length")
        .await;
    assert_eq!(counted, targeted);
    // Keyboard: the arrow keys move between cells; "/" focuses the search.
    let moved = b
        .js("const first = document.querySelector('#matrix tbody tr:nth-child(1) td a'); first.focus();
             first.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowDown', bubbles: true}));
             const a = document.activeElement;
             return a.closest('tr') === document.querySelector('#matrix tbody tr:nth-child(2)') && a.closest('td').cellIndex === first.closest('td').cellIndex")
        .await;
    assert_eq!(moved, true, "ArrowDown moves to the cell below");
    let searched = b
        .js("document.body.focus(); document.dispatchEvent(new KeyboardEvent('keydown', {key: '/', bubbles: true}));
             return document.activeElement.id")
        .await;
    assert_eq!(searched, "search");
    let shot = b.screenshot("fleet").await;
    // The theme switch (dark, then back).
    b.js("document.getElementById('theme').click(); return true")
        .await;
    let theme = b.js("return document.documentElement.dataset.theme").await;
    assert!(theme == "dark" || theme == "light", "{theme}");
    b.screenshot(&format!("fleet-{}", theme.as_str().unwrap_or("other")))
        .await;
    if std::env::var_os("KUDO_UPDATE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).expect("docs");
        std::fs::copy(&shot, docs.join("console.png")).expect("copy screenshot");
    }
    // A filter narrows the rows, and the instance page shows the rollout and plans.
    b.goto(&serve.url("/?label=env%3Dprod")).await;
    assert_eq!(
        b.js("return document.querySelectorAll('#matrix tbody tr').length")
            .await,
        1
    );
    let (_, first_key, _) = &expected[0];
    b.goto(&serve.url(&format!("/instances/{first_key}"))).await;
    let text = b.text().await;
    assert!(
        text.contains("Rollout") && text.contains("Plans") && text.contains("Applied objects"),
        "{text}"
    );
    b.screenshot("instance").await;
    b.goto(&serve.url("/clusters")).await;
    b.screenshot("clusters").await;
    b.goto(&serve.url("/revisions")).await;
    b.screenshot("revisions").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_commit_turns_cells_in_progress_then_complete_without_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, config) = setup(dir.path(), "3s", "");
    let serve = Serve::start(dir.path(), Some(&config), free_port()).await;
    let b = Browser::start().await;
    b.goto(&serve.url("/")).await;
    for c in ["a", "b"] {
        wait_cell(&b, c, "apps/db", "COMPLETE").await;
    }
    b.js("window.kudoMarker = 42; return true").await;
    repo.write("instances/db.yaml", &web_instance("2"));
    let rev = repo.commit("db: version 2");
    wait_cell(&b, "a", "apps/db", "IN_PROGRESS").await;
    b.screenshot("fleet-in-progress").await;
    for c in ["a", "b"] {
        b.wait_js(
            &format!("db complete on {c} at the new revision"),
            &format!(
                "const c = document.getElementById('cell:{c}|apps/db'); return c && c.dataset.status === 'COMPLETE' && c.querySelector('.rev').textContent.startsWith('{}')",
                &rev[..7]
            ),
        )
        .await;
    }
    assert_eq!(
        b.js("return window.kudoMarker").await,
        42,
        "the page never reloaded"
    );
    // The instance page shows the masked parameter and the applied Deployment.
    b.goto(&serve.url("/instances/apps/db")).await;
    let text = b.text().await;
    assert!(
        text.contains("Deployment apps/db") && text.contains("in sync"),
        "{text}"
    );
    assert!(
        !b.js("return document.documentElement.outerHTML")
            .await
            .to_string()
            .contains("hunter2")
    );
    // Pause and resume the rollout from the page (loopback, no token: actions are on).
    b.wait_js(
        "live",
        "return document.getElementById('live').dataset.state === 'live'",
    )
    .await;
    b.act("button[data-url$='/pause']", true).await;
    b.wait_js(
        "the rollout paused",
        "return document.querySelector('.paused') !== null && document.querySelector(\"button[data-url$='/resume']\") !== null",
    )
    .await;
    let status = serve.status(None);
    assert_eq!(
        status["instances"][0]["pausedBy"], "anonymous",
        "{status:#}"
    );
    b.act("button[data-url$='/resume']", true).await;
    b.wait_js(
        "the rollout resumed",
        "return document.querySelector('.paused') === null && document.querySelector(\"button[data-url$='/pause']\") !== null",
    )
    .await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_commit_shows_every_error_with_file_and_line_and_its_message_stays_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (repo, config) = setup(dir.path(), "100ms", "");
    let serve = Serve::start(dir.path(), Some(&config), free_port()).await;
    let b = Browser::start().await;
    b.goto(&serve.url("/revisions")).await;
    b.wait_js(
        "the revision applied",
        "return document.querySelector('.repo .st-complete') !== null",
    )
    .await;
    repo.write(
        "instances/db.yaml",
        &web_instance("1").replace("1.0.0", "9.9.9"),
    );
    let subject = "<script>document.title='pwned'</script> break db";
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "-q", "-m", subject]);
    let error = b
        .wait_js(
            "the refused revision's error with file and line",
            "const e = document.querySelector('.errors li'); return e && /instances\\/db\\.yaml:\\d+/.test(e.textContent) ? e.textContent : null",
        )
        .await;
    assert!(
        error.as_str().unwrap_or_default().contains("9.9.9"),
        "{error}"
    );
    let shown = b
        .js("return document.querySelector('.subject').textContent")
        .await;
    assert_eq!(
        shown.as_str(),
        Some(subject),
        "the commit message is shown as text"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('main script').length")
            .await,
        0
    );
    assert_ne!(b.js("return document.title").await, "pwned");
    b.screenshot("revisions-refused").await;
    // The last good revision keeps running: the matrix still shows db complete.
    b.goto(&serve.url("/")).await;
    assert_eq!(b.js(&cell_status("a", "apps/db")).await, "COMPLETE");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_cluster_shows_down_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_repo, config) = setup(dir.path(), "100ms", "");
    let serve = Serve::start(dir.path(), Some(&config), free_port()).await;
    let b = Browser::start().await;
    b.goto(&serve.url("/")).await;
    b.wait_js("b up", "const r = document.getElementById('row:b'); return r && r.querySelector('th').className === 'up'")
        .await;
    let (code, body) = serve
        .request(
            "POST",
            "/api/v1/clusters/b/faults",
            &[],
            r#"{"partitioned": true}"#,
        )
        .expect("faults");
    assert_eq!(code, 200, "{body}");
    let reason = b
        .wait_js(
            "b down with a reason",
            "const th = document.querySelector('#row\\\\:b th'); return th && th.className === 'down' ? th.querySelector('.reason').textContent : null",
        )
        .await;
    assert!(
        reason.as_str().unwrap_or_default().contains(':'),
        "category: message, got {reason}"
    );
    assert_eq!(
        b.js("return document.querySelector('#row\\\\:a th').className")
            .await,
        "up",
        "only b is down"
    );
    b.screenshot("fleet-partitioned").await;
    b.goto(&serve.url("/clusters")).await;
    let row = b
        .js("return document.getElementById('cluster:b').innerText")
        .await;
    assert!(row.as_str().unwrap_or_default().contains("down"), "{row}");
    // A cluster this daemon does not simulate is refused, naming the ones it does.
    let (code, body) = serve
        .request(
            "POST",
            "/api/v1/clusters/nope/faults",
            &[],
            r#"{"partitioned": true}"#,
        )
        .expect("faults");
    assert_eq!(code, 404);
    assert!(body.contains("\"a\"") && body.contains("\"b\""), "{body}");
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_nothing_shows_before_sign_in_and_a_plan_retry_needs_a_write_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("write.token"), "w-secret-0123456789\n").expect("token");
    std::fs::write(dir.path().join("read.token"), "r-secret-0123456789\n").expect("token");
    let tokens = format!(
        "apiTokens:\n  - {{name: ops, file: {}, role: write}}\n  - {{name: viewer, file: {}, role: read}}\n",
        dir.path().join("write.token").display(),
        dir.path().join("read.token").display()
    );
    // A long readyDelay keeps the deploy plan running, to cancel and retry it.
    let (_repo, config) = setup(dir.path(), "60s", &tokens);
    let serve = Serve::start(dir.path(), Some(&config), free_port()).await;
    let b = Browser::start().await;
    b.goto(&serve.url("/")).await;
    assert_eq!(b.path().await, "/login");
    let text = b.text().await;
    assert!(
        !text.contains("apps/db") && !text.contains("Fleet"),
        "{text}"
    );
    let (code, _) = serve.get("/api/v1/events").expect("events");
    assert_eq!(code, 401, "the event stream needs a token too");
    // A wrong token: the page says so and shows nothing else.
    b.js("document.getElementById('token').value = 'wrong'; document.querySelector('form.login').submit(); return true")
        .await;
    b.wait_js(
        "the refusal",
        "return document.getElementById('login-error')",
    )
    .await;
    let text = b.text().await;
    assert!(
        text.contains("That token is not valid") && !text.contains("apps/db"),
        "{text}"
    );
    // Actions without a token, or with a read token, are refused.
    let retry = "/api/v1/instances/apps/db/clusters/a/plans/retry";
    assert_eq!(
        serve.request("POST", retry, &[], "").map(|r| r.0),
        Some(401)
    );
    assert_eq!(
        serve
            .request(
                "POST",
                retry,
                &[("Authorization", "Bearer r-secret-0123456789")],
                ""
            )
            .map(|r| r.0),
        Some(403)
    );
    // Signed in with the write token, the fleet shows and the token is nowhere in the page.
    b.js("document.getElementById('token').value = 'w-secret-0123456789'; document.querySelector('form.login').submit(); return true")
        .await;
    b.wait_js("the fleet", "return document.getElementById('matrix')")
        .await;
    assert_eq!(b.path().await, "/");
    let html = b
        .js("return document.documentElement.outerHTML")
        .await
        .to_string();
    assert!(
        !html.contains("w-secret"),
        "the token never reaches the page"
    );
    assert!(!serve.logs().contains("w-secret"), "nor the log");
    assert_eq!(
        b.js("return document.cookie").await,
        "",
        "the session cookie is HttpOnly"
    );
    wait_cell(&b, "a", "apps/db", "IN_PROGRESS").await;
    // A write with the session cookie but without its CSRF header is refused.
    let posted = b
        .js("return fetch('/api/v1/instances/apps/db/clusters/a/plans/cancel', {method: 'POST', credentials: 'same-origin'}).then(r => r.status)")
        .await;
    assert_eq!(posted, 403);
    // Cancel, then retry, from the instance page, each confirmed first.
    b.goto(&serve.url("/instances/apps/db")).await;
    b.wait_js(
        "live",
        "return document.getElementById('live').dataset.state === 'live'",
    )
    .await;
    b.act("#cluster-a button[data-url$='/plans/cancel']", false)
        .await;
    b.wait_js(
        "nothing done",
        "return document.getElementById('toast').textContent.includes('Nothing done')",
    )
    .await;
    b.act("#cluster-a button[data-url$='/plans/cancel']", true)
        .await;
    b.wait_js(
        "cancelled",
        "return document.getElementById('toast').textContent.startsWith('Done')",
    )
    .await;
    b.goto(&serve.url("/")).await;
    wait_cell(&b, "a", "apps/db", "CANCELLED").await;
    b.goto(&serve.url("/instances/apps/db")).await;
    b.act("#cluster-a button[data-url$='/plans/retry']", true)
        .await;
    b.wait_js(
        "retried",
        "return document.getElementById('toast').textContent.startsWith('Done')",
    )
    .await;
    b.screenshot("instance-retried").await;
    b.goto(&serve.url("/")).await;
    wait_cell(&b, "a", "apps/db", "IN_PROGRESS").await;
    let logs = serve.logs();
    assert!(
        logs.contains("plan action") && logs.contains("ops"),
        "actions are logged with the token's name"
    );
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_instance_is_a_404_page_and_the_page_reconnects_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_repo, config) = setup(dir.path(), "100ms", "");
    let port = free_port();
    let mut serve = Serve::start(dir.path(), Some(&config), port).await;
    let (code, _) = serve.get("/instances/apps/nope").expect("page");
    assert_eq!(code, 404);
    let b = Browser::start().await;
    b.goto(&serve.url("/instances/apps/nope")).await;
    let text = b.text().await;
    assert!(text.contains("No instance apps/nope"), "{text}");
    assert_eq!(
        b.js("return document.querySelector('main a[href=\"/\"]') !== null")
            .await,
        true
    );
    b.goto(&serve.url("/")).await;
    wait_cell(&b, "a", "apps/db", "COMPLETE").await;
    b.wait_js(
        "live",
        "return document.getElementById('live').dataset.state === 'live'",
    )
    .await;
    b.js("window.kudoMarker = 7; return true").await;
    serve.kill();
    let said = b
        .wait_js(
            "the page says it is reconnecting",
            "const l = document.getElementById('live'); return l.dataset.state === 'reconnecting' ? l.textContent : null",
        )
        .await;
    assert_eq!(said, "reconnecting…");
    b.screenshot("reconnecting").await;
    let serve = Serve::start(dir.path(), Some(&config), port).await;
    b.wait_js(
        "live again",
        "return document.getElementById('live').dataset.state === 'live'",
    )
    .await;
    wait_cell(&b, "a", "apps/db", "COMPLETE").await;
    assert_eq!(
        b.js("return window.kudoMarker").await,
        7,
        "reconnected without a reload"
    );
    drop(serve);
    b.close().await;
}
