//! `kudo_leader`: 1 while this replica holds the leader-election Lease (or runs without
//! leader election), 0 while it stands by. Alert on `sum(kudo_leader) != 1`.

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub struct LeaderMetrics {
    pub leader: Gauge,
}

impl LeaderMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = LeaderMetrics::default();
        registry.register(
            "leader",
            "1 while this replica is the leader (writes to clusters), 0 while it stands by",
            m.leader.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_is_named_kudo_leader() {
        let mut registry = Registry::with_prefix("kudo");
        let m = LeaderMetrics::register(&mut registry);
        m.leader.set(1);
        let text = crate::metrics::encode(&registry);
        assert!(text.contains("# TYPE kudo_leader gauge"), "{text}");
        assert!(text.contains("kudo_leader 1"), "{text}");
    }
}
