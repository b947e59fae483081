//! `kudo bench render`: templates per second over one package (parse + render, and render of
//! pre-parsed templates), with every declared default, as the engine renders a step.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::{BenchError, Table};
use crate::package::{Package, RenderContext, context_value, params_value, resolve_parameters};
use crate::template::Template;

fn setup(reason: impl std::fmt::Display) -> BenchError {
    BenchError::Setup {
        scenario: "render",
        reason: reason.to_string(),
    }
}

/// Renders every template of `package` for about `seconds` each way.
pub fn run(package: &Path, seconds: f64) -> Result<(Table, serde_json::Value), BenchError> {
    let pkg =
        Package::load_path(package).map_err(|e| setup(format!("{}: {e}", package.display())))?;
    let resources = pkg.to_resources().map_err(setup)?;
    let spec = &resources.operator_version.spec;
    let resolved = resolve_parameters(&spec.parameters, &BTreeMap::new(), None).map_err(setup)?;
    let params = params_value(&spec.parameters, &resolved).map_err(setup)?;
    let ctx = RenderContext {
        instance_name: "bench".into(),
        namespace: "default".into(),
        operator_name: pkg.operator.name.clone(),
        operator_version: pkg.operator.operator_version.clone(),
        app_version: pkg.operator.app_version.clone(),
        plan_name: "deploy".into(),
        phase_name: "main".into(),
        step_name: "everything".into(),
        pipes: BTreeMap::new(),
    };
    let data = context_value(&ctx, params);
    let texts: Vec<(&String, &String)> = spec.templates.iter().collect();
    if texts.is_empty() {
        return Err(setup(format!("{}: no templates", package.display())));
    }
    // One checked pass first: a template that fails would make the rate meaningless.
    let mut parsed = Vec::new();
    let mut bytes_per_pass = 0usize;
    for (name, text) in &texts {
        let t = Template::parse(name, text).map_err(|e| setup(format!("{name}: {e}")))?;
        bytes_per_pass += t
            .render(&data)
            .map_err(|e| setup(format!("{name}: {e}")))?
            .len();
        parsed.push(t);
    }
    let measure = |f: &dyn Fn() -> usize| {
        let start = Instant::now();
        let mut passes = 0u64;
        let mut sink = 0usize;
        while start.elapsed().as_secs_f64() < seconds || passes == 0 {
            sink = sink.wrapping_add(f());
            passes += 1;
        }
        std::hint::black_box(sink);
        let el = start.elapsed().as_secs_f64();
        (passes as f64 * texts.len() as f64 / el, passes)
    };
    let (full_rate, full_passes) = measure(&|| {
        texts
            .iter()
            .filter_map(|(n, t)| Template::parse(n, t).and_then(|t| t.render(&data)).ok())
            .map(|s| s.len())
            .sum()
    });
    let (render_rate, render_passes) = measure(&|| {
        parsed
            .iter()
            .filter_map(|t| t.render(&data).ok())
            .map(|s| s.len())
            .sum()
    });
    let name = pkg.operator.name.clone();
    let mut table = Table::new(
        format!(
            "render: {name} {} ({} templates, {bytes_per_pass} bytes per pass)",
            pkg.operator.operator_version,
            texts.len()
        ),
        &["mode", "templates/s", "µs per template", "passes"],
    );
    for (mode, rate, passes) in [
        ("parse + render", full_rate, full_passes),
        ("render only (pre-parsed)", render_rate, render_passes),
    ] {
        table.row(vec![
            mode.into(),
            format!("{rate:.0}"),
            format!("{:.1}", 1e6 / rate),
            passes.to_string(),
        ]);
    }
    let json = json!({
        "scenario": "render",
        "package": name,
        "operatorVersion": pkg.operator.operator_version,
        "templates": texts.len(),
        "bytesPerPass": bytes_per_pass,
        "parseAndRenderPerSecond": full_rate,
        "renderOnlyPerSecond": render_rate,
    });
    Ok((table, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_kafka_package_and_counts_its_templates() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-operators/kafka/operator");
        let (table, json) = run(&dir, 0.01).expect("kafka renders");
        let templates = json["templates"].as_u64().expect("count");
        let on_disk = std::fs::read_dir(dir.join("templates"))
            .expect("templates")
            .count() as u64;
        assert_eq!(templates, on_disk);
        assert!(json["renderOnlyPerSecond"].as_f64().expect("rate") > 0.0);
        assert!(table.render().contains("parse + render"));
    }

    #[test]
    fn a_missing_package_is_named() {
        let err = run(Path::new("/nonexistent/pkg"), 0.01).expect_err("no package");
        assert!(err.to_string().contains("/nonexistent/pkg"), "{err}");
    }
}
