//! `kudo bench` end to end through the binary, at the smallest size: the scenarios run, print
//! their table and write plausible figures. No timing goals (DESIGN §7).

use std::process::Command;

use serde_json::Value;

/// Runs `kudo bench <args> --json FILE` and returns its table (stdout) and figures.
fn bench(args: &[&str]) -> (String, Value) {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .env("RUST_LOG", "warn")
        .output()
        .expect("kudo runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kudo bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).expect("figures written");
    (stdout, serde_json::from_str(&text).expect("JSON"))
}

fn number(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} is not a number in {v:#}"))
}

const VERBS: [&str; 8] = [
    "get",
    "list",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "discovery",
];

/// Request verbs are the metric's verbs, watches never among them, counts not negative.
fn check_verbs(v: &Value, pointer: &str) {
    let by_verb = v
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{pointer} is not an object in {v:#}"));
    for (verb, n) in by_verb {
        assert!(
            VERBS.contains(&verb.as_str()),
            "unknown verb {verb} in {v:#}"
        );
        assert!(n.as_u64().is_some_and(|n| n > 0), "{verb}: {n} in {v:#}");
    }
}

#[test]
fn idle_observes_a_converged_fleet_for_its_window() {
    let (table, v) = bench(&[
        "idle",
        "--clusters",
        "2",
        "--instances",
        "1",
        "--latency-ms",
        "1",
        "--ready-delay-ms",
        "20",
        "--window",
        "3s",
    ]);
    assert!(
        table.contains("req/s per cluster") && table.contains("window 3.000 s"),
        "{table}"
    );
    assert_eq!(v["scenario"], "idle", "{v:#}");
    let run = &v["runs"][0];
    assert_eq!(number(run, "/plans"), 2.0, "{run:#}");
    let idle = &run["idle"];
    assert!(number(idle, "/windowSeconds") >= 3.0, "{idle:#}");
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    for share in ["/controlPlaneCoreShare", "/simulatorCoreShare"] {
        let s = number(idle, share);
        // CPU seconds per second: at most every core, with a tick of rounding.
        assert!((0.0..=cores + 0.1).contains(&s), "{share} {s} in {idle:#}");
    }
    let rate = number(idle, "/requestsPerSecondPerCluster");
    let requests = number(idle, "/apiRequests");
    assert!(rate >= 0.0 && requests >= 0.0, "{idle:#}");
    // The rate is the requests over the window and the two clusters.
    let expected = requests / number(idle, "/windowSeconds") / 2.0;
    assert!((rate - expected).abs() < 1e-9, "{idle:#}");
    check_verbs(idle, "/requestsByVerb");
    // The daemon keeps its watches open on both clusters while idle.
    assert!(number(idle, "/watchesOpen") >= 2.0, "{idle:#}");
    assert!(
        number(idle, "/watchRestarts") <= number(idle, "/watchRequests"),
        "{idle:#}"
    );
    assert!(number(idle, "/rssBytes") > 0.0, "{idle:#}");
    assert!(run.get("simPeakRssBytes").is_none(), "in process: {run:#}");
    // The GitOps worker reads Instances from the engine's watch: a converged fleet is not
    // listed (it was, every 2 s per cluster).
    assert!(
        idle.pointer("/requestsByVerb/list").is_none(),
        "an idle fleet was listed: {idle:#}"
    );
    // One Instance watch per cluster (the engine's), not two: Instance, OperatorVersion and
    // the 8 owned kinds on each of the 2 clusters.
    assert_eq!(number(idle, "/watchesOpen"), 20.0, "{idle:#}");
}

#[test]
fn fanout_with_clusters_in_a_kudo_sim_process() {
    let (table, v) = bench(&[
        "fanout",
        "--clusters",
        "2",
        "--instances",
        "1",
        "--latency-ms",
        "1",
        "--ready-delay-ms",
        "20",
        "--sim-process",
    ]);
    assert!(
        table.contains("clusters in a `kudo sim` process") && table.contains("req/plan by verb"),
        "{table}"
    );
    let run = &v["runs"][0];
    assert_eq!(run["options"]["simProcess"], true, "{run:#}");
    assert!(number(run, "/simPeakRssBytes") > 0.0, "{run:#}");
    assert!(number(run, "/peakRssBytes") > 0.0, "{run:#}");
    let fanout = &run["fanout"];
    // Each plan applies six objects: at least that many requests (watches not counted).
    assert!(
        number(fanout, "/requestsPerInstancePlan") >= 6.0,
        "{fanout:#}"
    );
    check_verbs(fanout, "/requestsByVerb");
    // The other process served the requests; this one decided them.
    assert!(number(fanout, "/simulatorCpuSeconds") > 0.0, "{fanout:#}");
    assert!(
        number(fanout, "/controlPlaneCpuSeconds") > 0.0,
        "{fanout:#}"
    );
    assert!(
        number(fanout, "/controlPlaneCpuMsPerPlan") > 0.0,
        "{fanout:#}"
    );
    // The row names the verbs per plan.
    let row = table
        .lines()
        .find(|l| l.starts_with("| 2 "))
        .unwrap_or_else(|| panic!("no row for 2 clusters:\n{table}"));
    assert!(
        row.contains(" patch") && !row.contains("in process"),
        "{row}"
    );
}

#[test]
fn coldstart_refuses_a_sim_process() {
    let out = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["bench", "coldstart", "--clusters", "2", "--sim-process"])
        .output()
        .expect("kudo runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--sim-process") && stderr.contains("coldstart"),
        "{stderr}"
    );
}
