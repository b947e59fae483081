//! The bar: every template of every package in ../shared/kudo-operators renders
//! byte-identical to KUDO's Go renderer (goldens beside each package).

use kudo::template::{ParamDecl, Template, params_value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-operators")
}

fn yaml(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn templates(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("templates dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        let name = format!("{prefix}{}", p.file_name().expect("name").to_string_lossy());
        if p.is_dir() {
            templates(&p, &format!("{name}/"), out);
        } else {
            out.push((name, std::fs::read_to_string(&p).expect("template text")));
        }
    }
}

fn context(pkg: &Path, values: &BTreeMap<String, String>) -> serde_json::Value {
    let op = yaml(&pkg.join("operator/operator.yaml"));
    let params = yaml(&pkg.join("operator/params.yaml"));
    let list = params["parameters"].as_array().cloned().unwrap_or_default();
    let decls: Vec<ParamDecl> = list
        .iter()
        .map(|p| ParamDecl { name: p["name"].as_str().expect("param name"), kind: p["type"].as_str().unwrap_or("string"), default: p.get("default") })
        .collect();
    let s = |k: &str| op.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    serde_json::json!({
        "Params": params_value(&decls, values).expect("params"),
        "Name": "inst", "Namespace": "default",
        "OperatorName": s("name"), "OperatorVersion": s("operatorVersion"), "AppVersion": s("appVersion"),
        "PlanName": "deploy", "PhaseName": "main", "StepName": "everything",
        "Pipes": {},
    })
}

/// Renders one package against one golden; returns a list of mismatches.
fn check(pkg: &Path, golden: &str, values: &BTreeMap<String, String>) -> (usize, Vec<String>) {
    let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pkg.join(golden)).expect("golden")).expect("golden json");
    let data = context(pkg, values);
    let mut tpls = Vec::new();
    templates(&pkg.join("operator/templates"), "", &mut tpls);
    let mut failures = Vec::new();
    for (name, text) in &tpls {
        let want = &golden[name.as_str()];
        let got = Template::parse(name, text).and_then(|t| t.render(&data));
        match (want.get("out").and_then(|v| v.as_str()), want.get("err").and_then(|v| v.as_str()), got) {
            (Some(w), _, Ok(g)) if w == g => {}
            (Some(w), _, Ok(g)) => {
                let line = w.lines().zip(g.lines()).position(|(a, b)| a != b).unwrap_or(0);
                failures.push(format!("{}/{name}: output differs at line {}:\n  want {:?}\n  got  {:?}", pkg.display(), line + 1, w.lines().nth(line), g.lines().nth(line)));
            }
            (Some(_), _, Err(e)) => failures.push(format!("{}/{name}: unexpected error {e}", pkg.display())),
            (None, Some(w), Ok(_)) => failures.push(format!("{}/{name}: rendered, but Go failed with {w}", pkg.display())),
            (None, Some(w), Err(e)) => {
                // must name template, line and key like Go's message
                let msg = e.to_string();
                let key = w.rsplit("key ").next().unwrap_or("");
                let loc = w.split(": executing").next().unwrap_or("").trim_start_matches("render: ");
                if !msg.contains(key) || !msg.contains(loc) {
                    failures.push(format!("{}/{name}: error {msg:?} does not match Go's {w:?}", pkg.display()));
                }
            }
            (None, None, _) => failures.push(format!("{}/{name}: no golden entry", pkg.display())),
        }
    }
    (tpls.len(), failures)
}

#[test]
fn corpus_renders_like_kudo() {
    let mut pkgs: Vec<PathBuf> = std::fs::read_dir(corpus()).expect("corpus").map(|e| e.expect("entry").path()).filter(|p| p.join("operator").is_dir()).collect();
    pkgs.sort();
    assert!(pkgs.len() >= 7, "corpus packages missing");
    let (mut total, mut failures) = (0, Vec::new());
    for pkg in &pkgs {
        let (n, f) = check(pkg, "golden-default.json", &BTreeMap::new());
        total += n;
        failures.extend(f);
        if pkg.join("golden-variant.json").exists() {
            let vals: BTreeMap<String, String> = yaml(&pkg.join("params-variant.yaml"))
                .as_object()
                .expect("variant map")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string())))
                .collect();
            let (n, f) = check(pkg, "golden-variant.json", &vals);
            total += n;
            failures.extend(f);
        }
    }
    assert!(total > 50, "only {total} templates checked");
    assert!(failures.is_empty(), "{} of {total} renders differ:\n{}", failures.len(), failures.join("\n"));
}
