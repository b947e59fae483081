//! What a window of a fleet run cost: the control plane's API requests by verb (from the
//! daemon's own `kudo_cluster_*` metrics, so they are the same whether the clusters are in
//! process or behind loopback), its watches and their restarts apart, and CPU split between
//! the control plane and the simulated clusters ([`CpuSplit`]).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::process::CpuSplit;
use crate::gitops::serve::Shared;

/// The daemon's request counters at one moment, summed over clusters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Requests by verb, watches included.
    pub by_verb: BTreeMap<String, u64>,
    pub watch_restarts: u64,
    pub watches_open: u64,
}

/// The counters in the daemon's OpenMetrics text.
pub fn parse_counters(metrics: &str) -> Counters {
    let mut out = Counters::default();
    for line in metrics.lines() {
        let value = || {
            line.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        };
        if let Some(rest) = line.strip_prefix("kudo_cluster_api_requests_total{") {
            let verb = rest
                .split("verb=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap_or("?");
            *out.by_verb.entry(verb.to_string()).or_insert(0) += value();
        } else if line.starts_with("kudo_cluster_watch_restarts_total{") {
            out.watch_restarts += value();
        } else if line.starts_with("kudo_cluster_watches_open{") {
            out.watches_open += value();
        }
    }
    out
}

/// Counters and CPU at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    at: Instant,
    counters: Counters,
    cpu: CpuSplit,
}

impl Sample {
    /// Reads the daemon's metrics and /proc; `sim_pid` serves the clusters when they are not
    /// in this process.
    pub fn take(shared: &Shared, sim_pid: Option<u32>) -> Sample {
        Sample {
            at: Instant::now(),
            counters: parse_counters(&shared.metrics_text()),
            cpu: CpuSplit::now(sim_pid),
        }
    }
}

/// The cost of a window. Watch requests are apart from `requests_by_verb`: they are streams
/// (started once, restarted when they end), not work per plan.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Usage {
    pub window_seconds: f64,
    /// Requests other than watches, by verb.
    pub requests_by_verb: BTreeMap<String, u64>,
    /// Their sum.
    pub api_requests: u64,
    /// Watch requests sent in the window (new streams and restarts).
    pub watch_requests: u64,
    /// Of those, restarts of a stream that ended (timeouts resume; a 410 Gone relists).
    pub watch_restarts: u64,
    /// Streams open at the end of the window.
    pub watches_open: u64,
    pub control_plane_cpu_seconds: f64,
    pub simulator_cpu_seconds: f64,
}

impl Usage {
    pub fn between(before: &Sample, after: &Sample) -> Usage {
        let mut by_verb = after.counters.by_verb.clone();
        for (verb, n) in &before.counters.by_verb {
            if let Some(v) = by_verb.get_mut(verb) {
                *v = v.saturating_sub(*n);
            }
        }
        let watch_requests = by_verb.remove("watch").unwrap_or(0);
        by_verb.retain(|_, n| *n > 0);
        let cpu = after.cpu.since(&before.cpu);
        Usage {
            window_seconds: after.at.duration_since(before.at).as_secs_f64(),
            api_requests: by_verb.values().sum(),
            requests_by_verb: by_verb,
            watch_requests,
            watch_restarts: after
                .counters
                .watch_restarts
                .saturating_sub(before.counters.watch_restarts),
            watches_open: after.counters.watches_open,
            control_plane_cpu_seconds: cpu.control_plane,
            simulator_cpu_seconds: cpu.simulators,
        }
    }
}

