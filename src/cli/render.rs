//! `kudo render`: a package's manifests as the plan engine would apply them, or every
//! template's raw rendering (`--templates`, the goldens' JSON shape).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::CliResult;
use crate::api::ParameterType;
use crate::package::{
    Package, RenderContext, TemplateOutcome, context_value, params_value, render_plan,
    render_templates, resolve_parameters, wrap_param_value,
};

/// Renders a package locally, like `helm template`. The context defaults are those of the
/// reference renderings in kudo-operators: instance `inst`, namespace `default`, plan
/// `deploy`; `--templates` renders with phase `main` and step `everything` unless given,
/// while manifest output renders each step with its own phase and step names.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Package directory or .tgz file.
    pub package: PathBuf,
    /// Instance name (`.Name`).
    #[arg(long, default_value = "inst")]
    pub instance: String,
    /// Namespace (`.Namespace`).
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// A parameter value; repeatable. Wins over values from -f.
    #[arg(long = "parameter", short = 'p', value_name = "KEY=VALUE")]
    pub parameters: Vec<String>,
    /// A YAML file mapping parameter names to values; repeatable, later files win.
    #[arg(long = "values", short = 'f', value_name = "FILE")]
    pub values: Vec<PathBuf>,
    /// Plan to render (`.PlanName`).
    #[arg(long, default_value = "deploy")]
    pub plan: String,
    /// Only this phase of the plan (`.PhaseName`; default `main` with --templates).
    #[arg(long)]
    pub phase: Option<String>,
    /// Only this step (`.StepName`; default `everything` with --templates).
    #[arg(long)]
    pub step: Option<String>,
    /// Render every template to raw text instead (before document splitting), each one
    /// even when others fail; exits non-zero when any failed.
    #[arg(long)]
    pub templates: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderCommandError {
    #[error("{file}: {message}")]
    ValuesFile { file: String, message: String },
    #[error("-p {arg:?}: expected KEY=VALUE")]
    ParameterArg { arg: String },
    #[error("{failed} of {total} templates failed to render (see the output)")]
    TemplatesFailed { failed: usize, total: usize },
    #[error("cannot write output: {0}")]
    Output(String),
}

pub async fn run(args: Args) -> CliResult {
    let package = Package::load_path(&args.package)?;
    let resources = package.to_resources()?;
    let spec = &resources.operator_version.spec;
    let mut values = instance_values(&args, spec)?;
    // Rendering is a preview: a value for a parameter the package does not declare is
    // reported and ignored (as KUDO's renderer ignores it); install and update refuse it.
    values.retain(|name, _| {
        let declared = spec.parameters.iter().any(|p| &p.name == name);
        if !declared {
            tracing::warn!(parameter = %name, "ignoring a value for a parameter the package does not declare");
        }
        declared
    });
    let resolved = resolve_parameters(&spec.parameters, &values, None)?;
    let params = params_value(&spec.parameters, &resolved)?;
    let base = RenderContext {
        instance_name: args.instance.clone(),
        namespace: args.namespace.clone(),
        operator_name: package.operator.name.clone(),
        operator_version: package.operator.operator_version.clone(),
        app_version: package.operator.app_version.clone(),
        plan_name: args.plan.clone(),
        phase_name: args.phase.clone().unwrap_or_else(|| "main".to_string()),
        step_name: args
            .step
            .clone()
            .unwrap_or_else(|| "everything".to_string()),
        pipes: BTreeMap::new(),
    };

    if args.templates {
        let data = context_value(&base, params);
        let outcomes = render_templates(&spec.templates, &data);
        print_templates(&outcomes, args.output)?;
        let failed = outcomes
            .values()
            .filter(|o| matches!(o, TemplateOutcome::Err(_)))
            .count();
        if failed > 0 {
            return Err(RenderCommandError::TemplatesFailed {
                failed,
                total: outcomes.len(),
            }
            .into());
        }
        return Ok(());
    }

    let data_for = |phase: &str, step: &str| {
        let ctx = RenderContext {
            phase_name: phase.to_string(),
            step_name: step.to_string(),
            ..base.clone()
        };
        context_value(&ctx, params.clone())
    };
    let objects = render_plan(
        spec,
        &args.plan,
        args.phase.as_deref(),
        args.step.as_deref(),
        &data_for,
    )?;
    match args.output {
        Format::Yaml => {
            let mut out = String::new();
            for o in &objects {
                let text = serde_saphyr::to_string(&o.object)
                    .map_err(|e| RenderCommandError::Output(e.to_string()))?;
                out.push_str(&format!(
                    "---\n# Source: {} (task {}, {})\n{text}",
                    o.template, o.task, o.task_kind
                ));
            }
            print!("{out}");
        }
        Format::Json => {
            let list: Vec<&kube::api::DynamicObject> = objects.iter().map(|o| &o.object).collect();
            let text = serde_json::to_string_pretty(&list)
                .map_err(|e| RenderCommandError::Output(e.to_string()))?;
            println!("{text}");
        }
    }
    Ok(())
}

/// Values from -f files (in order) then -p flags. File values of other YAML types are
/// wrapped into strings as KUDO does (array/map as YAML text, scalars as Go prints them).
fn instance_values(
    args: &Args,
    spec: &crate::api::OperatorVersionSpec,
) -> Result<BTreeMap<String, String>, RenderCommandError> {
    let type_of = |name: &str| {
        spec.parameters
            .iter()
            .find(|p| p.name == name)
            .map_or(ParameterType::String, |p| p.value_type())
    };
    let mut values = BTreeMap::new();
    for file in &args.values {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(file).map_err(|e| RenderCommandError::ValuesFile {
            file: shown.clone(),
            message: e.to_string(),
        })?;
        let map: BTreeMap<String, Value> =
            serde_saphyr::from_str::<Option<BTreeMap<String, Value>>>(&text)
                .map_err(|e| RenderCommandError::ValuesFile {
                    file: shown.clone(),
                    message: e.without_snippet().to_string(),
                })?
                .unwrap_or_default();
        for (name, value) in map {
            let ty = type_of(&name);
            if let Some(text) = wrap_param_value(Some(&value), ty) {
                values.insert(name, text);
            }
        }
    }
    for arg in &args.parameters {
        let (k, v) = arg
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| RenderCommandError::ParameterArg { arg: arg.clone() })?;
        values.insert(k.to_string(), v.to_string());
    }
    Ok(values)
}

fn print_templates(
    outcomes: &BTreeMap<String, TemplateOutcome>,
    format: Format,
) -> Result<(), RenderCommandError> {
    match format {
        Format::Json => {
            let text = serde_json::to_string_pretty(outcomes)
                .map_err(|e| RenderCommandError::Output(e.to_string()))?;
            println!("{text}");
        }
        Format::Yaml => {
            for (path, outcome) in outcomes {
                match outcome {
                    TemplateOutcome::Out(text) => print!("---\n# Source: {path}\n{text}\n"),
                    TemplateOutcome::Err(e) => print!("---\n# Source: {path}\n# Error: {e}\n"),
                }
            }
        }
    }
    Ok(())
}
