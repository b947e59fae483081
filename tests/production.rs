//! Running kudo in production, on real API servers (envtest): two `kudo serve` processes with
//! leader election, secrets kept out of every output, the deploy/ manifests and their RBAC.
#![allow(unsafe_code)] // signals to child processes / a counting allocator; each site has a SAFETY comment

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kudo::cluster::{Cluster, ObjectRef};
use serde_json::{Value, json};
use support::envtest;

const TIMEOUT: Duration = Duration::from_secs(120);

// ---- helpers ----

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One HTTP/1.1 request; returns (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(_) => return (0, String::new()),
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    // A server refusing a huge body may close early; the status line is still readable.
    let _ = s.write_all(&bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).to_string();
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// A `kudo serve` process; killed on drop. Its stdout and stderr go to files.
struct Serve {
    child: Child,
    port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Serve {
    fn start(dir: &Path, tag: &str, config: &Path, envs: &[(&str, &str)]) -> Serve {
        let port = free_port();
        let stdout = dir.join(format!("{tag}.stdout"));
        let stderr = dir.join(format!("{tag}.stderr"));
        let child = Command::new(env!("CARGO_BIN_EXE_kudo"))
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env(
                "RUST_LOG",
                "debug,kube=info,hyper=info,tower=info,rustls=info,h2=info",
            )
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("kudo serve starts");
        Serve {
            child,
            port,
            stdout,
            stderr,
        }
    }

    fn logs(&self) -> String {
        let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{out}{err}")
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(self.port, "GET", path, &[], b"")
    }

    fn leader_gauge(&self) -> Option<i64> {
        let (code, body) = self.get("/metrics");
        if code != 200 {
            return None;
        }
        body.lines()
            .find_map(|l| l.strip_prefix("kudo_leader "))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write(dir: &Path, file: &str, text: &str) {
    let path = dir.join(file);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

/// A framework whose deploy plan applies a ConfigMap (step `config`), then a Job (step
/// `check`) that only finishes when the test marks it complete.
fn write_two_step_framework(repo: &Path, extra_params: &str) {
    let base = "frameworks/twostep/1.0.0";
    write(
        repo,
        &format!("{base}/operator.yaml"),
        r#"apiVersion: kudo.dev/v1beta1
name: twostep
operatorVersion: 1.0.0
kubernetesVersion: 1.20.0
tasks:
  - {name: config, kind: Apply, spec: {resources: [config.yaml]}}
  - {name: job, kind: Apply, spec: {resources: [job.yaml]}}
plans:
  deploy:
    strategy: serial
    phases:
      - name: main
        strategy: serial
        steps:
          - {name: config, tasks: [config]}
          - {name: check, tasks: [job]}
"#,
    );
    write(
        repo,
        &format!("{base}/params.yaml"),
        &format!(
            "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {{name: MESSAGE, default: hello}}\n{extra_params}"
        ),
    );
    write(
        repo,
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  message: {{ .Params.MESSAGE | quote }}\n",
    );
    write(
        repo,
        &format!("{base}/templates/job.yaml"),
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {{ .Name }}-check\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: check\n          image: busybox\n",
    );
}

fn instance_doc(name: &str, namespace: &str, fleet: &str, params: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  framework: twostep\n  version: 1.0.0\n  parameters:\n    MESSAGE: hi\n{params}  placement:\n    clusterSelector:\n      matchLabels: {{fleet: {fleet}}}\n    rollout: parallel\n"
    )
}

async fn get_opt(cluster: &Cluster, api: &str, kind: &str, ns: &str, name: &str) -> Option<Value> {
    match cluster
        .get_opt(&ObjectRef::new(api, kind, Some(ns), name))
        .await
    {
        Ok(v) => v,
        // On a fresh environment kudo's CRDs appear only once the leader installed them.
        Err(e) if e.kind() == kudo::cluster::ErrorKind::UnknownKind => None,
        Err(e) => panic!("read object: {e}"),
    }
}

async fn lease_holder(cluster: &Cluster, ns: &str) -> Option<String> {
    get_opt(cluster, "coordination.k8s.io/v1", "Lease", ns, "kudo")
        .await
        .and_then(|l| {
            l.pointer("/spec/holderIdentity")?
                .as_str()
                .map(str::to_string)
        })
}

async fn plan(cluster: &Cluster, ns: &str, name: &str) -> Option<(String, String)> {
    let i = get_opt(cluster, "kudo.dev/v1beta1", "Instance", ns, name).await?;
    let p = i.pointer("/status/planStatus/deploy")?;
    Some((
        p.get("status")?.as_str()?.to_string(),
        p.get("uid")?.as_str()?.to_string(),
    ))
}

async fn complete_job(cluster: &Cluster, ns: &str, name: &str) {
    cluster
        .apply_status(&json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": ns},
            "status": {"succeeded": 1, "startTime": "2024-01-01T00:00:00Z",
                "completionTime": "2024-01-01T00:01:00Z",
                "conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .await
        .expect("mark the job complete");
}

// ---- leader election ----

/// Two replicas: one leads, the other stands by (logged once); killing the leader hands the
/// lease over within the lease duration, and the new leader finishes the plan without
/// running its finished step again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_hand_over_without_repeating_a_step() {
    let kubeconfig = envtest::kubeconfig();
    let mgmt = envtest::cluster(1).await;
    let managed = envtest::cluster(2).await;
    let lease_ns = envtest::unique("lease");
    let app_ns = envtest::unique("ha");
    mgmt.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lease_ns}}))
        .await
        .expect("lease namespace");

    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write_two_step_framework(&repo, "");
    write(
        &repo,
        "instances/ha.yaml",
        // selfHeal off: drift repair would also revert the edit below; only a re-run step may.
        &instance_doc("ha", &app_ns, "ha", "  selfHeal: false\n"),
    );
    let lease_duration = Duration::from_secs(4);
    let retry = Duration::from_millis(500);
    let config = dir.path().join("kudo.yaml");
    write(
        dir.path(),
        "kudo.yaml",
        &format!(
            "repositories:\n  - {{name: ha, url: {repo}, interval: 1s}}\nclusters:\n  - name: managed\n    kubeconfig: {kc}\n    context: envtest-2\n    labels: {{fleet: ha}}\nleaderElection:\n  kubeconfig: {kc}\n  context: envtest-1\n  namespace: {lease_ns}\n  name: kudo\n  leaseDuration: 4s\n  renewDeadline: 3s\n  retryPeriod: 500ms\n",
            repo = repo.display(),
            kc = kubeconfig.display(),
        ),
    );

    let a = Serve::start(dir.path(), "a", &config, &[("POD_NAME", "replica-a")]);
    let holder = wait_for("replica a to take the lease", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("replica-a-"))
    })
    .await;
    let b = Serve::start(dir.path(), "b", &config, &[("POD_NAME", "replica-b")]);
    wait_for("replica b to stand by", TIMEOUT, || async {
        (b.leader_gauge() == Some(0)).then_some(())
    })
    .await;
    assert_eq!(a.leader_gauge(), Some(1), "a leads: {}", a.logs());

    // A runs step `config`, then waits on the Job of step `check`.
    wait_for(
        "the leader to finish step config and start step check",
        TIMEOUT,
        || async {
            let inst = get_opt(&managed, "kudo.dev/v1beta1", "Instance", &app_ns, "ha").await?;
            let steps = inst.pointer("/status/planStatus/deploy/phases/0/steps")?;
            let step = |i: usize| steps.get(i)?.get("status")?.as_str().map(str::to_string);
            (step(0).as_deref() == Some("COMPLETE") && step(1).as_deref() == Some("IN_PROGRESS"))
                .then_some(())?;
            get_opt(&managed, "batch/v1", "Job", &app_ns, "ha-check").await
        },
    )
    .await;
    let (status, uid) = plan(&managed, &app_ns, "ha").await.expect("plan status");
    assert_eq!(status, "IN_PROGRESS");
    // Step `config` is done. Edit its ConfigMap: running the step again would revert this.
    managed
        .merge_patch(&json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ha-config", "namespace": app_ns}, "data": {"message": "edited"}}))
        .await
        .expect("edit the ConfigMap");
    // The standby stays standby, says so once and never reports the cluster as probed.
    wait_for("b's status to show the standby", TIMEOUT, || async {
        let (_, status_b) = b.get("/api/v1/status");
        status_b
            .contains("standby: another replica leads")
            .then_some(())
    })
    .await;
    assert_eq!(
        b.get("/readyz").0,
        200,
        "a standby with the desired state is ready"
    );

    let mut a = a;
    let killed = Instant::now();
    a.child.kill().expect("kill the leader");
    let _ = a.child.wait();
    let new_holder = wait_for("replica b to take the lease", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("replica-b-"))
    })
    .await;
    let handover = killed.elapsed();
    println!(
        "handover after the leader was killed: {handover:?} (lease {lease_duration:?}, retry {retry:?})"
    );
    assert_ne!(holder, new_holder);
    // Expiry counts on the standby's clock from its last sighting of a renewal (at most one
    // retry after it), then one more retry until its next attempt; 2s for slow machines.
    assert!(
        handover <= lease_duration + 2 * retry + Duration::from_secs(2),
        "handover took {handover:?}"
    );
    wait_for("b's kudo_leader to become 1", TIMEOUT, || async {
        (b.leader_gauge() == Some(1)).then_some(())
    })
    .await;

    complete_job(&managed, &app_ns, "ha-check").await;
    let (status, uid_after) = wait_for("the new leader to finish the plan", TIMEOUT, || async {
        plan(&managed, &app_ns, "ha")
            .await
            .filter(|(s, _)| s == "COMPLETE")
    })
    .await;
    assert_eq!(status, "COMPLETE");
    assert_eq!(uid, uid_after, "the same plan run continued, not a new one");
    let cm = get_opt(&managed, "v1", "ConfigMap", &app_ns, "ha-config")
        .await
        .expect("configmap");
    assert_eq!(
        cm.pointer("/data/message").and_then(Value::as_str),
        Some("edited"),
        "step config ran again after the handover: {cm}"
    );
    let standby_lines = b
        .logs()
        .lines()
        .filter(|l| l.contains("standby: another replica holds the lease"))
        .count();
    assert_eq!(standby_lines, 1, "standby logged once:\n{}", b.logs());
    drop(b);
    let _ = managed
        .delete(&ObjectRef::new("v1", "Namespace", None, &app_ns))
        .await;
    let _ = mgmt
        .delete(&ObjectRef::new("v1", "Namespace", None, &lease_ns))
        .await;
}

