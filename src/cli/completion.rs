//! `kudo completion SHELL`: a shell completion script on stdout, generated from the same
//! clap definition the binary parses with, so it never lags behind the commands.

use clap::CommandFactory;
use clap_complete::Shell;

use super::CliResult;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    ///
    /// bash: `source <(kudo completion bash)` (or save it to
    /// /etc/bash_completion.d/kudo); zsh: `kudo completion zsh > "${fpath[1]}/_kudo"`;
    /// fish: `kudo completion fish > ~/.config/fish/completions/kudo.fish`;
    /// PowerShell: `kudo completion powershell | Out-String | Invoke-Expression`.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub async fn run(args: Args) -> CliResult {
    let mut out = std::io::stdout().lock();
    write(args.shell, &mut out);
    Ok(())
}

/// Writes the completion script for `shell`.
pub fn write(shell: Shell, out: &mut dyn std::io::Write) {
    let mut cmd = super::Cli::command();
    clap_complete::generate(shell, &mut cmd, "kudo", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish, Shell::PowerShell] {
            let mut out = Vec::new();
            write(shell, &mut out);
            let text = String::from_utf8(out).expect("utf-8");
            for word in ["serve", "deletions", "completion", "log-format"] {
                assert!(text.contains(word), "{shell}: no {word:?} in:\n{text}");
            }
        }
    }
}
