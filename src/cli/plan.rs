//! `kudo plan status|trigger|history`: KUDO's plan tree, manual triggers, and past runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::kube::{KubeArgs, KudoCliError, get_instance, get_operator_version};
use super::{CliError, CliResult};
use crate::api::{ExecutionStatus, Instance, OperatorVersion, Ordering, PlanStatus};
use crate::cluster::Cluster;
use crate::gitops::status::InstanceDetail;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: PlanCommand,
    #[command(flatten)]
    pub kube: KubeArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Json,
    Yaml,
}

#[derive(Debug, clap::Subcommand)]
pub enum PlanCommand {
    /// The instance's plans as KUDO's tree: plan, phases, steps with their status. With
    /// --server, the tree on every cluster the instance is placed on, from `kudo serve`.
    Status {
        #[arg(long)]
        instance: String,
        /// Ask a running `kudo serve` (e.g. http://127.0.0.1:8080) instead of one cluster.
        #[arg(long)]
        server: Option<String>,
        /// With --server: only this cluster.
        #[arg(long, requires = "server")]
        cluster: Option<String>,
        /// Wait until no plan is running (with --server: redraw with a progress line until
        /// the plan finished on every cluster), then print.
        #[arg(long)]
        wait: bool,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 300)]
        wait_time: u64,
        /// Print status.planStatus as JSON or YAML instead of the tree.
        #[arg(long, short = 'o', value_enum)]
        output: Option<Format>,
    },
    /// Runs a plan now (sets spec.planExecution.planName; the manager assigns the uid).
    Trigger {
        /// The plan to run.
        #[arg(long)]
        name: String,
        #[arg(long)]
        instance: String,
    },
    /// Every plan of the instance with its last run.
    History {
        #[arg(long)]
        instance: String,
    },
    /// Stops the running plan (it becomes CANCELLED; objects already applied stay).
    Cancel {
        #[arg(long)]
        instance: String,
    },
    /// Resumes a plan that ended FATAL_ERROR or CANCELLED from its first unfinished step.
    Retry {
        #[arg(long)]
        instance: String,
    },
}

pub async fn run(args: Args) -> CliResult {
    if let PlanCommand::Status {
        instance,
        server: Some(server),
        cluster,
        wait,
        wait_time,
        output,
    } = &args.command
    {
        let remote = Remote {
            server,
            instance,
            namespace: &args.kube.namespace,
            cluster: cluster.as_deref(),
        };
        return remote
            .status(*wait, Duration::from_secs(*wait_time), *output)
            .await;
    }
    let cluster = args.kube.connect().await?;
    let ns = &args.kube.namespace;
    match args.command {
        PlanCommand::Status {
            instance,
            wait,
            wait_time,
            output,
            ..
        } => {
            if wait {
                wait_idle(&cluster, ns, &instance, Duration::from_secs(wait_time)).await?;
            }
            let (_, inst) = get_instance(&cluster, ns, &instance).await?;
            let plans = inst
                .status
                .as_ref()
                .map(|s| s.plan_status.clone())
                .unwrap_or_default();
            match output {
                Some(Format::Json) => println!("{}", serde_json::to_string_pretty(&plans)?),
                Some(Format::Yaml) => print!("{}", serde_saphyr::to_string(&plans)?),
                None => {
                    let ov = get_operator_version(&cluster, &inst).await?;
                    print!("{}", status_tree(&inst, &ov));
                }
            }
            Ok(())
        }
        PlanCommand::Trigger { name, instance } => {
            let (_, inst) = get_instance(&cluster, ns, &instance).await?;
            let ov = get_operator_version(&cluster, &inst).await?;
            if !ov.spec.plans.contains_key(&name) {
                return Err(Box::new(KudoCliError::Refused {
                    instance,
                    what: format!(
                        "plan {name:?} is not defined by OperatorVersion {} (plans: {})",
                        ov.metadata.name.clone().unwrap_or_default(),
                        ov.spec.plans.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                }));
            }
            let patch = json!({
                "apiVersion": super::kube::KUDO_API,
                "kind": "Instance",
                "metadata": {"name": instance, "namespace": ns},
                "spec": {"planExecution": {"planName": name, "uid": null, "status": null}},
            });
            cluster.merge_patch(&patch).await?;
            println!("Triggered plan {name} for instance {instance} in namespace {ns}");
            Ok(())
        }
        PlanCommand::History { instance } => {
            let (_, inst) = get_instance(&cluster, ns, &instance).await?;
            let ov = get_operator_version(&cluster, &inst).await?;
            print!("{}", history(&inst, &ov));
            Ok(())
        }
        PlanCommand::Cancel { instance } => {
            let (_, inst) = get_instance(&cluster, ns, &instance).await?;
            let plans = inst.status.map(|s| s.plan_status).unwrap_or_default();
            let plan = request_target(&plans, ExecutionStatus::is_running)
                .ok_or_else(|| refused(&instance, "it has no running plan; nothing to cancel"))?;
            request(&cluster, ns, &instance, "cancel").await?;
            println!("Cancelling plan {plan} of instance {instance} in namespace {ns}");
            Ok(())
        }
        PlanCommand::Retry { instance } => {
            let (_, inst) = get_instance(&cluster, ns, &instance).await?;
            let plans = inst.status.map(|s| s.plan_status).unwrap_or_default();
            let plan = request_target(&plans, |s| {
                matches!(s, ExecutionStatus::FatalError | ExecutionStatus::Cancelled)
            })
            .ok_or_else(|| {
                refused(
                    &instance,
                    "no plan ended FATAL_ERROR or CANCELLED; nothing to retry",
                )
            })?;
            request(&cluster, ns, &instance, "retry").await?;
            println!("Retrying plan {plan} of instance {instance} in namespace {ns}");
            Ok(())
        }
    }
}

/// `plan status --server`: the instance on each of its clusters, from `kudo serve`.
struct Remote<'a> {
    server: &'a str,
    instance: &'a str,
    namespace: &'a str,
    cluster: Option<&'a str>,
}

