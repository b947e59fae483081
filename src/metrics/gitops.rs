//! Metrics of the GitOps control plane: repository syncs, the revision each repository
//! runs, desired-state errors, rollout progress per instance, and the time from a commit to
//! its rollout being complete everywhere.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepoLabels {
    pub repository: String,
}

/// How one sync of a repository ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SyncResult {
    /// A new revision without errors: it is the desired state now.
    applied,
    /// The revision did not change.
    unchanged,
    /// A new revision with errors: refused, the last good one keeps running.
    refused,
    /// Fetching or reading failed.
    failed,
}

pub const SYNC_RESULTS: [SyncResult; 4] = [
    SyncResult::applied,
    SyncResult::unchanged,
    SyncResult::refused,
    SyncResult::failed,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncLabels {
    pub repository: String,
    pub result: SyncResult,
}

/// The info series of a repository's revision. The revision is the one value label that
/// changes: only the current one has a series (the previous one is removed), so it stays
/// one series per repository.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub repository: String,
    pub revision: String,
}

/// Where a cluster stands in an instance's rollout.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RolloutState {
    pending,
    in_progress,
    complete,
    halted,
}

pub const ROLLOUT_STATES: [RolloutState; 4] = [
    RolloutState::pending,
    RolloutState::in_progress,
    RolloutState::complete,
    RolloutState::halted,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: String,
    pub instance: String,
    pub state: RolloutState,
}

/// A gate a rollout waits for (`approval`, `bake`, `prometheus`, `dependsOn`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitingLabels {
    pub namespace: String,
    pub instance: String,
    pub stage: String,
    pub gate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub namespace: String,
    pub instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperatorLabels {
    pub operator: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: &'static str,
}

pub struct GitopsMetrics {
    pub syncs: Family<SyncLabels, Counter>,
    pub sync_duration: Family<RepoLabels, Histogram>,
    pub last_success: Family<RepoLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub revision_info: Family<RevisionLabels, Gauge>,
    pub desired_state_errors: Family<RepoLabels, Gauge>,
    pub rollout_clusters: Family<RolloutLabels, Gauge>,
    pub commit_to_converged: Family<OperatorLabels, Histogram>,
    /// 1 while an instance's rollout waits for a gate (one series: the gate it waits for).
    pub rollout_waiting: Family<WaitingLabels, Gauge>,
    /// 1 while an instance's rollout is paused (in Git or through the API).
    pub rollout_paused: Family<InstanceLabels, Gauge>,
    /// Reverts of a failed spec (`onFailure: revert` or `kudo rollout revert`).
    pub rollout_reverts: Family<InstanceLabels, Counter>,
    /// kudo.yaml reloads by result (`applied`, `refused`).
    pub config_reloads: Family<ReloadLabels, Counter>,
    waiting_now: std::sync::Mutex<std::collections::HashMap<(String, String), WaitingLabels>>,
}

