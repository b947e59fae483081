//! Observability end to end: the alert rules under `promtool`, the Grafana dashboards'
//! shape, and the done-when test — `kudo serve` (simulated clusters, a real Git repository,
//! one unreachable cluster) scraped by a real Prometheus (Debian's, installed by
//! `scripts/prometheus`), with every query of every dashboard panel returning series.
#![allow(unsafe_code)] // signals to child processes / a counting allocator; each site has a SAFETY comment

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

#[path = "support/prom.rs"]
mod prom;
use prom::{Proc, free_port, prometheus_bin};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(150);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(prometheus_bin().join("promtool"))
        .args(args)
        .current_dir(root().join("deploy"))
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let check = promtool(&["check", "rules", "prometheus-rules.yaml"]);
    assert!(check.contains("SUCCESS: 6 rules found"), "{check}");
    let test = promtool(&["test", "rules", "prometheus-rules.test.yaml"]);
    assert!(test.contains("SUCCESS"), "{test}");
    // Every alert the issue asks for is there.
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus-rules.yaml")).expect("rules");
    for alert in [
        "KudoPlanStuck",
        "KudoPlanFatalError",
        "KudoClusterDown",
        "KudoGitSyncFailing",
        "KudoDesiredStateError",
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "{alert} missing"
        );
    }
}

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("dashboards")).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).expect("read");
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((path.display().to_string(), value));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every (dashboard, panel, expr).
fn panel_queries() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (_, d) in dashboards() {
        let title = d["title"].as_str().unwrap_or("").to_string();
        for p in d["panels"].as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    title.clone(),
                    p["title"].as_str().unwrap_or("").to_string(),
                    t["expr"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
    }
    out
}

#[test]
fn dashboards_are_importable_with_templated_variables() {
    let all = dashboards();
    let titles: Vec<&str> = all
        .iter()
        .map(|(_, d)| d["title"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(titles, ["kudo / Clusters", "kudo / GitOps", "kudo / Plans"]);
    for (file, d) in &all {
        let inputs = d["__inputs"].as_array().expect("__inputs");
        assert!(
            inputs
                .iter()
                .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
            "{file}: no DS_PROMETHEUS input"
        );
        assert!(
            d["id"].is_null(),
            "{file}: an importable dashboard has no id"
        );
        let vars: Vec<&str> = d["templating"]["list"]
            .as_array()
            .expect("templating")
            .iter()
            .map(|v| v["name"].as_str().unwrap_or(""))
            .collect();
        for wanted in ["cluster", "operator", "instance"] {
            assert!(vars.contains(&wanted), "{file}: no ${wanted} variable");
        }
        let mut ids = std::collections::BTreeSet::new();
        let panels = d["panels"].as_array().expect("panels");
        assert!(panels.len() >= 6, "{file}: {} panels", panels.len());
        for p in panels {
            let title = p["title"].as_str().unwrap_or("");
            assert!(
                ids.insert(p["id"].as_i64().expect("id")),
                "{file}: duplicate id"
            );
            assert_eq!(
                p["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{file}: {title}"
            );
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {title} has no query");
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or("");
                assert!(expr.contains("kudo_"), "{file}: {title}: {expr}");
            }
        }
    }
}

// ---- the done-when test ----

async fn get(url: &str) -> Result<(u16, String), String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| format!("{url}: no answer"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `check` until it gives a value or the deadline passes (then panics with `what` and
/// the last observation).
async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
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

fn write(dir: &Path, file: &str, text: &str) {
    let p = dir.join(file);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

/// A framework whose deploy plan applies a ConfigMap and runs a Job the workload simulator
/// fails when FAIL=true.
fn write_probe(repo: &Path) {
    let base = "frameworks/probe/1.0.0";
    write(
        repo,
        &format!("{base}/operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: probe\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {name: config, kind: Apply, spec: {resources: [config.yaml]}}\n  - {name: job, kind: Apply, spec: {resources: [job.yaml]}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - {name: config, tasks: [config]}\n          - {name: check, tasks: [job]}\n",
    );
    write(
        repo,
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: FAIL, type: boolean, default: false}\n",
    );
    write(
        repo,
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  fail: {{ .Params.FAIL | quote }}\n",
    );
    write(
        repo,
        &format!("{base}/templates/job.yaml"),
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Name }}-check\n  annotations:\n    sim.kudo.dev/fail: {{ .Params.FAIL | quote }}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: check\n          image: busybox\n",
    );
}

fn instance(name: &str, fail: bool) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  framework: probe\n  version: 1.0.0\n  parameters:\n    FAIL: {fail}\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: test}}\n    rollout: parallel\n"
    )
}

