//! Rendering a package's templates into Kubernetes objects, in the order KUDO applies them:
//! task order, then the task's resource order, then document order.

use std::collections::BTreeMap;

use kube::api::DynamicObject;
use serde_json::Value;

use crate::api::{OperatorVersionSpec, Task};
use crate::template::{Template, TemplateError};

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The engine's message names the template, line and column, as Go's does.
    #[error("{source}")]
    Template {
        template: String,
        source: TemplateError,
    },
    #[error("task {task:?} references template {template:?}, which the package does not have")]
    MissingTemplate { task: String, template: String },
    #[error(
        "plan {plan:?}, phase {phase:?}, step {step:?} references task {task:?}, which is not defined"
    )]
    MissingTask {
        plan: String,
        phase: String,
        step: String,
        task: String,
    },
    #[error("the package has no plan {plan:?} (plans: {available})")]
    NoPlan { plan: String, available: String },
    #[error("plan {plan:?} has no {what} {name:?}")]
    NoPhaseOrStep {
        plan: String,
        what: &'static str,
        name: String,
    },
    #[error(
        "template {template}: rendered document {document}: invalid YAML at line {line}, column {column} of the output: {message}"
    )]
    Yaml {
        template: String,
        document: usize,
        line: u64,
        column: u64,
        message: String,
    },
    #[error(
        "template {template}: rendered document {document} (line {line} of the output) is not a Kubernetes object: {message}"
    )]
    Object {
        template: String,
        document: usize,
        line: u64,
        message: String,
    },
}

/// One object of a task's rendered resources, with where it came from.
#[derive(Debug, Clone)]
pub struct RenderedObject {
    pub task: String,
    pub task_kind: crate::api::TaskKind,
    pub template: String,
    /// Index among the template's non-empty documents, from 0.
    pub document: usize,
    pub object: DynamicObject,
}

/// A template's raw rendering, as in the goldens: `{"out": text}` or `{"err": message}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateOutcome {
    Out(String),
    Err(String),
}

/// Renders every template with the same data, failures included (`kudo render --templates`).
pub fn render_templates(
    templates: &BTreeMap<String, String>,
    data: &Value,
) -> BTreeMap<String, TemplateOutcome> {
    templates
        .iter()
        .map(|(path, text)| {
            let outcome = match render_one(path, text, data) {
                Ok(out) => TemplateOutcome::Out(out),
                Err(e) => TemplateOutcome::Err(e.to_string()),
            };
            (path.clone(), outcome)
        })
        .collect()
}

fn render_one(path: &str, text: &str, data: &Value) -> Result<String, RenderError> {
    let wrap = |source| RenderError::Template {
        template: path.to_string(),
        source,
    };
    Template::parse(path, text)
        .map_err(wrap)?
        .render(data)
        .map_err(wrap)
}

/// Splits rendered output into documents on `\n---` as KUDO does, dropping empty and
/// comment-only documents. Each document comes with the output line it starts on.
pub fn split_documents(text: &str) -> Vec<(u64, &str)> {
    let mut docs = Vec::new();
    let mut line = 1u64;
    for part in text.split("\n---") {
        let start = line;
        line += part.matches('\n').count() as u64 + 1;
        let meaningful = part
            .lines()
            .map(str::trim)
            .any(|l| !l.is_empty() && !l.starts_with('#'));
        if meaningful {
            docs.push((start, part));
        }
    }
    docs
}

/// Parses a template's rendered output into objects, naming template, document and the
/// output's line and column on failure.
pub fn parse_documents(template: &str, text: &str) -> Result<Vec<DynamicObject>, RenderError> {
    split_documents(text)
        .into_iter()
        .enumerate()
        .map(|(document, (start, doc))| {
            let value: Value = serde_saphyr::from_str(doc).map_err(|e| {
                let (line, column) = e.location().map_or((start, 0), |l| {
                    (start + l.line().saturating_sub(1), l.column())
                });
                RenderError::Yaml {
                    template: template.to_string(),
                    document,
                    line,
                    column,
                    message: super::yaml_message(&e),
                }
            })?;
            let object_err = |message: String| RenderError::Object {
                template: template.to_string(),
                document,
                line: start,
                message,
            };
            let has = |key: &str| {
                value
                    .get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|s| !s.is_empty())
            };
            if !has("apiVersion") || !has("kind") {
                return Err(object_err("apiVersion and kind must be set".to_string()));
            }
            serde_path_to_error::deserialize::<_, DynamicObject>(value)
                .map_err(|e| object_err(format!("at {}: {}", e.path(), e.inner())))
        })
        .collect()
}

