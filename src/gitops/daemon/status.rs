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
    pub rollouts: BTreeMap<String, State>,
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
        }
    }

    pub fn status(&self) -> StatusDoc {
        let mut doc = status_doc(self.snapshot());
        doc.config = self.reload_status();
        doc
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
                        revision: live.and_then(|i| {
                            i.metadata
                                .annotations
                                .as_ref()?
                                .get(REVISION_ANNOTATION)
                                .cloned()
                        }),
                        detail: live.and_then(crate::gitops::status::plan_detail),
                    },
                );
            }
            instances.push(InstanceStatusView {
                namespace: inst.namespace.clone(),
                name: inst.name.clone(),
                framework: inst.framework.clone(),
                version: inst.version.clone(),
                revision: d.revision.clone(),
                rollout: s
                    .rollouts
                    .get(key)
                    .cloned()
                    .unwrap_or(State::Progressing { wave: 0, waves: 0 }),
                clusters: per,
            });
        }
    }
    StatusDoc {
        repositories: s.repositories,
        clusters: s.clusters,
        instances,
        config: Default::default(),
    }
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
