//! `kudo package verify`: the reference and parameter checks KUDO's verifiers make.
//!
//! Parameter references are found by scanning template text for `.Params.NAME` (which also
//! covers `$.Params.NAME`): the template engine exposes no parse-tree walker. Dynamic
//! lookups such as `index .Params "X"` are not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

use super::Package;
use crate::api::TaskKind;
use crate::template::Template;

/// Errors make a package unusable; warnings are worth a look.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

static PARAM_REF: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\.Params\.([A-Za-z_][A-Za-z0-9_]*)").expect("constant regex is valid")
});

/// The parameter names a template's text refers to.
pub fn param_references(text: &str) -> BTreeSet<String> {
    PARAM_REF
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .collect()
}

pub fn verify(package: &Package) -> VerifyReport {
    let mut report = VerifyReport::default();
    let op = &package.operator;
    let declared: BTreeSet<&str> = package
        .params
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();

    // They name files (`kudo package create` writes `<name>-<version>.tgz`) and folders.
    for (field, value) in [
        ("name", &op.name),
        ("operatorVersion", &op.operator_version),
        ("appVersion", &op.app_version),
    ] {
        if !value.is_empty() && !crate::util::is_safe_segment(value) {
            report.errors.push(format!(
                "operator.yaml: {field} {value:?} must not contain '/', '\\', control characters or be '..'"
            ));
        }
    }

    let mut seen = BTreeSet::new();
    for p in &package.params.parameters {
        if p.name.is_empty() {
            report
                .errors
                .push("params.yaml: a parameter has no name".to_string());
        } else if !seen.insert(p.name.as_str()) {
            report.errors.push(format!(
                "params.yaml: parameter {:?} is declared twice",
                p.name
            ));
        }
    }

    // Parameters: KUDO's `enumParams` and `paramDefaults`, on the values as params.yaml has
    // them (`default: null` is no default).
    for p in &package.params.parameters {
        let name = &p.name;
        if let Some(values) = &p.r#enum {
            if values.is_empty() {
                report.errors.push(format!(
                    "params.yaml: parameter {name:?} is an enum but has no allowed values"
                ));
            }
            for v in values {
                if let Err(e) = super::params::check_default(p.declared_type, v) {
                    report.errors.push(format!(
                        "params.yaml: parameter {name:?} has an invalid enum value: {e}"
                    ));
                }
            }
        }
        let Some(default) = p.default.as_ref().filter(|d| !d.is_null()) else {
            continue;
        };
        let shown = |v: &serde_json::Value| super::go_value_string(v);
        if let Err(e) = super::params::check_default(p.declared_type, default) {
            report.errors.push(format!(
                "params.yaml: parameter {name:?} has an invalid default value: {e}"
            ));
        } else if let Some(values) = p.r#enum.as_ref().filter(|v| !v.contains(default)) {
            let allowed: Vec<String> = values.iter().map(shown).collect();
            report.errors.push(format!(
                "params.yaml: parameter {name:?} has an invalid default value: value is {:?}, but only allowed values are [{}]",
                shown(default),
                allowed.join(" ")
            ));
        }
        for w in super::params::default_warnings(p.declared_type, default) {
            report
                .warnings
                .push(format!("params.yaml: parameter {name:?}: {w}"));
        }
    }

    // Plans reference tasks; tasks reference templates.
    let tasks: BTreeMap<&str, &crate::api::Task> =
        op.tasks.iter().map(|t| (t.name.as_str(), t)).collect();
    for (plan_name, plan) in &op.plans {
        if !plan.timeout.is_empty()
            && let Err(e) = crate::util::duration::parse_go(&plan.timeout)
        {
            report
                .errors
                .push(format!("plan {plan_name:?} has an invalid timeout: {e}"));
        }
        for phase in &plan.phases {
            for step in &phase.steps {
                if !step.timeout.is_empty()
                    && let Err(e) = crate::util::duration::parse_go(&step.timeout)
                {
                    report.errors.push(format!(
                        "plan {plan_name:?}, phase {:?}, step {:?} has an invalid timeout: {e}",
                        phase.name, step.name
                    ));
                }
                for task in &step.tasks {
                    if !tasks.contains_key(task.as_str()) {
                        report.errors.push(format!(
                            "plan {plan_name:?}, phase {:?}, step {:?} references task {task:?}, which is not defined",
                            phase.name, step.name
                        ));
                    }
                }
            }
        }
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    for task in &op.tasks {
        let mut files: Vec<&String> = task.spec.resources.iter().collect();
        match &task.kind {
            TaskKind::Other(kind) => report.errors.push(format!(
                "task {:?} has unknown kind {kind:?} (known: {})",
                task.name,
                TaskKind::KNOWN.map(|k| k.as_str().to_string()).join(", ")
            )),
            TaskKind::Toggle => {
                if task.spec.parameter.is_empty() {
                    report
                        .errors
                        .push(format!("toggle task {:?} names no parameter", task.name));
                } else if !declared.contains(task.spec.parameter.as_str()) {
                    report.errors.push(format!(
                        "toggle task {:?} uses parameter {:?}, which is not declared",
                        task.name, task.spec.parameter
                    ));
                }
                used.insert(task.spec.parameter.clone());
            }
            TaskKind::Pipe => files.push(&task.spec.pod),
            TaskKind::KudoOperator if !task.spec.parameter_file.is_empty() => {
                files.push(&task.spec.parameter_file);
            }
            _ => {}
        }
        for file in files {
            if !package.templates.contains_key(file) {
                report.errors.push(format!(
                    "task {:?} references template {file:?}, which the package does not have",
                    task.name
                ));
            }
        }
    }

    // Templates parse; the parameters they use are declared.
    for (path, text) in &package.templates {
        if let Err(e) = Template::parse(path, text) {
            report
                .errors
                .push(format!("template {path} does not parse: {e}"));
        }
        for name in param_references(text) {
            if !declared.contains(name.as_str()) {
                report.errors.push(format!(
                    "template {path} uses parameter {name:?}, which params.yaml does not declare"
                ));
            }
            used.insert(name);
        }
    }
    // A parameter with a trigger is used by changing it (it starts that plan).
    for p in &package.params.parameters {
        let name = p.name.as_str();
        if p.trigger.is_empty() && !used.contains(name) {
            report.warnings.push(format!(
                "parameter {name:?} is declared but no template or task uses it"
            ));
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(operator: &str, params: &str, templates: &[(&str, &str)]) -> Package {
        Package {
            source: "test".to_string(),
            operator: serde_saphyr::from_str(operator).expect("operator.yaml"),
            params: serde_saphyr::from_str(params).expect("params.yaml"),
            templates: templates
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn finds_references() {
        let refs = param_references("{{ .Params.A }} {{ $.Params.B_2 | quote }} {{ .Paramsx.C }}");
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["A", "B_2"]);
    }

    #[test]
    fn reports_every_problem() {
        let op = r#"
name: demo
operatorVersion: 0.1.0
tasks:
  - {name: app, kind: Apply, spec: {resources: [cm.yaml, gone.yaml]}}
  - {name: flip, kind: Toggle, spec: {resources: [cm.yaml], parameter: UNDECLARED_TOGGLE}}
plans:
  deploy:
    phases:
      - name: main
        steps:
          - {name: s, tasks: [app, ghost]}
"#;
        let params = "parameters:\n  - name: USED\n  - name: UNUSED\n  - name: TRIGGERED\n    trigger: deploy\n  - name: N\n    type: integer\n    default: abc\n";
        let pkg = package(
            op,
            params,
            &[(
                "cm.yaml",
                "a: {{ .Params.USED }} {{ .Params.N }} {{ .Params.MISSING }}",
            )],
        );
        let report = verify(&pkg);
        let all = report.errors.join("\n");
        for needle in [
            "\"ghost\"",
            "gone.yaml",
            "UNDECLARED_TOGGLE",
            "\"MISSING\"",
            "invalid default",
        ] {
            assert!(all.contains(needle), "missing {needle} in:\n{all}");
        }
        assert_eq!(report.errors.len(), 5, "{all}");
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].contains("UNUSED"));
    }

    #[test]
    fn unparsable_timeouts_name_the_plan_and_step() {
        let op = r#"
name: demo
operatorVersion: 0.1.0
tasks: [{name: d, kind: Dummy, spec: {done: true}}]
plans:
  deploy:
    timeout: forever
    phases:
      - name: main
        steps:
          - {name: slow, tasks: [d], timeout: 10 minutes}
          - {name: fine, tasks: [d], timeout: 10m}
"#;
        let report = verify(&package(op, "parameters: []\n", &[]));
        let all = report.errors.join("\n");
        assert_eq!(report.errors.len(), 2, "{all}");
        assert!(
            all.contains("plan \"deploy\" has an invalid timeout"),
            "{all}"
        );
        assert!(
            all.contains("step \"slow\" has an invalid timeout"),
            "{all}"
        );
    }

    #[test]
    fn names_and_versions_that_are_paths_are_errors() {
        let op = "name: ../../evil\noperatorVersion: 0.1.0/../x\ntasks: []\nplans: {}\n";
        let report = verify(&package(op, "parameters: []\n", &[]));
        let all = report.errors.join("\n");
        assert!(all.contains("name \"../../evil\""), "{all}");
        assert!(all.contains("operatorVersion \"0.1.0/../x\""), "{all}");
    }

    #[test]
    fn corpus_first_operator_is_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/kudo-operators/first-operator/operator");
        let pkg = Package::load_path(&dir).expect("loads");
        let report = verify(&pkg);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
    }
}