impl GitopsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = GitopsMetrics {
            syncs: Family::default(),
            sync_duration: Family::new_with_constructor(
                || Histogram::new(super::latency_buckets()),
            ),
            last_success: Family::default(),
            revision_info: Family::default(),
            desired_state_errors: Family::default(),
            rollout_clusters: Family::default(),
            commit_to_converged: Family::new_with_constructor(|| {
                Histogram::new(super::duration_buckets())
            }),
            rollout_waiting: Family::default(),
            rollout_paused: Family::default(),
            rollout_reverts: Family::default(),
            config_reloads: Family::default(),
            waiting_now: Default::default(),
        };
        registry.register(
            "git_syncs",
            "Repository syncs by repository and result (applied, unchanged, refused, failed)",
            m.syncs.clone(),
        );
        registry.register(
            "git_sync_duration_seconds",
            "Time to fetch and load a repository's revision",
            m.sync_duration.clone(),
        );
        registry.register(
            "git_last_success_timestamp_seconds",
            "Unix time of the repository's last sync that fetched and read its revision",
            m.last_success.clone(),
        );
        registry.register(
            "git_revision_info",
            "The revision a repository applies (1; the revision is a label)",
            m.revision_info.clone(),
        );
        registry.register(
            "desired_state_errors",
            "Errors in the repository's newest revision (0 when it is applied)",
            m.desired_state_errors.clone(),
        );
        registry.register(
            "rollout_clusters",
            "Target clusters of an instance's rollout by state",
            m.rollout_clusters.clone(),
        );
        registry.register(
            "rollout_waiting",
            "1 while an instance's rollout waits for a gate (approval, bake, prometheus, dependsOn) of a stage",
            m.rollout_waiting.clone(),
        );
        registry.register(
            "rollout_paused",
            "1 while an instance's rollout is paused",
            m.rollout_paused.clone(),
        );
        registry.register(
            "config_reloads",
            "kudo.yaml reloads (file change or SIGHUP) by result: applied or refused",
            m.config_reloads.clone(),
        );
        registry.register(
            "rollout_reverts",
            "Reverts of an instance's failed spec to its last good spec",
            m.rollout_reverts.clone(),
        );
        registry.register(
            "commit_to_converged_seconds",
            "Time from a commit (or a local change being seen) to its rollout being complete on every target cluster",
            m.commit_to_converged.clone(),
        );
        m
    }

    /// Creates a repository's series at zero so rates and alerts see it from the start.
    pub fn init_repository(&self, repository: &str) {
        for result in SYNC_RESULTS {
            self.syncs
                .get_or_create(&SyncLabels {
                    repository: repository.into(),
                    result,
                })
                .inc_by(0);
        }
        self.desired_state_errors
            .get_or_create(&RepoLabels {
                repository: repository.into(),
            })
            .set(0);
    }

    /// Records one sync; `revision` and `errors` when a revision was read.
    pub fn record_sync(
        &self,
        repository: &str,
        result: SyncResult,
        seconds: f64,
        errors: Option<usize>,
    ) {
        let repo = RepoLabels {
            repository: repository.into(),
        };
        self.syncs
            .get_or_create(&SyncLabels {
                repository: repository.into(),
                result,
            })
            .inc();
        self.sync_duration.get_or_create(&repo).observe(seconds);
        if result != SyncResult::failed {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            self.last_success.get_or_create(&repo).set(now);
        }
        if let Some(errors) = errors {
            self.desired_state_errors
                .get_or_create(&repo)
                .set(i64::try_from(errors).unwrap_or(i64::MAX));
        }
    }

    /// Sets the applied revision of a repository, dropping the previous one's series.
    pub fn set_revision(&self, repository: &str, previous: Option<&str>, revision: &str) {
        if let Some(prev) = previous
            && prev != revision
        {
            self.revision_info.remove(&RevisionLabels {
                repository: repository.into(),
                revision: prev.into(),
            });
        }
        self.revision_info
            .get_or_create(&RevisionLabels {
                repository: repository.into(),
                revision: revision.into(),
            })
            .set(1);
    }

    /// Sets an instance's rollout counts (a state absent from `counts` is 0).
    pub fn set_rollout(&self, namespace: &str, instance: &str, counts: &[(RolloutState, i64)]) {
        for state in ROLLOUT_STATES {
            let n = counts
                .iter()
                .filter(|(s, _)| *s == state)
                .map(|(_, n)| n)
                .sum();
            self.rollout_clusters
                .get_or_create(&RolloutLabels {
                    namespace: namespace.into(),
                    instance: instance.into(),
                    state,
                })
                .set(n);
        }
    }

    /// Records what an instance's rollout waits for (`None`: nothing) and whether it is paused.
    pub fn set_rollout_phase(
        &self,
        namespace: &str,
        instance: &str,
        waiting: Option<(&str, &str)>,
        paused: bool,
    ) {
        let key = (namespace.to_string(), instance.to_string());
        let mut now = self.waiting_now.lock().unwrap_or_else(|p| p.into_inner());
        let new = waiting.map(|(stage, gate)| WaitingLabels {
            namespace: namespace.into(),
            instance: instance.into(),
            stage: stage.into(),
            gate: gate.into(),
        });
        if now.get(&key) != new.as_ref() {
            if let Some(old) = now.remove(&key) {
                self.rollout_waiting.remove(&old);
            }
            if let Some(new) = new {
                self.rollout_waiting.get_or_create(&new).set(1);
                now.insert(key, new);
            }
        }
        self.rollout_paused
            .get_or_create(&InstanceLabels {
                namespace: namespace.into(),
                instance: instance.into(),
            })
            .set(i64::from(paused));
    }

    /// Forgets an instance that is no longer desired.
    pub fn count_reload(&self, applied: bool) {
        self.config_reloads
            .get_or_create(&ReloadLabels {
                result: if applied { "applied" } else { "refused" },
            })
            .inc();
    }

    pub fn count_revert(&self, namespace: &str, instance: &str) {
        self.rollout_reverts
            .get_or_create(&InstanceLabels {
                namespace: namespace.into(),
                instance: instance.into(),
            })
            .inc();
    }

    pub fn forget_rollout(&self, namespace: &str, instance: &str) {
        self.set_rollout_phase(namespace, instance, None, false);
        self.rollout_paused.remove(&InstanceLabels {
            namespace: namespace.into(),
            instance: instance.into(),
        });
        for state in ROLLOUT_STATES {
            self.rollout_clusters.remove(&RolloutLabels {
                namespace: namespace.into(),
                instance: instance.into(),
                state,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rollout_waits_for_one_gate_at_a_time_and_is_forgotten() {
        let (registry, m) = crate::metrics::registry();
        let g = &m.gitops;
        g.set_rollout_phase("data", "db", Some(("canary", "bake")), false);
        g.set_rollout_phase("data", "db", Some(("prod", "approval")), false);
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains(
                "kudo_rollout_waiting{namespace=\"data\",instance=\"db\",stage=\"prod\",gate=\"approval\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("gate=\"bake\""), "{text}");
        assert!(
            text.contains("kudo_rollout_paused{namespace=\"data\",instance=\"db\"} 0"),
            "{text}"
        );
        g.set_rollout_phase("data", "db", None, true);
        let text = crate::metrics::encode(&registry);
        assert!(!text.contains("kudo_rollout_waiting{"), "{text}");
        assert!(
            text.contains("kudo_rollout_paused{namespace=\"data\",instance=\"db\"} 1"),
            "{text}"
        );
        g.forget_rollout("data", "db");
        let text = crate::metrics::encode(&registry);
        assert!(!text.contains("kudo_rollout_paused{"), "{text}");
    }
}