/// A framework whose deploy plan applies one ConfigMap: COMPLETE as soon as it exists.
fn write_one_step_framework(repo: &Path) {
    let base = "frameworks/onestep/1.0.0";
    write(
        repo,
        &format!("{base}/operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: onestep\noperatorVersion: 1.0.0\nkubernetesVersion: 1.20.0\ntasks:\n  - {name: config, kind: Apply, spec: {resources: [config.yaml]}}\nplans:\n  deploy:\n    strategy: serial\n    phases:\n      - name: main\n        strategy: serial\n        steps:\n          - {name: config, tasks: [config]}\n",
    );
    write(
        repo,
        &format!("{base}/params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters:\n  - {name: MESSAGE, default: hello}\n",
    );
    write(
        repo,
        &format!("{base}/templates/config.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  message: {{ .Params.MESSAGE | quote }}\n",
    );
}

/// An `onestep` Instance on cluster `managed` whose only stage waits for an approval.
fn approval_gated_doc(name: &str, namespace: &str, stage: &str, spec_extra: &str) -> String {
    format!(
        "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  framework: onestep\n  version: 1.0.0\n{spec_extra}  placement:\n    clusterSelector:\n      matchLabels: {{fleet: state}}\n    rollout:\n      stages:\n        - name: {stage}\n          clusters: [managed]\n          gates: [{{approval: {{}}}}]\n"
    )
}

/// The rollout of `namespace/name` in a replica's `/api/v1/status` (`{"state": ...}`).
fn rollout_of(serve: &Serve, namespace: &str, name: &str) -> Option<Value> {
    let (code, body) = serve.get("/api/v1/status");
    if code != 200 {
        return None;
    }
    let status: Value = serde_json::from_str(&body).ok()?;
    status
        .get("instances")?
        .as_array()?
        .iter()
        .find(|i| i["namespace"] == namespace && i["name"] == name)
        .map(|i| i["rollout"].clone())
}

fn is_waiting(rollout: &Value, stage: &str, gate: &str) -> bool {
    rollout["state"] == "waiting" && rollout["stage"] == stage && rollout["gate"] == gate
}

/// `POST /api/v1/rollouts/{namespace}/{name}/{action}` (loopback, no tokens: allowed).
fn rollout_action(serve: &Serve, key: &str, action: &str, body: &str) -> (u16, String) {
    http(
        serve.port,
        "POST",
        &format!("/api/v1/rollouts/{key}/{action}"),
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

/// The rollout state the leader keeps in ConfigMap `kudo-rollout-state` beside the Lease.
async fn rollout_state(mgmt: &Cluster, namespace: &str) -> Option<Value> {
    let cm = get_opt(mgmt, "v1", "ConfigMap", namespace, "kudo-rollout-state").await?;
    serde_json::from_str(cm.pointer("/data/rollout-state.json")?.as_str()?).ok()
}

/// Issue 21: approvals and pauses given to the leader survive a leader handover. Each replica
/// has its own cacheDir, so only the ConfigMap can carry them. `app` (approval-gated, and
/// depending on `dep` on the same cluster) is approved and `dep` paused through the leader's
/// API; the standby refuses rollout actions and still shows its stale view; after the leader
/// is killed, the new leader shows `dep` paused and `app` approved (waiting for `dep`, not for
/// an approval), has applied neither, and once `dep` is resumed and approved, `app` rolls out
/// without being approved again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_and_pauses_survive_a_leader_handover() {
    let kubeconfig = envtest::kubeconfig();
    let mgmt = envtest::cluster(1).await;
    let managed = envtest::cluster(2).await;
    let lease_ns = envtest::unique("lease");
    let app_ns = envtest::unique("state");
    mgmt.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lease_ns}}))
        .await
        .expect("lease namespace");

    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write_one_step_framework(&repo);
    write(
        &repo,
        "instances/dep.yaml",
        &approval_gated_doc("dep", &app_ns, "first", ""),
    );
    write(
        &repo,
        "instances/app.yaml",
        &approval_gated_doc(
            "app",
            &app_ns,
            "prod",
            &format!("  dependsOn:\n    - instance: {app_ns}/dep\n"),
        ),
    );
    let config = |tag: &str| {
        let file = format!("kudo-{tag}.yaml");
        write(
            dir.path(),
            &file,
            &format!(
                "cacheDir: {cache}\nrepositories:\n  - {{name: state, url: {repo}, interval: 1s}}\nclusters:\n  - name: managed\n    kubeconfig: {kc}\n    context: envtest-2\n    labels: {{fleet: state}}\nleaderElection:\n  kubeconfig: {kc}\n  context: envtest-1\n  namespace: {lease_ns}\n  name: kudo\n  leaseDuration: 4s\n  renewDeadline: 3s\n  retryPeriod: 500ms\n",
                cache = dir.path().join(format!("cache-{tag}")).display(),
                repo = repo.display(),
                kc = kubeconfig.display(),
            ),
        );
        dir.path().join(file)
    };
    let (dep, app) = (format!("{app_ns}/dep"), format!("{app_ns}/app"));

    let a = Serve::start(dir.path(), "a", &config("a"), &[("POD_NAME", "replica-a")]);
    wait_for("replica a to take the lease", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("replica-a-"))
    })
    .await;
    let b = Serve::start(dir.path(), "b", &config("b"), &[("POD_NAME", "replica-b")]);
    wait_for("replica b to stand by", TIMEOUT, || async {
        (b.leader_gauge() == Some(0)).then_some(())
    })
    .await;
    wait_for(
        "both rollouts to wait for their approval",
        TIMEOUT,
        || async {
            let d = rollout_of(&a, &app_ns, "dep")?;
            let p = rollout_of(&a, &app_ns, "app")?;
            (is_waiting(&d, "first", "approval") && is_waiting(&p, "prod", "approval"))
                .then_some(())
        },
    )
    .await;
    // A standby sees no cluster (it does not observe), so its rollouts show progressing.
    wait_for(
        "the standby to plan from the desired state",
        TIMEOUT,
        || async {
            rollout_of(&b, &app_ns, "dep")
                .filter(|d| d["state"] == "progressing" && d["waves"] == 1)
        },
    )
    .await;

    // A standby's change would be dropped when it next reads the state: refused.
    let (code, body) = rollout_action(&b, &dep, "pause", "");
    assert_eq!(code, 503, "a standby refuses rollout actions: {body}");
    assert!(body.contains("does not lead"), "{body}");

    let (code, body) = rollout_action(&a, &dep, "pause", "");
    assert_eq!(code, 200, "pause through the leader: {body}");
    let (code, body) = rollout_action(&a, &app, "approve", r#"{"stage": "prod"}"#);
    assert_eq!(code, 200, "approve through the leader: {body}");
    wait_for(
        "the leader to show dep paused and app approved (waiting for dep)",
        TIMEOUT,
        || async {
            let d = rollout_of(&a, &app_ns, "dep")?;
            let p = rollout_of(&a, &app_ns, "app")?;
            (d["state"] == "paused" && is_waiting(&p, "prod", "dependsOn")).then_some(())
        },
    )
    .await;
    let saved = wait_for(
        "the ConfigMap to hold the pause and the approval",
        TIMEOUT,
        || async {
            let s = rollout_state(&mgmt, &lease_ns).await?;
            (s.pointer(&format!("/pauses/{app_ns}~1dep/by")).is_some()
                && s.pointer(&format!("/rollouts/{app_ns}~1app/approvals/prod/by"))
                    .is_some())
            .then_some(s)
        },
    )
    .await;
    assert_eq!(
        saved.pointer(&format!("/rollouts/{app_ns}~1app/approvals/prod/by")),
        Some(&json!("anonymous")),
        "{saved}"
    );
    // The standby did not read it (its memory is as old as its start).
    let stale = rollout_of(&b, &app_ns, "dep").expect("standby status");
    assert_eq!(stale["state"], "progressing", "{stale}");

    let mut a = a;
    a.child.kill().expect("kill -9 the leader");
    let _ = a.child.wait();
    wait_for("replica b to take the lease", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("replica-b-"))
    })
    .await;
    wait_for(
        "the new leader to show dep paused and app approved",
        TIMEOUT,
        || async {
            let d = rollout_of(&b, &app_ns, "dep")?;
            let p = rollout_of(&b, &app_ns, "app")?;
            (d["state"] == "paused" && is_waiting(&p, "prod", "dependsOn")).then_some(())
        },
    )
    .await;
    assert_eq!(b.leader_gauge(), Some(1), "b leads: {}", b.logs());
    assert!(
        b.logs().contains("leading: rollout state read"),
        "{}",
        b.logs()
    );
    for name in ["dep", "app"] {
        assert!(
            get_opt(&managed, "kudo.dev/v1beta1", "Instance", &app_ns, name)
                .await
                .is_none(),
            "{name} reached the cluster through a pause or a missing approval"
        );
    }

    // Resume and approve dep on the new leader: app follows without a second approval.
    let (code, body) = rollout_action(&b, &dep, "resume", "");
    assert_eq!(code, 200, "resume through the new leader: {body}");
    assert!(body.contains(r#""changed":true"#), "{body}");
    wait_for("dep to wait for its approval again", TIMEOUT, || async {
        rollout_of(&b, &app_ns, "dep").filter(|d| is_waiting(d, "first", "approval"))
    })
    .await;
    let (code, body) = rollout_action(&b, &dep, "approve", r#"{"stage": "first"}"#);
    assert_eq!(code, 200, "approve dep through the new leader: {body}");
    for name in ["dep", "app"] {
        wait_for(
            &format!("{name} to complete on the cluster"),
            TIMEOUT,
            || async {
                plan(&managed, &app_ns, name)
                    .await
                    .filter(|(s, _)| s == "COMPLETE")
            },
        )
        .await;
    }
    wait_for("app's rollout to complete", TIMEOUT, || async {
        rollout_of(&b, &app_ns, "app").filter(|p| p["state"] == "complete")
    })
    .await;
    let saved = wait_for("the new leader to write the resume", TIMEOUT, || async {
        rollout_state(&mgmt, &lease_ns)
            .await
            .filter(|s| s.pointer(&format!("/pauses/{app_ns}~1dep")).is_none())
    })
    .await;
    assert!(
        saved
            .pointer(&format!("/rollouts/{app_ns}~1dep/approvals/first"))
            .is_some(),
        "{saved}"
    );
    for tag in ["a", "b"] {
        let file = dir.path().join(format!("cache-{tag}/rollout-state.json"));
        assert!(!file.exists(), "the state went to {}", file.display());
    }
    drop(b);
    let _ = managed
        .delete(&ObjectRef::new("v1", "Namespace", None, &app_ns))
        .await;
    let _ = mgmt
        .delete(&ObjectRef::new("v1", "Namespace", None, &lease_ns))
        .await;
}

/// Issue 21: a quarantined (reverted) spec stays quarantined across a leader handover. `q`
/// completes with MESSAGE=one, then MESSAGE=two reaches the cluster; the leader reverts it by
/// hand (the cluster gets "one" back); after the leader is killed, the new leader, which never
/// saw "one" complete, reads the quarantine from the ConfigMap and the good spec from the
/// cluster: it shows the rollout halted and reverted, and never applies "two" again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_revision_survives_a_leader_handover() {
    let kubeconfig = envtest::kubeconfig();
    let mgmt = envtest::cluster(1).await;
    let managed = envtest::cluster(2).await;
    let lease_ns = envtest::unique("lease");
    let app_ns = envtest::unique("quar");
    mgmt.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lease_ns}}))
        .await
        .expect("lease namespace");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write_one_step_framework(&repo);
    // "three" bakes an hour after it completes: its rollout is not complete when reverted.
    let doc = |message: &str| {
        let bake = if message == "three" {
            "    rollout:\n      stages:\n        - {name: all, clusters: [managed], gates: [{bake: 1h}]}\n"
        } else {
            ""
        };
        format!(
            "apiVersion: kudo.dev/v1beta1\nkind: Instance\nmetadata:\n  name: q\n  namespace: {app_ns}\nspec:\n  framework: onestep\n  version: 1.0.0\n  parameters:\n    MESSAGE: {message}\n  placement:\n    clusterSelector:\n      matchLabels: {{fleet: quar}}\n{bake}"
        )
    };
    write(&repo, "instances/q.yaml", &doc("one"));
    let config = |tag: &str| {
        let file = format!("kudo-{tag}.yaml");
        write(
            dir.path(),
            &file,
            &format!(
                "cacheDir: {cache}\nrepositories:\n  - {{name: quar, url: {repo}, interval: 1s}}\nclusters:\n  - name: managed\n    kubeconfig: {kc}\n    context: envtest-2\n    labels: {{fleet: quar}}\nleaderElection:\n  kubeconfig: {kc}\n  context: envtest-1\n  namespace: {lease_ns}\n  name: kudo\n  leaseDuration: 4s\n  renewDeadline: 3s\n  retryPeriod: 500ms\n",
                cache = dir.path().join(format!("cache-{tag}")).display(),
                repo = repo.display(),
                kc = kubeconfig.display(),
            ),
        );
        dir.path().join(file)
    };
    let key = format!("{app_ns}/q");
    let message = || async {
        get_opt(&managed, "kudo.dev/v1beta1", "Instance", &app_ns, "q")
            .await
            .and_then(|v| {
                v.pointer("/spec/parameters/MESSAGE")?
                    .as_str()
                    .map(str::to_string)
            })
    };
    let a = Serve::start(dir.path(), "a", &config("a"), &[("POD_NAME", "replica-a")]);
    wait_for("replica a to take the lease", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("replica-a-"))
    })
    .await;
    let b = Serve::start(dir.path(), "b", &config("b"), &[("POD_NAME", "replica-b")]);
    wait_for("q complete with one", TIMEOUT, || async {
        rollout_of(&a, &app_ns, "q").filter(|r| r["state"] == "complete")
    })
    .await;
    write(&repo, "instances/q.yaml", &doc("two"));
    wait_for("two on the cluster", TIMEOUT, || async {
        (message().await.as_deref() == Some("two")).then_some(())
    })
    .await;
    wait_for("the rollout of two to complete", TIMEOUT, || async {
        rollout_of(&a, &app_ns, "q").filter(|r| r["state"] == "complete")
    })
    .await;
    // "two" completed everywhere: it is the last good spec. "three" is the one reverted.
    write(&repo, "instances/q.yaml", &doc("three"));
    wait_for("three baking on the cluster", TIMEOUT, || async {
        rollout_of(&a, &app_ns, "q").filter(|r| is_waiting(r, "all", "bake"))
    })
    .await;
    assert_eq!(message().await.as_deref(), Some("three"));
    let (code, body) = rollout_action(&a, &key, "revert", "");
    assert_eq!(code, 200, "revert through the leader: {body}");
    wait_for("two back on the cluster", TIMEOUT, || async {
        (message().await.as_deref() == Some("two")).then_some(())
    })
    .await;
    wait_for("the quarantine in the ConfigMap", TIMEOUT, || async {
        rollout_state(&mgmt, &lease_ns).await.filter(|s| {
            s.pointer(&format!("/rollouts/{app_ns}~1q/reverted/by"))
                .is_some()
        })
    })
    .await;

    let mut a = a;
    a.child.kill().expect("kill -9 the leader");
    let _ = a.child.wait();
    wait_for("replica b to take the lease", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("replica-b-"))
    })
    .await;
    let r = wait_for(
        "the new leader to show q reverted and quarantined",
        TIMEOUT,
        || async {
            rollout_of(&b, &app_ns, "q").filter(|r| {
                r["state"] == "halted"
                    && r["reason"].as_str().is_some_and(|s| {
                        s.contains("quarantined") && s.contains("1 of 1 clusters on the good spec")
                    })
            })
        },
    )
    .await;
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("by anonymous"),
        "{r}"
    );
    // The new leader planned from the quarantine it read (a pass without it would have
    // shown the rollout progressing and applied "three"): the cluster keeps "two".
    assert_eq!(
        message().await.as_deref(),
        Some("two"),
        "the quarantined spec came back"
    );
    drop(b);
    let _ = managed
        .delete(&ObjectRef::new("v1", "Namespace", None, &app_ns))
        .await;
    let _ = mgmt
        .delete(&ObjectRef::new("v1", "Namespace", None, &lease_ns))
        .await;
}

