//! An Apply task whose object has a kind the cluster does not serve (after the discovery
//! refresh [`crate::cluster::Cluster`] makes on every miss). KUDO ends the plan FATAL_ERROR
//! with the apply error; so does kudo, except while a CustomResourceDefinition that an
//! earlier step of the same plan applied may still make the kind appear: an established CRD
//! reaches discovery a moment later, and in a parallel phase the CRD's step runs in the same
//! pass as its users. That wait is bounded by the step's `timeout` when it has one (the
//! workflow enforces it), else by [`DEFAULT_WAIT`] since the step started.
//!
//! "Earlier" is plan order: earlier phases, earlier steps of the phase, earlier tasks of the
//! step, and earlier documents of the same task (which kudo applies first).

use std::time::Duration;

use serde_json::Value;

use crate::api::{OperatorVersionSpec, Task};

use super::tasks::{TaskKind, ToggleMode, toggle_mode};
use super::workflow::{StepRef, TaskOutcome};

/// How long an unknown kind is waited for, since its step started, when a CRD applied earlier
/// in the plan defines it and the step sets no `timeout` of its own.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(120);

/// A CRD document rendered earlier in the plan that defines the missing group and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definer {
    /// The CRD's apiVersion and name, to look it up.
    pub api_version: String,
    pub name: String,
    /// Where it is applied: `step <step>, task <task>`.
    pub place: String,
    /// Versions the CRD serves.
    pub versions: Vec<String>,
}

/// The CRD among `objects` (rendered, undecorated) defining `group`/`kind`, if any.
pub fn defining_crd(objects: &[Value], group: &str, kind: &str) -> Option<(Value, Vec<String>)> {
    objects.iter().find_map(|o| {
        let s = |p: &str| o.pointer(p).and_then(Value::as_str).unwrap_or("");
        let is_crd = s("/apiVersion").starts_with("apiextensions.k8s.io/")
            && s("/kind") == "CustomResourceDefinition";
        if !is_crd || s("/spec/group") != group || s("/spec/names/kind") != kind {
            return None;
        }
        let mut versions: Vec<String> = o
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
                    .filter_map(|v| v.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        // apiextensions.k8s.io/v1beta1 may name a single `spec.version`.
        if versions.is_empty() && !s("/spec/version").is_empty() {
            versions.push(s("/spec/version").to_string());
        }
        Some((o.clone(), versions))
    })
}

/// The tasks of `plan` that run before task `task_index` of the step `at` names, with the
/// step each runs in: earlier phases and steps in plan order, then earlier tasks of the step.
/// Only tasks that apply (Apply, and Toggle whose parameter is on) are returned.
pub fn earlier_applying_tasks<'a, 'v>(
    ov: &'a OperatorVersionSpec,
    at: &StepRef<'_>,
    task_index: usize,
    toggle_value: impl Fn(&str) -> Option<&'v str>,
) -> Vec<(&'a str, &'a str, &'a Task)> {
    let mut out = Vec::new();
    let Some(plan) = ov.plans.get(at.plan) else {
        return out;
    };
    'phases: for phase in &plan.phases {
        for step in &phase.steps {
            let here = phase.name == at.phase && step.name == at.step;
            for (i, name) in step.tasks.iter().enumerate() {
                if here && i >= task_index {
                    break 'phases;
                }
                let Some(task) = ov.tasks.iter().find(|t| &t.name == name) else {
                    continue;
                };
                let applies = match &task.kind {
                    TaskKind::Apply => true,
                    TaskKind::Toggle => {
                        let value = toggle_value(&task.spec.parameter);
                        toggle_mode(&task.spec.parameter, value) == Ok(ToggleMode::Apply)
                    }
                    _ => false,
                };
                if applies {
                    out.push((phase.name.as_str(), step.name.as_str(), task));
                }
            }
        }
    }
    out
}

/// The step's own `timeout`, when it sets one.
pub fn step_timeout<'a>(ov: &'a OperatorVersionSpec, at: &StepRef<'_>) -> Option<&'a str> {
    ov.plans
        .get(at.plan)?
        .phases
        .iter()
        .find(|p| p.name == at.phase)?
        .steps
        .iter()
        .find(|s| s.name == at.step)
        .map(|s| s.timeout.as_str())
        .filter(|t| !t.is_empty())
}

/// What the object is, for messages.
#[derive(Debug, Clone)]
pub struct Missing<'a> {
    pub cluster: &'a str,
    pub plan: &'a str,
    pub template: &'a str,
    pub api_version: &'a str,
    pub kind: &'a str,
    /// `namespace/name` or `name`.
    pub object: &'a str,
}

impl Missing<'_> {
    fn what(&self) -> String {
        format!(
            "template {}: kind {} (apiVersion {}) of object {} is not served by cluster {}",
            self.template, self.kind, self.api_version, self.object, self.cluster
        )
    }
}

