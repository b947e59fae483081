//! `kudo bench agents`: what the control plane pays per cluster in push mode (it runs every
//! engine and holds every watch) against agent mode (each cluster's agent runs its engine; the
//! control plane only exchanges work items and reads heartbeats in the management cluster).
//!
//! The clusters are a `kudo sim` process; the control plane is a `kudo serve` process, whose
//! RSS, CPU seconds and API requests (its own `kudo_cluster_*` metrics) are measured from the
//! start to every plan COMPLETE, then over an idle window. In agent mode the agents (pull
//! loop and engine per cluster) run inside this bench process, so they are not counted:
//! the point is the control plane's cost.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::BenchError;
use super::report::{Table, mib, secs};
use super::shards::{cpu, free_port, get_text, rss, spawn_serve, wait_for_plans};
use super::usage::parse_counters;
use crate::cluster::Cluster;

fn setup(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Setup {
        scenario: "agents",
        reason: reason.to_string(),
    }
}

#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub clusters: usize,
    pub instances: usize,
    pub ready_delay_ms: u64,
    pub timeout_s: u64,
    pub idle_s: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModeReport {
    pub mode: String,
    pub fanout_seconds: f64,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub requests: u64,
    pub requests_per_plan: f64,
    pub watches_open: u64,
    pub idle_requests_per_second_per_cluster: f64,
    pub idle_core_percent: f64,
}

pub async fn run(opts: &AgentOptions) -> Result<(Table, Value), BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("kudo-bench-agents-")
        .tempdir()
        .map_err(setup)?;
    let repo = super::fleet::Repo::create(&dir.path().join("repo"), opts.instances)?;
    repo.write_instances("v1", "parallel")?;
    repo.commit("bench: fleet")?;
    let mut reports = Vec::new();
    for agent in [false, true] {
        let out = dir.path().join(if agent { "agent" } else { "push" });
        std::fs::create_dir_all(&out).map_err(setup)?;
        reports.push(mode(opts, agent, &repo.dir, &out).await?);
    }
    let mut t = Table::new(
        format!(
            "agents: the control plane's cost, {} clusters × {} instances",
            opts.clusters, opts.instances
        ),
        &[
            "mode",
            "fanout",
            "RSS",
            "CPU s",
            "requests per plan",
            "watches open",
            "idle req/s per cluster",
            "idle % core",
        ],
    );
    for r in &reports {
        t.row(vec![
            r.mode.clone(),
            secs(r.fanout_seconds),
            mib(r.rss_bytes),
            format!("{:.1}", r.cpu_seconds),
            format!("{:.1}", r.requests_per_plan),
            r.watches_open.to_string(),
            format!("{:.2}", r.idle_requests_per_second_per_cluster),
            format!("{:.1}", r.idle_core_percent),
        ]);
    }
    let json = json!({
        "options": {"clusters": opts.clusters, "instances": opts.instances, "readyDelayMs": opts.ready_delay_ms},
        "modes": reports,
    });
    Ok((t, json))
}

fn requests(metrics: &str) -> u64 {
    parse_counters(metrics).by_verb.values().sum()
}

