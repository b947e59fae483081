//! `kudo completion`: the scripts the binary prints work in a real shell.

use std::process::Command;

fn kudo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(args)
        .output()
        .expect("kudo runs")
}

/// Sources `kudo completion bash` in bash and asks it to complete `line` (the cursor at its
/// end), as bash does on TAB; returns the candidates.
fn bash_complete(script: &std::path::Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let program = format!(
        "source {script}\nCOMP_WORDS=({words})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT={point}\n_kudo kudo '{last}' '{prev}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script = script.display(),
        words = words
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
        point = line.len(),
        last = words[words.len() - 1],
        prev = words[words.len().saturating_sub(2)],
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "bash failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn bash_completes_commands_flags_and_values() {
    let out = kudo(&["completion", "bash"]);
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("kudo.bash");
    std::fs::write(&script, &out.stdout).expect("write script");

    let commands = bash_complete(&script, "kudo dele");
    assert_eq!(commands, ["deletions"], "completing `kudo dele`");
    let shells = bash_complete(&script, "kudo completion ");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        assert!(shells.iter().any(|s| s == shell), "{shell} in {shells:?}");
    }
    let flags = bash_complete(&script, "kudo serve --dry");
    assert_eq!(flags, ["--dry-run"], "completing `kudo serve --dry`");
}

#[test]
fn every_shell_is_offered_and_an_unknown_one_is_refused_by_name() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = kudo(&["completion", shell]);
        assert!(out.status.success(), "{shell}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("deletions"),
            "{shell}: the script names the commands"
        );
    }
    let out = kudo(&["completion", "tcsh"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("tcsh") && err.contains("bash") && err.contains("powershell"),
        "names the bad value and the possible ones: {err}"
    );
}
