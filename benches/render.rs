//! Renders every kafka template repeatedly and prints templates per second
//! (parse + render, and render only). Run: cargo bench --bench render

use kudo::package::{Package, RenderContext, context_value, params_value, resolve_parameters};
use kudo::template::Template;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-operators/kafka/operator");
    let package = Package::load_path(&dir).expect("kafka package");
    let resources = package.to_resources().expect("convert");
    let spec = &resources.operator_version.spec;
    let resolved = resolve_parameters(&spec.parameters, &BTreeMap::new(), None).expect("defaults");
    let params = params_value(&spec.parameters, &resolved).expect("params");
    let ctx = RenderContext {
        instance_name: "inst".into(),
        namespace: "default".into(),
        operator_name: package.operator.name.clone(),
        operator_version: package.operator.operator_version.clone(),
        app_version: package.operator.app_version.clone(),
        plan_name: "deploy".into(),
        phase_name: "main".into(),
        step_name: "everything".into(),
        pipes: BTreeMap::new(),
    };
    let data = context_value(&ctx, params);
    let texts: Vec<(String, String)> = spec
        .templates
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let iters = 200;
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..iters {
        for (name, text) in &texts {
            bytes += Template::parse(name, text)
                .and_then(|t| t.render(&data))
                .map(|s| s.len())
                .unwrap_or(0);
        }
    }
    let el = start.elapsed().as_secs_f64();
    let n = (iters * texts.len()) as f64;
    println!(
        "kafka: {} templates x {iters}: parse+render {:.0} templates/s ({:.1} µs each, {bytes} bytes)",
        texts.len(),
        n / el,
        el / n * 1e6
    );
    let parsed: Vec<Template> = texts
        .iter()
        .map(|(n, t)| Template::parse(n, t).expect("parses"))
        .collect();
    let start = Instant::now();
    for _ in 0..iters {
        for t in &parsed {
            bytes += t.render(&data).map(|s| s.len()).unwrap_or(0);
        }
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "kafka: render only (pre-parsed) {:.0} templates/s ({:.1} µs each, {bytes} bytes total)",
        n / el,
        el / n * 1e6
    );
}
