//! Plan events from successive observations of one cluster's Instances. Pure.
//!
//! A plan run is identified by its uid. A run seen for the first time yields `planStarted`
//! (even when it is already finished: observations are periodic and a fast plan can start
//! and end between two), then `planComplete` or `planFatalError` when it ends, each once.

use std::collections::BTreeMap;

use super::{Event, EventKind};
use crate::api::{ExecutionStatus, Instance, PlanStatus};

/// The annotation holding the revision that applied an Instance (see `gitops::serve`).
const REVISION_ANNOTATION: &str = "kudo.dev/git-revision";

/// Events between `prev` (the previous observation, `None` for a new Instance) and `now`.
pub fn plan_events(cluster: &str, prev: Option<&Instance>, now: &Instance) -> Vec<Event> {
    let empty = BTreeMap::new();
    let before = prev
        .and_then(|p| p.status.as_ref())
        .map(|s| &s.plan_status)
        .unwrap_or(&empty);
    let Some(status) = &now.status else {
        return Vec::new();
    };
    let key = format!(
        "{}/{}",
        now.metadata.namespace.as_deref().unwrap_or_default(),
        now.metadata.name.as_deref().unwrap_or_default()
    );
    let revision = now
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .cloned();
    let mut out = Vec::new();
    for (plan, ps) in &status.plan_status {
        let Some(st) = ps.status else { continue };
        if ps.uid.is_empty() || st == ExecutionStatus::NeverRun {
            continue;
        }
        let old = before.get(plan);
        let same_run = old.is_some_and(|o| o.uid == ps.uid);
        let old_status = old.filter(|_| same_run).and_then(|o| o.status);
        let event = |kind: EventKind, message: String| {
            let mut e = Event::new(kind, st.to_string(), message)
                .cluster(cluster)
                .instance(&key);
            e.plan = Some(plan.clone());
            e.revision = revision.clone();
            e
        };
        if !same_run {
            out.push(event(
                EventKind::PlanStarted,
                format!("plan {plan} started"),
            ));
        }
        if old_status == Some(st) {
            continue;
        }
        match st {
            ExecutionStatus::Complete => out.push(event(
                EventKind::PlanComplete,
                format!("plan {plan} complete"),
            )),
            ExecutionStatus::FatalError => {
                out.push(event(EventKind::PlanFatalError, fatal_message(plan, ps)));
            }
            _ => {}
        }
    }
    out
}

fn fatal_message(plan: &str, p: &PlanStatus) -> String {
    for phase in &p.phases {
        for step in &phase.steps {
            if step.status == Some(ExecutionStatus::FatalError) && !step.message.is_empty() {
                return format!(
                    "plan {plan} FATAL_ERROR at {}/{}: {}",
                    phase.name, step.name, step.message
                );
            }
        }
    }
    format!("plan {plan} FATAL_ERROR: {}", p.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{InstanceSpec, InstanceStatus};

    fn inst(plans: &[(&str, &str, ExecutionStatus)]) -> Instance {
        let mut i = Instance::new("kafka", InstanceSpec::default());
        i.metadata.namespace = Some("ns".into());
        i.metadata.annotations =
            Some([(REVISION_ANNOTATION.to_string(), "abc".to_string())].into());
        let mut s = InstanceStatus::default();
        for (plan, uid, st) in plans {
            s.plan_status.insert(
                plan.to_string(),
                PlanStatus {
                    name: plan.to_string(),
                    uid: uid.to_string(),
                    status: Some(*st),
                    message: "boom".into(),
                    ..Default::default()
                },
            );
        }
        i.status = Some(s);
        i
    }

    fn kinds(e: &[Event]) -> Vec<EventKind> {
        e.iter().map(|e| e.event).collect()
    }

    #[test]
    fn a_run_starts_once_and_ends_once() {
        use ExecutionStatus::*;
        let a = inst(&[("deploy", "u1", Pending)]);
        let e = plan_events("c1", None, &a);
        assert_eq!(kinds(&e), [EventKind::PlanStarted]);
        assert_eq!(e[0].instance.as_deref(), Some("ns/kafka"));
        assert_eq!(e[0].revision.as_deref(), Some("abc"));
        let b = inst(&[("deploy", "u1", InProgress)]);
        assert!(plan_events("c1", Some(&a), &b).is_empty());
        let c = inst(&[("deploy", "u1", Complete)]);
        assert_eq!(
            kinds(&plan_events("c1", Some(&b), &c)),
            [EventKind::PlanComplete]
        );
        assert!(plan_events("c1", Some(&c), &c).is_empty());
        // A new run of the same plan, already failed when first seen.
        let d = inst(&[("deploy", "u2", FatalError)]);
        let e = plan_events("c1", Some(&c), &d);
        assert_eq!(
            kinds(&e),
            [EventKind::PlanStarted, EventKind::PlanFatalError]
        );
        assert!(e[1].message.contains("boom"), "{:?}", e[1]);
        // Never-run plans and missing status say nothing.
        let n = inst(&[("backup", "", NeverRun)]);
        assert!(plan_events("c1", None, &n).is_empty());
    }
}
