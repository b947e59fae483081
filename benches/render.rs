//! Renders every kafka template repeatedly and prints templates per second
//! (parse + render, and render only). Run: cargo bench --bench render

use kudo::template::{ParamDecl, Template, params_value};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn main() {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-operators/kafka/operator");
    let params: serde_json::Value = serde_saphyr::from_str(
        &std::fs::read_to_string(pkg.join("params.yaml")).expect("params.yaml"),
    )
    .expect("params yaml");
    let list = params["parameters"].as_array().cloned().unwrap_or_default();
    let decls: Vec<ParamDecl> = list
        .iter()
        .map(|p| ParamDecl {
            name: p["name"].as_str().unwrap_or(""),
            kind: p["type"].as_str().unwrap_or("string"),
            default: p.get("default"),
        })
        .collect();
    let data = serde_json::json!({
        "Params": params_value(&decls, &BTreeMap::new()).expect("params"),
        "Name": "inst", "Namespace": "default", "OperatorName": "kafka", "OperatorVersion": "x", "AppVersion": "x",
        "PlanName": "deploy", "PhaseName": "main", "StepName": "everything", "Pipes": {},
    });
    let mut texts = Vec::new();
    for e in std::fs::read_dir(pkg.join("templates")).expect("templates") {
        let p = e.expect("entry").path();
        texts.push((
            p.file_name().expect("name").to_string_lossy().to_string(),
            std::fs::read_to_string(&p).expect("text"),
        ));
    }
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
