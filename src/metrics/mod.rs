//! Prometheus metrics (`prometheus-client`, prefix `kudo_`): one struct per subsystem, each
//! registered by one line of [`Metrics::register`], encoded as OpenMetrics text for
//! `/metrics`.
//!
//! # Label cardinality
//!
//! Labels are names from configuration or Git (cluster, repository, namespace, instance,
//! operator, plan, phase, step) and closed sets (result, status, verb, code, category,
//! state). No error text and no unbounded value (uids, messages, timestamps) is ever a label;
//! the one exception is `kudo_git_revision_info{revision}`, which keeps only the current
//! revision's series (one per repository). Label sets, for a cluster with `o` operators
//! exposing `p` plans in all:
//!
//! | per cluster | series |
//! |---|---|
//! | `kudo_cluster_up` | 1 |
//! | `kudo_cluster_errors_total` | 9 (every category, at 0 from the start) |
//! | `kudo_cluster_api_requests_total` | verbs × codes seen: typically 8–12 |
//! | `kudo_cluster_api_request_duration_seconds` | ≤ 9 verbs (histograms) |
//! | `kudo_cluster_watches_open`, `kudo_cluster_watch_restarts_total` | 1 + 1 |
//! | `kudo_plans_in_progress`, `kudo_reconcile_duration_seconds` | 1 + 1 |
//! | `kudo_reconciles_total`, `kudo_reconcile_errors_total` | 2 + 4 (every result and category, at 0 from the start) |
//! | `kudo_plan_executions_total`, `kudo_plan_duration_seconds` | 3·p + p (per plan, not instance) |
//!
//! Per instance on a cluster: one `kudo_plan_status` series per plan (only the current
//! status has a series). Per instance (all clusters): 4 `kudo_rollout_clusters`. Per
//! repository: 4 sync results, 1 each of duration, last success, revision info, desired-
//! state errors. `kudo_step_duration_seconds` is per operator/plan/phase/step (the package's
//! size, not the fleet's), `kudo_commit_to_converged_seconds` per operator. Histograms never
//! carry an instance label.

pub mod cluster;
pub mod drift;
pub mod engine;
pub mod gitops;
pub mod leader;
pub mod notify;
pub mod server;

use std::sync::Arc;

use prometheus_client::registry::Registry;

pub use cluster::ClusterMetrics;
pub use engine::EngineMetrics;
pub use gitops::GitopsMetrics;

/// Histogram buckets for plan and step durations: 0.1 s to about 2 h.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.1, 2.5, 12)
}

/// Histogram buckets for reconcile passes and API calls: 1 ms to about 30 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.8, 11)
}

/// The OpenMetrics text of a registry.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// Every subsystem's metric families. Adding a group: a field and one line in `register`.
#[derive(Clone)]
pub struct Metrics {
    pub engine: Arc<EngineMetrics>,
    pub gitops: Arc<GitopsMetrics>,
    pub cluster: Arc<ClusterMetrics>,
    pub leader: leader::LeaderMetrics,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        Metrics {
            engine: Arc::new(EngineMetrics::register(registry)),
            gitops: Arc::new(GitopsMetrics::register(registry)),
            cluster: Arc::new(ClusterMetrics::register(registry)),
            leader: leader::LeaderMetrics::register(registry),
        }
    }
}

/// A `kudo_` registry with every subsystem's metrics registered.
pub fn registry() -> (Registry, Metrics) {
    let mut registry = Registry::with_prefix("kudo");
    let metrics = Metrics::register(&mut registry);
    (registry, metrics)
}

/// A registry with the engine's metrics only (`kudo manager`, engine tests).
pub fn registry_with_engine() -> (Registry, Arc<EngineMetrics>) {
    let mut registry = Registry::with_prefix("kudo");
    let engine = Arc::new(EngineMetrics::register(&mut registry));
    (registry, engine)
}

