//! `kudo rollout approve|pause|resume|revert|status NS/NAME`: a person's hand on a staged rollout of
//! a running `kudo serve` (writes need a write token when the server has tokens).

use serde_json::{Value, json};

use super::CliResult;
use super::status::{DEFAULT_SERVER, request_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Approve a stage that waits for its `approval` gate.
    Approve {
        #[command(flatten)]
        target: Target,
        /// The stage to approve (its `name` in the instance document).
        #[arg(long)]
        stage: String,
    },
    /// Stop giving clusters the new spec (what runs keeps running); survives restarts.
    Pause(Target),
    /// Lift a pause made with `kudo rollout pause` (not `paused: true` in Git).
    Resume(Target),
    /// Give the clusters that took the current spec the last spec that completed everywhere
    /// back, and quarantine the current one until a commit changes the instance. Runs a
    /// plan (the framework's `rollback`, else the trigger plan): not a snapshot restore.
    Revert(Target),
    /// The rollout's state: stage and wave, the gate it waits for, halts.
    Status(Target),
}

#[derive(Debug, clap::Args)]
pub struct Target {
    /// The instance, as NAMESPACE/NAME.
    pub instance: String,
    /// The `kudo serve` HTTP address.
    #[arg(long, env = "KUDO_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// A file holding an API token (a write token for approve, pause and resume).
    #[arg(long, env = "KUDO_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

impl Target {
    fn split(&self) -> Result<(&str, &str), String> {
        match self.instance.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok((ns, name))
            }
            _ => Err(format!(
                "instance {:?} must be NAMESPACE/NAME",
                self.instance
            )),
        }
    }

    fn token(&self) -> Result<Option<String>, String> {
        match &self.token_file {
            Some(f) => std::fs::read_to_string(f)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| format!("token file {}: {e}", f.display())),
            None => Ok(None),
        }
    }

    async fn post(&self, action: &str, body: Value) -> Result<Value, String> {
        let (ns, name) = self.split()?;
        let token = self.token()?;
        request_json(
            &self.server,
            http::Method::POST,
            &format!("/api/v1/rollouts/{ns}/{name}/{action}"),
            token.as_deref(),
            Some(&body),
        )
        .await
        .map_err(|e| e.to_string())
    }
}

pub async fn run(args: Args) -> CliResult {
    match args.command {
        Sub::Approve { target, stage } => {
            target.post("approve", json!({"stage": stage})).await?;
            println!("approved stage {stage} of {}", target.instance);
        }
        Sub::Pause(target) => {
            target.post("pause", json!({})).await?;
            println!("paused the rollout of {}", target.instance);
        }
        Sub::Resume(target) => {
            target.post("resume", json!({})).await?;
            println!("resumed the rollout of {}", target.instance);
        }
        Sub::Revert(target) => {
            let v = target.post("revert", json!({})).await?;
            println!(
                "{}: {}",
                target.instance,
                v.get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("reverted")
            );
        }
        Sub::Status(target) => {
            let (ns, name) = target.split()?;
            let token = target.token()?;
            let doc = request_json(
                &target.server,
                http::Method::GET,
                "/api/v1/status",
                token.as_deref(),
                None,
            )
            .await
            .map_err(|e| e.to_string())?;
            let inst = doc
                .get("instances")
                .and_then(Value::as_array)
                .and_then(|all| {
                    all.iter().find(|i| {
                        i.get("namespace").and_then(Value::as_str) == Some(ns)
                            && i.get("name").and_then(Value::as_str) == Some(name)
                    })
                })
                .ok_or_else(|| format!("no instance {} in {}", target.instance, target.server))?;
            print!("{}", describe(&target.instance, inst));
        }
    }
    Ok(())
}

/// A readable tree of one instance's rollout from its status view.
pub fn describe(key: &str, inst: &Value) -> String {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    let r = inst.get("rollout").cloned().unwrap_or(Value::Null);
    let state = s(r.get("state"));
    let mut out = format!("{key}  revision {}\n", s(inst.get("revision")));
    let line = match state.as_str() {
        "progressing" => format!(
            "progressing: wave {} of {}",
            r.get("wave").and_then(Value::as_u64).unwrap_or(0) + 1,
            r.get("waves").and_then(Value::as_u64).unwrap_or(0)
        ),
        "waiting" => format!(
            "waiting: stage {} gate {}: {}",
            s(r.get("stage")),
            s(r.get("gate")),
            s(r.get("reason"))
        ),
        "halted" if s(r.get("cluster")).is_empty() => format!("halted: {}", s(r.get("reason"))),
        "halted" => format!("halted on {}: {}", s(r.get("cluster")), s(r.get("reason"))),
        other => other.to_string(),
    };
    out.push_str(&format!("  rollout: {line}\n"));
    let paused_by = s(inst.get("pausedBy"));
    if !paused_by.is_empty() {
        out.push_str(&format!(
            "  paused by {paused_by}: no new spec reaches a cluster (kudo rollout resume {key})\n"
        ));
    }
    for stage in inst
        .get("stages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let clusters: Vec<&str> = stage
            .get("clusters")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "  stage {} [{}]: {}\n",
            s(stage.get("name")),
            clusters.join(", "),
            s(stage.get("state"))
        ));
        for gate in stage
            .get("gates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let detail = s(gate.get("detail"));
            let mut line = format!("    gate {}", s(gate.get("gate")));
            if !detail.is_empty() {
                line.push_str(&format!(" {detail}"));
            }
            line.push_str(&format!(": {}", s(gate.get("state"))));
            let reason = s(gate.get("reason"));
            if !reason.is_empty() {
                line.push_str(&format!(" ({reason})"));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    if let Some(clusters) = inst.get("clusters").and_then(Value::as_object) {
        for (name, c) in clusters {
            let progress = c.get("progress");
            let mut line = format!("  {name}: {}", s(progress.and_then(|p| p.get("state"))));
            if let Some(d) = c.get("detail") {
                line.push_str(&format!(
                    " (plan {} {} {}/{})",
                    s(d.get("plan")),
                    s(d.get("status")),
                    d.get("stepsDone").and_then(Value::as_u64).unwrap_or(0),
                    d.get("stepsTotal").and_then(Value::as_u64).unwrap_or(0)
                ));
            }
            let message = s(progress.and_then(|p| p.get("message")));
            if !message.is_empty() {
                line.push_str(&format!(": {message}"));
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[test]
    fn a_paused_rollout_says_who_paused_it_even_when_complete() {
        let inst = serde_json::json!({
            "revision": "abc", "rollout": {"state": "complete"}, "pausedBy": "alice"
        });
        let text = describe("ns/db", &inst);
        assert!(text.contains("rollout: complete"), "{text}");
        assert!(
            text.contains("paused by alice") && text.contains("kudo rollout resume ns/db"),
            "{text}"
        );
        let text = describe(
            "ns/db",
            &serde_json::json!({"rollout": {"state": "complete"}}),
        );
        assert!(!text.contains("paused"), "{text}");
    }
}
