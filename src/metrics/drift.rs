//! Metrics of drift detection: how many objects an instance has that no longer match what
//! kudo last applied, and how many repairs were made.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    pub cluster: String,
    pub namespace: String,
    pub instance: String,
}

/// The drift metric families.
pub struct DriftMetrics {
    /// Objects found drifted at the last check (before any repair).
    pub objects: Family<DriftLabels, Gauge>,
    /// Objects re-applied to repair drift.
    pub repairs: Family<DriftLabels, Counter>,
}

impl DriftMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = DriftMetrics {
            objects: Family::default(),
            repairs: Family::default(),
        };
        registry.register(
            "drift_objects",
            "Objects of an instance that differ from what kudo last applied, at the last check",
            m.objects.clone(),
        );
        registry.register(
            "drift_repairs",
            "Drifted objects re-applied by self-heal",
            m.repairs.clone(),
        );
        m
    }

    /// Records one check's result for an instance.
    pub fn record(&self, labels: &DriftLabels, drifted: usize, repaired: usize) {
        self.objects.get_or_create(labels).set(drifted as i64);
        if repaired > 0 {
            self.repairs.get_or_create(labels).inc_by(repaired as u64);
        }
    }

    /// Forgets a deleted instance.
    pub fn forget(&self, labels: &DriftLabels) {
        self.objects.remove(labels);
        self.repairs.remove(labels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_gauge_is_exported_per_instance() {
        let mut registry = Registry::with_prefix("kudo");
        let m = DriftMetrics::register(&mut registry);
        let labels = DriftLabels {
            cluster: "c1".into(),
            namespace: "ns".into(),
            instance: "web".into(),
        };
        m.record(&labels, 2, 2);
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains(r#"kudo_drift_objects{cluster="c1",namespace="ns",instance="web"} 2"#),
            "{text}"
        );
        assert!(text.contains("kudo_drift_repairs_total"), "{text}");
        m.forget(&labels);
        assert!(!crate::metrics::encode(&registry).contains("instance=\"web\""));
    }
}
