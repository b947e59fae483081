//! The KUDO operators corpus: every template of every package in ../shared/kudo-operators,
//! rendered by the real `kudo render --templates -o json`, must match KUDO's Go renderings
//! (golden-default.json, and golden-variant.json with params-variant.yaml) byte for byte.
//! Where the golden holds an error, kudo must fail that template too, naming the template,
//! the line and (for a missing map key) the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kudo-operators")
}

/// `{"<template>": {"out": text} | {"err": message}}`, as a map of results.
fn outcomes(json: &Value, what: &str) -> BTreeMap<String, Result<String, String>> {
    let obj = json
        .as_object()
        .unwrap_or_else(|| panic!("{what}: not a JSON object"));
    obj.iter()
        .map(|(k, v)| {
            let r = match (v.get("out"), v.get("err")) {
                (Some(Value::String(o)), None) => Ok(o.clone()),
                (None, Some(Value::String(e))) => Err(e.clone()),
                _ => panic!("{what}: entry {k} is neither {{out}} nor {{err}}: {v}"),
            };
            (k.clone(), r)
        })
        .collect()
}

/// Where Go's error puts the failure: `template: NAME:LINE:COL:` and the missing key.
fn go_error_facts(err: &str) -> (Option<String>, Option<String>) {
    let line = err.split("template: ").nth(1).and_then(|rest| {
        let mut parts = rest.split(':');
        parts.next()?;
        parts.next().map(str::to_string)
    });
    let key = err
        .split("map has no entry for key \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_string);
    (line, key)
}

/// Compares one package rendering; returns a description of each mismatch.
fn compare(package: &str, variant: Option<&Path>, golden: &Path) -> Vec<String> {
    let dir = corpus().join(package).join("operator");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kudo"));
    cmd.arg("render")
        .arg(&dir)
        .args(["--templates", "-o", "json"]);
    if let Some(values) = variant {
        cmd.arg("-f").arg(values);
    }
    let output = cmd.output().expect("kudo runs");
    let label = format!(
        "{package}/{}",
        golden.file_name().and_then(|n| n.to_str()).unwrap_or("?")
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let ours: Value = match serde_json::from_str(&stdout) {
        Ok(v) => v,
        Err(e) => {
            return vec![format!(
                "{label}: no JSON on stdout ({e}); stderr: {}",
                String::from_utf8_lossy(&output.stderr)
            )];
        }
    };
    let want: Value =
        serde_json::from_str(&std::fs::read_to_string(golden).expect("golden readable"))
            .expect("golden is JSON");
    let ours = outcomes(&ours, &label);
    let want = outcomes(&want, golden.to_str().unwrap_or("golden"));
    let mut problems = Vec::new();
    if ours.keys().ne(want.keys()) {
        problems.push(format!(
            "{label}: template set differs: ours {:?}, golden {:?}",
            ours.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        ));
    }
    for (name, expected) in &want {
        let Some(got) = ours.get(name) else { continue };
        match (expected, got) {
            (Ok(w), Ok(g)) if w == g => {}
            (Ok(w), Ok(g)) => {
                let at = w
                    .bytes()
                    .zip(g.bytes())
                    .position(|(a, b)| a != b)
                    .unwrap_or(w.len().min(g.len()));
                let line = w[..at.min(w.len())].matches('\n').count() + 1;
                let snippet = |s: &str| {
                    let start = s[..at.min(s.len())].rfind('\n').map_or(0, |i| i + 1);
                    s[start..].lines().next().unwrap_or("").to_string()
                };
                problems.push(format!(
                    "{label}: {name}: output differs at line {line}:\n    golden: {:?}\n    ours:   {:?}",
                    snippet(w),
                    snippet(g)
                ));
            }
            (Ok(_), Err(e)) => problems.push(format!("{label}: {name}: kudo failed: {e}")),
            (Err(w), Ok(_)) => problems.push(format!(
                "{label}: {name}: Go failed ({w}) but kudo rendered it"
            )),
            (Err(w), Err(e)) => {
                let (line, key) = go_error_facts(w);
                let mut missing = Vec::new();
                if !e.contains(name.as_str()) {
                    missing.push("the template name".to_string());
                }
                if let Some(line) = line
                    && !(e.contains(&format!(":{line}:")) || e.contains(&format!("line {line}")))
                {
                    missing.push(format!("line {line}"));
                }
                if let Some(key) = key
                    && !e.contains(&key)
                {
                    missing.push(format!("key {key:?}"));
                }
                if !missing.is_empty() {
                    problems.push(format!(
                        "{label}: {name}: error does not name {}: {e} (Go: {w})",
                        missing.join(", ")
                    ));
                }
            }
        }
    }
    problems
}

#[test]
fn corpus_renders_like_kudo() {
    let mut packages: Vec<String> = std::fs::read_dir(corpus())
        .expect("../shared/kudo-operators exists")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("operator").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    packages.sort();
    assert!(packages.len() >= 7, "corpus incomplete: {packages:?}");
    let mut problems = Vec::new();
    let mut compared = 0;
    for package in &packages {
        let base = corpus().join(package);
        problems.extend(compare(package, None, &base.join("golden-default.json")));
        compared += 1;
        let variant = base.join("params-variant.yaml");
        if variant.exists() {
            problems.extend(compare(
                package,
                Some(&variant),
                &base.join("golden-variant.json"),
            ));
            compared += 1;
        }
    }
    assert!(
        problems.is_empty(),
        "{} mismatch(es) over {compared} golden files:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn go_error_facts_are_extracted() {
    let (line, key) = go_error_facts(
        "render: template: deployment.yaml:26:27: executing \"deployment.yaml\" at <.Pipes.indexHtml>: map has no entry for key \"indexHtml\"",
    );
    assert_eq!(line.as_deref(), Some("26"));
    assert_eq!(key.as_deref(), Some("indexHtml"));
}