/// Renders one task's resources (Apply, Delete and Toggle tasks; other kinds have none).
pub fn render_task(
    spec: &OperatorVersionSpec,
    task: &Task,
    data: &Value,
) -> Result<Vec<RenderedObject>, RenderError> {
    if !task.kind.renders_resources() {
        return Ok(Vec::new());
    }
    let mut objects = Vec::new();
    for template in &task.spec.resources {
        let text = spec
            .templates
            .get(template)
            .ok_or_else(|| RenderError::MissingTemplate {
                task: task.name.clone(),
                template: template.clone(),
            })?;
        let out = render_one(template, text, data)?;
        for (document, object) in parse_documents(template, &out)?.into_iter().enumerate() {
            objects.push(RenderedObject {
                task: task.name.clone(),
                task_kind: task.kind.clone(),
                template: template.clone(),
                document,
                object,
            });
        }
    }
    Ok(objects)
}

/// The (phase, step, task) a plan runs, in order, optionally restricted to one phase and
/// step. A task listed by several steps appears once per step.
pub fn plan_tasks<'a>(
    spec: &'a OperatorVersionSpec,
    plan: &str,
    phase: Option<&str>,
    step: Option<&str>,
) -> Result<Vec<(String, String, &'a Task)>, RenderError> {
    let p = spec.plans.get(plan).ok_or_else(|| RenderError::NoPlan {
        plan: plan.to_string(),
        available: spec.plans.keys().cloned().collect::<Vec<_>>().join(", "),
    })?;
    if let Some(ph) = phase
        && !p.phases.iter().any(|x| x.name == ph)
    {
        return Err(RenderError::NoPhaseOrStep {
            plan: plan.to_string(),
            what: "phase",
            name: ph.to_string(),
        });
    }
    let mut out = Vec::new();
    let mut step_seen = false;
    for ph in p
        .phases
        .iter()
        .filter(|x| phase.is_none_or(|n| n == x.name))
    {
        for st in ph.steps.iter().filter(|x| step.is_none_or(|n| n == x.name)) {
            step_seen = true;
            for task_name in &st.tasks {
                let task = spec
                    .tasks
                    .iter()
                    .find(|t| &t.name == task_name)
                    .ok_or_else(|| RenderError::MissingTask {
                        plan: plan.to_string(),
                        phase: ph.name.clone(),
                        step: st.name.clone(),
                        task: task_name.clone(),
                    })?;
                out.push((ph.name.clone(), st.name.clone(), task));
            }
        }
    }
    if let Some(st) = step
        && !step_seen
    {
        return Err(RenderError::NoPhaseOrStep {
            plan: plan.to_string(),
            what: "step",
            name: st.to_string(),
        });
    }
    Ok(out)
}

