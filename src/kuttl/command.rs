//! Commands of suites, steps and asserts: the pure expansion kuttl applies (`$NAMESPACE`,
//! `namespaced: true`) and running them through `sh -c` with a deadline, or in the
//! background in their own process group so that stopping them stops their children too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::case::Command;

/// What to run for a command: a shell line (`command` after expansion) or a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// The text given to `sh -c`.
    pub shell: String,
    /// For messages: the command as written, after expansion.
    pub display: String,
}

/// Why a command cannot be run at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("a command needs exactly one of `command` or `script`")]
    NeitherOrBoth,
}

/// Expands `$NAMESPACE` / `${NAMESPACE}` to the test namespace and, for `namespaced: true`,
/// appends `--namespace <ns>` (kuttl's rules). Other `$VARS` are left to the shell.
pub fn expand(cmd: &Command, namespace: &str) -> Result<Expanded, CommandError> {
    let replace = |s: &str| {
        s.replace("${NAMESPACE}", namespace)
            .replace("$NAMESPACE", namespace)
    };
    match (&cmd.command, &cmd.script) {
        (Some(c), None) => {
            let mut line = replace(c);
            if cmd.namespaced {
                line.push_str(" --namespace ");
                line.push_str(namespace);
            }
            Ok(Expanded {
                shell: line.clone(),
                display: line,
            })
        }
        (None, Some(s)) => {
            let script = replace(s);
            let first = script.lines().next().unwrap_or_default().to_string();
            Ok(Expanded {
                shell: script,
                display: format!("script: {first}…"),
            })
        }
        _ => Err(CommandError::NeitherOrBoth),
    }
}

/// Where and with what a command runs.
#[derive(Debug, Clone)]
pub struct Env {
    /// Working directory (the test case folder, or the suite file's folder).
    pub dir: PathBuf,
    /// Prepended to PATH: holds `kubectl-kudo` (and `kudo`) links to this binary.
    pub bin_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
}

/// The outcome of a foreground command.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub success: bool,
    /// Exit code, or a description of why there is none (signal, timeout).
    pub status: String,
    pub output: String,
}

fn shell(expanded: &Expanded, env: &Env) -> tokio::process::Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![env.bin_dir.clone()];
    paths.extend(std::env::split_paths(&path));
    let joined = std::env::join_paths(paths).unwrap_or(path);
    let mut c = tokio::process::Command::new("sh");
    c.arg("-c")
        .arg(&expanded.shell)
        .current_dir(&env.dir)
        .env("PATH", joined)
        .env("KUBECONFIG", &env.kubeconfig)
        .env("NAMESPACE", &env.namespace)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    c
}

/// Runs a command to completion or until `timeout`, capturing stdout and stderr together.
pub async fn run(expanded: &Expanded, env: &Env, timeout: Duration) -> Outcome {
    let mut c = shell(expanded, env);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = match c.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Outcome {
                success: false,
                status: format!("cannot start sh: {e}"),
                output: String::new(),
            };
        }
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => {
            let mut output = String::from_utf8_lossy(&out.stdout).to_string();
            output.push_str(&String::from_utf8_lossy(&out.stderr));
            Outcome {
                success: out.status.success(),
                status: match out.status.code() {
                    Some(code) => format!("exit status {code}"),
                    None => "killed by a signal".to_string(),
                },
                output,
            }
        }
        Ok(Err(e)) => Outcome {
            success: false,
            status: format!("waiting for the command failed: {e}"),
            output: String::new(),
        },
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            Outcome {
                success: false,
                status: format!("timed out after {}s", timeout.as_secs()),
                output: String::new(),
            }
        }
    }
}

/// A command left running until [`Background::stop`] (or drop).
#[derive(Debug)]
pub struct Background {
    pub display: String,
    child: tokio::process::Child,
}

/// Starts a background command; its output goes to `log` (appended).
pub fn spawn(expanded: &Expanded, env: &Env, log: &Path) -> std::io::Result<Background> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut c = shell(expanded, env);
    c.stdout(file.try_clone()?).stderr(file);
    Ok(Background {
        display: expanded.display.clone(),
        child: c.spawn()?,
    })
}

impl Background {
    /// Whether it is still running (a background command that exits early is worth a note).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to its process group, then SIGKILL after a grace period.
    pub async fn stop(mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        signal_group(pid, libc::SIGTERM);
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            kill_group(pid);
            let _ = self.child.wait().await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            kill_group(pid);
        }
    }
}

fn kill_group(pid: u32) {
    signal_group(pid, libc::SIGKILL);
}

/// Signals the process group led by `pid` (the child was started with `process_group(0)`,
/// so its group id is its pid and holds only processes this runner started).
#[allow(unsafe_code)] // kill(2); see SAFETY below.
fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(text: &str, namespaced: bool) -> Command {
        Command {
            command: Some(text.into()),
            namespaced,
            ..Command::default()
        }
    }

    #[test]
    fn namespace_is_expanded_and_appended() {
        let e = expand(
            &cmd("kubectl kudo install ./op --instance x", true),
            "kudo-test-ab12",
        )
        .expect("ok");
        assert_eq!(
            e.shell,
            "kubectl kudo install ./op --instance x --namespace kudo-test-ab12"
        );
        let e = expand(&cmd("echo $NAMESPACE ${NAMESPACE} $HOME", false), "ns1").expect("ok");
        assert_eq!(e.shell, "echo ns1 ns1 $HOME");
    }

    #[test]
    fn scripts_are_not_namespaced_and_need_one_form() {
        let c = Command {
            script: Some("set -e\nkubectl get pods -n $NAMESPACE\n".into()),
            namespaced: true,
            ..Command::default()
        };
        let e = expand(&c, "ns").expect("ok");
        assert_eq!(e.shell, "set -e\nkubectl get pods -n ns\n");
        assert_eq!(
            expand(&Command::default(), "ns"),
            Err(CommandError::NeitherOrBoth)
        );
    }

    #[tokio::test]
    async fn commands_run_in_the_folder_with_the_environment_and_time_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Env {
            dir: dir.path().to_path_buf(),
            bin_dir: dir.path().join("bin"),
            kubeconfig: dir.path().join("kubeconfig"),
            namespace: "ns-x".into(),
        };
        let e = expand(
            &cmd("pwd; echo $KUBECONFIG $NAMESPACE; exit 3", false),
            "ns-x",
        )
        .expect("ok");
        let out = run(&e, &env, Duration::from_secs(10)).await;
        assert!(!out.success);
        assert_eq!(out.status, "exit status 3");
        assert!(out.output.contains("kubeconfig ns-x"), "{}", out.output);
        let e = expand(&cmd("sleep 30", false), "ns").expect("ok");
        let out = run(&e, &env, Duration::from_millis(300)).await;
        assert!(!out.success && out.status.contains("timed out"), "{out:?}");
    }
}