fn kudo(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(args)
        .env_remove("NO_COLOR")
        .output()
        .expect("kudo runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn progress_of(doc: &Value, instance: &str, cluster: &str) -> String {
    doc["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == instance)
        .and_then(|i| i["clusters"][cluster]["progress"]["state"].as_str())
        .unwrap_or("")
        .to_string()
}

/// Grafana's variables and interval macros, as a dashboard with "All" selected sends them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("${cluster}", ".*")
        .replace("$cluster", ".*")
        .replace("$operator", ".*")
        .replace("$instance", ".*")
        .replace("$repository", ".*")
}

async fn query(prom: &str, expr: &str) -> Result<Vec<Value>, String> {
    let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let (code, body) = get(&format!("{prom}/api/v1/query?query={q}")).await?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    if code != 200 || v["status"] != "success" {
        return Err(format!("HTTP {code}: {body}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_returns_series_from_a_real_prometheus() {
    // Installed before anything runs (on a fresh machine this is the slow part).
    prometheus_bin();
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("fleet");
    std::fs::create_dir(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    write_probe(&repo);
    write(&repo, "instances/good.yaml", &instance("good", false));
    write(&repo, "instances/bad.yaml", &instance("bad", true));
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "good and bad"]);

    // Two simulated clusters, and one nobody answers for (it is down from the start).
    let dead = format!("http://127.0.0.1:{}", free_port());
    std::fs::write(
        work.path().join("dead.kubeconfig"),
        kudo::sim::kubeconfig(&[("dead".to_string(), dead)]),
    )
    .expect("kubeconfig");
    let port = free_port();
    let server = format!("http://127.0.0.1:{port}");
    let config = format!(
        "listen: 127.0.0.1:{port}\ncacheDir: {cache}\nrepositories:\n  - name: fleet\n    url: file://{repo}\n    ref: main\n    interval: 2s\nclusters:\n  - name: sim-a\n    sim: {{readyDelay: 100ms}}\n    labels: {{fleet: test}}\n  - name: sim-b\n    sim: {{readyDelay: 100ms}}\n    labels: {{fleet: test}}\n  - name: dead\n    kubeconfig: dead.kubeconfig\n    labels: {{fleet: elsewhere}}\n",
        cache = work.path().join("cache").display(),
        repo = repo.display(),
    );
    std::fs::write(work.path().join("kudo.yaml"), config).expect("config");
    let log_path = work.path().join("serve.log");
    let mut serve = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_kudo"))
            .args(["serve", "-c", "kudo.yaml", "--log-format", "json"])
            .current_dir(work.path())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).expect("log"))
            .spawn()
            .expect("kudo serve starts"),
        what: "kudo serve",
    };

    // Ready after the first sync and the first probe of every cluster (the dead one too).
    wait_for("/readyz", async || {
        match get(&format!("{server}/readyz")).await? {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        }
    })
    .await;
    // The good instance completes on both clusters; the bad one fails on both.
    let doc = wait_for("plans to complete and to fail", async || {
        let (_, body) = get(&format!("{server}/api/v1/status")).await?;
        let doc: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let states: Vec<String> = ["good", "bad"]
            .iter()
            .flat_map(|i| ["sim-a", "sim-b"].map(|c| progress_of(&doc, i, c)))
            .collect();
        if states == ["complete", "complete", "failed", "failed"] {
            Ok(doc)
        } else {
            Err(format!("{states:?}"))
        }
    })
    .await;
    let dead_cluster = doc["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "dead"))
        .cloned()
        .expect("dead cluster in status");
    assert_eq!(dead_cluster["up"], false);
    assert!(
        dead_cluster["reason"]
            .as_str()
            .unwrap_or("")
            .starts_with("unreachable"),
        "{dead_cluster}"
    );
    let detail = &doc["instances"][0]["clusters"]["sim-a"]["detail"];
    assert!(
        detail["stepsTotal"] == 2,
        "plan detail in the status: {doc}"
    );

    // A commit with a bad file is refused: desired-state error, the last good one runs.
    write(
        &repo,
        "instances/broken.yaml",
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata: {name: broken, namespace: shop}\nspec: {framework: nope, version: 9.9.9, surprise: 1}\n",
    );
    git(&repo, &["add", "-A"]);
    let broken = git(&repo, &["commit", "-q", "-m", "broken"]);
    let _ = broken;
    wait_for("the broken revision to be refused", async || {
        let (_, body) = get(&format!("{server}/api/v1/status")).await?;
        let doc: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let errors = doc["repositories"][0]["errors"]
            .as_array()
            .map_or(0, Vec::len);
        if errors > 0 {
            Ok(())
        } else {
            Err(doc["repositories"].to_string())
        }
    })
    .await;

    // /metrics: the new families, and no error text as a label value.
    let (_, metrics) = get(&format!("{server}/metrics")).await.expect("/metrics");
    for line in [
        "kudo_cluster_up{cluster=\"dead\"} 0",
        "kudo_cluster_up{cluster=\"sim-a\"} 1",
        "kudo_desired_state_errors{repository=\"fleet\"} ",
        "kudo_rollout_clusters{namespace=\"shop\",instance=\"bad\",state=\"halted\"} 2",
        "kudo_rollout_clusters{namespace=\"shop\",instance=\"good\",state=\"complete\"} 2",
        "kudo_commit_to_converged_seconds_count{operator=\"probe\"}",
        "kudo_cluster_errors_total{cluster=\"dead\",category=\"unreachable\"}",
        "kudo_git_revision_info{repository=\"fleet\",revision=",
        // Known label values exist from the start: a healthy cluster's errors are 0, not absent.
        "kudo_cluster_errors_total{cluster=\"sim-a\",category=\"unreachable\"} 0",
        "kudo_cluster_errors_total{cluster=\"sim-a\",category=\"unknown-kind\"} 0",
        "kudo_reconcile_errors_total{cluster=\"sim-a\",category=\"write\"} 0",
        "kudo_reconcile_errors_total{cluster=\"sim-b\",category=\"panic\"} 0",
    ] {
        assert!(
            metrics.contains(line),
            "missing {line:?} in /metrics:\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("kudo_desired_state_errors{repository=\"fleet\"} 0"),
        "{metrics}"
    );
    let suspicious = kudo::metrics::suspicious_label_values(&metrics);
    assert!(
        suspicious.is_empty(),
        "unbounded label values: {suspicious:#?}"
    );

    // Logs: the reconcile span carries cluster, namespace, instance, plan, phase and step.
    let log = std::fs::read_to_string(&log_path).expect("log");
    let spanned = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            let s = &v["span"];
            s["name"] == "reconcile"
                && ["cluster", "namespace", "instance", "plan", "phase", "step"]
                    .iter()
                    .all(|f| s.get(*f).is_some())
        });
    assert!(
        spanned.is_some(),
        "no reconcile span with phase and step in:\n{log}"
    );

    // The views for people.
    let (ok, out, err) = kudo(&["status", "--server", &server]);
    assert!(ok, "{err}");
    assert!(
        !out.contains('\x1b'),
        "no colour when stdout is not a terminal:\n{out}"
    );
    assert!(out.contains("cluster dead: down (unreachable"), "{out}");
    let good_row = out
        .lines()
        .find(|l| l.starts_with("shop/good"))
        .unwrap_or_default();
    assert_eq!(good_row.matches("deploy COMPLETE").count(), 2, "{out}");
    let bad_row = out
        .lines()
        .find(|l| l.starts_with("shop/bad"))
        .unwrap_or_default();
    assert_eq!(bad_row.matches("deploy FATAL_ERROR").count(), 2, "{out}");
    let (ok, out, err) = kudo(&["status", "--server", &server, "-o", "json"]);
    assert!(ok, "{err}");
    let json: Value = serde_json::from_str(&out).expect("status -o json is JSON");
    assert_eq!(json["instances"].as_array().map(Vec::len), Some(2));
    let (ok, out, err) = kudo(&["plan", "status", "--instance", "good", "--server", &server]);
    assert!(ok, "{err}");
    for want in [
        "Cluster sim-a (up, rollout Complete, revision ",
        "Cluster sim-b (up, rollout Complete, revision ",
        "Plan deploy (serial strategy) [COMPLETE]",
        "Step check [COMPLETE]",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    let (ok, out, err) = kudo(&[
        "plan",
        "status",
        "--instance",
        "bad",
        "--server",
        &server,
        "--cluster",
        "sim-b",
        "--wait",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("Cluster sim-b (up, rollout Failed"), "{out}");
    assert!(
        !out.contains("Cluster sim-a"),
        "--cluster shows one cluster:\n{out}"
    );
    assert!(out.contains("Step check [FATAL_ERROR]"), "{out}");
    assert!(
        out.contains(
            "Plan deploy: 1/2 steps done on 1 cluster(s) [sim-b FATAL_ERROR main/check], elapsed "
        ),
        "{out}"
    );
    // Bad input is named.
    let (ok, _, err) = kudo(&["plan", "status", "--instance", "nope", "--server", &server]);
    assert!(!ok);
    assert!(
        err.contains(
            "instance \"nope\" is not in the desired state (instances: shop/bad, shop/good)"
        ),
        "{err}"
    );
    let (ok, _, err) = kudo(&[
        "plan",
        "status",
        "--instance",
        "good",
        "--server",
        &server,
        "--cluster",
        "dead",
    ]);
    assert!(!ok);
    assert!(
        err.contains("it is not placed on cluster \"dead\" (its clusters: sim-a, sim-b)"),
        "{err}"
    );
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let (ok, _, err) = kudo(&["status", "--server", &nobody]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "cannot reach the kudo server at {nobody}/api/v1/status"
        )),
        "{err}"
    );

    // A real Prometheus scrapes the daemon every second and loads the alert rules.
    let (_prometheus, prom) = prom::start(
        work.path(),
        &format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{}]\nscrape_configs:\n  - job_name: kudo\n    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
            root().join("deploy/prometheus-rules.yaml").display()
        ),
    );
    wait_for("Prometheus to scrape kudo", async || {
        let r = query(&prom, "up{job=\"kudo\"} == 1").await?;
        if r.is_empty() {
            Err("up != 1".into())
        } else {
            Ok(())
        }
    })
    .await;
    // A healthy cluster has every error category as a series at 0 from the first scrape, so
    // panels and `increase()` show 0 rather than "No data".
    let zeros = query(&prom, "kudo_cluster_errors_total{cluster=\"sim-a\"} == 0")
        .await
        .expect("query");
    assert_eq!(
        zeros.len(),
        kudo::cluster::ErrorKind::ALL.len(),
        "one zero series per error category: {zeros:?}"
    );
    let (_, rules) = get(&format!("{prom}/api/v1/rules")).await.expect("rules");
    let rules: Value = serde_json::from_str(&rules).expect("rules JSON");
    let groups = rules["data"]["groups"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(groups.len(), 3, "{rules}");

    // Every variable has values; every panel's every query returns series.
    let mut pending: Vec<(String, String, String)> = panel_queries();
    for (_, d) in dashboards() {
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            let q = v["query"]["query"].as_str().unwrap_or("");
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|s| s.strip_suffix(')'));
            let (metric, label) = inner
                .and_then(|s| s.rsplit_once(','))
                .expect("label_values(metric, label)");
            pending.push((
                d["title"].as_str().unwrap_or("").to_string(),
                format!("variable ${}", v["name"].as_str().unwrap_or("")),
                format!("count by ({}) ({})", label.trim(), metric.trim()),
            ));
        }
    }
    let total = pending.len();
    let deadline = Instant::now() + TIMEOUT;
    let mut last = std::collections::BTreeMap::new();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (dash, panel, expr) in pending {
            let q = substitute(&expr);
            match query(&prom, &q).await {
                Ok(r) if !r.is_empty() => {}
                other => {
                    last.insert(q.clone(), format!("{other:?}"));
                    still.push((dash, panel, expr));
                }
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let failures: Vec<String> = pending
        .iter()
        .map(|(d, p, e)| {
            let q = substitute(e);
            format!(
                "{d} / {p}: {q}\n    -> {}",
                last.get(&q).cloned().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "queries without series:\n{}",
        failures.join("\n")
    );
    println!("{total} dashboard queries and variables returned series");

    // Graceful shutdown on SIGTERM.
    let pid = serve.child.id() as i32;
    // SAFETY: signalling our own child process by its id.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_for("kudo serve to exit on SIGTERM", async || {
        match serve.child.try_wait() {
            Ok(Some(s)) => Ok(s),
            other => Err(format!("{}: {other:?}", serve.what)),
        }
    })
    .await;
    assert!(status.success(), "kudo serve exited with {status}");
}

/// `/readyz` stays 503 while a repository has never been read (its fetch fails), even with
/// every cluster probed; the failure is counted without its text as a label. Once the
/// repository exists and a sync is asked for, the daemon becomes ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_after_the_first_sync() {
    use kudo::gitops::config::Config;
    use kudo::gitops::serve::{Daemon, Options, serve_http};
    let work = tempfile::tempdir().expect("tempdir");
    // An empty directory: not a repository yet, so every fetch fails.
    let repo = work.path().join("later");
    std::fs::create_dir(&repo).expect("mkdir");
    let config_text = format!(
        "cacheDir: {}\nrepositories:\n  - name: later\n    url: file://{}\n    ref: main\n    interval: 1h\nclusters:\n  - name: only\n    sim: {{readyDelay: 100ms}}\n    labels: {{fleet: test}}\n",
        work.path().join("cache").display(),
        repo.display()
    );
    let config = Config::parse("kudo.yaml", &config_text, work.path()).expect("config");
    let daemon = Daemon::start(config, Options::default())
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
    let base = format!("http://{addr}");
    // The cluster is probed and the fetch failed: still not ready.
    wait_for("the cluster probe and the failed sync", async || {
        let doc = shared.status();
        let probed = doc.clusters.iter().all(|c| c.up);
        let failed = doc.repositories.iter().all(|r| r.consecutive_failures > 0);
        if probed && failed {
            Ok(())
        } else {
            Err(format!("{doc:?}"))
        }
    })
    .await;
    let (code, body) = get(&format!("{base}/readyz")).await.expect("readyz");
    assert_eq!((code, body.as_str()), (503, "not ready"));
    let (_, metrics) = get(&format!("{base}/metrics")).await.expect("metrics");
    let failed = "kudo_git_syncs_total{repository=\"later\",result=\"failed\"} ";
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix(failed))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(count >= 1.0, "{metrics}");
    assert!(
        kudo::metrics::suspicious_label_values(&metrics).is_empty(),
        "{metrics}"
    );
    // The repository appears; a sync now makes the daemon ready.
    git(&repo, &["init", "-q", "-b", "main"]);
    write_probe(&repo);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    shared.sync_now(None);
    wait_for("/readyz after the first sync", async || {
        match get(&format!("{base}/readyz")).await? {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        }
    })
    .await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}