impl Remote<'_> {
    async fn fetch(&self) -> Result<InstanceDetail, CliError> {
        let path = format!("/api/v1/instances/{}", self.instance);
        let value = match super::status::get_json(self.server, &path).await {
            // Only when the name alone is ambiguous does the namespace matter.
            Err(super::status::ServerError::Status {
                code: 404, body, ..
            }) if body.contains("several namespaces") => {
                let path = format!("{path}?namespace={}", self.namespace);
                super::status::get_json(self.server, &path).await?
            }
            other => other?,
        };
        let mut detail: InstanceDetail =
            serde_json::from_value(value).map_err(|e| super::status::ServerError::Decode {
                url: format!("{}{path}", self.server),
                reason: e.to_string(),
            })?;
        if let Some(only) = self.cluster {
            if !detail.clusters.contains_key(only) {
                return Err(refused(
                    self.instance,
                    &format!(
                        "it is not placed on cluster {only:?} (its clusters: {})",
                        detail
                            .clusters
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            detail.clusters.retain(|name, _| name == only);
        }
        Ok(detail)
    }

    async fn status(&self, wait: bool, timeout: Duration, output: Option<Format>) -> CliResult {
        let started = std::time::Instant::now();
        let deadline = started + timeout;
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let mut last_line = String::new();
        let detail = loop {
            let detail = self.fetch().await?;
            if !wait || remote_finished(&detail) {
                break detail;
            }
            let line = progress_line(&detail, started.elapsed());
            if terminal {
                // Redraw in place: clear, tree, progress.
                println!("\x1b[H\x1b[2J{}{line}", remote_tree(&detail));
            } else if line != last_line {
                println!("{line}");
            }
            last_line = line;
            if std::time::Instant::now() >= deadline {
                return Err(Box::new(KudoCliError::WaitTimeout {
                    instance: self.instance.to_string(),
                    what: "the plan".into(),
                    seconds: timeout.as_secs(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        match output {
            Some(Format::Json) => println!("{}", serde_json::to_string_pretty(&detail)?),
            Some(Format::Yaml) => print!("{}", serde_saphyr::to_string(&detail)?),
            None => {
                if terminal && wait {
                    print!("\x1b[H\x1b[2J");
                }
                print!("{}", remote_tree(&detail));
                if wait {
                    println!("{}", progress_line(&detail, started.elapsed()));
                }
            }
        }
        Ok(())
    }
}

/// Finished: every cluster's plan ended (Complete or Failed), or the rollout is halted and
/// the clusters it did not reach will not get the spec.
fn remote_finished(d: &InstanceDetail) -> bool {
    d.clusters.values().all(|c| match c.progress.as_str() {
        "Complete" | "Failed" => true,
        "NotApplied" => d.rollout == "Halted",
        _ => false,
    })
}

/// `Plan deploy: 4/6 steps done on 2 cluster(s) [a COMPLETE, b IN_PROGRESS main/check], elapsed 7s`
pub fn progress_line(d: &InstanceDetail, elapsed: Duration) -> String {
    let (mut done, mut total) = (0, 0);
    let mut plans = std::collections::BTreeSet::new();
    let mut parts = Vec::new();
    for (name, c) in &d.clusters {
        match c
            .instance
            .as_ref()
            .and_then(crate::gitops::status::plan_detail)
        {
            Some(p) => {
                done += p.steps_done;
                total += p.steps_total;
                plans.insert(p.plan.clone());
                let at = match (&p.phase, &p.step) {
                    (Some(ph), Some(st)) if p.status != "COMPLETE" => format!(" {ph}/{st}"),
                    _ => String::new(),
                };
                parts.push(format!("{name} {}{at}", p.status));
            }
            None => parts.push(format!("{name} {}", c.progress)),
        }
    }
    let plans: Vec<String> = plans.into_iter().collect();
    format!(
        "Plan {}: {done}/{total} steps done on {} cluster(s) [{}], elapsed {}s",
        if plans.is_empty() {
            "-".to_string()
        } else {
            plans.join(",")
        },
        d.clusters.len(),
        parts.join(", "),
        elapsed.as_secs()
    )
}

/// KUDO's tree for each cluster, under a line naming the cluster and its rollout state.
pub fn remote_tree(d: &InstanceDetail) -> String {
    let mut out = String::new();
    for (name, c) in &d.clusters {
        let revision = c
            .instance
            .as_ref()
            .and_then(|i| i.metadata.annotations.as_ref())
            .and_then(|a| a.get(crate::gitops::serve::REVISION_ANNOTATION))
            .map(|r| r.chars().take(12).collect::<String>())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "Cluster {name} ({}, rollout {}, revision {revision}):",
            if c.up { "up" } else { "down" },
            c.progress
        );
        match (&c.instance, &c.operator_version) {
            (Some(inst), Some(ov)) => out.push_str(&status_tree(inst, ov)),
            (Some(inst), None) => {
                // The OperatorVersion left the desired state: the recorded plans only.
                for (plan, p) in inst.status.iter().flat_map(|s| &s.plan_status) {
                    let _ = writeln!(out, "    Plan {plan} [{}]", status_str(p.status));
                }
            }
            (None, _) => out.push_str("    not applied on this cluster yet\n"),
        }
    }
    out
}

/// The most recently updated plan whose status `wanted` accepts.
fn request_target(
    plans: &BTreeMap<String, PlanStatus>,
    wanted: impl Fn(ExecutionStatus) -> bool,
) -> Option<String> {
    plans
        .iter()
        .filter(|(_, p)| p.status.is_some_and(&wanted))
        .max_by(|a, b| {
            let t = |p: &PlanStatus| p.last_updated_timestamp.as_ref().map(|t| t.0);
            t(a.1).cmp(&t(b.1))
        })
        .map(|(name, _)| name.clone())
}

fn refused(instance: &str, what: &str) -> CliError {
    Box::new(KudoCliError::Refused {
        instance: instance.to_string(),
        what: what.to_string(),
    })
}

/// Asks the manager to cancel or retry (it carries the request out and removes it).
async fn request(cluster: &Cluster, ns: &str, instance: &str, action: &str) -> CliResult {
    let patch = json!({
        "apiVersion": super::kube::KUDO_API,
        "kind": "Instance",
        "metadata": {
            "name": instance,
            "namespace": ns,
            "annotations": {crate::manager::reconcile::PLAN_REQUEST_ANNOTATION: action},
        },
    });
    cluster.merge_patch(&patch).await?;
    Ok(())
}

fn strategy(o: Option<Ordering>) -> &'static str {
    match o.unwrap_or_default() {
        Ordering::Serial => "serial",
        Ordering::Parallel => "parallel",
    }
}

fn status_str(s: Option<ExecutionStatus>) -> &'static str {
    s.map(ExecutionStatus::as_str).unwrap_or("NOT ACTIVE")
}

fn with_message(out: &mut String, message: &str) {
    if !message.is_empty() {
        let _ = write!(out, " ({message})");
    }
}

/// KUDO's `plan status` tree: every plan of the OperatorVersion (sorted), with the status
/// recorded for it and its phases and steps; plans never run are NOT ACTIVE.
pub fn status_tree(inst: &Instance, ov: &OperatorVersion) -> String {
    let name = inst.metadata.name.clone().unwrap_or_default();
    let ns = inst.metadata.namespace.clone().unwrap_or_default();
    let ov_name = ov.metadata.name.clone().unwrap_or_default();
    let recorded: BTreeMap<String, PlanStatus> = inst
        .status
        .as_ref()
        .map(|s| s.plan_status.clone())
        .unwrap_or_default();
    let active = recorded
        .iter()
        .filter(|(_, p)| p.status.is_some_and(ExecutionStatus::is_running))
        .map(|(n, _)| n.clone())
        .next()
        .or_else(|| {
            let pe = &inst.spec.plan_execution.plan_name;
            (!pe.is_empty()).then(|| pe.clone())
        });
    let mut out = format!("Plan(s) for \"{name}\" in namespace \"{ns}\":\n.\n");
    let active_text = active
        .map(|a| format!(" Active-Plan: \"{a}\""))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "└── {name} (Operator-Version: \"{ov_name}\"{active_text})"
    );
    let plans: Vec<(&String, &crate::api::Plan)> = ov.spec.plans.iter().collect();
    for (i, (plan_name, plan)) in plans.iter().enumerate() {
        let last_plan = i + 1 == plans.len();
        let (branch, pad) = if last_plan {
            ("└──", "    ")
        } else {
            ("├──", "│   ")
        };
        let rec = recorded.get(*plan_name);
        let _ = write!(
            out,
            "    {branch} Plan {plan_name} ({} strategy) [{}]",
            strategy(plan.strategy),
            status_str(rec.and_then(|r| r.status))
        );
        if let Some(t) = rec.and_then(|r| r.last_updated_timestamp.as_ref()) {
            let _ = write!(out, ", last updated {}", t.0.strftime("%Y-%m-%d %H:%M:%S"));
        }
        with_message(&mut out, rec.map(|r| r.message.as_str()).unwrap_or(""));
        out.push('\n');
        for (j, phase) in plan.phases.iter().enumerate() {
            let last_phase = j + 1 == plan.phases.len();
            let (pb, pp) = if last_phase {
                ("└──", "    ")
            } else {
                ("├──", "│   ")
            };
            let prec = rec.and_then(|r| r.phases.iter().find(|p| p.name == phase.name));
            let _ = write!(
                out,
                "    {pad}{pb} Phase {} ({} strategy) [{}]",
                phase.name,
                strategy(phase.strategy),
                status_str(prec.and_then(|p| p.status))
            );
            with_message(&mut out, prec.map(|p| p.message.as_str()).unwrap_or(""));
            out.push('\n');
            for (k, step) in phase.steps.iter().enumerate() {
                let sb = if k + 1 == phase.steps.len() {
                    "└──"
                } else {
                    "├──"
                };
                let srec = prec.and_then(|p| p.steps.iter().find(|s| s.name == step.name));
                let _ = write!(
                    out,
                    "    {pad}{pp}{sb} Step {} [{}]",
                    step.name,
                    status_str(srec.and_then(|s| s.status))
                );
                with_message(&mut out, srec.map(|s| s.message.as_str()).unwrap_or(""));
                out.push('\n');
            }
        }
    }
    out
}

/// `plan history`: each plan with its last run's status, time and uid.
pub fn history(inst: &Instance, ov: &OperatorVersion) -> String {
    let name = inst.metadata.name.clone().unwrap_or_default();
    let recorded = inst
        .status
        .as_ref()
        .map(|s| s.plan_status.clone())
        .unwrap_or_default();
    let mut out = format!("History of plan executions for instance \"{name}\":\n");
    for plan in ov.spec.plans.keys() {
        match recorded.get(plan) {
            Some(p) if p.status.is_some() => {
                let when = p
                    .last_updated_timestamp
                    .as_ref()
                    .map(|t| t.0.strftime("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    out,
                    "  Plan {plan} [{}] last updated {when} (uid {})",
                    status_str(p.status),
                    if p.uid.is_empty() { "-" } else { &p.uid }
                );
            }
            _ => {
                let _ = writeln!(out, "  Plan {plan} never run");
            }
        }
    }
    out
}

/// The uid of each plan run recorded in the instance's status.
pub fn plan_uids(inst: &Instance) -> BTreeMap<String, String> {
    inst.status
        .as_ref()
        .map(|s| {
            s.plan_status
                .iter()
                .map(|(k, v)| (k.clone(), v.uid.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A plan run not among `before` (a new uid) that reached a terminal status.
pub fn finished_new_run(
    inst: &Instance,
    before: &BTreeMap<String, String>,
) -> Option<(String, PlanStatus)> {
    let status = inst.status.as_ref()?;
    status
        .plan_status
        .iter()
        .find(|(name, p)| {
            !p.uid.is_empty()
                && before.get(*name) != Some(&p.uid)
                && p.status.is_some_and(ExecutionStatus::is_terminal)
        })
        .map(|(n, p)| (n.clone(), p.clone()))
}

/// Waits until a plan run newer than `before` has finished; FATAL_ERROR is an error.
pub async fn wait_new_run(
    cluster: &Cluster,
    namespace: &str,
    instance: &str,
    before: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<String, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, inst) = get_instance(cluster, namespace, instance).await?;
        if let Some((plan, p)) = finished_new_run(&inst, before) {
            if p.status == Some(ExecutionStatus::FatalError) {
                return Err(Box::new(KudoCliError::Refused {
                    instance: instance.to_string(),
                    what: format!("plan {plan} failed: {}", p.message),
                }));
            }
            return Ok(plan);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Box::new(KudoCliError::WaitTimeout {
                instance: instance.to_string(),
                what: "the triggered plan".into(),
                seconds: timeout.as_secs(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the instance has a plan status and none of its plans is running.
async fn wait_idle(
    cluster: &Cluster,
    namespace: &str,
    instance: &str,
    timeout: Duration,
) -> Result<(), CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, inst) = get_instance(cluster, namespace, instance).await?;
        let plans = inst
            .status
            .as_ref()
            .map(|s| s.plan_status.clone())
            .unwrap_or_default();
        let idle = plans.values().any(|p| p.status.is_some())
            && !plans
                .values()
                .any(|p| p.status.is_some_and(ExecutionStatus::is_running));
        if idle {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Box::new(KudoCliError::WaitTimeout {
                instance: instance.to_string(),
                what: "the running plan".into(),
                seconds: timeout.as_secs(),
            }));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> (Instance, OperatorVersion) {
        let ov: OperatorVersion = serde_json::from_value(json!({
            "apiVersion": "kudo.dev/v1beta1", "kind": "OperatorVersion",
            "metadata": {"name": "first-operator-0.1.0"},
            "spec": {"plans": {
                "deploy": {"strategy": "serial", "phases": [
                    {"name": "main", "strategy": "parallel", "steps": [{"name": "everything"}, {"name": "more"}]}]},
                "update": {"strategy": "serial", "phases": []}
            }}
        }))
        .expect("ov");
        let inst: Instance = serde_json::from_value(json!({
            "apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "first", "namespace": "ns1"},
            "spec": {"operatorVersion": {"name": "first-operator-0.1.0"}},
            "status": {"planStatus": {"deploy": {
                "name": "deploy", "status": "IN_PROGRESS", "uid": "u1",
                "lastUpdatedTimestamp": "2024-05-01T10:20:30Z",
                "phases": [{"name": "main", "status": "IN_PROGRESS", "steps": [
                    {"name": "everything", "status": "COMPLETE"},
                    {"name": "more", "status": "ERROR", "message": "waiting for Deployment nginx"}]}]
            }}}
        }))
        .expect("instance");
        (inst, ov)
    }

    #[test]
    fn tree_shows_plans_phases_steps_like_kudo() {
        let (inst, ov) = fixtures();
        let tree = status_tree(&inst, &ov);
        let expected = "\
Plan(s) for \"first\" in namespace \"ns1\":
.
└── first (Operator-Version: \"first-operator-0.1.0\" Active-Plan: \"deploy\")
    ├── Plan deploy (serial strategy) [IN_PROGRESS], last updated 2024-05-01 10:20:30
    │   └── Phase main (parallel strategy) [IN_PROGRESS]
    │       ├── Step everything [COMPLETE]
    │       └── Step more [ERROR] (waiting for Deployment nginx)
    └── Plan update (serial strategy) [NOT ACTIVE]
";
        assert_eq!(tree, expected);
    }

    #[test]
    fn history_and_new_runs() {
        let (mut inst, ov) = fixtures();
        let h = history(&inst, &ov);
        assert!(
            h.contains("Plan deploy [IN_PROGRESS] last updated 2024-05-01 10:20:30 (uid u1)"),
            "{h}"
        );
        assert!(h.contains("Plan update never run"), "{h}");
        let before = plan_uids(&inst);
        assert!(
            finished_new_run(&inst, &BTreeMap::new()).is_none(),
            "in progress is not finished"
        );
        let status = inst.status.as_mut().expect("status");
        let deploy = status.plan_status.get_mut("deploy").expect("deploy");
        deploy.status = Some(ExecutionStatus::Complete);
        assert!(
            finished_new_run(&inst, &before).is_none(),
            "same uid is not new"
        );
        assert_eq!(
            finished_new_run(&inst, &BTreeMap::new())
                .map(|(n, _)| n)
                .as_deref(),
            Some("deploy")
        );
    }
}
