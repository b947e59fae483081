//! The rollout planner: after observations, decides per instance which clusters get its spec
//! now, and which Instances are deleted or relabelled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::state::{PlanSummary, Seen, Shared, lock};
use crate::gitops::desired::{DesiredInstance, DesiredState, short};
use crate::gitops::rollout::{self, Progress, State};
use crate::metrics::gitops::RolloutState;

/// Runs a planner pass whenever one was requested, until stopped.
pub(super) async fn planner(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shared.plan_wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let started = Instant::now();
        shared.plan();
        // A pass over a large fleet takes milliseconds and requests keep arriving while it
        // runs: resting as long as the pass took caps the planner at half a core, and the
        // requests of the rest coalesce into the next pass.
        let took = started.elapsed();
        if took > Duration::from_millis(1) {
            tokio::select! {
                _ = tokio::time::sleep(took) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

impl Shared {
    /// The planner: per instance, which clusters get its spec now. Wakes the workers that
    /// have new work.
    pub(super) fn plan(&self) {
        self.passes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let Some(desired) = self
            .desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let mut apply: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut states = BTreeMap::new();
        for (key, inst) in &desired.instances {
            let mut observed = BTreeMap::new();
            for name in &inst.targets {
                let Some(slot) = self.slot(name) else {
                    continue;
                };
                let seen = lock(&slot.seen);
                // A cluster never observed is unknown: it is not applied to until it answers.
                let progress = match seen.as_ref() {
                    None => Progress::Pending,
                    Some(s) => match s.get(key) {
                        Some(Seen {
                            owner: crate::gitops::ownership::Owner::Foreign(other),
                            ..
                        }) => Progress::Failed(format!(
                            "Instance {key} on cluster {name} belongs to control plane {other:?}; not touched"
                        )),
                        live => rollout::observe(
                            live.map(|s| &s.instance),
                            &inst.operator_version,
                            &inst.parameters,
                        ),
                    },
                };
                observed.insert(name.clone(), progress);
            }
            let waves = rollout::waves(inst.strategy, &inst.targets, &inst.canary);
            let p = rollout::plan(&waves, &observed);
            for c in p.apply_now.iter().filter(|c| {
                // Never applied over another control plane's Instance.
                !matches!(observed.get(*c), Some(Progress::Failed(why)) if why.contains("belongs to control plane"))
            }) {
                apply.entry(c.clone()).or_default().insert(key.clone());
            }
            self.record_rollout(key, inst, &desired.revision, &observed, &p);
            let previous = lock(&self.rollouts).get(key).cloned();
            if previous.as_ref() != Some(&p.state) {
                match &p.state {
                    State::Halted { cluster, reason } => {
                        warn!(instance = %key, %cluster, %reason, "rollout halted");
                        self.notifier.emit(
                            crate::notify::Event::new(
                                crate::notify::EventKind::RolloutHalted,
                                "halted",
                                reason.clone(),
                            )
                            .cluster(cluster)
                            .instance(key)
                            .revision(&desired.revision),
                        );
                    }
                    State::Complete => {
                        info!(instance = %key, revision = short(&desired.revision), "rollout complete");
                    }
                    State::Progressing { wave, waves } => {
                        info!(instance = %key, wave = wave + 1, waves, "rollout progressing");
                    }
                }
            }
            states.insert(key.clone(), p.state);
        }
        let mut rollouts = lock(&self.rollouts);
        for gone in rollouts.keys().filter(|k| !states.contains_key(*k)) {
            if let Some((ns, name)) = gone.split_once('/') {
                self.metrics.gitops.forget_rollout(ns, name);
            }
        }
        *lock(&self.planned) = PlanSummary {
            revision: desired.revision.clone(),
            instances: states.len(),
            complete: states.values().filter(|s| **s == State::Complete).count(),
            halted: states
                .values()
                .filter(|s| matches!(s, State::Halted { .. }))
                .count(),
        };
        *rollouts = states;
        drop(rollouts);
        let ownership = self.decide_ownership(&desired);
        for slot in &self.clusters {
            let name = &slot.info.name;
            let delete = ownership.delete.get(name).cloned().unwrap_or_default();
            let relabel = ownership.relabel.get(name).cloned().unwrap_or_default();
            let work = !delete.is_empty() || !relabel.is_empty();
            {
                let mut st = lock(&slot.status);
                st.kept_instances = ownership.kept.get(name).cloned().unwrap_or_default();
                st.conflicts = lock(&slot.seen)
                    .iter()
                    .flatten()
                    .filter(|(key, _)| desired.instances.contains_key(*key))
                    .filter_map(|(key, s)| match &s.owner {
                        crate::gitops::ownership::Owner::Foreign(other) => {
                            Some(format!("{key}: owned by control plane {other:?}"))
                        }
                        _ => None,
                    })
                    .collect();
            }
            *lock(&slot.delete) = delete;
            *lock(&slot.relabel) = relabel;
            if work {
                slot.wake.notify_one();
            }
        }
        self.record_held(&desired.revision, ownership.held);
        if !ownership.resync.is_empty() {
            let names: Vec<String> = ownership.resync.into_iter().collect();
            self.sync_now(Some(&names));
        }
        for slot in &self.clusters {
            let new = apply.remove(&slot.info.name).unwrap_or_default();
            let mut current = lock(&slot.apply);
            if *current != new {
                let wake = !new.is_subset(&current) || current.is_empty() && !new.is_empty();
                *current = new;
                if wake {
                    slot.wake.notify_one();
                }
            }
        }
    }

    /// The ownership decision over every observed cluster (see [`crate::gitops::ownership`]).
    pub(super) fn decide_ownership(
        &self,
        desired: &DesiredState,
    ) -> crate::gitops::ownership::Decision {
        let confirmations = lock(&self.confirmations).clone();
        let repos: BTreeMap<String, crate::gitops::ownership::RepoState> = {
            let statuses = lock(&self.repos);
            self.config
                .repositories
                .iter()
                .map(|r| {
                    let status = statuses.get(&r.name);
                    let loaded = status
                        .and_then(|s| s.good.as_ref())
                        .map(|g| g.revision.clone());
                    let loaded_epoch = status.map(|s| s.loaded_epoch).unwrap_or_default();
                    let waiting_for = statuses
                        .iter()
                        .filter(|(name, s)| **name != r.name && s.synced_epoch <= loaded_epoch)
                        .map(|(name, _)| name.clone())
                        .collect();
                    (
                        r.name.clone(),
                        crate::gitops::ownership::RepoState {
                            loaded,
                            max_deletions: r.max_deletions,
                            confirmed: confirmations.get(&r.name).cloned(),
                            waiting_for,
                        },
                    )
                })
                .collect()
        };
        let mut observed = BTreeMap::new();
        for slot in &self.clusters {
            if let Some(seen) = lock(&slot.seen).as_ref() {
                observed.insert(
                    slot.info.name.clone(),
                    seen.iter().map(|(k, s)| (k.clone(), s.live())).collect(),
                );
            }
        }
        crate::gitops::ownership::decide(&desired.instances, &repos, &observed)
    }

    /// Shows held deletions in each repository's status, and logs and notifies them once.
    pub(super) fn record_held(
        &self,
        revision: &str,
        held: BTreeMap<String, crate::gitops::ownership::HeldDeletions>,
    ) {
        let mut repos = lock(&self.repos);
        for (name, status) in repos.iter_mut() {
            let now = held.get(name).cloned();
            if now != status.held_deletions
                && let Some(h) = &now
            {
                let message = h.message(name);
                warn!(repository = %name, revision = short(&h.revision), count = h.count, "{message}");
                self.notifier.emit(
                    crate::notify::Event::new(
                        crate::notify::EventKind::DeletionsHeld,
                        "held",
                        message,
                    )
                    .revision(revision),
                );
            }
            status.held_deletions = now;
        }
    }

    /// Rollout gauges of one instance, and the commit-to-converged time when a rollout the
    /// planner started completes.
    pub(super) fn record_rollout(
        &self,
        key: &str,
        inst: &DesiredInstance,
        revision: &str,
        observed: &BTreeMap<String, Progress>,
        p: &rollout::RolloutPlan,
    ) {
        let halted = matches!(p.state, State::Halted { .. });
        let counts: Vec<(RolloutState, i64)> = observed
            .values()
            .map(|progress| {
                let state = match progress {
                    Progress::Complete => RolloutState::complete,
                    Progress::InProgress => RolloutState::in_progress,
                    Progress::Failed(_) => RolloutState::halted,
                    Progress::NotApplied | Progress::Pending if halted => RolloutState::halted,
                    Progress::NotApplied | Progress::Pending => RolloutState::pending,
                };
                (state, 1)
            })
            .collect();
        let gm = &self.metrics.gitops;
        gm.set_rollout(&inst.namespace, &inst.name, &counts);
        let mut converging = lock(&self.converging);
        if !p.apply_now.is_empty() {
            converging.insert(key.to_string());
        }
        if p.state == State::Complete && converging.remove(key) {
            // A combined revision ("a,b") converged when its newest part did.
            let times = lock(&self.revision_times);
            let since = revision.split(',').filter_map(|r| times.get(r)).max();
            if let Some(since) = since {
                let seconds = (jiff::Timestamp::now().as_second() - since).max(0);
                gm.commit_to_converged
                    .get_or_create(&crate::metrics::gitops::OperatorLabels {
                        operator: inst.framework.clone(),
                    })
                    .observe(seconds as f64);
            }
        }
    }
}