// ---- secrets ----

fn git(dir: &Path, args: &[&str]) -> String {
    git_with_env(dir, &[], args)
}

fn git_with_env(dir: &Path, envs: &[(&str, &Path)], args: &[&str]) -> String {
    let out = Command::new("git")
        .envs(envs.iter().copied())
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=kudo-test",
            "-c",
            "user.email=test@kudo.invalid",
        ])
        .args(["-c", "commit.gpgsign=false"])
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

fn admin_token(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("envtest kubeconfig has a token")
        .trim()
        .to_string()
}

/// A full run: Git repository with a token file and a webhook secret, a cluster reached with
/// a kubeconfig holding a bearer token, an instance with sensitive parameters, a refused
/// revision whose error concerns a sensitive value, webhooks good and bad. No output of the
/// run (stdout, stderr at debug level, /metrics, /api/v1/status, HTTP answers) contains any
/// of the secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_appears_in_any_output() {
    let kubeconfig = envtest::kubeconfig();
    let managed = envtest::cluster(3).await;
    let app_ns = envtest::unique("leak");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "ghp-TOKEN-d41d8cd98f00b204e980";
    let hook_secret = "whsec-HOOK-8f14e45fceea167a";
    let password = "pw-SENSITIVE-c9f0f895fb98ab91";
    let pin = "918273645";
    let bad_pin = "pin-SENSITIVE-not-a-number";
    let kube_token = admin_token(kubeconfig);
    write(dir.path(), "secrets/token", &format!("{token}\n"));
    write(dir.path(), "secrets/hook", hook_secret);

    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    write_two_step_framework(
        &repo,
        "  - {name: PASSWORD, sensitive: true, default: none}\n  - {name: PIN, type: integer, sensitive: true, default: 0}\n",
    );
    let instance = |pin: &str| {
        instance_doc(
            "leak",
            &app_ns,
            "leak",
            &format!("    PASSWORD: {password}\n    PIN: \"{pin}\"\n"),
        )
    };
    // The sensitive value reaches a cluster object (that is its purpose) but no kudo output.
    write(
        &repo,
        "frameworks/twostep/1.0.0/templates/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Name }}-config\ndata:\n  message: {{ .Params.MESSAGE | quote }}\n  password: {{ .Params.PASSWORD | quote }}\n",
    );
    write(&repo, "instances/leak.yaml", &instance(pin));
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);

    write(
        dir.path(),
        "kudo.yaml",
        &format!(
            "cacheDir: {cache}\nrepositories:\n  - name: leak\n    url: file://{repo}\n    ref: main\n    interval: 1s\n    credentials: {{tokenFile: secrets/token}}\n    webhookSecretFile: secrets/hook\nclusters:\n  - name: managed\n    kubeconfig: {kc}\n    context: envtest-3\n    labels: {{fleet: leak}}\n",
            cache = dir.path().join("cache").display(),
            repo = repo.display(),
            kc = kubeconfig.display(),
        ),
    );
    let serve = Serve::start(
        dir.path(),
        "leak",
        &dir.path().join("kudo.yaml"),
        &[("RUST_LOG", "debug")],
    );
    let mut outputs = Vec::new();
    wait_for("step check to start", TIMEOUT, || async {
        get_opt(&managed, "batch/v1", "Job", &app_ns, "leak-check").await
    })
    .await;
    let cm = get_opt(&managed, "v1", "ConfigMap", &app_ns, "leak-config")
        .await
        .expect("configmap");
    assert_eq!(
        cm.pointer("/data/password").and_then(Value::as_str),
        Some(password),
        "the sensitive value is used"
    );
    complete_job(&managed, &app_ns, "leak-check").await;
    wait_for("the plan to complete", TIMEOUT, || async {
        plan(&managed, &app_ns, "leak")
            .await
            .filter(|(s, _)| s == "COMPLETE")
    })
    .await;

    // Webhooks: a good signature, a bad one, the secret itself sent as a GitLab token.
    let body = br#"{"ref":"refs/heads/main"}"#;
    let sig = kudo::gitops::webhook::github_signature(hook_secret, body);
    for headers in [
        vec![("X-Hub-Signature-256", sig.as_str())],
        vec![("X-Hub-Signature-256", "sha256=00")],
        vec![("X-Gitlab-Token", "wrong")],
    ] {
        let (code, answer) = http(serve.port, "POST", "/api/v1/hooks/git", &headers, body);
        outputs.push(format!("{code} {answer}"));
    }

    // A revision refused because of a sensitive value: the error names the parameter only.
    write(&repo, "instances/leak.yaml", &instance(bad_pin));
    git(&repo, &["commit", "-q", "-am", "two"]);
    let status = wait_for("the bad revision to be refused", TIMEOUT, || async {
        let (_, s) = serve.get("/api/v1/status");
        s.contains(r#"parameter \"PIN\""#).then_some(s)
    })
    .await;
    assert!(status.contains("sensitive, not shown"), "{status}");
    outputs.push(status);
    outputs.push(serve.get("/metrics").1);
    outputs.push(serve.get("/readyz").1);
    drop(serve);
    let logs = std::fs::read_to_string(dir.path().join("leak.stdout")).unwrap_or_default()
        + &std::fs::read_to_string(dir.path().join("leak.stderr")).unwrap_or_default();
    assert!(
        logs.contains("new revision applied"),
        "the run was logged: {logs}"
    );
    outputs.push(logs);
    let all = outputs.join("\n");
    for (what, secret) in [
        ("git token", token),
        ("webhook secret", hook_secret),
        ("kubeconfig token", kube_token.as_str()),
        ("sensitive parameter PASSWORD", password),
        ("sensitive parameter PIN", pin),
        ("refused sensitive parameter PIN", bad_pin),
    ] {
        if let Some(at) = all.find(secret) {
            let from = at.saturating_sub(300);
            panic!(
                "the {what} leaked into the output:\n...{}...",
                &all[from..(at + secret.len() + 100).min(all.len())]
            );
        }
    }
    let _ = managed
        .delete(&ObjectRef::new("v1", "Namespace", None, &app_ns))
        .await;
}

/// A credential file named in kudo.yaml that does not exist stops `kudo serve` at startup,
/// naming the file (and the key pointing at it).
#[test]
fn missing_credential_files_are_named_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("repo")).expect("mkdir");
    write(
        dir.path(),
        "kudo.yaml",
        "repositories:\n  - name: r\n    url: https://git.example.com/acme/x.git\n    credentials: {tokenFile: missing/token, sshKeyFile: missing/id_ed25519}\n    webhookSecretFile: missing/hook\nclusters:\n  - name: c\n    kubeconfig: missing/kubeconfig\nleaderElection:\n  kubeconfig: missing/lease-kubeconfig\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["serve", "--config"])
        .arg(dir.path().join("kudo.yaml"))
        .output()
        .expect("kudo runs");
    assert!(!out.status.success(), "kudo serve must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "repositories[0].credentials.tokenFile: file",
        "missing/token does not exist",
        "missing/id_ed25519 does not exist",
        "repositories[0].webhookSecretFile: file",
        "missing/hook does not exist",
        "clusters[0].kubeconfig: file",
        "missing/kubeconfig does not exist",
        "leaderElection.kubeconfig: file",
        "missing/lease-kubeconfig does not exist",
    ] {
        assert!(stderr.contains(needle), "missing {needle:?} in:\n{stderr}");
    }
}

