//! `kudo bench shards`: K simulated clusters driven by R sharded `kudo serve` replicas, each a
//! separate process, against one unsharded process on the same fleet.
//!
//! The clusters are served by `kudo sim` processes over loopback HTTP/1.1, where every watch
//! holds a connection: the bench splits the clusters over as many `kudo sim` processes as the
//! file-descriptor limit needs (`ulimit -n`), and refuses a size whose replicas would not
//! fit. The management cluster (member Leases, claims, the leader's Lease) is one more
//! simulated cluster in a process of its own.
//!
//! Per round: from the processes' start to every plan COMPLETE (`/api/v1/status` of one
//! replica), each process's RSS and CPU seconds then, and its share of a core over an idle
//! window. Sharded only: `kill -9` of a member that does not lead, the time until a survivor
//! shows every one of its clusters driven by another member, how many clusters moved, and
//! what the new owners wrote there (a step that ran again would apply its objects; with
//! nothing drifted, a takeover writes none). The write log also counts the Instance status
//! writes of the fanout: what publishing per-cluster summaries to the management cluster
//! would have added there.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::BenchError;
use super::report::{Table, mib, secs};

fn setup(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Setup {
        scenario: "shards",
        reason: reason.to_string(),
    }
}

fn timeout(what: impl Into<String>, t: Duration) -> BenchError {
    BenchError::Timeout {
        scenario: "shards",
        what: what.into(),
        seconds: t.as_secs(),
    }
}

#[derive(Debug, Clone)]
pub struct ShardOptions {
    pub clusters: usize,
    pub replicas: usize,
    pub instances: usize,
    pub ready_delay_ms: u64,
    /// memberLeaseDuration (and the leader Lease's duration), seconds.
    pub lease_s: u64,
    pub timeout_s: u64,
    /// Seconds of the idle window after convergence.
    pub idle_s: u64,
}

/// One round's figures.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Round {
    pub replicas: usize,
    pub sharded: bool,
    /// Why the round did not run (it would not fit the file-descriptor limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    pub fanout_seconds: f64,
    pub rss_bytes: Vec<u64>,
    pub cpu_seconds: Vec<f64>,
    pub idle_core_percent: Vec<f64>,
    /// Clusters driven per member when converged.
    pub clusters_per_member: BTreeMap<String, usize>,
    pub instance_status_writes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    pub sim_processes: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Kill {
    pub member: String,
    pub handover_seconds: f64,
    pub clusters_moved: usize,
    pub other_clusters_moved: usize,
    /// Writes to objects other than Instances by the new owners on the moved clusters.
    pub object_writes_after: u64,
    pub instance_writes_after: u64,
    /// Those writes by `METHOD resource` (e.g. `POST events`): a step run again would show
    /// as writes of the objects it applies (deployments, ...).
    pub writes_after_by_resource: BTreeMap<String, u64>,
}

fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    #[allow(unsafe_code)]
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0;
    if ok { r.rlim_cur } else { 1024 }
}

/// Connections one cluster costs at the simulator (measured, HTTP/1.1): one listener, about
/// five per replica (its Instance watch, pooled requests of worker, probe and planner), and
/// its owner's engine watches.
fn fds_per_cluster(replicas: usize) -> u64 {
    1 + 5 * replicas as u64 + 10
}

/// Connections one replica opens: about five per cluster, ten more per cluster it drives.
fn fds_per_replica(clusters: usize, replicas: usize) -> u64 {
    5 * clusters as u64 + 10 * clusters.div_ceil(replicas.max(1)) as u64 + 200
}

pub async fn run(opts: &ShardOptions) -> Result<(Table, Value), BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("kudo-bench-shards-")
        .tempdir()
        .map_err(setup)?;
    let repo = super::fleet::Repo::create(&dir.path().join("repo"), opts.instances)?;
    repo.write_instances("v1", "parallel")?;
    repo.commit("bench: fleet")?;
    let limit = nofile_limit();
    let mut rounds = Vec::new();
    for (replicas, sharded) in [(1, false), (opts.replicas, true)] {
        let need = fds_per_replica(opts.clusters, replicas);
        if need * 10 > limit * 8 {
            rounds.push(Round {
                replicas,
                sharded,
                skipped: Some(format!(
                    "each process would need about {need} file descriptors; ulimit -n is {limit}"
                )),
                ..Default::default()
            });
            continue;
        }
        let out = dir.path().join(if sharded { "sharded" } else { "single" });
        std::fs::create_dir_all(&out).map_err(setup)?;
        rounds.push(round(opts, replicas, sharded, &repo.dir, &out, limit).await?);
    }
    Ok(tabulate(opts, &rounds))
}