/// Requests by verb divided by `per` (plans, or seconds × clusters), most first:
/// `41 patch / 18 get / 2.5 list`. Empty as `-`.
pub fn verb_breakdown(by_verb: &BTreeMap<String, u64>, per: f64) -> String {
    let per = if per > 0.0 { per } else { 1.0 };
    let mut verbs: Vec<(&String, &u64)> = by_verb.iter().filter(|(_, n)| **n > 0).collect();
    verbs.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    if verbs.is_empty() {
        return "-".into();
    }
    verbs
        .iter()
        .map(|(verb, n)| format!("{} {verb}", amount(**n as f64 / per)))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Whole numbers from 10 up, one decimal below, three below 0.1, `<0.001` for less.
pub fn amount(x: f64) -> String {
    if x >= 9.95 {
        format!("{x:.0}")
    } else if x >= 0.095 {
        let s = format!("{x:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    } else if x >= 0.0005 {
        format!("{x:.3}")
    } else if x > 0.0 {
        "<0.001".into()
    } else {
        "0".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = r#"# HELP kudo_cluster_api_requests Kubernetes API requests by cluster, verb and status code.
# TYPE kudo_cluster_api_requests counter
kudo_cluster_api_requests_total{cluster="c0000",verb="patch",code="200"} 41
kudo_cluster_api_requests_total{cluster="c0001",verb="patch",code="200"} 40
kudo_cluster_api_requests_total{cluster="c0001",verb="patch",code="409"} 1
kudo_cluster_api_requests_total{cluster="c0000",verb="watch",code="200"} 12
kudo_cluster_api_requests_total{cluster="c0000",verb="get",code="200"} 18
kudo_cluster_watches_open{cluster="c0000"} 11
kudo_cluster_watches_open{cluster="c0001"} 10
kudo_cluster_watch_restarts_total{cluster="c0000"} 2
kudo_cluster_watch_restarts_total{cluster="c0001"} 0
kudo_cluster_up{cluster="c0000"} 1
"#;

    #[test]
    fn counters_sum_over_clusters_and_codes() {
        let c = parse_counters(METRICS);
        assert_eq!(
            c.by_verb,
            BTreeMap::from([
                ("get".to_string(), 18),
                ("patch".to_string(), 82),
                ("watch".to_string(), 12)
            ])
        );
        assert_eq!((c.watch_restarts, c.watches_open), (2, 21));
    }

    #[test]
    fn a_window_keeps_watches_apart_from_requests() {
        let before = Sample {
            at: Instant::now(),
            counters: Counters {
                by_verb: BTreeMap::from([("patch".to_string(), 10), ("watch".to_string(), 20)]),
                watch_restarts: 1,
                watches_open: 20,
            },
            cpu: CpuSplit {
                control_plane: 1.0,
                simulators: 2.0,
            },
        };
        let mut after = before.clone();
        after.at = before.at + std::time::Duration::from_secs(3);
        after.counters = parse_counters(METRICS);
        after.cpu = CpuSplit {
            control_plane: 1.5,
            simulators: 4.0,
        };
        let u = Usage::between(&before, &after);
        assert_eq!(
            u.requests_by_verb,
            BTreeMap::from([("get".to_string(), 18), ("patch".to_string(), 72)])
        );
        assert_eq!(u.api_requests, 90);
        assert_eq!(
            (u.watch_requests, u.watch_restarts, u.watches_open),
            (0, 1, 21)
        );
        assert_eq!(u.window_seconds, 3.0);
        assert_eq!(
            (u.control_plane_cpu_seconds, u.simulator_cpu_seconds),
            (0.5, 2.0)
        );
    }

    #[test]
    fn verbs_are_listed_most_first_per_plan() {
        let by_verb = BTreeMap::from([
            ("get".to_string(), 1800),
            ("list".to_string(), 250),
            ("patch".to_string(), 4100),
            ("discovery".to_string(), 3),
            ("delete".to_string(), 0),
        ]);
        assert_eq!(
            verb_breakdown(&by_verb, 100.0),
            "41 patch / 18 get / 2.5 list / 0.030 discovery"
        );
        assert_eq!(verb_breakdown(&BTreeMap::new(), 100.0), "-");
        assert_eq!(
            verb_breakdown(&BTreeMap::from([("get".to_string(), 5)]), 0.0),
            "5 get",
            "a zero divisor does not divide"
        );
        assert_eq!(amount(0.0), "0");
        assert_eq!(amount(0.0001), "<0.001");
        assert_eq!(amount(2.0), "2");
        assert_eq!(amount(9.96), "10");
    }
}