// ---- deploy/ ----

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs kubectl (scripts/kubectl installs Debian's 1.20 client when missing) against
/// envtest cluster `context`; returns (success, stdout, stderr).
fn kubectl(context: Option<&str>, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(root().join("scripts/kubectl"));
    if let Some(context) = context {
        cmd.arg("--kubeconfig")
            .arg(envtest::kubeconfig())
            .args(["--context", context]);
    }
    let mut child = cmd
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("scripts/kubectl runs");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("kubectl finishes");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn must(context: Option<&str>, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out, err) = kubectl(context, args, stdin);
    assert!(ok, "kubectl {args:?} failed:\n{out}\n{err}");
    out
}

/// `kubectl auth can-i ... --as` the kudo ServiceAccount: true for "yes".
/// `kubectl kustomize` of a folder of the repository.
fn kustomize(dir: &str) -> String {
    must(
        None,
        &["kustomize", &root().join(dir).display().to_string()],
        None,
    )
}

fn can_i(context: &str, args: &[&str]) -> bool {
    can_i_as(context, "kudo-system", "kudo", args)
}

/// `kubectl auth can-i` as ServiceAccount `account` of `namespace`.
fn can_i_as(context: &str, namespace: &str, account: &str, args: &[&str]) -> bool {
    let user = format!("system:serviceaccount:{namespace}:{account}");
    let mut full = vec!["auth", "can-i", "--as", &user];
    full.extend_from_slice(args);
    let (_, out, err) = kubectl(Some(context), &full, None);
    match out.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("kubectl {full:?}: neither yes nor no: {other:?} {err}"),
    }
}

/// The deploy/ base renders with kubectl 1.20's kustomize and passes a server-side dry run
/// (after minimal prometheus-operator CRDs are installed); its RBAC, applied, grants the kudo
/// ServiceAccount what it needs in the management cluster and nothing outside its namespace;
/// deploy/managed-cluster grants what a managed cluster needs.
#[test]
fn deploy_manifests_dry_run_and_rbac() {
    let mgmt = "envtest-1";
    let rendered = kustomize("deploy");
    for kind in [
        "kind: Namespace",
        "kind: ServiceAccount",
        "kind: Role\n",
        "kind: RoleBinding",
        "kind: ClusterRole\n",
        "kind: Deployment",
        "kind: Service\n",
        "kind: ServiceMonitor",
        "kind: PrometheusRule",
        "kind: ConfigMap",
    ] {
        assert!(
            rendered.contains(kind),
            "deploy/ renders no {kind:?}:\n{rendered}"
        );
    }
    must(
        Some(mgmt),
        &[
            "apply",
            "-f",
            &root()
                .join("tests/data/monitoring-crds.yaml")
                .display()
                .to_string(),
        ],
        None,
    );
    must(
        Some(mgmt),
        &[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ],
        None,
    );
    // Namespaced objects can only be dry-run into an existing namespace.
    must(
        Some(mgmt),
        &[
            "apply",
            "-f",
            &root()
                .join("deploy/base/namespace.yaml")
                .display()
                .to_string(),
        ],
        None,
    );
    let dry = must(
        Some(mgmt),
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    );
    assert!(dry.contains("deployment.apps/kudo"), "{dry}");
    must(
        Some(mgmt),
        &[
            "apply",
            "--dry-run=server",
            "-f",
            &root().join("deploy/examples").display().to_string(),
        ],
        None,
    );
    // Now for real, so that RBAC answers for the ServiceAccount.
    must(Some(mgmt), &["apply", "-f", "-"], Some(&rendered));
    for allowed in [
        &["get", "leases.coordination.k8s.io", "-n", "kudo-system"][..],
        &["create", "leases.coordination.k8s.io", "-n", "kudo-system"],
        &[
            "update",
            "leases.coordination.k8s.io/kudo",
            "-n",
            "kudo-system",
        ],
        &["get", "secrets", "-n", "kudo-system"],
        &["list", "configmaps", "-n", "kudo-system"],
        &["create", "events", "-n", "kudo-system"],
        // The rollout state's ConfigMap (see rbac.yaml: create cannot name it).
        &["create", "configmaps", "-n", "kudo-system"],
        &["get", "configmaps/kudo-rollout-state", "-n", "kudo-system"],
        &[
            "update",
            "configmaps/kudo-rollout-state",
            "-n",
            "kudo-system",
        ],
        &[
            "patch",
            "configmaps/kudo-rollout-state",
            "-n",
            "kudo-system",
        ],
    ] {
        assert!(can_i(mgmt, allowed), "kudo must be allowed to {allowed:?}");
    }
    for refused in [
        &["get", "secrets", "-n", "default"][..],
        &["get", "secrets", "-n", "kube-system"],
        &["list", "secrets", "--all-namespaces"],
        &["create", "secrets", "-n", "kudo-system"],
        &["delete", "leases.coordination.k8s.io", "-n", "kudo-system"],
        &["create", "leases.coordination.k8s.io", "-n", "default"],
        &["create", "deployments.apps", "-n", "kudo-system"],
        &["create", "instances.kudo.dev", "-n", "default"],
        &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        // Only the rollout state's ConfigMap, only in its namespace, never deleted.
        &["update", "configmaps/kudo-config", "-n", "kudo-system"],
        &["update", "configmaps", "-n", "kudo-system"],
        &["patch", "configmaps/other", "-n", "kudo-system"],
        &[
            "delete",
            "configmaps/kudo-rollout-state",
            "-n",
            "kudo-system",
        ],
        &["update", "configmaps/kudo-rollout-state", "-n", "default"],
        &["create", "configmaps", "-n", "default"],
        &["create", "configmaps", "--all-namespaces"],
    ] {
        assert!(
            !can_i(mgmt, refused),
            "kudo must NOT be allowed to {refused:?}"
        );
    }

    // The sharded overlay: a StatefulSet of three instead of the Deployment, and Lease
    // rights for members, still only in its namespace. Applied into a namespace of its own,
    // so that the base's refusals above stay true on a reused environment.
    let sharded = kustomize("deploy/sharded");
    assert!(
        sharded.contains("kind: StatefulSet") && !sharded.contains("kind: Deployment"),
        "{sharded}"
    );
    assert!(
        sharded.contains("replicas: 3") && sharded.contains("sharding:"),
        "{sharded}"
    );
    let sharded = sharded.replace("kudo-system", "kudo-sharded");
    // Namespaced objects can only be dry-run into an existing namespace.
    let _ = kubectl(Some(mgmt), &["create", "namespace", "kudo-sharded"], None);
    let dry = must(
        Some(mgmt),
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&sharded),
    );
    assert!(dry.contains("statefulset.apps/kudo"), "{dry}");
    must(Some(mgmt), &["apply", "-f", "-"], Some(&sharded));
    for verb in ["get", "list", "watch", "create", "update", "delete"] {
        let args = [verb, "leases.coordination.k8s.io", "-n", "kudo-sharded"];
        assert!(
            can_i_as(mgmt, "kudo-sharded", "kudo", &args),
            "a sharded member must be allowed to {args:?}"
        );
    }
    for refused in [
        &["delete", "leases.coordination.k8s.io", "-n", "default"][..],
        &["list", "leases.coordination.k8s.io", "--all-namespaces"],
        &["create", "secrets", "-n", "kudo-sharded"],
    ] {
        assert!(
            !can_i_as(mgmt, "kudo-sharded", "kudo", refused),
            "a sharded member must NOT be allowed to {refused:?}"
        );
    }

    // Agent mode: the management side (the exchange namespace, the agent's Role there and
    // the control plane's) and the agent Deployment on a managed cluster.
    let exchange = kustomize("deploy/agent-namespace");
    let _ = kubectl(
        Some(mgmt),
        &["create", "namespace", "kudo-agent-edge"],
        None,
    );
    must(Some(mgmt), &["apply", "-f", "-"], Some(&exchange));
    for (verb, resource, namespace, allowed) in [
        ("patch", "configmaps", "kudo-agent-edge", true),
        ("list", "configmaps", "kudo-agent-edge", true),
        (
            "create",
            "leases.coordination.k8s.io",
            "kudo-agent-edge",
            true,
        ),
        ("create", "configmaps", "kudo-agent-edge", false),
        ("delete", "configmaps", "kudo-agent-edge", false),
        ("get", "secrets", "kudo-agent-edge", false),
        // Nothing outside its namespace.
        ("list", "configmaps", "kudo-system", false),
    ] {
        assert_eq!(
            can_i_as(
                mgmt,
                "kudo-agent-edge",
                "kudo-agent",
                &[verb, resource, "-n", namespace]
            ),
            allowed,
            "agent: {verb} {resource} in {namespace}"
        );
    }
    assert!(
        can_i(mgmt, &["create", "configmaps", "-n", "kudo-agent-edge"]),
        "the control plane writes work items there"
    );
    let agent = kustomize("deploy/managed-cluster/agent");
    assert!(
        agent.contains("--agent") && agent.contains("kind: Deployment"),
        "{agent}"
    );

    // A managed cluster.
    let managed = "envtest-2";
    let same = std::fs::read_to_string(root().join("deploy/base/clusterrole-managed.yaml"))
        .expect("read clusterrole");
    assert_eq!(
        same,
        std::fs::read_to_string(root().join("deploy/managed-cluster/clusterrole.yaml"))
            .expect("read copy"),
        "deploy/managed-cluster/clusterrole.yaml must be a copy of deploy/base/clusterrole-managed.yaml"
    );
    let rendered = kustomize("deploy/managed-cluster");
    must(Some(managed), &["apply", "-f", "-"], Some(&rendered));
    let dry = must(
        Some(managed),
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&agent),
    );
    assert!(dry.contains("deployment.apps/kudo-agent"), "{dry}");
    for allowed in [
        &["create", "customresourcedefinitions.apiextensions.k8s.io"][..],
        &["patch", "instances.kudo.dev", "-n", "any-namespace"],
        &["delete", "instances.kudo.dev", "-n", "any-namespace"],
        &["create", "namespaces"],
        &["create", "deployments.apps", "-n", "any-namespace"],
        &["create", "jobs.batch", "-n", "any-namespace"],
        &["create", "secrets", "-n", "any-namespace"],
    ] {
        assert!(
            can_i(managed, allowed),
            "kudo must be allowed on a managed cluster to {allowed:?}"
        );
    }
    for refused in [
        &["delete", "customresourcedefinitions.apiextensions.k8s.io"][..],
        &["delete", "namespaces"],
        &["create", "nodes"],
        &["create", "clusterroles.rbac.authorization.k8s.io"],
        &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
    ] {
        assert!(
            !can_i(managed, refused),
            "kudo must NOT be allowed on a managed cluster to {refused:?}"
        );
    }
}

// ---- signed commits ----