struct Replica {
    name: String,
    child: tokio::process::Child,
    pid: u32,
    port: u16,
}

/// Starts `kudo serve` (this executable) on `config`, listening on `port`, its output in
/// `out/<tag>.stdout|stderr`; returns the child and its pid.
pub(super) fn spawn_serve(
    config: &Path,
    port: u16,
    out: &Path,
    tag: &str,
    envs: &[(&str, &std::ffi::OsStr)],
    cache_dir: Option<&Path>,
) -> Result<(tokio::process::Child, u32), BenchError> {
    let exe = std::env::current_exe().map_err(setup)?;
    let file =
        |suffix: &str| std::fs::File::create(out.join(format!("{tag}.{suffix}"))).map_err(setup);
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    if let Some(dir) = cache_dir {
        cmd.arg("--cache-dir").arg(dir);
    }
    let child = cmd
        .envs(envs.iter().copied())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(file("stdout")?)
        .stderr(file("stderr")?)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| setup(format!("cannot run {} serve: {e}", exe.display())))?;
    let pid = child
        .id()
        .ok_or_else(|| setup("kudo serve exited at once"))?;
    Ok((child, pid))
}

/// Polls `/api/v1/status` on `port` until `plans` plans are COMPLETE and `also` holds.
pub(super) async fn wait_for_plans(
    http: &reqwest::Client,
    port: u16,
    plans: usize,
    wait: Duration,
    scenario: &'static str,
    also: impl Fn(&Value) -> bool,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(s) = get_json(http, port, "/api/v1/status").await
            && complete_plans(&s) >= plans
            && also(&s)
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                scenario,
                what: format!("{plans} plans COMPLETE"),
                seconds: wait.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(super) fn free_port() -> Result<u16, BenchError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(setup)?
        .local_addr()
        .map_err(setup)?
        .port())
}

pub(super) async fn get_json(client: &reqwest::Client, port: u16, path: &str) -> Option<Value> {
    let r = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    r.json().await.ok()
}

