//! Prometheus metrics (`prometheus-client`, prefix `kudo_`): one `register` per subsystem
//! into a shared [`Registry`], encoded as OpenMetrics text for `/metrics`.
//!
//! Cardinality is bounded by construction: labels are cluster, namespace, instance,
//! operator, plan, phase, step, and closed sets (plan result, execution status, error
//! category). No error text and no unbounded value (uids, revisions, messages) is ever a
//! label. Per cluster: `kudo_plans_in_progress`, reconcile counters by result and category
//! (≤ 12 series) plus the histogram buckets; per instance and plan on a cluster: one
//! `kudo_plan_status` series (the current status only).

pub mod drift;
pub mod engine;
pub mod server;

use prometheus_client::registry::Registry;

pub use engine::EngineMetrics;

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

/// A registry with every subsystem's metrics registered.
pub fn registry_with_engine() -> (Registry, std::sync::Arc<EngineMetrics>) {
    let mut registry = Registry::with_prefix("kudo");
    let engine = std::sync::Arc::new(EngineMetrics::register(&mut registry));
    (registry, engine)
}
