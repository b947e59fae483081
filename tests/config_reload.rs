//! Issue 21: kudo.yaml reloads without a restart, in a real `kudo serve` process: on file
//! change and on SIGHUP; clusters added, relabelled and removed; a reload with errors (a bad
//! maintenance window, a change that needs a restart) is refused whole and the running
//! config stays.

#[path = "support/gitfleet.rs"]
mod gitfleet;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use gitfleet::*;
use serde_json::Value;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET path` on the daemon; None while it does not answer.
fn get_json(port: u16, path: &str) -> Option<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (_, body) = out.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn kudo_yaml(repo_url: &str, cache: &Path, clusters: &str, extra: &str) -> String {
    format!(
        "repositories:\n  - {{name: a, url: {repo_url}, interval: 1s}}\ncacheDir: {}\n{extra}clusters:\n{clusters}",
        cache.display()
    )
}

const SIM: &str = "sim: {readyDelay: 50ms}";

fn cluster(name: &str, labels: &str) -> String {
    format!("  - {{name: {name}, {SIM}, labels: {{{labels}}}}}\n")
}

/// Cluster names in the status, and per target cluster the instance's progress state.
fn view(status: &Value) -> (Vec<String>, Vec<(String, String)>) {
    let clusters = status["clusters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let progress = status["instances"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|i| i["clusters"].as_object())
        .map(|m| {
            m.iter()
                .map(|(c, v)| {
                    (
                        c.clone(),
                        v["progress"]["state"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    (clusters, progress)
}

async fn wait_status(serve: &Serve, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let result = tokio::time::timeout(std::time::Duration::from_secs(90), async {
        loop {
            if let Some(s) = get_json(serve.port, "/api/v1/status") {
                if ok(&s) {
                    return s;
                }
                last = s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    match result {
        Ok(s) => s,
        Err(_) => panic!(
            "timed out: {what}\nlast status: {last:#}\nlogs:\n{}",
            serve.logs()
        ),
    }
}

fn complete_on(progress: &[(String, String)], names: &[&str]) -> bool {
    progress.len() == names.len()
        && names
            .iter()
            .all(|n| progress.iter().any(|(c, p)| c == n && p == "complete"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kudo_yaml_reloads_on_change_and_on_sighup_and_a_bad_one_is_refused_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = Repo::new(dir.path(), "a");
    write_store(&repo);
    repo.write("instances/db.yaml", &instance_doc("db", "apps", &[], ""));
    repo.commit("db on fleet=test");
    let cache = dir.path().join("cache");
    // kudo.yaml is a symlink to a file in another folder: editing that file is no change
    // of the watched folder, so only SIGHUP reloads it (as with a file edited elsewhere).
    let conf_dir = dir.path().join("conf");
    let real_dir = dir.path().join("real");
    std::fs::create_dir_all(&conf_dir).expect("mkdir");
    std::fs::create_dir_all(&real_dir).expect("mkdir");
    let real = real_dir.join("kudo.yaml");
    let config = conf_dir.join("kudo.yaml");
    let url = repo.url();
    let write = |path: &Path, text: &str| std::fs::write(path, text).expect("write");
    write(
        &real,
        &kudo_yaml(
            &url,
            &cache,
            &format!(
                "{}{}",
                cluster("a", "fleet: test"),
                cluster("b", "other: x")
            ),
            "",
        ),
    );
    std::os::unix::fs::symlink(&real, &config).expect("symlink");
    let port = free_port();
    let log = dir.path().join("serve.log");
    let child = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(std::fs::File::create(dir.path().join("serve.err")).expect("log"))
        .spawn()
        .expect("kudo serve starts");
    let serve = Serve { child, port, log };
    wait_status(&serve, "db complete on a only", |s| {
        complete_on(&view(s).1, &["a"])
    })
    .await;

    // SIGHUP: b gains the label and c joins; the instance is placed on both.
    write(
        &real,
        &kudo_yaml(
            &url,
            &cache,
            &format!(
                "{}{}{}",
                cluster("a", "fleet: test"),
                cluster("b", "fleet: test"),
                cluster("c", "fleet: test")
            ),
            "",
        ),
    );
    let pid = serve.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let s = wait_status(&serve, "db complete on a, b and c", |s| {
        complete_on(&view(s).1, &["a", "b", "c"])
    })
    .await;
    assert_eq!(view(&s).0, vec!["a", "b", "c"]);
    assert_eq!(s["config"]["applied"], 1, "{:#}", s["config"]);
    let changes = s["config"]["changes"].to_string();
    assert!(
        changes.contains("cluster added: c") && changes.contains("cluster labels changed: b"),
        "{changes}"
    );

    // On file change (the symlink replaced by a file in the watched folder): a bad window
    // on c refuses the whole file, naming the cluster; everything keeps running.
    std::fs::remove_file(&config).expect("rm symlink");
    write(
        &config,
        &kudo_yaml(
            &url,
            &cache,
            &format!(
                "{}{}  - {{name: c, {SIM}, labels: {{fleet: test}}, windows: [{{schedule: 'not a cron', duration: 1h}}]}}\n",
                cluster("a", "fleet: test"),
                cluster("b", "fleet: test"),
            ),
            "",
        ),
    );
    let s = wait_status(&serve, "the bad window refused", |s| {
        s["config"]["error"].as_str().is_some()
    })
    .await;
    let error = s["config"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("clusters[2]") || error.contains("cluster c"),
        "{error}"
    );
    assert!(error.contains("not a cron"), "{error}");
    assert_eq!(s["config"]["applied"], 1);
    assert_eq!(view(&s).0, vec!["a", "b", "c"]);
    // A change that needs a restart is refused too, saying so.
    write(
        &config,
        &kudo_yaml(
            &url,
            &cache,
            &cluster("a", "fleet: test"),
            "controlPlane: other\n",
        ),
    );
    let s = wait_status(&serve, "controlPlane change refused", |s| {
        s["config"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("controlPlane changed"))
    })
    .await;
    assert!(
        s["config"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("restart"),
        "{:#}",
        s["config"]
    );
    assert_eq!(view(&s).0, vec!["a", "b", "c"]);

    // A good file: c leaves (forgotten, nothing deleted on it), b loses the label.
    write(
        &config,
        &kudo_yaml(
            &url,
            &cache,
            &format!(
                "{}{}",
                cluster("a", "fleet: test"),
                cluster("b", "fleet: test")
            ),
            "",
        ),
    );
    let s = wait_status(&serve, "c removed", |s| s["config"]["applied"] == 2).await;
    assert_eq!(view(&s).0, vec!["a", "b"], "{:#}", s["config"]);
    assert!(s["config"]["error"].is_null(), "{:#}", s["config"]);
    let s = wait_status(&serve, "db complete on a and b", |s| {
        complete_on(&view(s).1, &["a", "b"])
    })
    .await;
    let metrics = {
        let mut st = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        st.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut out = String::new();
        st.read_to_string(&mut out).expect("read");
        out
    };
    assert!(
        metrics.contains("kudo_config_reloads_total{result=\"applied\"} 2")
            && metrics.contains("kudo_config_reloads_total{result=\"refused\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("kudo_cluster_up{cluster=\"c\"}"),
        "{metrics}"
    );
    assert_eq!(view(&s).0, vec!["a", "b"]);
}
