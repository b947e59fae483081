//! `crds/` holds exactly what `kudo crds` generates from the Rust types.

use std::path::Path;

#[test]
fn crds_dir_is_up_to_date() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let generated = kudo::api::crds_yaml().expect("generate");
    assert_eq!(generated.len(), 3);
    let mut stale = Vec::new();
    for (name, text) in &generated {
        let path = dir.join(format!("{name}.yaml"));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        let expected = kudo::cli::crds::stream(&[(name.clone(), text.clone())]);
        if on_disk != expected {
            stale.push(path.display().to_string());
        }
    }
    let extra: Vec<_> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| !generated.iter().any(|(g, _)| format!("{g}.yaml") == *n))
        .collect();
    assert!(
        stale.is_empty() && extra.is_empty(),
        "crds/ is stale (run `cargo run -- crds -o crds/`): changed {stale:?}, unexpected {extra:?}"
    );
}

#[test]
fn crds_output_to_unwritable_path_names_the_path() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(["crds", "--output", "/proc/kudo-cannot-write-here"])
        .output()
        .expect("run kudo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/proc/kudo-cannot-write-here"), "{stderr}");
}

#[test]
fn crds_stdout_matches_the_files() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kudo"))
        .arg("crds")
        .output()
        .expect("run kudo");
    assert!(out.status.success());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("crds/")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    let concatenated: String = names
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("read"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), concatenated);
}