fn ssh_keygen(dir: &Path, name: &str, comment: &str) -> PathBuf {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
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

fn fingerprint(key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(key.with_extension("pub"))
        .output()
        .expect("ssh-keygen -l runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

/// Commits everything; signed with `key` (SSH, by the git CLI) or unsigned.
fn commit(repo: &Path, message: &str, key: Option<&Path>) -> String {
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
                "--allow-empty",
                "-S",
                "-m",
                message,
            ],
        ),
        None => git(repo, &["commit", "-q", "--allow-empty", "-m", message]),
    };
    git(repo, &["rev-parse", "HEAD"])
}

/// A repository that requires signed commits applies a commit signed by an allowed SSH key
/// and refuses an unsigned one and one signed by another key, naming the commit and the
/// signer; the last good revision keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_commits_signed_by_allowed_keys_are_applied() {
    use kudo::gitops::serve::{Daemon, Options};
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed = ssh_keygen(dir.path(), "alice", "alice@example.com");
    let other = ssh_keygen(dir.path(), "mallory", "mallory@example.com");
    let pubkey = std::fs::read_to_string(allowed.with_extension("pub")).expect("pub");
    write(
        dir.path(),
        "allowed_signers",
        &format!("alice@example.com {}", pubkey.trim()),
    );
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    write_two_step_framework(&repo, "");
    write(
        &repo,
        "instances/s.yaml",
        &instance_doc("s", "signed", "sim", ""),
    );
    let good = commit(&repo, "signed by alice", Some(&allowed));

    let text = format!(
        "cacheDir: {cache}\nrepositories:\n  - name: signed\n    url: file://{repo}\n    ref: main\n    interval: 1h\n    verify: {{allowedSignersFile: allowed_signers}}\nclusters:\n  - {{name: sim, sim: {{}}, labels: {{fleet: sim}}}}\n",
        cache = dir.path().join("cache").display(),
        repo = repo.display(),
    );
    let config =
        kudo::gitops::config::Config::parse("kudo.yaml", &text, dir.path()).expect("config");
    let daemon = Daemon::start(config, Options::default())
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    let wait_revision = |rev: String| {
        let shared = shared.clone();
        async move {
            wait_for(&format!("revision {rev} to be seen"), TIMEOUT, || {
                let shared = shared.clone();
                let rev = rev.clone();
                async move {
                    shared.sync_now(None);
                    let r = shared.status().repositories[0].clone();
                    (r.revision.as_deref() == Some(rev.as_str())).then_some(r)
                }
            })
            .await
        }
    };
    let r = wait_revision(good.clone()).await;
    assert_eq!(r.applied_revision.as_deref(), Some(good.as_str()), "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");

    // Valid content (a new file outside frameworks/ and instances/): only the signature is wrong.
    write(&repo, "NOTES.md", "unsigned change\n");
    let unsigned = commit(&repo, "unsigned", None);
    let r = wait_revision(unsigned.clone()).await;
    assert_eq!(
        r.applied_revision.as_deref(),
        Some(good.as_str()),
        "last good keeps running"
    );
    let errors = r.errors.join("\n");
    assert!(
        errors.contains(&format!("commit {unsigned}")) && errors.contains("is not signed"),
        "{errors}"
    );
    assert!(
        errors.contains("kudo-test <test@kudo.invalid>"),
        "committer named: {errors}"
    );

    let forged = commit(&repo, "signed by mallory", Some(&other));
    let r = wait_revision(forged.clone()).await;
    assert_eq!(r.applied_revision.as_deref(), Some(good.as_str()));
    let errors = r.errors.join("\n");
    assert!(
        errors.contains(&format!("commit {forged}"))
            && errors.contains(&fingerprint(&other))
            && errors.contains("not an allowed signer"),
        "{errors}"
    );

    let fixed = commit(&repo, "signed by alice again", Some(&allowed));
    let r = wait_revision(fixed.clone()).await;
    assert_eq!(r.applied_revision.as_deref(), Some(fixed.as_str()), "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// A throwaway GnuPG home holding real OpenPGP keys; its gpg-agent is stopped on drop.
struct Gpg {
    home: PathBuf,
}

impl Gpg {
    fn new(dir: &Path) -> Gpg {
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).expect("mkdir gnupg");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        Gpg { home }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("gpg")
            .env("GNUPGHOME", &self.home)
            .args([
                "--batch",
                "--quiet",
                "--passphrase",
                "",
                "--pinentry-mode",
                "loopback",
            ])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("gpg runs (Debian's gnupg; scripts/ci-deps installs it)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Fingerprints of a key: the primary key's first, then its subkeys'.
    fn fingerprints(&self, uid: &str) -> Vec<String> {
        self.run(&["--with-colons", "--list-keys", uid])
            .lines()
            .filter_map(|l| l.strip_prefix("fpr:"))
            .filter_map(|l| l.split(':').nth(8).map(str::to_string))
            .collect()
    }

    /// A new key for `uid` of `usage` (`sign`, or `cert` for a primary key that only certifies);
    /// returns its primary fingerprint.
    fn new_key(&self, uid: &str, usage: &str) -> String {
        self.run(&["--quick-gen-key", uid, "ed25519", usage, "never"]);
        self.fingerprints(uid).remove(0)
    }

    /// Commits everything, signed with gpg by `key` (a fingerprint).
    fn commit(&self, repo: &Path, message: &str, key: &str) -> String {
        let env = [("GNUPGHOME", self.home.as_path())];
        git_with_env(repo, &env, &["add", "-A"]);
        git_with_env(
            repo,
            &env,
            &[
                "-c",
                "gpg.format=openpgp",
                "-c",
                "gpg.program=gpg",
                "-c",
                &format!("user.signingkey={key}"),
                "commit",
                "-q",
                "--allow-empty",
                "-S",
                "-m",
                message,
            ],
        );
        git(repo, &["rev-parse", "HEAD"])
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", &self.home)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// A repository that trusts an OpenPGP keyring (`verify.openpgpKeysFile`, two keys exported by
/// gpg) applies commits gpg signed with a key of it (a primary key, a signing subkey) and
/// refuses, naming the commit and the signer, an unsigned commit, one signed by a key outside
/// the keyring, one whose content changed after signing and an SSH-signed one; the last good
/// revision keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_commits_signed_by_allowed_openpgp_keys_are_applied() {
    use kudo::gitops::serve::{Daemon, Options};
    let dir = tempfile::tempdir().expect("tempdir");
    let gpg = Gpg::new(dir.path());
    let alice = gpg.new_key("Alice <alice@example.com>", "sign");
    let bob = gpg.new_key("Bob <bob@example.com>", "cert");
    gpg.run(&["--quick-add-key", &bob, "ed25519", "sign", "never"]);
    let bob_subkey = gpg.fingerprints("bob@example.com").remove(1);
    let mallory = gpg.new_key("Mallory <mallory@example.com>", "sign");
    let keyring = gpg.run(&["--armor", "--export", &alice, &bob]);
    assert_eq!(
        keyring
            .matches("-----BEGIN PGP PUBLIC KEY BLOCK-----")
            .count(),
        1,
        "both keys in one armored block, as gpg exports them"
    );
    write(dir.path(), "keys.asc", &keyring);

    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q", "-b", "main"]);
    write_two_step_framework(&repo, "");
    write(
        &repo,
        "instances/s.yaml",
        &instance_doc("s", "signed", "sim", ""),
    );
    let good = gpg.commit(&repo, "signed by alice", &alice);

    let text = format!(
        "cacheDir: {cache}\nrepositories:\n  - name: signed\n    url: file://{repo}\n    ref: main\n    interval: 1h\n    verify: {{openpgpKeysFile: keys.asc}}\nclusters:\n  - {{name: sim, sim: {{}}, labels: {{fleet: sim}}}}\n",
        cache = dir.path().join("cache").display(),
        repo = repo.display(),
    );
    let config =
        kudo::gitops::config::Config::parse("kudo.yaml", &text, dir.path()).expect("config");
    let daemon = Daemon::start(config, Options::default())
        .await
        .expect("daemon");
    let shared = daemon.shared.clone();
    let wait_revision = |rev: String| {
        let shared = shared.clone();
        async move {
            wait_for(&format!("revision {rev} to be seen"), TIMEOUT, || {
                let shared = shared.clone();
                let rev = rev.clone();
                async move {
                    shared.sync_now(None);
                    let r = shared.status().repositories[0].clone();
                    (r.revision.as_deref() == Some(rev.as_str())).then_some(r)
                }
            })
            .await
        }
    };
    let r = wait_revision(good.clone()).await;
    assert_eq!(r.applied_revision.as_deref(), Some(good.as_str()), "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");

    // Valid content (a new file outside frameworks/ and instances/): only the signature is wrong.
    write(&repo, "NOTES.md", "unsigned change\n");
    let unsigned = commit(&repo, "unsigned", None);
    let r = wait_revision(unsigned.clone()).await;
    assert_eq!(
        r.applied_revision.as_deref(),
        Some(good.as_str()),
        "last good keeps running"
    );
    let errors = r.errors.join("\n");
    assert!(
        errors.contains(&format!(
            "commit {unsigned} (committer kudo-test <test@kudo.invalid>) is not signed"
        )),
        "{errors}"
    );

    let forged = gpg.commit(&repo, "signed by mallory", &mallory);
    let r = wait_revision(forged.clone()).await;
    assert_eq!(r.applied_revision.as_deref(), Some(good.as_str()));
    let errors = r.errors.join("\n");
    assert!(
        errors.contains(&format!(
            "commit {forged} (committer kudo-test <test@kudo.invalid>) is signed by OpenPGP key {mallory}, which is not an allowed signer"
        )),
        "{errors}"
    );

    let ssh_key = ssh_keygen(dir.path(), "alice-ssh", "alice@example.com");
    let ssh_signed = commit(&repo, "signed with an SSH key", Some(&ssh_key));
    let r = wait_revision(ssh_signed.clone()).await;
    assert_eq!(r.applied_revision.as_deref(), Some(good.as_str()));
    let errors = r.errors.join("\n");
    assert!(
        errors.contains(&format!("commit {ssh_signed} (committer kudo-test <test@kudo.invalid>) has an SSH signature, but the repository trusts only OpenPGP signatures (verify.openpgpKeysFile)")),
        "{errors}"
    );

    // Bob's primary key only certifies: gpg signs with his subkey.
    write(&repo, "NOTES.md", "bob's change\n");
    let by_bob = gpg.commit(&repo, "signed by bob", &bob);
    let r = wait_revision(by_bob.clone()).await;
    assert_eq!(
        r.applied_revision.as_deref(),
        Some(by_bob.as_str()),
        "{r:?}"
    );
    assert!(r.errors.is_empty(), "{r:?}");

    // Bob's signed commit object with another tree: the signature no longer covers it.
    write(&repo, "NOTES.md", "tampered after signing\n");
    git(&repo, &["add", "-A"]);
    let tree = git(&repo, &["write-tree"]);
    let object = git(&repo, &["cat-file", "commit", &by_bob]);
    let (first, rest) = object.split_once('\n').expect("tree line");
    assert!(first.starts_with("tree ") && rest.contains("-----BEGIN PGP SIGNATURE-----"));
    write(dir.path(), "tampered", &format!("tree {tree}\n{rest}\n"));
    let tampered = git(
        &repo,
        &[
            "hash-object",
            "-t",
            "commit",
            "-w",
            &dir.path().join("tampered").display().to_string(),
        ],
    );
    git(&repo, &["update-ref", "refs/heads/main", &tampered]);
    let r = wait_revision(tampered.clone()).await;
    assert_eq!(r.applied_revision.as_deref(), Some(by_bob.as_str()));
    let errors = r.errors.join("\n");
    assert!(
        errors.contains(&format!(
            "commit {tampered} (committer kudo-test <test@kudo.invalid>): the signature by Bob <bob@example.com> (OpenPGP key {bob}, subkey {bob_subkey}) does not verify"
        )),
        "{errors}"
    );

    git(&repo, &["reset", "-q", "--hard", &by_bob]);
    write(&repo, "NOTES.md", "alice again\n");
    let fixed = gpg.commit(&repo, "signed by alice again", &alice);
    let r = wait_revision(fixed.clone()).await;
    assert_eq!(r.applied_revision.as_deref(), Some(fixed.as_str()), "{r:?}");
    assert!(r.errors.is_empty(), "{r:?}");
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

// ---- HTTP API ----

/// The status API is read-only and, with `apiTokenFile`, needs the bearer token; the webhook
/// is the only write path and needs a valid signature; a huge webhook body is refused from
/// its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_read_only_status_and_webhook_limits() {
    use kudo::gitops::serve::{Daemon, Options, serve_http};
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write_two_step_framework(&repo, "");
    write(dir.path(), "api-token", "api-TOKEN-123\n");
    write(dir.path(), "hook", "hook-SECRET");
    let text = format!(
        "apiTokenFile: api-token\nrepositories:\n  - {{name: r, url: {}, webhookSecretFile: hook}}\nclusters:\n  - {{name: sim, sim: {{}}}}\n",
        repo.display()
    );
    let config =
        kudo::gitops::config::Config::parse("kudo.yaml", &text, dir.path()).expect("config");
    let daemon = Daemon::start(config, Options::default())
        .await
        .expect("daemon");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addr, http_task) = serve_http(
        daemon.shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        async move {
            let _ = stopped.await;
        },
    )
    .await
    .expect("listen");
    let port = addr.port();
    let call = move |method: &'static str,
                     path: &'static str,
                     headers: Vec<(&'static str, String)>,
                     body: Vec<u8>| {
        tokio::task::spawn_blocking(move || {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http(port, method, path, &h, &body)
        })
    };
    let bearer = |t: &str| vec![("Authorization", format!("Bearer {t}"))];

    let (code, body) = call("GET", "/api/v1/status", vec![], vec![])
        .await
        .expect("join");
    assert_eq!(code, 401, "no token: {body}");
    assert!(body.contains("bearer token is required"), "{body}");
    assert_eq!(
        call("GET", "/api/v1/status", bearer("wrong"), vec![])
            .await
            .expect("join")
            .0,
        401
    );
    assert_eq!(
        call(
            "GET",
            "/api/v1/status",
            vec![("Authorization", "api-TOKEN-123".into())],
            vec![]
        )
        .await
        .expect("join")
        .0,
        401,
        "not a Bearer header"
    );
    let (code, body) = call("GET", "/api/v1/status", bearer("api-TOKEN-123"), vec![])
        .await
        .expect("join");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"repositories\""), "{body}");
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let (code, _) = call(
            method,
            "/api/v1/status",
            bearer("api-TOKEN-123"),
            b"{}".to_vec(),
        )
        .await
        .expect("join");
        assert_eq!(
            code, 405,
            "{method} /api/v1/status must be refused (read-only)"
        );
    }
    // Probes and scrapers need no token.
    assert_eq!(
        call("GET", "/healthz", vec![], vec![])
            .await
            .expect("join")
            .0,
        200
    );
    assert_eq!(
        call("GET", "/metrics", vec![], vec![])
            .await
            .expect("join")
            .0,
        200
    );

    // The webhook: its own signature, no bearer token.
    let body = br#"{"ref":"refs/heads/main"}"#.to_vec();
    let sig = kudo::gitops::webhook::github_signature("hook-SECRET", &body);
    let (code, answer) = call("POST", "/api/v1/hooks/git", vec![], body.clone())
        .await
        .expect("join");
    assert_eq!(code, 401, "unsigned: {answer}");
    assert!(
        answer.contains("no X-Hub-Signature-256 or X-Gitlab-Token header"),
        "{answer}"
    );
    let wrong = kudo::gitops::webhook::github_signature("guess", &body);
    let (code, answer) = call(
        "POST",
        "/api/v1/hooks/git",
        vec![("X-Hub-Signature-256", wrong)],
        body.clone(),
    )
    .await
    .expect("join");
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("matches no repository"), "{answer}");
    let (code, answer) = call(
        "POST",
        "/api/v1/hooks/git",
        vec![("X-Hub-Signature-256", "sha1=abc".into())],
        body.clone(),
    )
    .await
    .expect("join");
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("sha256=<hex>"), "{answer}");
    let (code, answer) = call(
        "POST",
        "/api/v1/hooks/git",
        vec![("X-Gitlab-Token", "guess".into())],
        body.clone(),
    )
    .await
    .expect("join");
    assert_eq!(code, 401, "{answer}");
    let huge = vec![b'x'; kudo::gitops::webhook::MAX_BODY_BYTES + 1];
    let huge_sig = kudo::gitops::webhook::github_signature("hook-SECRET", &huge);
    let (code, answer) = call(
        "POST",
        "/api/v1/hooks/git",
        vec![("X-Hub-Signature-256", huge_sig)],
        huge,
    )
    .await
    .expect("join");
    assert_eq!(code, 413, "huge body: {answer}");
    let (code, answer) = call(
        "GET",
        "/api/v1/hooks/git",
        vec![("X-Hub-Signature-256", sig.clone())],
        vec![],
    )
    .await
    .expect("join");
    assert_eq!(code, 405, "GET on the webhook: {answer}");
    let (code, answer) = call(
        "POST",
        "/api/v1/hooks/git",
        vec![("X-Hub-Signature-256", sig)],
        body,
    )
    .await
    .expect("join");
    assert_eq!(code, 202, "{answer}");
    assert!(answer.contains("syncing r"), "{answer}");

    let _ = stop.send(());
    let _ = http_task.await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// deploy/base/kudo.yaml uses only keys kudo knows: its only problems outside a pod are the