/// Renders every resource a plan applies or deletes, each step with its own phase and
/// step name in the data (`data_for(phase, step)`), in plan order.
pub fn render_plan(
    spec: &OperatorVersionSpec,
    plan: &str,
    phase: Option<&str>,
    step: Option<&str>,
    data_for: &dyn Fn(&str, &str) -> Value,
) -> Result<Vec<RenderedObject>, RenderError> {
    let mut objects = Vec::new();
    for (phase_name, step_name, task) in plan_tasks(spec, plan, phase, step)? {
        objects.extend(render_task(spec, task, &data_for(&phase_name, &step_name))?);
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELF_RECURSIVE: &str = r#"{{define "a"}}{{template "a"}}{{end}}{{template "a"}}"#;

    #[test]
    fn a_template_over_the_render_budget_is_a_render_error_naming_it() {
        let spec = OperatorVersionSpec {
            templates: BTreeMap::from([
                ("loop.yaml".to_string(), SELF_RECURSIVE.to_string()),
                (
                    "ok.yaml".to_string(),
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n".to_string(),
                ),
            ]),
            ..OperatorVersionSpec::default()
        };
        let task = Task {
            name: "deploy".into(),
            kind: crate::api::TaskKind::Apply,
            spec: crate::api::TaskSpec {
                resources: vec!["ok.yaml".into(), "loop.yaml".into()],
                ..Default::default()
            },
        };
        let err = match render_task(&spec, &task, &serde_json::json!({})) {
            Ok(_) => panic!("a self-recursive template rendered"),
            Err(e) => e,
        };
        assert!(
            matches!(&err, RenderError::Template { template, .. } if template == "loop.yaml"),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("loop.yaml") && msg.contains("render budget"),
            "{msg}"
        );
        // `kudo render --templates`: the other template still renders.
        let outcomes = render_templates(&spec.templates, &serde_json::json!({}));
        assert!(
            matches!(&outcomes["loop.yaml"], TemplateOutcome::Err(m) if m.contains("render budget"))
        );
        assert!(matches!(&outcomes["ok.yaml"], TemplateOutcome::Out(_)));
    }

    #[test]
    fn split_drops_empty_and_comment_only_documents() {
        let text = "# header only\n---\napiVersion: v1\nkind: A\n---\n\n---\n# c\n  # d\n---\napiVersion: v1\nkind: B\n";
        let docs = split_documents(text);
        assert_eq!(docs.len(), 2, "{docs:?}");
        assert_eq!(
            docs[0].0, 2,
            "second document starts on the line of its `---`"
        );
        assert!(docs[0].1.contains("kind: A"));
        assert!(docs[1].1.contains("kind: B"));
        assert_eq!(docs[1].0, 10);
    }

    #[test]
    fn documents_parse_into_objects_in_order() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: b\n";
        let objects = parse_documents("two.yaml", text).expect("parses");
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].metadata.name.as_deref(), Some("a"));
        assert_eq!(objects[0].data["data"]["k"], "v");
        assert_eq!(
            objects[1].types.as_ref().map(|t| t.kind.as_str()),
            Some("Deployment")
        );
    }

    #[test]
    fn bad_yaml_in_template_output_names_template_document_line_column() {
        let text = "apiVersion: v1\nkind: A\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: B\nmetadata:\n  name: [b\n";
        let err = parse_documents("deploy/broken.yaml", text).expect_err("invalid YAML");
        match &err {
            RenderError::Yaml {
                template,
                document,
                line,
                column,
                ..
            } => {
                assert_eq!(template, "deploy/broken.yaml");
                assert_eq!(*document, 1);
                assert!((9..=10).contains(line), "line {line}: {err}");
                assert!(*column >= 1, "{err}");
            }
            other => panic!("expected a YAML error, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("deploy/broken.yaml") && msg.contains("document 1"),
            "{msg}"
        );
    }

    #[test]
    fn bad_document_without_kind_is_named() {
        let err = parse_documents("x.yaml", "apiVersion: v1\nmetadata: {}\n").expect_err("no kind");
        let msg = err.to_string();
        assert!(msg.contains("x.yaml") && msg.contains("kind"), "{msg}");
    }

    fn spec() -> OperatorVersionSpec {
        let yaml = r#"
templates:
  a.yaml: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n"
  b.yaml: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b1\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b2\n"
  c.yaml: "apiVersion: v1\nkind: Secret\nmetadata:\n  name: c\n"
tasks:
  - name: first
    kind: Apply
    spec: {resources: [b.yaml, a.yaml]}
  - name: second
    kind: Delete
    spec: {resources: [c.yaml]}
  - name: noop
    kind: Dummy
  - name: broken
    kind: Apply
    spec: {resources: [missing.yaml]}
plans:
  deploy:
    phases:
      - name: one
        steps:
          - {name: s1, tasks: [second]}
          - {name: s2, tasks: [first, noop]}
  bad:
    phases:
      - name: p
        steps:
          - {name: s, tasks: [nope]}
  worse:
    phases:
      - name: p
        steps:
          - {name: s, tasks: [broken]}
"#;
        serde_saphyr::from_str(yaml).expect("spec parses")
    }

    #[test]
    fn plan_order_is_task_then_file_then_document() {
        let spec = spec();
        let seen = std::cell::RefCell::new(Vec::new());
        let objects = render_plan(&spec, "deploy", None, None, &|phase, step| {
            seen.borrow_mut().push(format!("{phase}/{step}"));
            serde_json::json!({})
        })
        .expect("renders");
        let names: Vec<_> = objects
            .iter()
            .map(|o| o.object.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, ["c", "b1", "b2", "a"]);
        assert_eq!(objects[0].task_kind, crate::api::TaskKind::Delete);
        assert_eq!(*seen.borrow(), ["one/s1", "one/s2", "one/s2"]);
        let only_s2 = render_plan(&spec, "deploy", Some("one"), Some("s2"), &|_, _| {
            serde_json::json!({})
        })
        .expect("renders");
        assert_eq!(only_s2.len(), 3);
    }

    #[test]
    fn bad_references_are_named() {
        let spec = spec();
        let data = |_: &str, _: &str| serde_json::json!({});
        let msg = render_plan(&spec, "bad", None, None, &data)
            .expect_err("missing task")
            .to_string();
        assert!(
            msg.contains("\"nope\"") && msg.contains("plan \"bad\""),
            "{msg}"
        );
        let msg = render_plan(&spec, "worse", None, None, &data)
            .expect_err("missing template")
            .to_string();
        assert!(
            msg.contains("missing.yaml") && msg.contains("\"broken\""),
            "{msg}"
        );
        let msg = render_plan(&spec, "nosuch", None, None, &data)
            .expect_err("no plan")
            .to_string();
        assert!(msg.contains("nosuch") && msg.contains("deploy"), "{msg}");
        let msg = render_plan(&spec, "deploy", None, Some("zz"), &data)
            .expect_err("no step")
            .to_string();
        assert!(msg.contains("step \"zz\""), "{msg}");
    }
}
