//! Which plan to run, decided without an admission webhook: the manager compares an
//! Instance with the snapshot of what it last acted on, stored in the Instance itself
//! (annotation [`LAST_APPLIED_ANNOTATION`]) so changes are detected across restarts.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{InstanceSpec, OperatorVersionSpec};

pub use crate::api::{LAST_APPLIED_ANNOTATION, Snapshot};

pub const DEPLOY: &str = "deploy";
pub const UPDATE: &str = "update";
pub const UPGRADE: &str = "upgrade";
pub const CLEANUP: &str = "cleanup";

/// Why a plan is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    NewInstance,
    ParametersChanged(Vec<String>),
    VersionChanged { from: String, to: String },
    Manual,
    Deletion,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::NewInstance => write!(f, "new instance"),
            Reason::ParametersChanged(p) => write!(f, "parameters changed: {}", p.join(", ")),
            Reason::VersionChanged { from, to } => {
                write!(f, "operator version changed from {from} to {to}")
            }
            Reason::Manual => write!(f, "manual trigger"),
            Reason::Deletion => write!(f, "instance deleted"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing changed since the snapshot.
    Nothing,
    /// Start `plan` under a fresh uid.
    Run { plan: String, reason: Reason },
    /// The change is refused; no plan runs and the snapshot is kept, so the refusal stands
    /// until the change is reverted.
    Reject { message: String },
}

/// Decides what to run for an Instance that is not being deleted. Precedence: a new
/// instance, then a version change, then a manual trigger, then parameter changes.
pub fn decide(ov: &OperatorVersionSpec, spec: &InstanceSpec, last: Option<&Snapshot>) -> Decision {
    let Some(last) = last else {
        return run_first_of(ov, &[DEPLOY], Reason::NewInstance);
    };
    let version = spec.operator_version.name.clone().unwrap_or_default();
    if version != last.operator_version {
        if let Some(reject) = immutable_violations(ov, spec, last) {
            return reject;
        }
        return run_first_of(
            ov,
            &[UPGRADE, UPDATE, DEPLOY],
            Reason::VersionChanged {
                from: last.operator_version.clone(),
                to: version,
            },
        );
    }
    let manual = &spec.plan_execution;
    if !manual.plan_name.is_empty() && manual.uid.is_empty() {
        if !ov.plans.contains_key(&manual.plan_name) {
            return Decision::Reject {
                message: format!(
                    "manual trigger of plan {:?} refused: the operator version defines no such plan (plans: {})",
                    manual.plan_name,
                    ov.plans.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
        }
        return Decision::Run {
            plan: manual.plan_name.clone(),
            reason: Reason::Manual,
        };
    }
    let changed = changed_parameters(&last.parameters, &spec.parameters);
    if changed.is_empty() {
        return Decision::Nothing;
    }
    if let Some(reject) = immutable_violations(ov, spec, last) {
        return reject;
    }
    let mut unknown = Vec::new();
    let mut plans: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in &changed {
        let Some(param) = ov.parameters.iter().find(|p| &p.name == name) else {
            unknown.push(name.clone());
            continue;
        };
        let plan = if !param.trigger.is_empty() {
            param.trigger.clone()
        } else if let Some(p) = [UPDATE, DEPLOY].iter().find(|p| ov.plans.contains_key(**p)) {
            p.to_string()
        } else {
            return Decision::Reject {
                message: format!(
                    "parameter {name} changed but the operator version has neither an update nor a deploy plan"
                ),
            };
        };
        plans.entry(plan).or_default().push(name.clone());
    }
    if !unknown.is_empty() {
        return Decision::Reject {
            message: format!(
                "parameters not defined by the operator version: {}",
                unknown.join(", ")
            ),
        };
    }
    if plans.len() > 1 {
        let detail = plans
            .iter()
            .map(|(plan, params)| format!("{} → plan {plan}", params.join(", ")))
            .collect::<Vec<_>>()
            .join("; ");
        return Decision::Reject {
            message: format!(
                "parameter change refused: the changed parameters trigger different plans ({detail}); change them separately"
            ),
        };
    }
    let Some((plan, _)) = plans.into_iter().next() else {
        return Decision::Nothing;
    };
    if !ov.plans.contains_key(&plan) {
        return Decision::Reject {
            message: format!(
                "parameters {} trigger plan {plan:?}, which the operator version does not define",
                changed.join(", ")
            ),
        };
    }
    Decision::Run {
        plan,
        reason: Reason::ParametersChanged(changed),
    }
}

/// Deleting an Instance runs `cleanup` when the operator version has one (the caller holds a
/// finalizer only in that case).
pub fn on_deletion(ov: &OperatorVersionSpec) -> Option<String> {
    ov.plans.contains_key(CLEANUP).then(|| CLEANUP.to_string())
}

/// Names of parameters whose value differs, including added and removed ones, sorted.
pub fn changed_parameters(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

fn immutable_violations(
    ov: &OperatorVersionSpec,
    spec: &InstanceSpec,
    last: &Snapshot,
) -> Option<Decision> {
    let changed = changed_parameters(&last.parameters, &spec.parameters);
    let offenders: Vec<String> = changed
        .into_iter()
        .filter(|name| {
            ov.parameters
                .iter()
                .any(|p| &p.name == name && p.immutable == Some(true))
        })
        .collect();
    (!offenders.is_empty()).then(|| Decision::Reject {
        message: format!(
            "immutable parameters cannot change: {}",
            offenders.join(", ")
        ),
    })
}

fn run_first_of(ov: &OperatorVersionSpec, candidates: &[&str], reason: Reason) -> Decision {
    match candidates.iter().find(|p| ov.plans.contains_key(**p)) {
        Some(plan) => Decision::Run {
            plan: plan.to_string(),
            reason,
        },
        None => Decision::Reject {
            message: format!(
                "{reason}: the operator version defines none of the plans {}",
                candidates.join(", ")
            ),
        },
    }
}