/// credential files that the Secrets provide there.
#[test]
fn deploy_config_is_valid_apart_from_mounted_files() {
    for file in ["deploy/base/kudo.yaml", "deploy/sharded/kudo.yaml"] {
        let text = std::fs::read_to_string(root().join(file)).expect(file);
        let (config, problems) = match kudo::gitops::config::Config::parse(file, &text, root()) {
            Ok(c) => (Some(c), Vec::new()),
            Err(e) => (None, e.problems),
        };
        let others: Vec<&String> = problems
            .iter()
            .filter(|p| !(p.contains("/etc/kudo/") && p.ends_with("does not exist")))
            .collect();
        assert!(others.is_empty(), "{file}: {others:#?}");
        assert!(
            problems.iter().any(|p| p.contains("/etc/kudo/git/token")),
            "{file}: the credential files are checked: {problems:#?}"
        );
        assert!(config.is_none());
        // Apart from `sharding`, the overlay's file is the base's.
        let sharded = text.contains("\nsharding:\n  enabled: true\n");
        assert_eq!(sharded, file.contains("sharded"), "{file}");
    }
    let base = std::fs::read_to_string(root().join("deploy/base/kudo.yaml")).expect("base");
    let sharded =
        std::fs::read_to_string(root().join("deploy/sharded/kudo.yaml")).expect("sharded");
    let body = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let extra: Vec<String> = body(&sharded)
        .into_iter()
        .filter(|l| !body(&base).contains(l))
        .collect();
    assert_eq!(
        extra,
        vec!["sharding:", "  enabled: true", "  memberLeaseDuration: 15s"],
        "deploy/sharded/kudo.yaml must be deploy/base/kudo.yaml plus `sharding`"
    );
}

/// The PrometheusRule carries the groups of the plain rules file deploy/prometheus-rules.yaml
/// unchanged (when that file is present), plus the leader-election alerts.
#[test]
fn prometheus_rule_matches_the_rules_file() {
    let parse = |file: &str| -> Value {
        let text = std::fs::read_to_string(root().join(file)).expect(file);
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let rule = parse("deploy/base/prometheusrule.yaml");
    assert_eq!(rule["kind"], "PrometheusRule");
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    let leader = groups
        .iter()
        .find(|g| g["name"] == "kudo-leader")
        .expect("kudo-leader group");
    assert!(leader.to_string().contains("sum(kudo_leader)"), "{leader}");
    if root().join("deploy/prometheus-rules.yaml").exists() {
        let plain = parse("deploy/prometheus-rules.yaml");
        for g in plain["groups"].as_array().expect("groups") {
            assert!(
                groups.contains(g),
                "group {} of deploy/prometheus-rules.yaml differs in or is missing from deploy/base/prometheusrule.yaml",
                g["name"]
            );
        }
    }
}

/// A leader whose Lease is taken over (another live holder renewing it) stops at once with an
/// error naming the Lease; a leader stopped with SIGTERM releases the Lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lease_exits_and_a_stopped_one_releases_it() {
    let kubeconfig = envtest::kubeconfig();
    let mgmt = envtest::cluster(1).await;
    let lease_ns = envtest::unique("lease");
    mgmt.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lease_ns}}))
        .await
        .expect("lease namespace");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write_two_step_framework(&repo, "");
    write(
        dir.path(),
        "kudo.yaml",
        &format!(
            "repositories:\n  - {{name: r, url: {repo}}}\nclusters:\n  - {{name: sim, sim: {{}}}}\nleaderElection:\n  kubeconfig: {kc}\n  context: envtest-1\n  namespace: {lease_ns}\n  leaseDuration: 4s\n  renewDeadline: 3s\n  retryPeriod: 500ms\n",
            repo = repo.display(),
            kc = kubeconfig.display(),
        ),
    );
    let config = dir.path().join("kudo.yaml");

    // Stopped with SIGTERM: the lease is handed back (no holder).
    let mut a = Serve::start(dir.path(), "a", &config, &[("POD_NAME", "replica-a")]);
    wait_for("a to lead", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("replica-a-"))
    })
    .await;
    let pid = a.child.id() as i32;
    // SAFETY: signalling the child this test started, by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = a.child.wait().expect("a exits");
    assert!(status.success(), "a stops cleanly: {}", a.logs());
    let holder = lease_holder(&mgmt, &lease_ns).await;
    assert_eq!(holder, None, "released on shutdown: {}", a.logs());

    // Taken over: another holder writes the lease; the leader notices and exits.
    let b = Serve::start(dir.path(), "b", &config, &[("POD_NAME", "replica-b")]);
    let mut b = b;
    wait_for("b to lead", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("replica-b-"))
    })
    .await;
    let mut lease = get_opt(&mgmt, "coordination.k8s.io/v1", "Lease", &lease_ns, "kudo")
        .await
        .expect("lease");
    lease["spec"]["holderIdentity"] = json!("intruder");
    lease["spec"]["leaseDurationSeconds"] = json!(3600);
    mgmt.replace(&lease).await.expect("steal the lease");
    let status = wait_for("b to exit", TIMEOUT, || {
        let status = b.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    assert!(!status.success(), "losing the lease is an error exit");
    let logs = b.logs();
    assert!(
        logs.contains(&format!(
            "lost the lease {lease_ns}/kudo (now held by intruder)"
        )),
        "{logs}"
    );
    let _ = mgmt
        .delete(&ObjectRef::new("v1", "Namespace", None, &lease_ns))
        .await;
}

/// Two replicas configured with the same explicit `identity` are still two holders: one
/// leads, the other stands by (each identity gets a unique suffix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_with_the_same_identity_never_both_lead() {
    let kubeconfig = envtest::kubeconfig();
    let mgmt = envtest::cluster(1).await;
    let lease_ns = envtest::unique("same-id");
    mgmt.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lease_ns}}))
        .await
        .expect("lease namespace");
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write_two_step_framework(&repo, "");
    write(
        dir.path(),
        "kudo.yaml",
        &format!(
            "repositories:\n  - {{name: r, url: {repo}}}\nclusters:\n  - {{name: sim, sim: {{}}}}\nleaderElection:\n  kubeconfig: {kc}\n  context: envtest-1\n  namespace: {lease_ns}\n  identity: kudo-0\n  leaseDuration: 4s\n  renewDeadline: 3s\n  retryPeriod: 500ms\n",
            repo = repo.display(),
            kc = kubeconfig.display(),
        ),
    );
    let config = dir.path().join("kudo.yaml");
    let a = Serve::start(dir.path(), "a", &config, &[]);
    let holder = wait_for("a to lead", TIMEOUT, || async {
        lease_holder(&mgmt, &lease_ns)
            .await
            .filter(|h| h.starts_with("kudo-0"))
    })
    .await;
    wait_for("a's kudo_leader to be 1", TIMEOUT, || async {
        (a.leader_gauge() == Some(1)).then_some(())
    })
    .await;
    let b = Serve::start(dir.path(), "b", &config, &[]);
    wait_for("b to stand by", TIMEOUT, || async {
        b.logs()
            .contains("standby: another replica holds the lease")
            .then_some(())
    })
    .await;
    wait_for("b's kudo_leader to be served", TIMEOUT, || async {
        b.leader_gauge()
    })
    .await;
    assert_eq!(b.leader_gauge(), Some(0), "b must not lead: {}", b.logs());
    assert_eq!(a.leader_gauge(), Some(1), "a still leads: {}", a.logs());
    assert_eq!(lease_holder(&mgmt, &lease_ns).await, Some(holder.clone()));
    assert!(holder.starts_with("kudo-0-"), "a unique suffix: {holder}");
    drop(b);
    drop(a);
    let _ = mgmt
        .delete(&ObjectRef::new("v1", "Namespace", None, &lease_ns))
        .await;
}