/// The outcome for an unknown kind (pure). `definer` is the CRD applied earlier in the plan
/// that defines the group and kind; `live` says how that CRD stands on the cluster;
/// `elapsed` is the time since the step started; `step_timeout` is the step's own bound.
pub fn verdict(
    missing: &Missing<'_>,
    definer: Option<&Definer>,
    live: &str,
    elapsed: Duration,
    step_timeout: Option<&str>,
) -> TaskOutcome {
    let Some(d) = definer else {
        return TaskOutcome::Fatal(format!(
            "{}, and no earlier step of plan {} applies a CustomResourceDefinition for it",
            missing.what(),
            missing.plan
        ));
    };
    let (_, version) = crate::cluster::object::split_api_version(missing.api_version);
    if !d.versions.iter().any(|v| v == version) {
        return TaskOutcome::Fatal(format!(
            "{}: CustomResourceDefinition {} ({}) serves version(s) {}, not {version}",
            missing.what(),
            d.name,
            d.place,
            if d.versions.is_empty() {
                "(none)".to_string()
            } else {
                d.versions.join(", ")
            }
        ));
    }
    let waiting = format!(
        "kind {} (apiVersion {}) is not served by cluster {} yet: CustomResourceDefinition {} ({}) {live}",
        missing.kind, missing.api_version, missing.cluster, d.name, d.place
    );
    match step_timeout {
        // The workflow ends the step when its own timeout passes.
        Some(limit) => TaskOutcome::InProgress(format!("{waiting}; waiting up to {limit}")),
        None if elapsed > DEFAULT_WAIT => TaskOutcome::Fatal(format!(
            "{}: still not served {}s after the step started, the most kudo waits for a CustomResourceDefinition the plan applied when the step sets no timeout: CustomResourceDefinition {} ({}) {live}",
            missing.what(),
            DEFAULT_WAIT.as_secs(),
            d.name,
            d.place
        )),
        None => TaskOutcome::InProgress(format!(
            "{waiting}; waiting up to {}s",
            DEFAULT_WAIT.as_secs()
        )),
    }
}