async fn mode(
    opts: &AgentOptions,
    agent: bool,
    repo: &Path,
    out: &Path,
) -> Result<ModeReport, BenchError> {
    let wait = Duration::from_secs(opts.timeout_s);
    // Agent mode: one more simulated cluster, the management cluster.
    let n = opts.clusters + usize::from(agent);
    let kubeconfig = out.join("sim.kubeconfig");
    let (mut sim, _) =
        super::clusters::spawn_sim(n, &kubeconfig, 0, opts.ready_delay_ms, wait).await?;
    let names: Vec<String> = (0..opts.clusters)
        .map(super::clusters::cluster_name)
        .collect();
    let mut text = format!(
        "listen: 127.0.0.1:0\ncacheDir: {}\nrepositories:\n  - {{name: bench, url: \"file://{}\", interval: 1h}}\nclusters:\n",
        out.join("cache").display(),
        repo.display()
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut agents = Vec::new();
    if agent {
        let mgmt_ctx = format!("sim-{n}");
        let mgmt = Arc::new(
            Cluster::from_kubeconfig("management", &kubeconfig, Some(&mgmt_ctx))
                .await
                .map_err(setup)?,
        );
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!(
                "  - {{name: {name}, labels: {{fleet: bench}}, agent: true}}\n"
            ));
            let namespace = crate::gitops::config::ClusterAccess::agent_namespace(name);
            mgmt.apply(
                &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
            )
            .await
            .map_err(setup)?;
            let local = Arc::new(
                Cluster::from_kubeconfig(name, &kubeconfig, Some(&format!("sim-{}", i + 1)))
                    .await
                    .map_err(setup)?,
            );
            let config = crate::gitops::agent::AgentConfig {
                cluster: name.clone(),
                namespace,
                control_plane: crate::engine::objects::DEFAULT_CONTROL_PLANE.into(),
                interval: Duration::from_secs(2),
                heartbeat: Duration::from_secs(15),
            };
            agents.push(tokio::spawn(crate::gitops::agent::run(
                local.clone(),
                mgmt.clone(),
                config,
                stop.clone(),
            )));
            let ctx = Arc::new(crate::manager::reconcile::Context::new(
                local,
                Duration::from_secs(2),
            ));
            let mut s = stop.clone();
            agents.push(tokio::spawn(crate::manager::controller::run_with(
                ctx,
                None,
                async move {
                    let _ = s.wait_for(|v| *v).await;
                },
            )));
        }
        text.push_str(&format!(
            "leaderElection:\n  kubeconfig: \"{}\"\n  context: {mgmt_ctx}\n  namespace: default\n",
            kubeconfig.display()
        ));
    } else {
        for (i, name) in names.iter().enumerate() {
            text.push_str(&format!(
                "  - {{name: {name}, labels: {{fleet: bench}}, kubeconfig: \"{}\", context: sim-{}}}\n",
                kubeconfig.display(),
                i + 1
            ));
        }
    }
    let config = out.join("kudo.yaml");
    std::fs::write(&config, &text).map_err(setup)?;
    let port = free_port()?;
    let (mut serve, pid) = spawn_serve(
        &config,
        port,
        out,
        "serve",
        &[("POD_NAME", "bench".as_ref())],
        None,
    )?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(setup)?;
    let started = Instant::now();
    let plans = opts.clusters * opts.instances;
    wait_for_plans(&http, port, plans, wait, "agents", |_| true).await?;
    let fanout = started.elapsed().as_secs_f64();
    let metrics = get_text(&http, port, "/metrics").await.unwrap_or_default();
    let counted = parse_counters(&metrics);
    let total = requests(&metrics);
    let (rss_bytes, cpu_seconds) = (rss(pid), cpu(pid));
    let window = Duration::from_secs(opts.idle_s.max(1));
    tokio::time::sleep(window).await;
    let after = get_text(&http, port, "/metrics").await.unwrap_or_default();
    let idle_requests = requests(&after).saturating_sub(total);
    let report = ModeReport {
        mode: if agent { "agent (pull)" } else { "push" }.into(),
        fanout_seconds: fanout,
        rss_bytes,
        cpu_seconds,
        requests: total,
        requests_per_plan: total as f64 / plans.max(1) as f64,
        watches_open: counted.watches_open,
        idle_requests_per_second_per_cluster: idle_requests as f64
            / window.as_secs_f64()
            / opts.clusters.max(1) as f64,
        idle_core_percent: 100.0 * (cpu(pid) - cpu_seconds) / window.as_secs_f64(),
    };
    let _ = serve.kill().await;
    let _ = stop_tx.send(true);
    for a in agents {
        let _ = tokio::time::timeout(Duration::from_secs(10), a).await;
    }
    let _ = sim.kill().await;
    Ok(report)
}