// ---- shards (issue 23) ----

fn running(replicas: &[Option<Serve>], i: usize) -> &Serve {
    replicas[i].as_ref().expect("running")
}

fn status_of(serve: &Serve) -> Option<Value> {
    let (code, body) = serve.get("/api/v1/status");
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Cluster → the member driving it, as one replica's status shows it.
fn owners_of(serve: &Serve) -> std::collections::BTreeMap<String, String> {
    status_of(serve)
        .and_then(|s| {
            let owners = s.pointer("/sharding/owners")?.as_object()?.clone();
            Some(
                owners
                    .into_iter()
                    .filter_map(|(c, m)| Some((c, m.as_str()?.to_string())))
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// Three cluster names that rendezvous hashing spreads one per member over `members`.
fn spread_names(members: &[&str]) -> Vec<String> {
    (0..1000)
        .map(|k| vec![format!("east{k}"), format!("west{k}"), format!("north{k}")])
        .find(|names| {
            let owners: std::collections::BTreeSet<_> = names
                .iter()
                .filter_map(|n| kudo::gitops::shard::assign::owner(n, members))
                .collect();
            owners.len() == members.len()
        })
        .expect("some names spread")
}

/// Issue 23: three `kudo serve` replicas with `sharding` on, each driving one of three real
/// API servers. A replica with another kudo.yaml and a second process under a live member
/// name are refused with the reason. `kill -9` of a member that does not lead: another
/// member takes its cluster over, the plan it was running finishes without re-running its
/// finished step, and the write log shows no two members ever wrote for one cluster in
/// overlapping spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_share_the_clusters_and_take_over_a_killed_ones() {
    let kubeconfig = envtest::kubeconfig();
    let mgmt = envtest::cluster(1).await;
    let managed = [
        envtest::cluster(1).await,
        envtest::cluster(2).await,
        envtest::cluster(3).await,
    ];
    let lease_ns = envtest::unique("shards");
    let app_ns = envtest::unique("sharded");
    // A control plane of its own: other tests' engines on these API servers never touch it.
    let control_plane = envtest::unique("cp");
    mgmt.apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": lease_ns}}))
        .await
        .expect("lease namespace");
    let members = ["m-0", "m-1", "m-2"];
    let names = spread_names(&members);

    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write_two_step_framework(&repo, "");
    write(
        &repo,
        "instances/db.yaml",
        &instance_doc("db", &app_ns, "shard", "  selfHeal: false\n"),
    );
    let mut clusters = String::new();
    for (i, name) in names.iter().enumerate() {
        clusters.push_str(&format!(
            "  - name: {name}\n    kubeconfig: {kc}\n    context: envtest-{n}\n    labels: {{fleet: shard}}\n",
            kc = kubeconfig.display(),
            n = i + 1
        ));
    }
    let text = format!(
        "controlPlane: {control_plane}\nrepositories:\n  - {{name: r, url: {repo}, interval: 1s}}\nclusters:\n{clusters}leaderElection:\n  kubeconfig: {kc}\n  context: envtest-1\n  namespace: {lease_ns}\n  leaseDuration: 4s\n  renewDeadline: 3s\n  retryPeriod: 500ms\nsharding:\n  enabled: true\n  memberLeaseDuration: 4s\n",
        repo = repo.display(),
        kc = kubeconfig.display(),
    );
    write(dir.path(), "kudo.yaml", &text);
    write(
        dir.path(),
        "other.yaml",
        &format!("{text}# edited on one replica only\n"),
    );
    let config = dir.path().join("kudo.yaml");
    let log = dir.path().join("writes.jsonl");
    let log_env = log.display().to_string();
    let mut replicas: Vec<Option<Serve>> = members
        .iter()
        .map(|m| {
            Some(Serve::start(
                dir.path(),
                m,
                &config,
                &[
                    ("POD_NAME", m),
                    ("KUDO_WRITE_LOG", &log_env),
                    (
                        "KUDO_CACHE_DIR",
                        &format!("{}/cache-{m}", dir.path().display()),
                    ),
                ],
            ))
        })
        .collect();

    // Spread: every cluster driven, by three different members, seen alike on every replica.
    let owners = wait_for("each member to drive one cluster", TIMEOUT, || async {
        let owners = owners_of(running(&replicas, 0));
        let distinct: std::collections::BTreeSet<_> = owners.values().collect();
        (owners.len() == 3 && distinct.len() == 3).then_some(owners)
    })
    .await;
    wait_for("every replica to show the same owners", TIMEOUT, || async {
        (owners_of(running(&replicas, 1)) == owners && owners_of(running(&replicas, 2)) == owners)
            .then_some(())
    })
    .await;

    // Each cluster runs step `config`, then waits on the Job of step `check`.
    let mut uids = Vec::new();
    for (i, cluster) in managed.iter().enumerate() {
        wait_for(
            &format!("cluster {} to start step check", names[i]),
            TIMEOUT,
            || async {
                let inst = get_opt(cluster, "kudo.dev/v1beta1", "Instance", &app_ns, "db").await?;
                let steps = inst.pointer("/status/planStatus/deploy/phases/0/steps")?;
                let step = |i: usize| steps.get(i)?.get("status")?.as_str().map(str::to_string);
                (step(0).as_deref() == Some("COMPLETE")
                    && step(1).as_deref() == Some("IN_PROGRESS"))
                .then_some(())?;
                get_opt(cluster, "batch/v1", "Job", &app_ns, "db-check").await
            },
        )
        .await;
        let (status, uid) = plan(cluster, &app_ns, "db").await.expect("plan status");
        assert_eq!(status, "IN_PROGRESS");
        uids.push(uid);
        // Running step `config` again would revert this edit.
        cluster
            .merge_patch(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "db-config", "namespace": app_ns}, "data": {"message": "edited"}}))
            .await
            .expect("edit the ConfigMap");
    }
    // Any replica shows the whole fleet: every cluster's progress, not only its own.
    let status = status_of(running(&replicas, 2)).expect("status");
    let progress = status
        .pointer("/instances/0/clusters")
        .and_then(Value::as_object)
        .expect("instance clusters");
    assert_eq!(progress.len(), 3, "{status}");

    // Bad input: another kudo.yaml, and a second process under a live member name.
    let odd = Serve::start(
        dir.path(),
        "odd",
        &dir.path().join("other.yaml"),
        &[("POD_NAME", "m-odd"), ("KUDO_WRITE_LOG", &log_env)],
    );
    let mut twin = Serve::start(dir.path(), "twin", &config, &[("POD_NAME", "m-0")]);
    wait_for(
        "the odd replica to say why it takes no cluster",
        TIMEOUT,
        || async {
            let s = status_of(&odd)?;
            let error = s.pointer("/sharding/error")?.as_str()?.to_string();
            error.contains("differs from the leader's").then_some(())
        },
    )
    .await;
    wait_for(
        "the members to list the odd one as excluded",
        TIMEOUT,
        || async {
            let s = status_of(running(&replicas, 0))?;
            let excluded = s.pointer("/sharding/excluded")?.to_string();
            excluded
                .contains("m-odd runs another kudo.yaml")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        owners_of(running(&replicas, 0)),
        owners,
        "nothing moved to the odd one"
    );
    let exit = wait_for("the twin to give up", TIMEOUT, || {
        let status = twin.child.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    assert!(!exit.success(), "a second process under m-0 is refused");
    assert!(
        twin.logs()
            .contains("member name m-0 is held by another live process"),
        "{}",
        twin.logs()
    );
    drop(odd);

    // kill -9 a member that does not lead.
    let leader = lease_holder(&mgmt, &lease_ns).await.expect("a leader");
    let (victim_cluster, victim) = owners
        .iter()
        .find(|(_, m)| !leader.starts_with(&format!("{m}-")))
        .map(|(c, m)| (c.clone(), m.clone()))
        .expect("a member that does not lead drives a cluster");
    let v = members.iter().position(|m| *m == victim).expect("victim");
    let mut killed = replicas[v].take().expect("victim runs");
    let killed_at = Instant::now();
    killed.child.kill().expect("kill -9");
    let _ = killed.child.wait();
    let survivor = (0..3).find(|i| *i != v).expect("a survivor");
    let taker = wait_for(
        "another member to take the cluster over",
        TIMEOUT,
        || async {
            owners_of(running(&replicas, survivor))
                .get(&victim_cluster)
                .filter(|m| **m != victim)
                .cloned()
        },
    )
    .await;
    println!(
        "{victim_cluster}: {victim} killed, {taker} drives it {:?} later (member Lease 4s)",
        killed_at.elapsed()
    );
    let moved: Vec<_> = owners_of(running(&replicas, survivor))
        .into_iter()
        .filter(|(c, m)| owners.get(c) != Some(m))
        .collect();
    assert_eq!(
        moved,
        vec![(victim_cluster.clone(), taker.clone())],
        "only the killed member's cluster moved"
    );

    for (i, cluster) in managed.iter().enumerate() {
        complete_job(cluster, &app_ns, "db-check").await;
        let (_, uid) = wait_for(
            &format!("the plan on {} to finish", names[i]),
            TIMEOUT,
            || async {
                plan(cluster, &app_ns, "db")
                    .await
                    .filter(|(s, _)| s == "COMPLETE")
            },
        )
        .await;
        assert_eq!(uid, uids[i], "the same plan run continued on {}", names[i]);
        let cm = get_opt(cluster, "v1", "ConfigMap", &app_ns, "db-config")
            .await
            .expect("configmap");
        assert_eq!(
            cm.pointer("/data/message").and_then(Value::as_str),
            Some("edited"),
            "step config ran again on {}: {cm}",
            names[i]
        );
    }

    // The write log: per cluster, each member's engine writes form one unbroken span, and
    // the taken-over cluster was written by the killed member, then by the new owner only.
    let text = std::fs::read_to_string(&log).expect("write log");
    let mut per: std::collections::BTreeMap<String, Vec<(i64, String)>> = Default::default();
    for line in text.lines() {
        let w: Value = serde_json::from_str(line).expect("a JSON line");
        assert_ne!(w["member"], "m-odd", "the odd member wrote: {line}");
        if w["role"] == "owner" {
            per.entry(w["cluster"].as_str().expect("cluster").to_string())
                .or_default()
                .push((
                    w["ms"].as_i64().expect("ms"),
                    w["member"].as_str().expect("m").to_string(),
                ));
        }
    }
    for (cluster, writes) in &mut per {
        writes.sort();
        let mut spans: Vec<&str> = Vec::new();
        for (_, m) in writes.iter() {
            if spans.last() != Some(&m.as_str()) {
                assert!(
                    !spans.contains(&m.as_str()),
                    "{cluster}: {m} wrote again after another member: {writes:?}"
                );
                spans.push(m);
            }
        }
        let expected: Vec<&str> = if *cluster == victim_cluster {
            vec![victim.as_str(), taker.as_str()]
        } else {
            vec![owners[cluster].as_str()]
        };
        assert_eq!(spans, expected, "{cluster}: writers in order");
    }
    assert_eq!(per.len(), 3, "every cluster's engine wrote: {per:?}");

    drop(replicas);
    for cluster in &managed {
        let _ = cluster
            .delete(&ObjectRef::new("v1", "Namespace", None, &app_ns))
            .await;
    }
    let _ = mgmt
        .delete(&ObjectRef::new("v1", "Namespace", None, &lease_ns))
        .await;
}

/// Issue 23, bad input: without RBAC on Leases, a sharded replica refuses to start and names
/// the verbs and the resource.
#[test]
fn a_member_without_lease_rbac_is_refused_naming_the_verbs() {
    let (server, nobody) = envtest::nobody();
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "nobody.kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: {nobody}\ncontexts:\n- name: nobody\n  context:\n    cluster: c\n    user: u\ncurrent-context: nobody\n"
        ),
    );
    write(
        dir.path(),
        "kudo.yaml",
        "repositories:\n  - {name: r, url: ./repo}\nclusters:\n  - {name: sim, sim: {}}\nleaderElection:\n  kubeconfig: nobody.kubeconfig\n  namespace: kudo-system\nsharding: {enabled: true}\n",
    );
    std::fs::create_dir_all(dir.path().join("repo")).expect("repo dir");
    let out = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["serve", "--config"])
        .arg(dir.path().join("kudo.yaml"))
        .args(["--listen", "127.0.0.1:0", "--member-name", "m-0"])
        .output()
        .expect("kudo serve runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "refused: {err}");
    assert!(
        err.contains(
            "may not get, list, watch, create, update, delete leases.coordination.k8s.io in namespace kudo-system"
        ),
        "{err}"
    );
}

// ---- agent clusters (issue 23, mode 2) ----

/// A `kudo manager --agent` process for envtest cluster `context`, named `cluster` in
/// kudo.yaml; killed on drop.
fn start_agent(dir: &Path, cluster: &str, context: &str, control_plane: &str) -> Serve {
    let kc = envtest::kubeconfig();
    let stdout = dir.join(format!("agent-{cluster}.stdout"));
    let stderr = dir.join(format!("agent-{cluster}.stderr"));
    let child = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["manager", "--agent", "--no-typed", "--kubeconfig"])
        .arg(kc)
        .args([
            "--context",
            context,
            "--cluster",
            cluster,
            "--management-kubeconfig",
        ])
        .arg(kc)
        .args(["--management-context", "envtest-1"])
        .args(["--control-plane", control_plane])
        .args([
            "--agent-interval",
            "300ms",
            "--heartbeat",
            "3s",
            "--poll-interval",
            "500ms",
        ])
        .env("RUST_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("kudo manager --agent starts");
    Serve {
        child,
        port: 0,
        stdout,
        stderr,
    }
}

fn cluster_status(serve: &Serve, name: &str) -> Option<Value> {
    status_of(serve)?
        .get("clusters")?
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
}

fn plan_on(serve: &Serve, namespace: &str, name: &str, cluster: &str) -> Option<String> {
    let s = status_of(serve)?;
    let inst = s["instances"]
        .as_array()?
        .iter()
        .find(|i| i["namespace"] == namespace && i["name"] == name)?
        .clone();
    inst.pointer(&format!("/clusters/{cluster}/plans/deploy"))?
        .as_str()
        .map(str::to_string)
}

/// Issue 23, mode 2: cluster `edge` is an agent cluster (no kubeconfig in kudo.yaml); its
/// `kudo manager --agent` pulls the desired state from the management cluster. The control
/// plane rolls one Instance out to it and to push-mode cluster `push`; with the control plane
/// stopped, the agent's plan finishes; started again, the control plane shows it; with the
/// agent stopped, `edge` shows "agent not reporting" (not a stuck plan).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cluster_runs_its_plans_while_the_control_plane_is_away() {
    let kubeconfig = envtest::kubeconfig();
    let mgmt = envtest::cluster(1).await;
    let push = envtest::cluster(2).await;
    let edge = envtest::cluster(3).await;
    let lease_ns = envtest::unique("agents");
    let app_ns = envtest::unique("pulled");
    let control_plane = envtest::unique("cp");
    // A name of its own per run: its namespace kudo-agent-<name> on the management cluster.
    let edge_name = envtest::unique("edge");
    let agent_ns = format!("kudo-agent-{edge_name}");
    for ns in [lease_ns.as_str(), agent_ns.as_str()] {
        let _ = mgmt
            .apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    write_two_step_framework(&repo, "");
    write(
        &repo,
        "instances/db.yaml",
        &instance_doc("db", &app_ns, "agents", "  selfHeal: false\n"),
    );
    write(
        dir.path(),
        "kudo.yaml",
        &format!(
            "controlPlane: {control_plane}\nrepositories:\n  - {{name: r, url: {repo}, interval: 1s}}\nclusters:\n  - name: push\n    kubeconfig: {kc}\n    context: envtest-2\n    labels: {{fleet: agents}}\n  - name: {edge_name}\n    agent: true\n    labels: {{fleet: agents}}\nleaderElection:\n  kubeconfig: {kc}\n  context: envtest-1\n  namespace: {lease_ns}\n  leaseDuration: 4s\n  renewDeadline: 3s\n  retryPeriod: 500ms\n",
            repo = repo.display(),
            kc = kubeconfig.display(),
        ),
    );
    let config = dir.path().join("kudo.yaml");
    let agent = start_agent(dir.path(), &edge_name, "envtest-3", &control_plane);
    let serve = Serve::start(dir.path(), "cp", &config, &[("POD_NAME", "cp-0")]);

    // Both clusters run step `config`, then wait on the Job of step `check`.
    for (name, cluster) in [("push", &push), (edge_name.as_str(), &edge)] {
        wait_for(&format!("{name} to start step check"), TIMEOUT, || async {
            let inst = get_opt(cluster, "kudo.dev/v1beta1", "Instance", &app_ns, "db").await?;
            let steps = inst.pointer("/status/planStatus/deploy/phases/0/steps")?;
            (steps.get(1)?.get("status")?.as_str() == Some("IN_PROGRESS")).then_some(())?;
            get_opt(cluster, "batch/v1", "Job", &app_ns, "db-check").await
        })
        .await;
    }
    wait_for(
        "the control plane to see edge's plan through its agent",
        TIMEOUT,
        || async {
            (plan_on(&serve, &app_ns, "db", &edge_name).as_deref() == Some("IN_PROGRESS")
                && cluster_status(&serve, &edge_name)?["up"] == true)
                .then_some(())
        },
    )
    .await;
    let (_, uid) = plan(&edge, &app_ns, "db").await.expect("edge's plan");

    // The control plane goes away; the agent's plan still finishes.
    let mut serve = serve;
    serve.child.kill().expect("kill -9 the control plane");
    let _ = serve.child.wait();
    complete_job(&edge, &app_ns, "db-check").await;
    let (_, uid_after) = wait_for(
        "edge's plan to finish without a control plane",
        TIMEOUT,
        || async {
            plan(&edge, &app_ns, "db")
                .await
                .filter(|(s, _)| s == "COMPLETE")
        },
    )
    .await;
    assert_eq!(uid, uid_after, "the same plan run");

    // Back: the control plane shows what happened meanwhile, and push finishes too.
    let serve = Serve::start(dir.path(), "cp2", &config, &[("POD_NAME", "cp-0")]);
    wait_for(
        "the control plane to show edge COMPLETE",
        TIMEOUT,
        || async {
            (plan_on(&serve, &app_ns, "db", &edge_name).as_deref() == Some("COMPLETE"))
                .then_some(())
        },
    )
    .await;
    complete_job(&push, &app_ns, "db-check").await;
    wait_for("push COMPLETE", TIMEOUT, || async {
        (plan_on(&serve, &app_ns, "db", "push").as_deref() == Some("COMPLETE")).then_some(())
    })
    .await;

    // The agent goes away: edge shows "agent not reporting", its plan as last reported.
    drop(agent);
    let edge_status = wait_for("edge to show agent not reporting", TIMEOUT, || async {
        let c = cluster_status(&serve, &edge_name)?;
        (c["up"] == false && c["category"] == "agent-not-reporting").then_some(c)
    })
    .await;
    let reason = edge_status["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("agent not reporting: last heartbeat"),
        "{edge_status}"
    );
    assert_eq!(
        plan_on(&serve, &app_ns, "db", &edge_name).as_deref(),
        Some("COMPLETE"),
        "the last report stays"
    );
    assert_eq!(cluster_status(&serve, "push").expect("push")["up"], true);

    drop(serve);
    for cluster in [&push, &edge] {
        let _ = cluster
            .delete(&ObjectRef::new("v1", "Namespace", None, &app_ns))
            .await;
    }
    for ns in [&lease_ns, &agent_ns] {
        let _ = mgmt
            .delete(&ObjectRef::new("v1", "Namespace", None, ns))
            .await;
    }
}
