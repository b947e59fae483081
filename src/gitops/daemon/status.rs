//! The status views the API serves: every repository, cluster and instance, and one
//! instance in detail. Both are pure functions of a [`Snapshot`], which `Shared` takes under
//! its locks.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::REVISION_ANNOTATION;
use super::state::{
    ClusterProgressView, ClusterStatus, InstanceStatusView, Observation, RepoStatus, Shared,
    StatusDoc, lock,
};
use crate::gitops::desired::{DesiredInstance, DesiredState};
use crate::gitops::rollout::{self, State};

/// What the status views read, taken at one moment.
#[derive(Debug, Clone, Default)]
pub(super) struct Snapshot {
    pub repositories: Vec<RepoStatus>,
    /// In configuration order.
    pub clusters: Vec<ClusterStatus>,
    pub desired: Option<Arc<DesiredState>>,
    /// Cluster → its managed Instances from the last observation (None: never answered).
    pub observed: BTreeMap<String, Option<Arc<Observation>>>,
    /// What the planner remembers of each rollout (approvals, gates passed).
    pub memory: BTreeMap<String, crate::gitops::stages::Memory>,
    pub rollouts: BTreeMap<String, State>,
    /// Rollouts paused through the API, with who paused them.
    pub pauses: BTreeMap<String, crate::gitops::stages::Approval>,
}

impl Shared {
    /// The status views' inputs (each cluster's observation is shared, not copied).
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            repositories: lock(&self.repos).values().cloned().collect(),
            clusters: self
                .slots()
                .iter()
                .map(|c| lock(&c.status).clone())
                .collect(),
            desired: self
                .desired
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            observed: self
                .slots()
                .iter()
                .map(|c| (c.info.name.clone(), lock(&c.seen).clone()))
                .collect(),
            rollouts: lock(&self.rollouts).clone(),
            memory: lock(&self.rollout_memory).clone(),
            pauses: lock(&self.rollout_pauses).clone(),
        }
    }

    pub fn status(&self) -> StatusDoc {
        let mut doc = status_doc(self.snapshot());
        doc.config = self.reload_status();
        if let Some(member) = &self.options.member {
            let view = member.view();
            set_owners(&mut doc.clusters, &view);
            doc.sharding = Some(view);
        }
        doc
    }

    /// Every cluster's status as the clusters page shows it (with its driving member when
    /// sharded).
    pub(super) fn cluster_statuses(&self) -> Vec<ClusterStatus> {
        let mut clusters: Vec<ClusterStatus> = self
            .slots()
            .iter()
            .map(|c| lock(&c.status).clone())
            .collect();
        if let Some(member) = &self.options.member {
            set_owners(&mut clusters, &member.view());
        }
        clusters
    }

    /// One desired instance (by name, and namespace when given) on each of its clusters:
    /// the live Instance and the OperatorVersion it runs. Errors name what matched.
    pub fn instance_detail(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<crate::gitops::status::InstanceDetail, String> {
        instance_detail(&self.snapshot(), namespace, name)
    }
}

fn set_owners(clusters: &mut [ClusterStatus], view: &crate::gitops::shard::member::ShardView) {
    for c in clusters {
        c.owner = view.owners.get(&c.name).cloned();
    }
}

/// The revision that last applied a live Instance (its annotation).
pub(super) fn applied_revision(inst: &crate::api::Instance) -> Option<String> {
    inst.metadata
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)
        .cloned()
}

