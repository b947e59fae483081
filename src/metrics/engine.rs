//! Metrics of the plan engine, recorded by the reconciler.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::ExecutionStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLabels {
    pub cluster: String,
    pub operator: String,
    pub plan: String,
}

/// How a plan run ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum PlanResult {
    complete,
    fatal_error,
    cancelled,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanResultLabels {
    pub cluster: String,
    pub operator: String,
    pub plan: String,
    pub result: PlanResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub operator: String,
    pub plan: String,
    pub phase: String,
    pub step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub cluster: String,
    pub namespace: String,
    pub instance: String,
    pub plan: String,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReconcileResult {
    ok,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub cluster: String,
    pub result: ReconcileResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub cluster: String,
    /// A bounded category (`ReconcileError::category`), never the error text.
    pub category: &'static str,
}

/// The engine's metric families.
pub struct EngineMetrics {
    pub plan_executions: Family<PlanResultLabels, Counter>,
    pub plan_duration: Family<PlanLabels, Histogram>,
    pub step_duration: Family<StepLabels, Histogram>,
    pub plan_status: Family<StatusLabels, Gauge>,
    pub plans_in_progress: Family<ClusterLabels, Gauge>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ClusterLabels, Histogram>,
    /// Drift detection's families (`kudo_drift_objects`, ...), registered with these.
    pub drift: super::drift::DriftMetrics,
}

impl EngineMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = EngineMetrics {
            plan_executions: Family::default(),
            plan_duration: Family::new_with_constructor(|| {
                Histogram::new(super::duration_buckets())
            }),
            step_duration: Family::new_with_constructor(|| {
                Histogram::new(super::duration_buckets())
            }),
            plan_status: Family::default(),
            plans_in_progress: Family::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(super::latency_buckets())
            }),
            drift: super::drift::DriftMetrics::register(registry),
        };
        registry.register(
            "plan_executions",
            "Plan runs that ended, by cluster, operator, plan and result",
            m.plan_executions.clone(),
        );
        registry.register(
            "plan_duration_seconds",
            "Time from a plan's trigger to its end",
            m.plan_duration.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Time from a step's first run to its completion",
            m.step_duration.clone(),
        );
        registry.register(
            "plan_status",
            "Current status of each instance's plans (1 for the status it is in)",
            m.plan_status.clone(),
        );
        registry.register(
            "plans_in_progress",
            "Plans running on a cluster",
            m.plans_in_progress.clone(),
        );
        registry.register(
            "reconciles",
            "Reconcile passes by cluster and result",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconcile passes by cluster and bounded error category",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile pass",
            m.reconcile_duration.clone(),
        );
        m
    }

    /// Starts a cluster's series at zero (reconciles by result, errors by each of
    /// `categories`, plans in progress), so dashboards show 0 rather than "No data" before
    /// the first error. The engine passes its categories: metrics stay a leaf module.
    pub fn init_cluster(&self, cluster: &str, categories: &[&'static str]) {
        for result in [ReconcileResult::ok, ReconcileResult::error] {
            self.reconciles
                .get_or_create(&ReconcileLabels {
                    cluster: cluster.into(),
                    result,
                })
                .inc_by(0);
        }
        for &category in categories {
            self.reconcile_errors
                .get_or_create(&ErrorLabels {
                    cluster: cluster.into(),
                    category,
                })
                .inc_by(0);
        }
        self.plans_in_progress
            .get_or_create(&ClusterLabels {
                cluster: cluster.into(),
            })
            .inc_by(0);
    }

    /// Records an instance plan's current status: exactly one series per (instance, plan).
    pub fn set_plan_status(
        &self,
        cluster: &str,
        namespace: &str,
        instance: &str,
        plan: &str,
        status: Option<ExecutionStatus>,
    ) {
        for s in ALL_STATUSES {
            let labels = StatusLabels {
                cluster: cluster.into(),
                namespace: namespace.into(),
                instance: instance.into(),
                plan: plan.into(),
                status: s.as_str(),
            };
            if Some(s) == status {
                self.plan_status.get_or_create(&labels).set(1);
            } else {
                self.plan_status.remove(&labels);
            }
        }
    }

    /// Forgets a deleted instance's plans.
    pub fn forget_instance(
        &self,
        cluster: &str,
        namespace: &str,
        instance: &str,
        plans: &[String],
    ) {
        for plan in plans {
            self.set_plan_status(cluster, namespace, instance, plan, None);
        }
    }
}

