//! The folders under `src/` (the crate's top-level modules) must form a DAG: a folder may use
//! another only when that one does not, directly or through others, use it back. Cycles
//! are how "pure" layers end up importing I/O and how one change ripples through the tree;
//! shared leaf helpers go to `src/util/`.
//!
//! The graph is read from the source text: every `crate::NAME` path outside comments and
//! outside test code (files named `tests.rs`/`*_tests.rs`, and everything from a
//! `#[cfg(test)]` module to the end of its file, where kudo keeps its test modules),
//! including grouped imports (`use crate::{a, b::c}`). `super::` paths stay inside a folder.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level modules: the folders under src/ and the single-file modules beside lib.rs.
fn modules() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(src()).expect("src/") {
        let path = entry.expect("entry").path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if path.is_dir()
            || (name != "lib" && name != "main" && path.extension().is_some_and(|e| e == "rs"))
        {
            out.insert(name.to_string());
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The production part of a source file: comments dropped, test modules cut.
fn production_text(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|next| {
                next.trim_start().starts_with("mod ") && next.trim_end().ends_with('{')
            })
        {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        // A trailing comment: good enough to cut at `//` outside the common `://` of URLs.
        let code = match line.find(" //") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// The top-level modules a text names through `crate::` paths.
fn referenced(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of every top-level item.
            let mut depth = 0usize;
            let mut item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => word.push(c),
                    _ => {
                        if !word.is_empty() {
                            out.insert(std::mem::take(&mut word));
                        }
                        if !c.is_whitespace() {
                            item_start = false;
                        }
                    }
                }
            }
            if !word.is_empty() {
                out.insert(word);
            }
        } else {
            let word: String = after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(word);
        }
        rest = after;
    }
    out.retain(|m| modules.contains(m));
    out
}

/// module → (module it uses → first file that does).
fn graph() -> BTreeMap<String, BTreeMap<String, String>> {
    let modules = modules();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(src()).expect("under src").to_path_buf();
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "tests.rs" || name.ends_with("_tests.rs") {
            continue;
        }
        let Some(first) = rel.components().next() else {
            continue;
        };
        let from = Path::new(first.as_os_str())
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        if !modules.contains(&from) {
            continue; // lib.rs, main.rs
        }
        let text = std::fs::read_to_string(&file).expect("read");
        for to in referenced(&production_text(&text), &modules) {
            if to != from {
                graph
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_insert_with(|| rel.display().to_string());
            }
        }
    }
    graph
}

/// A cycle through `start`, if any, as the path of modules.
fn cycle_from(
    graph: &BTreeMap<String, BTreeMap<String, String>>,
    start: &str,
) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((node, path)) = stack.pop() {
        for next in graph.get(&node).into_iter().flat_map(|m| m.keys()) {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut p = path.clone();
                p.push(next.clone());
                stack.push((next.clone(), p));
            }
        }
    }
    None
}

#[test]
fn the_folders_under_src_form_no_import_cycle() {
    let graph = graph();
    let mut cycles = BTreeMap::new();
    for module in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, module) {
            let edges: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            let mut key = cycle.clone();
            key.pop();
            key.sort();
            cycles.entry(key).or_insert_with(|| edges.join(", "));
        }
    }
    let report: Vec<String> = cycles.into_values().collect();
    assert!(
        report.is_empty(),
        "import cycles between folders of src/:\n{}",
        report.join("\n")
    );
    // The graph is not empty: the reader sees the crate's real imports.
    assert!(graph["gitops"].contains_key("engine"), "{graph:#?}");
    assert!(graph["engine"].contains_key("api"), "{graph:#?}");
}

#[test]
fn the_reader_finds_plain_grouped_and_nested_paths_and_skips_comments_and_tests() {
    let modules: BTreeSet<String> = ["a", "b", "c", "d", "e"].map(String::from).into();
    let text = "use crate::a::X;\nuse crate::{b, c::{Y, Z}};\n// crate::d in a comment\nlet x = 1; // crate::d\n#[cfg(test)]\nmod tests {\n    use crate::e;\n}\n";
    let found = referenced(&production_text(text), &modules);
    assert_eq!(found, ["a", "b", "c"].map(String::from).into());
}
