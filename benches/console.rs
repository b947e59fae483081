//! The console at 10 and 1,000 simulated clusters × 10 instances, in headless Chromium:
//! first paint (navigation start to the matrix rows in the DOM: `domInteractive`, the rows
//! being server-rendered; and the first contentful paint) and update latency (a plan
//! triggered from the page to its cell changing, through the engine, the observation and
//! the event stream).
//!
//!   cargo bench --bench console                     # 10 and 1000 clusters
//!   cargo bench --bench console -- --clusters 10    # one size
//!
//! Needs Debian's chromium and chromium-driver (`scripts/ci-deps`). Numbers only.

#[path = "../tests/support/browser.rs"]
mod browser;

use std::time::{Duration, Instant};

use browser::{Browser, Serve, free_port};
use serde_json::Value;

const INSTANCES: usize = 10;
const SAMPLES: usize = 7;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn converged(serve: &Serve, clusters: usize) -> Duration {
    let started = Instant::now();
    loop {
        let s = serve.status(None);
        let done = s["instances"].as_array().is_some_and(|a| {
            a.len() == INSTANCES
                && a.iter().all(|i| {
                    i["rollout"]["state"] == "complete"
                        && i["clusters"].as_object().map(|m| m.len()) == Some(clusters)
                })
        });
        if done {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "never converged"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn measure(clusters: usize) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["bench", "demo-fleet", "--clusters", &clusters.to_string()])
        .args([
            "--instances",
            &INSTANCES.to_string(),
            "--ready-delay-ms",
            "200",
            "--out",
        ])
        .arg(dir.path())
        .status()
        .expect("kudo bench demo-fleet");
    assert!(status.success());
    let serve = Serve::start(dir.path(), Some(&dir.path().join("kudo.yaml")), free_port()).await;
    let converge = converged(&serve, clusters).await;
    eprintln!(
        "{clusters} clusters converged in {:.1}s",
        converge.as_secs_f64()
    );
    let b = Browser::start().await;
    let (mut dom, mut fcp, mut resp) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        b.goto(&serve.url("/")).await;
        let t = b
            .js("const n = performance.getEntriesByType('navigation')[0]; const p = performance.getEntriesByName('first-contentful-paint')[0]; return [n.responseStart, n.domInteractive, p ? p.startTime : n.domInteractive, document.querySelectorAll('#matrix tbody tr').length]")
            .await;
        assert!(t[3].as_u64().unwrap_or(0) > 0, "rows present: {t}");
        resp.push(t[0].as_f64().unwrap_or(f64::NAN));
        dom.push(t[1].as_f64().unwrap_or(f64::NAN));
        fcp.push(t[2].as_f64().unwrap_or(f64::NAN));
    }
    b.wait_js(
        "live",
        "return document.getElementById('live').dataset.state === 'live'",
    )
    .await;
    let rows = b
        .js("return Array.from(document.querySelectorAll('#matrix tbody tr')).map(r => r.id.slice(4))")
        .await;
    let key = b
        .js("return document.querySelector('#matrix thead th[id^=\"col:\"]').id.slice(4)")
        .await;
    let key = key.as_str().expect("an instance column").to_string();
    let mut latency = Vec::new();
    for i in 0..SAMPLES {
        let cluster = rows[i].as_str().expect("cluster row").to_string();
        let ms = b
            .client
            .execute_async(
                "const [cluster, key, done] = arguments;
                 const td = document.getElementById('cell:' + cluster + '|' + key);
                 const t0 = performance.now();
                 const seen = () => td.querySelector('.plan').textContent === 'smoke';
                 const obs = new MutationObserver(() => { if (seen()) { obs.disconnect(); done(performance.now() - t0); } });
                 obs.observe(td, {subtree: true, childList: true, characterData: true, attributes: true});
                 fetch('/api/v1/instances/' + key + '/clusters/' + cluster + '/plans/trigger',
                       {method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify({plan: 'smoke'})})
                   .then(r => { if (!r.ok) r.text().then(t => done('refused: ' + t)); });",
                vec![Value::from(cluster.clone()), Value::from(key.clone())],
            )
            .await
            .expect("update measured");
        latency.push(ms.as_f64().unwrap_or_else(|| panic!("{cluster}: {ms}")));
    }
    b.close().await;
    let (dm, fm, rm) = (median(&mut dom), median(&mut fcp), median(&mut resp));
    let lm = median(&mut latency);
    let max = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "| {clusters} × {INSTANCES} | {:.0} ms | {:.0} ms (max {:.0}) | {:.0} ms | {:.0} ms (max {:.0}) |",
        rm,
        dm,
        max(&dom),
        fm,
        lm,
        max(&latency)
    );
    serde_json::json!({"clusters": clusters, "responseStartMs": rm, "domInteractiveMs": dm,
        "firstContentfulPaintMs": fm, "updateLatencyMs": lm, "updateLatencyMaxMs": max(&latency),
        "convergeSeconds": converge.as_secs_f64()})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--clusters")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 1000]);
    println!(
        "| clusters × instances | first byte | rows in DOM (first paint) | first contentful paint | update latency |"
    );
    println!("|---|---|---|---|---|");
    let mut all = Vec::new();
    for n in sizes {
        all.push(measure(n).await);
    }
    eprintln!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
}