const ALL_STATUSES: [ExecutionStatus; 7] = [
    ExecutionStatus::NeverRun,
    ExecutionStatus::Pending,
    ExecutionStatus::InProgress,
    ExecutionStatus::Complete,
    ExecutionStatus::Error,
    ExecutionStatus::FatalError,
    ExecutionStatus::Cancelled,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_types_and_labels_are_fixed() {
        let (registry, m) = crate::metrics::registry_with_engine();
        m.plan_executions
            .get_or_create(&PlanResultLabels {
                cluster: "c".into(),
                operator: "op".into(),
                plan: "deploy".into(),
                result: PlanResult::complete,
            })
            .inc();
        m.plan_duration
            .get_or_create(&PlanLabels {
                cluster: "c".into(),
                operator: "op".into(),
                plan: "deploy".into(),
            })
            .observe(1.5);
        m.step_duration
            .get_or_create(&StepLabels {
                operator: "op".into(),
                plan: "deploy".into(),
                phase: "p".into(),
                step: "s".into(),
            })
            .observe(0.5);
        m.plans_in_progress
            .get_or_create(&ClusterLabels {
                cluster: "c".into(),
            })
            .set(0);
        m.reconciles
            .get_or_create(&ReconcileLabels {
                cluster: "c".into(),
                result: ReconcileResult::ok,
            })
            .inc();
        m.reconcile_duration
            .get_or_create(&ClusterLabels {
                cluster: "c".into(),
            })
            .observe(0.01);
        m.set_plan_status("c", "ns", "i", "deploy", Some(ExecutionStatus::InProgress));
        m.set_plan_status("c", "ns", "i", "deploy", Some(ExecutionStatus::Complete));
        m.reconcile_errors
            .get_or_create(&ErrorLabels {
                cluster: "c".into(),
                category: "write",
            })
            .inc();
        let text = crate::metrics::encode(&registry);
        for line in [
            "# TYPE kudo_plan_executions counter",
            "kudo_plan_executions_total{cluster=\"c\",operator=\"op\",plan=\"deploy\",result=\"complete\"} 1",
            "# TYPE kudo_plan_duration_seconds histogram",
            "# TYPE kudo_step_duration_seconds histogram",
            "# TYPE kudo_plan_status gauge",
            "kudo_plan_status{cluster=\"c\",namespace=\"ns\",instance=\"i\",plan=\"deploy\",status=\"COMPLETE\"} 1",
            "# TYPE kudo_plans_in_progress gauge",
            "# TYPE kudo_reconciles counter",
            "kudo_reconcile_errors_total{cluster=\"c\",category=\"write\"} 1",
            "# TYPE kudo_reconcile_duration_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(
            !text.contains("status=\"IN_PROGRESS\""),
            "only the current status has a series:\n{text}"
        );
    }

    /// Before anything fails, every error category of a cluster is a series at 0.
    #[test]
    fn a_cluster_starts_with_every_series_at_zero() {
        let (registry, m) = crate::metrics::registry_with_engine();
        m.init_cluster("quiet", &["dereference", "write", "invalid", "panic"]);
        let text = crate::metrics::encode(&registry);
        for category in ["dereference", "write", "invalid", "panic"] {
            let line = format!(
                "kudo_reconcile_errors_total{{cluster=\"quiet\",category=\"{category}\"}} 0"
            );
            assert!(text.contains(&line), "missing {line:?} in:\n{text}");
        }
        for line in [
            "kudo_reconciles_total{cluster=\"quiet\",result=\"ok\"} 0",
            "kudo_reconciles_total{cluster=\"quiet\",result=\"error\"} 0",
            "kudo_plans_in_progress{cluster=\"quiet\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
