//! `spec.placement.rollout` in an instance document, read into a [`RolloutSpec`] with every
//! problem named by its key (the caller turns keys into file lines). Today's forms
//! (`parallel`, `serial`, `{maxUnavailable: N}` with `canary`) stay valid.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::Value;

use super::placement::{ClusterInfo, LabelSelector};
use super::rollout::{Count, Strategy};
use super::stages::{Gate, OnFailure, REMAINING, RolloutSpec, Stage};

/// The mapping form of `rollout`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DocRollout {
    #[serde(default)]
    max_unavailable: Option<Value>,
    #[serde(default)]
    stages: Vec<DocStage>,
    #[serde(default)]
    max_failures: Option<u32>,
    #[serde(default)]
    progress_deadline: Option<String>,
    #[serde(default)]
    on_failure: Option<String>,
    #[serde(default)]
    paused: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DocStage {
    name: String,
    #[serde(default)]
    clusters: Vec<String>,
    #[serde(default)]
    cluster_selector: Option<LabelSelector>,
    #[serde(default)]
    max_unavailable: Option<Value>,
    #[serde(default)]
    gates: Vec<DocGate>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
enum DocGate {
    Bake(String),
    Approval(#[allow(dead_code)] Option<serde_json::Map<String, Value>>),
    Plan(String),
    Prometheus(DocPrometheus),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocPrometheus {
    query: String,
    #[serde(default)]
    timeout: Option<String>,
}

/// A problem: where (the stage by index, and the key it is about, for the line) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub stage: Option<usize>,
    pub key: String,
    pub reason: String,
}

fn problem(stage: Option<usize>, key: &str, reason: impl Into<String>) -> Problem {
    Problem {
        stage,
        key: key.to_string(),
        reason: reason.into(),
    }
}

/// What the loader knows when it reads a rollout.
pub struct Context<'a> {
    pub targets: &'a [String],
    pub canary: &'a [String],
    pub clusters: &'a [ClusterInfo],
    /// The framework's plans (a `plan` gate must name one).
    pub plans: &'a BTreeSet<String>,
}

/// Reads `rollout` (absent: parallel): the model, and the rollout-level strategy as written
/// (what the clusters no stage takes get). Problems are returned, never half a spec.
pub fn read(
    rollout: Option<&Value>,
    ctx: &Context<'_>,
) -> Result<(RolloutSpec, Strategy), Vec<Problem>> {
    let legacy = |s: Strategy| Ok((RolloutSpec::legacy(s, ctx.targets, ctx.canary), s));
    let mut problems = Vec::new();
    let doc = match rollout {
        None => return legacy(Strategy::Parallel),
        Some(Value::String(s)) => {
            return match s.as_str() {
                "parallel" => legacy(Strategy::Parallel),
                "serial" => legacy(Strategy::Serial),
                _ => Err(vec![problem(
                    None,
                    "rollout",
                    format!(
                        "placement.rollout {s:?} is not parallel, serial or a mapping (maxUnavailable, stages, ...)"
                    ),
                )]),
            };
        }
        Some(v) => match serde_json::from_value::<DocRollout>(v.clone()) {
            Ok(d) => d,
            Err(e) => {
                let text = e.to_string();
                // serde names the offending key in backticks: point at its line.
                let key = text
                    .split('`')
                    .nth(1)
                    .filter(|k| !k.contains(' '))
                    .unwrap_or("rollout")
                    .to_string();
                return Err(vec![problem(
                    None,
                    &key,
                    format!("placement.rollout: {text}"),
                )]);
            }
        },
    };
    let strategy = match &doc.max_unavailable {
        None => Strategy::Parallel,
        Some(v) => match parse_count(v) {
            Ok(c) => Strategy::MaxUnavailable(c),
            Err(reason) => {
                problems.push(problem(
                    None,
                    "maxUnavailable",
                    format!("placement.rollout.maxUnavailable {reason}"),
                ));
                Strategy::Parallel
            }
        },
    };
    let progress_deadline = match &doc.progress_deadline {
        None => None,
        Some(text) => match crate::util::duration::parse(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                problems.push(problem(
                    None,
                    "progressDeadline",
                    "placement.rollout.progressDeadline must be longer than 0s",
                ));
                None
            }
            Err(e) => {
                problems.push(problem(
                    None,
                    "progressDeadline",
                    format!("placement.rollout.progressDeadline {e}"),
                ));
                None
            }
        },
    };
    let on_failure = match doc.on_failure.as_deref() {
        None | Some("halt") => OnFailure::Halt,
        Some("revert") => OnFailure::Revert,
        Some(other) => {
            problems.push(problem(
                None,
                "onFailure",
                format!("placement.rollout.onFailure {other:?} is not halt or revert"),
            ));
            OnFailure::Halt
        }
    };
    let mut spec = RolloutSpec {
        stages: Vec::new(),
        max_failures: doc.max_failures.unwrap_or(0),
        progress_deadline,
        on_failure,
        paused: doc.paused.unwrap_or(false),
    };
    if doc.stages.is_empty() {
        spec.stages = RolloutSpec::legacy(strategy, ctx.targets, ctx.canary).stages;
    } else {
        if !ctx.canary.is_empty() {
            problems.push(problem(
                None,
                "canary",
                "placement.canary and placement.rollout.stages together: make the canaries the first stage",
            ));
        }
        let names: BTreeSet<&str> = ctx.clusters.iter().map(|c| c.name.as_str()).collect();
        let mut taken: BTreeSet<String> = BTreeSet::new();
        let mut seen_names = BTreeSet::new();
        for (i, s) in doc.stages.iter().enumerate() {
            let at = format!("placement.rollout.stages[{i}]");
            if s.name.is_empty() || s.name == REMAINING || !seen_names.insert(s.name.as_str()) {
                problems.push(problem(
                    Some(i),
                    "name",
                    format!(
                        "{at}.name {:?} must be non-empty, unique and not {REMAINING:?}",
                        s.name
                    ),
                ));
            }
            if s.clusters.is_empty() == s.cluster_selector.is_none() {
                problems.push(problem(
                    Some(i),
                    "name",
                    format!(
                        "{at} ({}) needs exactly one of clusters or clusterSelector",
                        s.name
                    ),
                ));
            }
            for c in &s.clusters {
                if !names.contains(c.as_str()) {
                    problems.push(problem(
                        Some(i),
                        "clusters",
                        format!("{at}.clusters names {c:?}, which is not a registered cluster"),
                    ));
                }
            }
            if let Some(sel) = &s.cluster_selector {
                for p in sel.problems() {
                    problems.push(problem(
                        Some(i),
                        "clusterSelector",
                        format!("{at}.clusterSelector.{p}"),
                    ));
                }
            }
            let stage_strategy = match &s.max_unavailable {
                None => Strategy::Parallel,
                Some(v) => match parse_count(v) {
                    Ok(c) => Strategy::MaxUnavailable(c),
                    Err(reason) => {
                        problems.push(problem(
                            Some(i),
                            "maxUnavailable",
                            format!("{at}.maxUnavailable {reason}"),
                        ));
                        Strategy::Parallel
                    }
                },
            };
            let mut gates = Vec::new();
            for (g, gate) in s.gates.iter().enumerate() {
                let gat = format!("{at}.gates[{g}]");
                match gate {
                    DocGate::Bake(text) => match crate::util::duration::parse(text) {
                        Ok(d) => gates.push(Gate::Bake(d)),
                        Err(e) => {
                            problems.push(problem(Some(i), "bake", format!("{gat}.bake {e}")));
                        }
                    },
                    DocGate::Approval(_) => gates.push(Gate::Approval),
                    DocGate::Plan(plan) => {
                        if ctx.plans.contains(plan) {
                            gates.push(Gate::Plan(plan.clone()));
                        } else {
                            problems.push(problem(
                                Some(i),
                                "plan",
                                format!(
                                    "{gat}.plan names {plan:?}, which the framework does not have (plans: {})",
                                    ctx.plans.iter().cloned().collect::<Vec<_>>().join(", ")
                                ),
                            ));
                        }
                    }
                    DocGate::Prometheus(p) => {
                        let timeout = match p.timeout.as_deref().map(crate::util::duration::parse) {
                            None => Ok(None),
                            Some(Ok(d)) if !d.is_zero() => Ok(Some(d)),
                            Some(Ok(_)) => Err("must be longer than 0s".to_string()),
                            Some(Err(e)) => Err(e.to_string()),
                        };
                        match timeout {
                            Err(reason) => problems.push(problem(
                                Some(i),
                                "timeout",
                                format!("{gat}.prometheus.timeout {reason}"),
                            )),
                            Ok(_) if p.query.trim().is_empty() => problems.push(problem(
                                Some(i),
                                "query",
                                format!("{gat}.prometheus.query is empty"),
                            )),
                            Ok(timeout) => gates.push(Gate::Prometheus {
                                query: p.query.clone(),
                                timeout,
                            }),
                        }
                    }
                }
            }
            let members: Vec<String> = ctx
                .targets
                .iter()
                .filter(|t| !taken.contains(*t))
                .filter(|t| {
                    s.clusters.contains(t)
                        || s.cluster_selector.as_ref().is_some_and(|sel| {
                            ctx.clusters
                                .iter()
                                .find(|c| &c.name == *t)
                                .is_some_and(|c| sel.matches(&c.labels))
                        })
                })
                .cloned()
                .collect();
            taken.extend(members.iter().cloned());
            spec.stages.push(Stage {
                name: s.name.clone(),
                clusters: members,
                strategy: stage_strategy,
                gates,
            });
        }
        let rest: Vec<String> = ctx
            .targets
            .iter()
            .filter(|t| !taken.contains(*t))
            .cloned()
            .collect();
        spec.stages.push(Stage {
            name: REMAINING.into(),
            clusters: rest,
            strategy,
            gates: Vec::new(),
        });
    }
    if problems.is_empty() {
        Ok((spec, strategy))
    } else {
        Err(problems)
    }
}

/// `maxUnavailable`: a whole number ≥ 1 or a percentage of 1–100.
pub fn parse_count(v: &Value) -> Result<Count, String> {
    match v {
        Value::Number(n) => match n.as_u64() {
            Some(n) if n >= 1 => Ok(Count::Fixed(n as u32)),
            _ => Err(format!("{n} must be a whole number ≥ 1")),
        },
        Value::String(s) => match s.strip_suffix('%').map(str::parse::<u32>) {
            Some(Ok(p)) if (1..=100).contains(&p) => Ok(Count::Percent(p)),
            _ => match s.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(Count::Fixed(n)),
                _ => Err(format!(
                    "{s:?} must be a number ≥ 1 or a percentage like \"25%\""
                )),
            },
        },
        other => Err(format!("{other} must be a number or a percentage")),
    }
}
