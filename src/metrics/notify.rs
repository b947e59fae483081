//! Metrics of notification delivery: per sink, deliveries made, retried and dropped (by a
//! closed set of reasons). A dropped delivery is one the receiver never got.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
}

/// Why a delivery was dropped.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum DropReason {
    /// The sink's queue was full (the sink is slower than the events).
    queue_full,
    /// The sink answered 4xx; not retried.
    rejected,
    /// 5xx or connection errors past the retries.
    gave_up,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [
        DropReason::queue_full,
        DropReason::rejected,
        DropReason::gave_up,
    ];
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub sink: String,
    pub reason: DropReason,
}

#[derive(Debug, Default)]
pub struct NotifyMetrics {
    pub delivered: Family<SinkLabels, Counter>,
    pub dropped: Family<DropLabels, Counter>,
    pub queued: Family<SinkLabels, Gauge>,
}

impl NotifyMetrics {
    pub fn register(registry: &mut Registry) -> NotifyMetrics {
        let m = NotifyMetrics::default();
        registry.register(
            "notify_delivered",
            "Notifications delivered, per sink",
            m.delivered.clone(),
        );
        registry.register(
            "notify_dropped",
            "Notifications dropped (queue full, refused with 4xx, or 5xx/unreachable past the retries), per sink",
            m.dropped.clone(),
        );
        registry.register(
            "notify_queued",
            "Notifications waiting in a sink's queue",
            m.queued.clone(),
        );
        m
    }

    /// Starts a sink's series at zero: delivered, queued and dropped for every reason.
    pub fn init_sink(&self, sink: &str) {
        let labels = SinkLabels {
            sink: sink.to_string(),
        };
        self.delivered.get_or_create(&labels).inc_by(0);
        self.queued.get_or_create(&labels).inc_by(0);
        for reason in DropReason::ALL {
            self.dropped
                .get_or_create(&DropLabels {
                    sink: sink.to_string(),
                    reason,
                })
                .inc_by(0);
        }
    }

    pub fn dropped(&self, sink: &str, reason: DropReason) -> u64 {
        self.dropped
            .get_or_create(&DropLabels {
                sink: sink.to_string(),
                reason,
            })
            .get()
    }

    pub fn delivered(&self, sink: &str) -> u64 {
        self.delivered
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sink_starts_with_every_series_at_zero() {
        let mut registry = Registry::with_prefix("kudo");
        let m = NotifyMetrics::register(&mut registry);
        m.init_sink("chat");
        let text = crate::metrics::encode(&registry);
        for line in [
            "kudo_notify_delivered_total{sink=\"chat\"} 0",
            "kudo_notify_queued{sink=\"chat\"} 0",
            "kudo_notify_dropped_total{sink=\"chat\",reason=\"queue_full\"} 0",
            "kudo_notify_dropped_total{sink=\"chat\",reason=\"rejected\"} 0",
            "kudo_notify_dropped_total{sink=\"chat\",reason=\"gave_up\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