/// How a live CRD stands, for messages: `is not established yet (NamesAccepted=False:
/// KindConflict: ...)`, `is established`, or `does not exist`.
pub fn crd_state(live: Option<&Value>) -> String {
    let Some(crd) = live else {
        return "does not exist".into();
    };
    let conditions = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let established = conditions.iter().any(|c| {
        c.get("type").and_then(Value::as_str) == Some("Established")
            && c.get("status").and_then(Value::as_str) == Some("True")
    });
    if established {
        return "is established, its kind not yet in discovery".into();
    }
    let problems: Vec<String> = conditions
        .iter()
        .filter(|c| c.get("status").and_then(Value::as_str) != Some("True"))
        .map(|c| {
            let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
            format!(
                "{}={}: {}: {}",
                s("type"),
                s("status"),
                s("reason"),
                s("message")
            )
        })
        .collect();
    if problems.is_empty() {
        "is not established yet".into()
    } else {
        format!("is not established yet ({})", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn missing() -> Missing<'static> {
        Missing {
            cluster: "prod-eu",
            plan: "deploy",
            template: "gizmo.yaml",
            api_version: "fidelity.kudo.dev/v1",
            kind: "Gizmo",
            object: "shop/g",
        }
    }

    fn definer(versions: &[&str]) -> Definer {
        Definer {
            api_version: "apiextensions.k8s.io/v1".into(),
            name: "gizmos.fidelity.kudo.dev".into(),
            place: "step crd, task crd".into(),
            versions: versions.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn fatal(o: TaskOutcome) -> String {
        match o {
            TaskOutcome::Fatal(m) => m,
            other => panic!("expected fatal, got {other:?}"),
        }
    }

    fn waiting(o: TaskOutcome) -> String {
        match o {
            TaskOutcome::InProgress(m) => m,
            other => panic!("expected in progress, got {other:?}"),
        }
    }

    #[test]
    fn without_a_crd_in_the_plan_it_is_fatal_naming_kind_template_and_cluster() {
        let m = fatal(verdict(&missing(), None, "", Duration::ZERO, None));
        for needle in [
            "template gizmo.yaml",
            "kind Gizmo (apiVersion fidelity.kudo.dev/v1)",
            "object shop/g",
            "cluster prod-eu",
            "no earlier step of plan deploy",
        ] {
            assert!(m.contains(needle), "{m:?} lacks {needle:?}");
        }
    }

    #[test]
    fn a_crd_of_the_plan_that_serves_another_version_is_fatal() {
        let m = fatal(verdict(
            &missing(),
            Some(&definer(&["v1beta1"])),
            "is established",
            Duration::ZERO,
            None,
        ));
        assert!(m.contains("serves version(s) v1beta1, not v1"), "{m}");
    }

    #[test]
    fn a_crd_of_the_plan_is_waited_for_bounded() {
        let d = definer(&["v1"]);
        let live = "is not established yet (NamesAccepted=False: KindConflict: taken)";
        let m = waiting(verdict(
            &missing(),
            Some(&d),
            live,
            Duration::from_secs(5),
            None,
        ));
        assert!(
            m.contains("gizmos.fidelity.kudo.dev (step crd, task crd)"),
            "{m}"
        );
        assert!(
            m.contains("KindConflict") && m.contains("up to 120s"),
            "{m}"
        );
        // Past the default bound: fatal, saying why and how long.
        let m = fatal(verdict(
            &missing(),
            Some(&d),
            live,
            DEFAULT_WAIT + Duration::from_secs(1),
            None,
        ));
        assert!(
            m.contains("template gizmo.yaml") && m.contains("120s"),
            "{m}"
        );
        assert!(m.contains("KindConflict"), "{m}");
        // The step's own timeout replaces the default: the workflow enforces it.
        let m = waiting(verdict(
            &missing(),
            Some(&d),
            live,
            DEFAULT_WAIT * 10,
            Some("30m"),
        ));
        assert!(m.contains("up to 30m"), "{m}");
    }

    #[test]
    fn defining_crd_matches_group_kind_and_lists_served_versions() {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gizmos.fidelity.kudo.dev"},
            "spec": {"group": "fidelity.kudo.dev", "names": {"kind": "Gizmo", "plural": "gizmos"},
                "scope": "Namespaced",
                "versions": [{"name": "v1", "served": true, "storage": true},
                             {"name": "v0", "served": false, "storage": false}]}});
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
        let objects = vec![cm, crd];
        let (found, versions) =
            defining_crd(&objects, "fidelity.kudo.dev", "Gizmo").expect("found");
        assert_eq!(found["metadata"]["name"], "gizmos.fidelity.kudo.dev");
        assert_eq!(versions, vec!["v1".to_string()]);
        assert!(defining_crd(&objects, "fidelity.kudo.dev", "Gadget").is_none());
        assert!(defining_crd(&objects, "other.kudo.dev", "Gizmo").is_none());
        let old = json!({"apiVersion": "apiextensions.k8s.io/v1beta1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "gizmos.fidelity.kudo.dev"},
            "spec": {"group": "fidelity.kudo.dev", "version": "v1alpha1",
                "names": {"kind": "Gizmo", "plural": "gizmos"}}});
        let (_, versions) = defining_crd(&[old], "fidelity.kudo.dev", "Gizmo").expect("found");
        assert_eq!(versions, vec!["v1alpha1".to_string()]);
    }

    fn ov(yaml: &str) -> OperatorVersionSpec {
        serde_saphyr::from_str(yaml).expect("ov")
    }

    const OV: &str = r#"
tasks:
  - {name: crd, kind: Apply, spec: {resources: [crd.yaml]}}
  - {name: gizmo, kind: Apply, spec: {resources: [gizmo.yaml]}}
  - {name: side, kind: Toggle, spec: {parameter: SIDE, resources: [side.yaml]}}
  - {name: wait, kind: Dummy, spec: {done: true}}
plans:
  deploy:
    strategy: serial
    phases:
      - name: one
        strategy: parallel
        steps:
          - {name: a, tasks: [side, crd]}
          - {name: b, tasks: [wait, gizmo]}
      - name: two
        strategy: serial
        steps:
          - {name: c, tasks: [gizmo], timeout: 45s}
"#;

    #[test]
    fn earlier_tasks_follow_plan_order_and_skip_what_does_not_apply() {
        let spec = ov(OV);
        let at = |phase, step| StepRef {
            plan: "deploy",
            phase,
            step,
            started: k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        };
        let names = |v: Vec<(&str, &str, &Task)>| -> Vec<String> {
            v.into_iter()
                .map(|(p, s, t)| format!("{p}/{s}/{}", t.name))
                .collect()
        };
        let off = |_: &str| Some("false");
        let on = |_: &str| Some("true");
        assert_eq!(
            names(earlier_applying_tasks(&spec, &at("one", "b"), 1, off)),
            vec!["one/a/crd"]
        );
        assert_eq!(
            names(earlier_applying_tasks(&spec, &at("one", "b"), 1, on)),
            vec!["one/a/side", "one/a/crd"]
        );
        assert_eq!(
            names(earlier_applying_tasks(&spec, &at("one", "a"), 1, on)),
            vec!["one/a/side"]
        );
        assert_eq!(
            names(earlier_applying_tasks(&spec, &at("two", "c"), 0, off)),
            vec!["one/a/crd", "one/b/gizmo"]
        );
        assert_eq!(step_timeout(&spec, &at("two", "c")), Some("45s"));
        assert_eq!(step_timeout(&spec, &at("one", "a")), None);
    }

    #[test]
    fn crd_state_names_failing_conditions() {
        assert_eq!(crd_state(None), "does not exist");
        let conflicted = json!({"status": {"conditions": [
            {"type": "NamesAccepted", "status": "False", "reason": "KindConflict",
             "message": "\"Widget\" is already in use"},
            {"type": "Established", "status": "False", "reason": "NotAccepted", "message": "not all names are accepted"}]}});
        let s = crd_state(Some(&conflicted));
        assert!(
            s.contains("NamesAccepted=False: KindConflict: \"Widget\" is already in use"),
            "{s}"
        );
        let established = json!({"status": {"conditions": [
            {"type": "Established", "status": "True"}]}});
        assert!(crd_state(Some(&established)).contains("not yet in discovery"));
    }
}