/// Label values that are not identifier-like (spaces, quotes, long text): what error text or
/// another unbounded value would look like. Empty when every label value is bounded.
pub fn suspicious_label_values(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(open) = line.find('{') else { continue };
        let Some(close) = line.rfind('}') else {
            continue;
        };
        for pair in split_labels(&line[open + 1..close]) {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = value.trim_matches('"');
            let ok = value.len() <= 64
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-./:+".contains(c));
            if !ok {
                bad.push(format!("{key}={value:?} in {line}"));
            }
        }
    }
    bad
}

/// `a="x",b="y,z"` → [`a="x"`, `b="y,z"`] (commas inside quotes kept).
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(&s[start..]);
    }
    out
}

/// Metric family → (OpenMetrics type, label names), parsed from encoded text.
pub fn families(text: &str) -> std::collections::BTreeMap<String, (String, Vec<String>)> {
    let mut out = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                out.insert(name.to_string(), (kind.to_string(), Vec::new()));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let Some(open) = line.find('{') else { continue };
        let name = &line[..open];
        let family = out
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .cloned();
        let Some(family) = family else { continue };
        let close = line.rfind('}').unwrap_or(line.len());
        let entry = out.get_mut(&family).expect("invariant: key just found");
        for pair in split_labels(&line[open + 1..close]) {
            if let Some((key, _)) = pair.split_once('=')
                && key != "le"
                && !entry.1.iter().any(|k| k == key)
            {
                entry.1.push(key.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ExecutionStatus;
    use engine::*;

    /// Every metric kudo exports: name, type, labels. A change here is a change of the
    /// dashboards' and alerts' contract.
    const EXPECTED: &[(&str, &str, &[&str])] = &[
        (
            "kudo_plan_executions",
            "counter",
            &["cluster", "operator", "plan", "result"],
        ),
        (
            "kudo_plan_duration_seconds",
            "histogram",
            &["cluster", "operator", "plan"],
        ),
        (
            "kudo_step_duration_seconds",
            "histogram",
            &["operator", "plan", "phase", "step"],
        ),
        (
            "kudo_plan_status",
            "gauge",
            &["cluster", "namespace", "instance", "plan", "status"],
        ),
        ("kudo_plans_in_progress", "gauge", &["cluster"]),
        ("kudo_reconciles", "counter", &["cluster", "result"]),
        ("kudo_reconcile_errors", "counter", &["cluster", "category"]),
        ("kudo_reconcile_duration_seconds", "histogram", &["cluster"]),
        ("kudo_git_syncs", "counter", &["repository", "result"]),
        (
            "kudo_git_sync_duration_seconds",
            "histogram",
            &["repository"],
        ),
        (
            "kudo_git_last_success_timestamp_seconds",
            "gauge",
            &["repository"],
        ),
        (
            "kudo_git_revision_info",
            "gauge",
            &["repository", "revision"],
        ),
        ("kudo_desired_state_errors", "gauge", &["repository"]),
        (
            "kudo_rollout_clusters",
            "gauge",
            &["namespace", "instance", "state"],
        ),
        (
            "kudo_commit_to_converged_seconds",
            "histogram",
            &["operator"],
        ),
        ("kudo_cluster_up", "gauge", &["cluster"]),
        ("kudo_cluster_errors", "counter", &["cluster", "category"]),
        (
            "kudo_cluster_api_requests",
            "counter",
            &["cluster", "verb", "code"],
        ),
        (
            "kudo_cluster_api_request_duration_seconds",
            "histogram",
            &["cluster", "verb"],
        ),
        ("kudo_cluster_watches_open", "gauge", &["cluster"]),
        ("kudo_cluster_watch_restarts", "counter", &["cluster"]),
        ("kudo_leader", "gauge", &[]),
    ];

    /// Touches every family once, as the daemon would.
    fn exercise(m: &Metrics) {
        let e = &m.engine;
        e.plan_executions
            .get_or_create(&PlanResultLabels {
                cluster: "c".into(),
                operator: "op".into(),
                plan: "deploy".into(),
                result: PlanResult::fatal_error,
            })
            .inc();
        e.plan_duration
            .get_or_create(&PlanLabels {
                cluster: "c".into(),
                operator: "op".into(),
                plan: "deploy".into(),
            })
            .observe(1.0);
        e.step_duration
            .get_or_create(&StepLabels {
                operator: "op".into(),
                plan: "deploy".into(),
                phase: "main".into(),
                step: "s".into(),
            })
            .observe(1.0);
        e.set_plan_status("c", "ns", "i", "deploy", Some(ExecutionStatus::FatalError));
        e.plans_in_progress
            .get_or_create(&ClusterLabels {
                cluster: "c".into(),
            })
            .set(1);
        e.reconciles
            .get_or_create(&ReconcileLabels {
                cluster: "c".into(),
                result: ReconcileResult::error,
            })
            .inc();
        e.reconcile_errors
            .get_or_create(&ErrorLabels {
                cluster: "c".into(),
                category: "write",
            })
            .inc();
        e.reconcile_duration
            .get_or_create(&ClusterLabels {
                cluster: "c".into(),
            })
            .observe(0.1);
        let g = &m.gitops;
        g.init_repository("fleet");
        g.record_sync("fleet", gitops::SyncResult::refused, 0.2, Some(3));
        g.record_sync("fleet", gitops::SyncResult::applied, 0.2, Some(0));
        g.set_revision("fleet", None, "aaaa");
        g.set_revision("fleet", Some("aaaa"), "bbbb");
        g.set_rollout("ns", "i", &[(gitops::RolloutState::complete, 2)]);
        g.commit_to_converged
            .get_or_create(&gitops::OperatorLabels {
                operator: "op".into(),
            })
            .observe(12.0);
        m.cluster.init_cluster("c", &["unreachable"]);
        m.cluster.set_up("c", false, Some("unreachable"));
        m.cluster
            .observe("c", "get", "404", std::time::Instant::now());
        m.leader.leader.set(1);
    }

    #[test]
    fn every_metric_has_its_fixed_name_type_and_labels() {
        let (registry, m) = registry();
        exercise(&m);
        let text = encode(&registry);
        let found = families(&text);
        let expected: std::collections::BTreeMap<String, (String, Vec<String>)> = EXPECTED
            .iter()
            .map(|(n, t, l)| {
                (
                    n.to_string(),
                    (t.to_string(), l.iter().map(|s| s.to_string()).collect()),
                )
            })
            .collect();
        pretty_assertions::assert_eq!(found, expected, "\n{text}");
    }

    #[test]
    fn no_label_carries_error_text_or_unbounded_values() {
        let (registry, m) = registry();
        exercise(&m);
        let text = encode(&registry);
        assert!(suspicious_label_values(&text).is_empty(), "{text}");
        // Only the current revision has an info series.
        assert!(text.contains("kudo_git_revision_info{repository=\"fleet\",revision=\"bbbb\"} 1"));
        assert!(!text.contains("revision=\"aaaa\""), "{text}");
        assert!(
            text.contains("kudo_desired_state_errors{repository=\"fleet\"} 0"),
            "{text}"
        );
        // The guard itself catches text-like values.
        let bad = "kudo_x{cluster=\"c\",reason=\"connection refused (os error 111)\"} 1\n";
        assert_eq!(suspicious_label_values(bad).len(), 1);
        let long = format!("kudo_x{{revision=\"{}\"}} 1\n", "a".repeat(65));
        assert_eq!(suspicious_label_values(&long).len(), 1);
    }

    #[test]
    fn rollout_states_are_all_present_and_forgotten_together() {
        let (registry, m) = registry();
        m.gitops.set_rollout(
            "ns",
            "i",
            &[
                (gitops::RolloutState::complete, 1),
                (gitops::RolloutState::halted, 2),
            ],
        );
        let text = encode(&registry);
        for (state, n) in [
            ("pending", 0),
            ("in_progress", 0),
            ("complete", 1),
            ("halted", 2),
        ] {
            let line = format!(
                "kudo_rollout_clusters{{namespace=\"ns\",instance=\"i\",state=\"{state}\"}} {n}"
            );
            assert!(text.contains(&line), "missing {line}:\n{text}");
        }
        m.gitops.forget_rollout("ns", "i");
        assert!(!encode(&registry).contains("kudo_rollout_clusters{"));
    }
}