pub(super) async fn get_text(client: &reqwest::Client, port: u16, path: &str) -> Option<String> {
    client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

pub(super) fn complete_plans(status: &Value) -> usize {
    status["instances"]
        .as_array()
        .map(|is| {
            is.iter()
                .flat_map(|i| {
                    i["clusters"]
                        .as_object()
                        .into_iter()
                        .flat_map(|m| m.values())
                })
                .filter(|c| c["plans"]["deploy"] == "COMPLETE")
                .count()
        })
        .unwrap_or(0)
}

fn owners(status: &Value) -> BTreeMap<String, String> {
    status["sharding"]["owners"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(c, o)| Some((c.clone(), o.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            let line = t.lines().find(|l| l.starts_with("VmRSS:"))?;
            line["VmRSS:".len()..]
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |k| k * 1024)
}

pub(super) fn cpu(pid: u32) -> f64 {
    super::process::pid_cpu_seconds(pid).unwrap_or(0.0)
}

async fn round(
    opts: &ShardOptions,
    replicas: usize,
    sharded: bool,
    repo: &Path,
    out: &Path,
    limit: u64,
) -> Result<Round, BenchError> {
    let wait = Duration::from_secs(opts.timeout_s);
    let per_sim = ((limit * 8 / 10) / fds_per_cluster(replicas)).max(1) as usize;
    let mut sims = Vec::new();
    let mut entries = String::new();
    let mut start = 0;
    while start < opts.clusters {
        let n = per_sim.min(opts.clusters - start);
        let kubeconfig = out.join(format!("sim-{}.kubeconfig", sims.len()));
        let (child, _) =
            super::clusters::spawn_sim(n, &kubeconfig, 0, opts.ready_delay_ms, wait).await?;
        for j in 0..n {
            entries.push_str(&format!(
                "  - {{name: {}, labels: {{fleet: bench}}, kubeconfig: \"{}\", context: sim-{}}}\n",
                super::clusters::cluster_name(start + j),
                kubeconfig.display(),
                j + 1
            ));
        }
        sims.push(child);
        start += n;
    }
    let sim_processes = sims.len();
    let mut text = format!(
        "listen: 127.0.0.1:0\ncacheDir: {}\nrepositories:\n  - {{name: bench, url: \"file://{}\", interval: 1h}}\nclusters:\n{entries}",
        out.join("cache").display(),
        repo.display()
    );
    if sharded {
        let kubeconfig = out.join("mgmt.kubeconfig");
        let (child, _) =
            super::clusters::spawn_sim(1, &kubeconfig, 0, opts.ready_delay_ms, wait).await?;
        sims.push(child);
        let lease = opts.lease_s.max(4);
        text.push_str(&format!(
            "leaderElection:\n  kubeconfig: \"{}\"\n  context: sim-1\n  namespace: default\n  leaseDuration: {lease}s\n  renewDeadline: {}s\n  retryPeriod: 1s\nsharding:\n  enabled: true\n  memberLeaseDuration: {lease}s\n",
            kubeconfig.display(),
            lease - 2
        ));
    }
    let config = out.join("kudo.yaml");
    std::fs::write(&config, &text).map_err(setup)?;
    let log = out.join("writes.jsonl");
    let started = Instant::now();
    let mut procs = Vec::new();
    for i in 0..replicas {
        let name = format!("m-{i}");
        let port = free_port()?;
        let (child, pid) = spawn_serve(
            &config,
            port,
            out,
            &name,
            &[
                ("POD_NAME", name.as_str().as_ref()),
                ("KUDO_WRITE_LOG", log.as_os_str()),
            ],
            Some(&out.join(format!("cache-{i}"))),
        )?;
        procs.push(Replica {
            name,
            child,
            pid,
            port,
        });
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(setup)?;
    let plans = opts.clusters * opts.instances;
    let clusters = opts.clusters;
    wait_for_plans(&http, procs[0].port, plans, wait, "shards", |s| {
        !sharded || owners(s).len() == clusters
    })
    .await?;
    let fanout = started.elapsed().as_secs_f64();
    let rss_bytes: Vec<u64> = procs.iter().map(|p| rss(p.pid)).collect();
    let cpu_seconds: Vec<f64> = procs.iter().map(|p| cpu(p.pid)).collect();
    let window = Duration::from_secs(opts.idle_s.max(1));
    tokio::time::sleep(window).await;
    let idle_core_percent = procs
        .iter()
        .zip(&cpu_seconds)
        .map(|(p, before)| 100.0 * (cpu(p.pid) - before) / window.as_secs_f64())
        .collect();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let instance_status_writes = text
        .lines()
        .filter(|l| {
            l.contains("\"role\":\"owner\"") && l.contains("/instances/") && l.contains("/status\"")
        })
        .count() as u64;
    let mut report = Round {
        replicas,
        sharded,
        fanout_seconds: fanout,
        rss_bytes,
        cpu_seconds,
        idle_core_percent,
        instance_status_writes,
        sim_processes,
        ..Default::default()
    };
    if sharded {
        let status = get_json(&http, procs[0].port, "/api/v1/status")
            .await
            .unwrap_or_default();
        let before = owners(&status);
        for m in before.values() {
            *report.clusters_per_member.entry(m.clone()).or_default() += 1;
        }
        report.kill = Some(kill_one(&mut procs, &http, &before, &log, wait).await?);
    }
    for mut p in procs {
        let _ = p.child.kill().await;
    }
    for mut s in sims {
        let _ = s.kill().await;
    }
    Ok(report)
}

/// `kill -9` of the first member that does not lead; waits until a survivor shows all of
/// its clusters driven by others, then reads what the new owners wrote there.
async fn kill_one(
    procs: &mut [Replica],
    http: &reqwest::Client,
    before: &BTreeMap<String, String>,
    log: &Path,
    wait: Duration,
) -> Result<Kill, BenchError> {
    let mut victim = None;
    for (i, p) in procs.iter().enumerate() {
        let metrics = get_text(http, p.port, "/metrics").await.unwrap_or_default();
        if metrics.lines().any(|l| l.trim() == "kudo_leader 0") {
            victim = Some(i);
            break;
        }
    }
    let v = victim.ok_or_else(|| setup("no replica reports kudo_leader 0"))?;
    let name = procs[v].name.clone();
    let survivor = procs
        .iter()
        .position(|p| p.name != name)
        .ok_or_else(|| setup("no survivor"))?;
    let offset = std::fs::metadata(log).map_or(0, |m| m.len());
    let killed = Instant::now();
    let _ = procs[v].child.kill().await;
    let deadline = Instant::now() + wait;
    let after = loop {
        if let Some(s) = get_json(http, procs[survivor].port, "/api/v1/status").await {
            let now = owners(&s);
            if now.len() == before.len() && now.values().all(|m| *m != name) {
                break now;
            }
        }
        if Instant::now() > deadline {
            return Err(timeout(
                format!("the clusters of {name} to be taken over"),
                wait,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let handover = killed.elapsed().as_secs_f64();
    let moved: Vec<&String> = before
        .iter()
        .filter(|(c, m)| after.get(*c) != Some(*m))
        .map(|(c, _)| c)
        .collect();
    let other = moved.iter().filter(|c| before[**c] != name).count();
    // The new owners' engines list, watch and reconcile; give them a few seconds.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let bytes = std::fs::read(log).unwrap_or_default();
    let tail = String::from_utf8_lossy(bytes.get(offset as usize..).unwrap_or_default());
    let (mut objects, mut instances) = (0, 0);
    let mut by_resource: BTreeMap<String, u64> = BTreeMap::new();
    for line in tail.lines() {
        let Ok(w) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let cluster = w["cluster"].as_str().unwrap_or_default().to_string();
        if w["role"] != "owner" || !moved.contains(&&cluster) {
            continue;
        }
        let path = w["path"].as_str().unwrap_or_default();
        // /api/v1/namespaces/NS/RESOURCE[/NAME[/SUB]] or /apis/G/V/namespaces/NS/RESOURCE...
        let parts: Vec<&str> = path.split('/').collect();
        let resource = parts
            .iter()
            .position(|p| *p == "namespaces")
            .and_then(|i| parts.get(i + 2))
            .or_else(|| parts.last())
            .copied()
            .unwrap_or("?");
        *by_resource
            .entry(format!(
                "{} {resource}",
                w["method"].as_str().unwrap_or("?")
            ))
            .or_default() += 1;
        if path.contains("/instances/") {
            instances += 1;
        } else {
            objects += 1;
        }
    }
    Ok(Kill {
        member: name,
        handover_seconds: handover,
        clusters_moved: moved.len(),
        other_clusters_moved: other,
        object_writes_after: objects,
        instance_writes_after: instances,
        writes_after_by_resource: by_resource,
    })
}

fn tabulate(opts: &ShardOptions, rounds: &[Round]) -> (Table, Value) {
    let mut t = Table::new(
        format!(
            "shards: {} clusters × {} instances, one process vs {} sharded replicas",
            opts.clusters, opts.instances, opts.replicas
        ),
        &[
            "run",
            "fanout",
            "RSS per process",
            "CPU s per process",
            "idle % core per process",
            "clusters per member",
        ],
    );
    let list = |v: Vec<String>| v.join(" / ");
    for r in rounds {
        let label = if r.sharded {
            format!("{} replicas (sharded)", r.replicas)
        } else {
            "1 process".to_string()
        };
        if let Some(why) = &r.skipped {
            t.row(vec![label, format!("not run: {why}")]);
            continue;
        }
        t.row(vec![
            label,
            secs(r.fanout_seconds),
            list(r.rss_bytes.iter().map(|b| mib(*b)).collect()),
            list(r.cpu_seconds.iter().map(|c| format!("{c:.1}")).collect()),
            list(
                r.idle_core_percent
                    .iter()
                    .map(|c| format!("{c:.1}"))
                    .collect(),
            ),
            list(
                r.clusters_per_member
                    .values()
                    .map(usize::to_string)
                    .collect(),
            ),
        ]);
    }
    for r in rounds {
        if let Some(k) = &r.kill {
            t.row(vec![
                format!("kill -9 {}", k.member),
                format!("handover {}", secs(k.handover_seconds)),
                format!("{} clusters moved", k.clusters_moved),
                format!("{} others moved", k.other_clusters_moved),
                format!(
                    "{} object writes after{}",
                    k.object_writes_after,
                    if k.writes_after_by_resource.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({})",
                            k.writes_after_by_resource
                                .iter()
                                .map(|(r, n)| format!("{n} {r}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
                // Running a step writes the Instance's plan status first.
                format!(
                    "{} Instance writes after: steps re-run {}",
                    k.instance_writes_after,
                    if k.instance_writes_after == 0 {
                        "0"
                    } else {
                        "possible"
                    }
                ),
            ]);
        }
        if r.sharded && r.skipped.is_none() {
            t.row(vec![
                "summary writes".into(),
                format!(
                    "{} Instance status writes in the fanout",
                    r.instance_status_writes
                ),
            ]);
        }
    }
    let json = json!({
        "options": {
            "clusters": opts.clusters,
            "replicas": opts.replicas,
            "instances": opts.instances,
            "readyDelayMs": opts.ready_delay_ms,
            "leaseSeconds": opts.lease_s,
        },
        "fileDescriptorLimit": nofile_limit(),
        "rounds": rounds,
    });
    (t, json)
}