/// The status document: repositories, clusters, and every desired instance's rollout with
/// its progress on each target cluster.
pub(super) fn status_doc(s: Snapshot) -> StatusDoc {
    let mut instances = Vec::new();
    if let Some(d) = &s.desired {
        for (key, inst) in &d.instances {
            let mut per = BTreeMap::new();
            for name in &inst.targets {
                let Some(seen) = s.observed.get(name) else {
                    continue;
                };
                let live = seen.as_ref().and_then(|s| s.get(key)).map(|s| &s.instance);
                let plans = live
                    .and_then(|i| i.status.as_ref())
                    .map(|s| {
                        s.plan_status
                            .iter()
                            .map(|(k, p)| {
                                (
                                    k.clone(),
                                    p.status.map(|s| s.to_string()).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                per.insert(
                    name.clone(),
                    ClusterProgressView {
                        progress: rollout::observe(live, &inst.operator_version, &inst.parameters),
                        plans,
                        revision: live.and_then(applied_revision),
                        detail: live.and_then(crate::gitops::status::plan_detail),
                    },
                );
            }
            let rollout_state = s
                .rollouts
                .get(key)
                .cloned()
                .unwrap_or(State::Progressing { wave: 0, waves: 0 });
            let stages = stage_views(inst, &per, s.memory.get(key), &rollout_state);
            instances.push(InstanceStatusView {
                namespace: inst.namespace.clone(),
                name: inst.name.clone(),
                framework: inst.framework.clone(),
                version: inst.version.clone(),
                revision: d.revision.clone(),
                rollout: rollout_state,
                paused_by: s.pauses.get(key).map(|p| p.by.clone()),
                stages,
                clusters: per,
            });
        }
    }
    StatusDoc {
        repositories: s.repositories,
        clusters: s.clusters,
        instances,
        config: Default::default(),
        sharding: None,
    }
}

/// Each stage of a staged rollout with its gates: done stages and opened gates from the
/// clusters' progress and the planner's memory, the gate the rollout waits on with its
/// reason. The one-stage forms without gates (`parallel`, `serial`, waves) show none.
pub(super) fn stage_views(
    inst: &DesiredInstance,
    per: &BTreeMap<String, ClusterProgressView>,
    memory: Option<&crate::gitops::stages::Memory>,
    state: &State,
) -> Vec<super::state::StageView> {
    use super::state::{GateView, StageView};
    use crate::gitops::rollout::Progress;
    use crate::gitops::stages::Gate;
    let stages = &inst.rollout.stages;
    if stages.iter().all(|s| s.gates.is_empty()) && stages.len() <= 1 {
        return Vec::new();
    }
    let memory = memory.filter(|m| !m.spec.is_empty());
    let progress = |c: &String| per.get(c).map(|v| &v.progress);
    stages
        .iter()
        .map(|stage| {
            let done = !stage.clusters.is_empty()
                && stage
                    .clusters
                    .iter()
                    .all(|c| matches!(progress(c), Some(Progress::Complete | Progress::Failed(_))));
            let started = stage
                .clusters
                .iter()
                .any(|c| !matches!(progress(c), None | Some(Progress::NotApplied)));
            let waiting_here = match state {
                State::Waiting {
                    stage: s,
                    gate,
                    reason,
                } if *s == stage.name => Some((gate.as_str(), reason.as_str())),
                _ => None,
            };
            let mut reached_waiting = false;
            let gates = stage
                .gates
                .iter()
                .enumerate()
                .map(|(g, gate)| {
                    let kind = gate.kind();
                    let detail = match gate {
                        Gate::Approval => String::new(),
                        Gate::Bake(d) => crate::util::duration::format(*d),
                        Gate::Plan(p) => p.clone(),
                        Gate::Prometheus { query, .. } => query.clone(),
                    };
                    let passed = match gate {
                        Gate::Approval => {
                            memory.is_some_and(|m| m.approvals.contains_key(&stage.name)) || started
                        }
                        _ => memory.is_some_and(|m| {
                            m.gates_passed.contains(&format!("{}#{g}", stage.name))
                        }),
                    };
                    let approved_by = match gate {
                        Gate::Approval => memory
                            .and_then(|m| m.approvals.get(&stage.name))
                            .map(|a| format!("approved by {}", a.by)),
                        _ => None,
                    };
                    let (state, reason) = if passed {
                        ("open", approved_by)
                    } else if let Some((_, reason)) = waiting_here.filter(|(w, _)| *w == kind)
                        && !reached_waiting
                    {
                        reached_waiting = true;
                        ("waiting", Some(reason.to_string()))
                    } else {
                        ("pending", None)
                    };
                    GateView {
                        gate: kind,
                        detail,
                        state,
                        reason,
                    }
                })
                .collect();
            StageView {
                name: stage.name.clone(),
                clusters: stage.clusters.clone(),
                state: if done {
                    "done"
                } else if started || waiting_here.is_some() {
                    "active"
                } else {
                    "pending"
                },
                gates,
            }
        })
        .collect()
}

/// One desired instance on each of its clusters, sensitive parameters masked. Errors say
/// what is desired when nothing (or more than one instance) matches.
pub(super) fn instance_detail(
    s: &Snapshot,
    namespace: Option<&str>,
    name: &str,
) -> Result<crate::gitops::status::InstanceDetail, String> {
    let desired = s
        .desired
        .clone()
        .ok_or_else(|| "no desired state yet (no repository synced)".to_string())?;
    let matches: Vec<&DesiredInstance> = desired
        .instances
        .values()
        .filter(|i| i.name == name && namespace.is_none_or(|n| n == i.namespace))
        .collect();
    let inst = match matches.as_slice() {
        [one] => *one,
        [] => {
            let known: Vec<String> = desired.instances.keys().cloned().collect();
            return Err(format!(
                "instance {name:?}{} is not in the desired state (instances: {})",
                namespace
                    .map(|n| format!(" in namespace {n:?}"))
                    .unwrap_or_default(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
        many => {
            let keys: Vec<String> = many.iter().map(|i| i.key()).collect();
            return Err(format!(
                "instance {name:?} exists in several namespaces ({}); name one",
                keys.join(", ")
            ));
        }
    };
    let key = inst.key();
    let mut clusters = BTreeMap::new();
    let sensitive = crate::gitops::diff::sensitive_names(&desired, inst);
    for target in &inst.targets {
        let Some(seen) = s.observed.get(target) else {
            continue;
        };
        let live = seen
            .as_ref()
            .and_then(|s| s.get(&key))
            .map(|s| s.instance.clone());
        let ov_name = live
            .as_ref()
            .and_then(|i| i.spec.operator_version.name.clone())
            .unwrap_or_else(|| inst.operator_version.clone());
        let mut operator_version = desired
            .frameworks
            .values()
            .find(|f| f.operator_version.metadata.name.as_deref() == Some(ov_name.as_str()))
            .map(|f| f.operator_version.clone());
        // Sensitive parameters never leave the process in an answer.
        let mut shown = live.clone();
        if let Some(i) = shown.as_mut() {
            let mut names = sensitive.clone();
            if let Some(ov) = &operator_version {
                names.extend(crate::package::redact::sensitive_names(&ov.spec.parameters));
            }
            crate::package::redact::mask_instance(i, &names);
        }
        if let Some(ov) = operator_version.as_mut() {
            crate::package::redact::mask_operator_version(ov);
        }
        let up = s
            .clusters
            .iter()
            .find(|c| c.name == *target)
            .is_some_and(|c| c.up);
        clusters.insert(
            target.clone(),
            crate::gitops::status::ClusterInstance {
                progress: rollout::observe(live.as_ref(), &inst.operator_version, &inst.parameters)
                    .as_str()
                    .to_string(),
                instance: shown,
                operator_version,
                up,
            },
        );
    }
    let rollout = match s.rollouts.get(&key) {
        Some(State::Complete) => "Complete",
        Some(State::Halted { .. }) => "Halted",
        Some(State::Waiting { .. }) => "Waiting",
        Some(State::Paused) => "Paused",
        _ => "Progressing",
    };
    Ok(crate::gitops::status::InstanceDetail {
        namespace: inst.namespace.clone(),
        name: inst.name.clone(),
        revision: desired.revision.clone(),
        rollout: rollout.to_string(),
        clusters,
    })
}
