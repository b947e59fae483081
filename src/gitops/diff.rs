//! `kudo diff`: what a revision would change on each cluster of a `kudo.yaml`, against the
//! live clusters. Per cluster: instances added and removed, changed versions and
//! parameters with the plan each change would trigger (the engine's own [`trigger::decide`]),
//! and every object that would change, as a unified diff of the live object against a
//! server-side apply dry run (`dryRun=All`) of the new rendering, so defaulting and admission
//! are the server's own. Objects of a new instance are shown whole (their namespace may not
//! exist yet, so no dry run is possible); objects of a removed instance, and objects the
//! new version no longer renders (what pruning would delete), are shown going away.
//!
//! [`instance_changes`] and the text rendering are pure; [`diff_cluster`] reads the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::config::{ClusterAccess, Config, Source};
use super::desired::{self, DesiredInstance, DesiredState, short};
use super::git::{GitSource, content_revision};
use super::placement::ClusterInfo;
use super::serve::{FIELD_MANAGER as GITOPS_MANAGER, MANAGED_LABEL};
use crate::api::{AppliedObject, Instance, InstanceSpec};
use crate::cluster::{Cluster, ErrorKind, FIELD_MANAGER, ObjectRef};
use crate::engine::drift::{keep_step_annotations, normalize};
use crate::engine::trigger::{self, Decision, LAST_APPLIED_ANNOTATION, Snapshot};
use crate::manager::runner::{ClusterRunner, InstanceInfo, applied_object};
use crate::package::redact;
use crate::package::{DirTree, params_value, resolve_parameters};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("repository {repository}: {message}")]
    Repository { repository: String, message: String },
    #[error("{0}")]
    Revision(#[from] desired::RevisionErrors),
    #[error("--ref {reference}: {message}")]
    Ref { reference: String, message: String },
}

/// One parameter's old and new value (`None`: not set). The values of a parameter marked
/// `sensitive: true` are never carried: both are [`redact::MASK`] (or `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamChange {
    pub name: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub sensitive: bool,
}

/// What would run for a change: a plan, nothing, or a refusal by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanOutcome {
    Runs { plan: String, reason: String },
    Nothing,
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceChange {
    Added {
        key: String,
        framework: String,
        version: String,
        plan: PlanOutcome,
    },
    Removed {
        key: String,
    },
    Changed {
        key: String,
        /// (live, revision) OperatorVersion names when they differ.
        version: Option<(String, String)>,
        parameters: Vec<ParamChange>,
        plan: PlanOutcome,
    },
}

impl InstanceChange {
    pub fn key(&self) -> &str {
        match self {
            InstanceChange::Added { key, .. }
            | InstanceChange::Removed { key }
            | InstanceChange::Changed { key, .. } => key,
        }
    }
}

fn plan_outcome(decision: Decision) -> PlanOutcome {
    match decision {
        Decision::Run { plan, reason } => PlanOutcome::Runs {
            plan,
            reason: reason.to_string(),
        },
        Decision::Nothing => PlanOutcome::Nothing,
        Decision::Reject { message } => PlanOutcome::Refused(message),
    }
}

fn snapshot_of(live: &Instance) -> Snapshot {
    live.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| Snapshot::of(&live.spec, "", ""))
}

/// The spec the control plane would give a live instance for `inst`.
fn new_spec(live: Option<&Instance>, inst: &DesiredInstance) -> InstanceSpec {
    let mut spec = live.map(|l| l.spec.clone()).unwrap_or_default();
    spec.operator_version.name = Some(inst.operator_version.clone());
    spec.parameters = inst.parameters.clone();
    spec
}

/// Instance-level changes on `cluster`: desired instances placed there against the live
/// Instances the control plane manages there (by `namespace/name`).
pub fn instance_changes(
    desired: &DesiredState,
    cluster: &str,
    live: &BTreeMap<String, Instance>,
) -> Vec<InstanceChange> {
    let mut out = Vec::new();
    let here: BTreeMap<&String, &DesiredInstance> = desired
        .instances
        .iter()
        .filter(|(_, i)| i.targets.iter().any(|t| t == cluster))
        .collect();
    for (key, inst) in &here {
        let fw = desired
            .frameworks
            .get(&(inst.framework.clone(), inst.version.clone()));
        let sensitive = sensitive_names(desired, inst);
        let decide = |last: Option<&Snapshot>, live: Option<&Instance>| match fw {
            Some(fw) => plan_outcome(trigger::decide(
                &fw.operator_version.spec,
                &new_spec(live, inst),
                last,
            )),
            None => PlanOutcome::Nothing,
        };
        match live.get(*key) {
            None => out.push(InstanceChange::Added {
                key: (*key).clone(),
                framework: inst.framework.clone(),
                version: inst.version.clone(),
                plan: decide(None, None),
            }),
            Some(l) => {
                let live_version = l.spec.operator_version.name.clone().unwrap_or_default();
                let version = (live_version != inst.operator_version)
                    .then(|| (live_version.clone(), inst.operator_version.clone()));
                let names: BTreeSet<&String> = l
                    .spec
                    .parameters
                    .keys()
                    .chain(inst.parameters.keys())
                    .collect();
                let parameters: Vec<ParamChange> = names
                    .into_iter()
                    .filter_map(|n| {
                        let old = l.spec.parameters.get(n).cloned();
                        let new = inst.parameters.get(n).cloned();
                        let secret = sensitive.contains(n.as_str());
                        let hide = |v: Option<String>| {
                            if secret {
                                v.map(|_| redact::MASK.to_string())
                            } else {
                                v
                            }
                        };
                        (old != new).then(|| ParamChange {
                            name: n.clone(),
                            old: hide(old),
                            new: hide(new),
                            sensitive: secret,
                        })
                    })
                    .collect();
                if version.is_none() && parameters.is_empty() {
                    continue;
                }
                let last = snapshot_of(l);
                out.push(InstanceChange::Changed {
                    key: (*key).clone(),
                    version,
                    parameters,
                    plan: decide(Some(&last), Some(l)),
                });
            }
        }
    }
    for key in live.keys() {
        if !here.contains_key(key) {
            out.push(InstanceChange::Removed { key: key.clone() });
        }
    }
    out
}

/// Parameters marked sensitive by any version of the instance's framework in the revision
/// (a live instance may run another version than the one it moves to).
pub fn sensitive_names(
    desired: &DesiredState,
    inst: &DesiredInstance,
) -> std::collections::BTreeSet<String> {
    desired
        .frameworks
        .iter()
        .filter(|((framework, _), _)| *framework == inst.framework)
        .flat_map(|(_, fw)| redact::sensitive_names(&fw.operator_version.spec.parameters))
        .collect()
}

/// Every sensitive parameter value of a desired state (longest first), for scrubbing free
/// text such as notification messages.
pub fn all_secrets(desired: &DesiredState) -> Vec<String> {
    let mut out: Vec<String> = desired
        .instances
        .values()
        .flat_map(|i| redact::secret_values(&i.parameters, &sensitive_names(desired, i)))
        .collect();
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out.dedup();
    out
}

/// What must not appear in the text of one instance's diff: its sensitive parameters'
/// values, desired and live.
fn diff_secrets(desired: &DesiredState, key: &str, live: Option<&Instance>) -> Vec<String> {
    let Some(inst) = desired.instances.get(key) else {
        // Removed: nothing says which are sensitive; hide every value.
        let params = live.map(|l| l.spec.parameters.clone()).unwrap_or_default();
        let all = params.keys().cloned().collect();
        return redact::secret_values(&params, &all);
    };
    let sensitive = sensitive_names(desired, inst);
    let mut out = redact::secret_values(&inst.parameters, &sensitive);
    if let Some(l) = live {
        out.extend(redact::secret_values(&l.spec.parameters, &sensitive));
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.len()));
    out.dedup();
    out
}

/// One object's diff, as unified text (no colour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDiff {
    pub object: String,
    pub unified: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceDiff {
    pub change: InstanceChange,
    pub objects: Vec<ObjectDiff>,
    /// Objects that could not be compared, with why.
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterOutcome {
    Compared(Vec<InstanceDiff>),
    Unreachable(String),
    /// A simulated cluster lives only inside `kudo serve`.
    Simulated,
    /// An agent cluster is reached by its agent only.
    Agent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDiff {
    pub cluster: String,
    pub outcome: ClusterOutcome,
}

/// Whether anything would change (or could not be compared: CI must not pass on a cluster
/// it could not see).
pub fn has_differences(diffs: &[ClusterDiff]) -> bool {
    diffs.iter().any(|d| match &d.outcome {
        ClusterOutcome::Compared(instances) => !instances.is_empty(),
        ClusterOutcome::Unreachable(_) => true,
        ClusterOutcome::Simulated | ClusterOutcome::Agent => false,
    })
}

/// The revision to compare: a local folder (`dir`), or the config's repositories with
/// `reference` replacing the ref of `repository` (the only Git repository when not named),
/// or the config's repositories as they are.
pub fn load_revision(
    config: &Config,
    dir: Option<&Path>,
    reference: Option<&str>,
    repository: Option<&str>,
) -> Result<DesiredState, DiffError> {
    let clusters: Vec<ClusterInfo> = config
        .clusters
        .iter()
        .map(|c| ClusterInfo {
            name: c.name.clone(),
            labels: c.labels.clone(),
        })
        .collect();
    if let Some(dir) = dir {
        let tree = DirTree::new(dir.to_path_buf());
        let rev = content_revision(&tree).map_err(|e| DiffError::Repository {
            repository: dir.display().to_string(),
            message: e.to_string(),
        })?;
        return Ok(desired::load(&tree, &rev, &clusters)?);
    }
    let target = match (reference, repository) {
        (None, _) => None,
        (Some(r), Some(name)) => Some((r, name.to_string())),
        (Some(r), None) => {
            let git: Vec<&str> = config
                .repositories
                .iter()
                .filter(|repo| matches!(repo.source, Source::Git(_)))
                .map(|repo| repo.name.as_str())
                .collect();
            match git.as_slice() {
                [one] => Some((r, one.to_string())),
                _ => {
                    return Err(DiffError::Ref {
                        reference: r.to_string(),
                        message: format!(
                            "name the repository with --repository (Git repositories: {})",
                            if git.is_empty() {
                                "none".to_string()
                            } else {
                                git.join(", ")
                            }
                        ),
                    });
                }
            }
        }
    };
    if let Some((r, name)) = &target
        && config.repository(name).is_none()
    {
        return Err(DiffError::Ref {
            reference: r.to_string(),
            message: format!("the config has no repository {name:?}"),
        });
    }
    let mut combined: Option<DesiredState> = None;
    for repo in &config.repositories {
        let fail = |message: String| DiffError::Repository {
            repository: repo.name.clone(),
            message,
        };
        let state = match &repo.source {
            Source::Git(url) => {
                let mut repo = repo.clone();
                if let Some((r, name)) = &target
                    && *name == repo.name
                {
                    repo.reference = Some(r.to_string());
                }
                let git = GitSource::new(&repo, url, &config.cache_dir);
                let commit = git.sync().map_err(|e| fail(e.to_string()))?;
                let tree = git.tree(&commit).map_err(|e| fail(e.to_string()))?;
                desired::load(&tree, &commit, &clusters)?
            }
            Source::Dir(path) => {
                let root = if repo.path.is_empty() {
                    path.clone()
                } else {
                    path.join(&repo.path)
                };
                let tree = DirTree::new(root);
                let rev = content_revision(&tree).map_err(|e| fail(e.to_string()))?;
                desired::load(&tree, &rev, &clusters)?
            }
        };
        // Combined as `kudo serve` does: the first repository defining an instance wins.
        match &mut combined {
            None => combined = Some(state),
            Some(c) => {
                c.revision = format!("{},{}", c.revision, state.revision);
                c.frameworks.extend(state.frameworks);
                for (k, v) in state.instances {
                    c.instances.entry(k).or_insert(v);
                }
            }
        }
    }
    Ok(combined.unwrap_or(DesiredState {
        revision: String::new(),
        frameworks: BTreeMap::new(),
        instances: BTreeMap::new(),
    }))
}

/// Connects to every configured cluster (concurrently) and diffs `desired` against it.
pub async fn diff_all(config: &Config, desired: &DesiredState) -> Vec<ClusterDiff> {
    let jobs = config.clusters.iter().map(|c| async move {
        let cluster = match &c.access {
            ClusterAccess::Sim(_) => {
                return ClusterDiff {
                    cluster: c.name.clone(),
                    outcome: ClusterOutcome::Simulated,
                };
            }
            ClusterAccess::Agent => {
                return ClusterDiff {
                    cluster: c.name.clone(),
                    outcome: ClusterOutcome::Agent,
                };
            }
            ClusterAccess::InCluster => Cluster::in_cluster(&c.name),
            ClusterAccess::Kubeconfig { path, context } => {
                Cluster::from_kubeconfig(&c.name, path, context.as_deref()).await
            }
        };
        match cluster {
            Ok(cluster) => {
                diff_cluster(&cluster.with_request_timeout(c.request_timeout), desired).await
            }
            Err(e) => ClusterDiff {
                cluster: c.name.clone(),
                outcome: ClusterOutcome::Unreachable(e.to_string()),
            },
        }
    });
    futures::future::join_all(jobs).await
}

/// Diffs `desired` against one live cluster.
pub async fn diff_cluster(cluster: &Cluster, desired: &DesiredState) -> ClusterDiff {
    let name = cluster.name().to_string();
    let live = match live_instances(cluster).await {
        Ok(l) => l,
        Err(e) => {
            return ClusterDiff {
                cluster: name,
                outcome: ClusterOutcome::Unreachable(e.to_string()),
            };
        }
    };
    let mut instances = Vec::new();
    for change in instance_changes(desired, &name, &live) {
        let key = change.key().to_string();
        let mut diff = InstanceDiff {
            change,
            objects: Vec::new(),
            errors: Vec::new(),
        };
        let live_inst = live.get(&key);
        match (&diff.change, desired.instances.get(&key)) {
            (InstanceChange::Removed { .. }, _) => {
                if let Some(l) = live_inst {
                    let inventory = l.status.clone().unwrap_or_default().applied;
                    removed_objects(cluster, &inventory, &mut diff).await;
                }
            }
            (_, Some(inst)) => {
                if let Err(e) = object_diffs(cluster, desired, inst, live_inst, &mut diff).await {
                    diff.errors.push(e);
                }
            }
            (_, None) => {}
        }
        let secrets = diff_secrets(desired, &key, live_inst);
        for o in &mut diff.objects {
            o.unified = redact::scrub(&o.unified, &secrets);
        }
        for e in &mut diff.errors {
            *e = redact::scrub(e, &secrets);
        }
        instances.push(diff);
    }
    ClusterDiff {
        cluster: name,
        outcome: ClusterOutcome::Compared(instances),
    }
}

/// Instances the control plane manages on the cluster; none when kudo's CRDs are absent.
async fn live_instances(
    cluster: &Cluster,
) -> Result<BTreeMap<String, Instance>, crate::cluster::ClusterError> {
    let listed = cluster
        .list(
            &[(crate::api::API_VERSION, "Instance")],
            None,
            &format!("{MANAGED_LABEL}={GITOPS_MANAGER}"),
        )
        .await;
    let values = match listed {
        Ok(v) => v,
        Err(e) if e.kind() == ErrorKind::UnknownKind => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut out = BTreeMap::new();
    for v in values {
        if let Ok(inst) = serde_json::from_value::<Instance>(v) {
            let key = format!(
                "{}/{}",
                inst.metadata.namespace.clone().unwrap_or_default(),
                inst.metadata.name.clone().unwrap_or_default()
            );
            out.insert(key, inst);
        }
    }
    Ok(out)
}

fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(&normalize(v)).unwrap_or_else(|e| format!("# not shown: {e}\n"))
}

fn describe(entry: &AppliedObject) -> String {
    if entry.namespace.is_empty() {
        format!("{} {}", entry.kind, entry.name)
    } else {
        format!("{} {}/{}", entry.kind, entry.namespace, entry.name)
    }
}

fn object_ref(entry: &AppliedObject) -> ObjectRef {
    ObjectRef::new(
        entry.api_version.clone(),
        entry.kind.clone(),
        (!entry.namespace.is_empty()).then_some(entry.namespace.as_str()),
        entry.name.clone(),
    )
}

/// Unified diff of two texts with `a/`, `b/` headers; empty when equal.
pub fn unified(old: &str, new: &str, object: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{object}"), &format!("revision/{object}"))
        .to_string()
}

async fn removed_objects(cluster: &Cluster, inventory: &[AppliedObject], diff: &mut InstanceDiff) {
    for entry in inventory.iter().rev() {
        match cluster.get_opt(&object_ref(entry)).await {
            Ok(Some(mut live)) => {
                redact::mask_secret_pair(Some(&mut live), None);
                let object = describe(entry);
                diff.objects.push(ObjectDiff {
                    unified: unified(&to_yaml(&live), "", &object),
                    object,
                });
            }
            Ok(None) => {}
            Err(e) => diff.errors.push(e.to_string()),
        }
    }
}

/// Renders the instance as the revision would have it and diffs each object.
async fn object_diffs(
    cluster: &Cluster,
    desired: &DesiredState,
    inst: &DesiredInstance,
    live: Option<&Instance>,
    diff: &mut InstanceDiff,
) -> Result<(), String> {
    let fw = desired
        .frameworks
        .get(&(inst.framework.clone(), inst.version.clone()))
        .ok_or_else(|| {
            format!(
                "framework {} {} not in the revision",
                inst.framework, inst.version
            )
        })?;
    let ov = &fw.operator_version;
    let values = resolve_parameters(&ov.spec.parameters, &inst.parameters, None)
        .map_err(|e| e.to_string())?;
    let params = params_value(&ov.spec.parameters, &values).map_err(|e| e.to_string())?;
    let info = InstanceInfo {
        operator: ov
            .spec
            .operator
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| inst.framework.clone()),
        operator_version: inst.operator_version.clone(),
        app_version: ov.spec.app_version.clone(),
        version: ov.spec.version.clone(),
        instance: inst.name.clone(),
        instance_uid: live
            .and_then(|l| l.metadata.uid.clone())
            .unwrap_or_default(),
        namespace: inst.namespace.clone(),
        control_plane: live
            .and_then(|l| {
                l.metadata
                    .labels
                    .as_ref()?
                    .get(crate::engine::objects::CONTROL_PLANE_LABEL)
                    .cloned()
            })
            .unwrap_or_else(|| crate::engine::objects::DEFAULT_CONTROL_PLANE.to_string()),
        repository: inst.repository.clone(),
        inventory: live
            .and_then(|l| l.status.as_ref())
            .map(|s| s.applied.iter().cloned().collect())
            .unwrap_or_default(),
        adopted: live
            .map(|l| crate::engine::objects::adopted_objects(kube::ResourceExt::annotations(l)))
            .unwrap_or_default(),
    };
    let runner = ClusterRunner {
        cluster,
        ov: &ov.spec,
        info: &info,
        params: &params,
        values: &values,
        applied: Default::default(),
        newly_adopted: Default::default(),
    };
    let plan = match &diff.change {
        InstanceChange::Added {
            plan: PlanOutcome::Runs { plan, .. },
            ..
        }
        | InstanceChange::Changed {
            plan: PlanOutcome::Runs { plan, .. },
            ..
        } => plan.clone(),
        _ => trigger::DEPLOY.to_string(),
    };
    let objects = runner.desired_values(Some(&plan)).await?;
    let mut rendered = BTreeSet::new();
    for mut obj in objects {
        let Some(entry) = applied_object(&obj) else {
            continue;
        };
        rendered.insert(entry.clone());
        let object = describe(&entry);
        let current = if live.is_some() {
            match cluster.get_opt(&object_ref(&entry)).await {
                Ok(c) => c,
                Err(e) => {
                    diff.errors.push(e.to_string());
                    continue;
                }
            }
        } else {
            None
        };
        let (old, new) = match &current {
            None => {
                let mut obj = obj.clone();
                redact::mask_secret_pair(None, Some(&mut obj));
                (String::new(), to_yaml(&obj))
            }
            Some(current) => {
                keep_step_annotations(&mut obj, current);
                match cluster.apply_dry_run_as(&obj, FIELD_MANAGER).await {
                    Ok(mut after) => {
                        let mut current = current.clone();
                        redact::mask_secret_pair(Some(&mut current), Some(&mut after));
                        (to_yaml(&current), to_yaml(&after))
                    }
                    Err(e) => {
                        diff.errors.push(e.to_string());
                        continue;
                    }
                }
            }
        };
        let text = unified(&old, &new, &object);
        if !text.is_empty() {
            diff.objects.push(ObjectDiff {
                object,
                unified: text,
            });
        }
    }
    // What the new rendering drops is what pruning would delete after the plan.
    if let Some(l) = live {
        let inventory = l.status.clone().unwrap_or_default().applied;
        let stale: Vec<AppliedObject> = inventory
            .into_iter()
            .filter(|o| !rendered.contains(o))
            .collect();
        removed_objects(cluster, &stale, diff).await;
    }
    Ok(())
}

/// The report, one section per cluster; `colour` adds ANSI colours (for a terminal).
pub fn render(diffs: &[ClusterDiff], revision: &str, colour: bool) -> String {
    let paint = |code: &str, text: &str| {
        if colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    };
    let mut out = String::new();
    for d in diffs {
        let _ = writeln!(
            out,
            "{}",
            paint(
                "1",
                &format!("=== cluster {} (revision {})", d.cluster, short(revision))
            )
        );
        let instances = match &d.outcome {
            ClusterOutcome::Unreachable(why) => {
                let _ = writeln!(out, "{}", paint("31", &format!("unreachable: {why}")));
                continue;
            }
            ClusterOutcome::Simulated => {
                let _ = writeln!(
                    out,
                    "simulated cluster: exists only inside kudo serve; not compared"
                );
                continue;
            }
            ClusterOutcome::Agent => {
                let _ = writeln!(
                    out,
                    "agent cluster: only its agent reaches it; not compared"
                );
                continue;
            }
            ClusterOutcome::Compared(i) => i,
        };
        if instances.is_empty() {
            let _ = writeln!(out, "no changes");
            continue;
        }
        for i in instances {
            out.push_str(&describe_change(&i.change));
            for o in &i.objects {
                for line in o.unified.lines() {
                    let painted = if line.starts_with("+++") || line.starts_with("---") {
                        paint("1", line)
                    } else if line.starts_with('+') {
                        paint("32", line)
                    } else if line.starts_with('-') {
                        paint("31", line)
                    } else if line.starts_with("@@") {
                        paint("36", line)
                    } else {
                        line.to_string()
                    };
                    let _ = writeln!(out, "{painted}");
                }
            }
            for e in &i.errors {
                let _ = writeln!(out, "{}", paint("33", &format!("  not compared: {e}")));
            }
        }
    }
    out
}

fn describe_plan(plan: &PlanOutcome) -> String {
    match plan {
        PlanOutcome::Runs { plan, reason } => format!("plan {plan} would run ({reason})"),
        PlanOutcome::Nothing => "no plan would run".into(),
        PlanOutcome::Refused(why) => format!("the change would be refused: {why}"),
    }
}

/// The instance-level lines of a change.
pub fn describe_change(change: &InstanceChange) -> String {
    let mut out = String::new();
    match change {
        InstanceChange::Added {
            key,
            framework,
            version,
            plan,
        } => {
            let _ = writeln!(
                out,
                "instance {key}: added ({framework} {version}); {}",
                describe_plan(plan)
            );
        }
        InstanceChange::Removed { key } => {
            let _ = writeln!(
                out,
                "instance {key}: removed (its cleanup plan, if any, runs; its objects are deleted)"
            );
        }
        InstanceChange::Changed {
            key,
            version,
            parameters,
            plan,
        } => {
            let _ = writeln!(out, "instance {key}: changed; {}", describe_plan(plan));
            if let Some((old, new)) = version {
                let _ = writeln!(out, "  version: {old} -> {new}");
            }
            let show =
                |v: &Option<String>| v.as_deref().map_or("(unset)".into(), |s| format!("{s:?}"));
            for p in parameters {
                if p.sensitive {
                    let what = match (&p.old, &p.new) {
                        (None, _) => "set",
                        (_, None) => "unset",
                        _ => "changed",
                    };
                    let _ = writeln!(out, "  parameter {}: {what} {}", p.name, redact::MASK);
                    continue;
                }
                let _ = writeln!(
                    out,
                    "  parameter {}: {} -> {}",
                    p.name,
                    show(&p.old),
                    show(&p.new)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::rollout::Strategy;

    fn desired_with(params: &[(&str, &str)], targets: &[&str]) -> DesiredState {
        let inst = DesiredInstance {
            file: "instances/web.yaml".into(),
            name: "web".into(),
            namespace: "apps".into(),
            framework: "web".into(),
            version: "1.0.0".into(),
            operator_version: "web-1.0.0".into(),
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            strategy: Strategy::Parallel,
            canary: vec![],
            depends_on: Vec::new(),
            rollout: crate::gitops::stages::RolloutSpec::legacy(Strategy::Parallel, &[], &[]),
            targets: targets.iter().map(|t| t.to_string()).collect(),
            self_heal: true,
            deletion_protection: false,
            repository: String::new(),
        };
        DesiredState {
            revision: "abc".into(),
            frameworks: BTreeMap::new(),
            instances: [(inst.key(), inst)].into(),
        }
    }

    fn live(params: &[(&str, &str)]) -> Instance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kudo.dev/v1beta1", "kind": "Instance",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"operatorVersion": {"name": "web-1.0.0"},
                "parameters": params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()}
        }))
        .expect("instance")
    }

    #[test]
    fn added_removed_and_changed_instances_per_cluster() {
        let d = desired_with(&[("REPLICAS", "3")], &["c1"]);
        let none = BTreeMap::new();
        assert!(matches!(
            instance_changes(&d, "c1", &none).as_slice(),
            [InstanceChange::Added { key, .. }] if key == "apps/web"
        ));
        let live_map: BTreeMap<String, Instance> =
            [("apps/web".to_string(), live(&[("REPLICAS", "1")]))].into();
        // Not placed on c2 any more: removed there.
        assert_eq!(
            instance_changes(&d, "c2", &live_map),
            [InstanceChange::Removed {
                key: "apps/web".into()
            }]
        );
        match instance_changes(&d, "c1", &live_map).as_slice() {
            [
                InstanceChange::Changed {
                    parameters,
                    version: None,
                    ..
                },
            ] => assert_eq!(
                parameters,
                &[ParamChange {
                    name: "REPLICAS".into(),
                    old: Some("1".into()),
                    new: Some("3".into()),
                    sensitive: false,
                }]
            ),
            other => panic!("{other:?}"),
        }
        let same: BTreeMap<String, Instance> =
            [("apps/web".to_string(), live(&[("REPLICAS", "3")]))].into();
        assert!(instance_changes(&d, "c1", &same).is_empty());
    }

    #[test]
    fn report_marks_unreachable_clusters_and_colours_only_on_request() {
        let diffs = vec![
            ClusterDiff {
                cluster: "down".into(),
                outcome: ClusterOutcome::Unreachable("connection refused".into()),
            },
            ClusterDiff {
                cluster: "up".into(),
                outcome: ClusterOutcome::Compared(vec![InstanceDiff {
                    change: InstanceChange::Removed {
                        key: "apps/web".into(),
                    },
                    objects: vec![ObjectDiff {
                        object: "ConfigMap apps/c".into(),
                        unified: unified("a: 1\n", "", "ConfigMap apps/c"),
                    }],
                    errors: vec![],
                }]),
            },
        ];
        let text = render(&diffs, "0123456789abcdef", false);
        assert!(
            text.contains(
                "=== cluster down (revision 0123456789ab)\nunreachable: connection refused\n"
            ),
            "{text}"
        );
        assert!(text.contains("instance apps/web: removed"), "{text}");
        assert!(text.contains("-a: 1\n"), "{text}");
        assert!(!text.contains('\x1b'));
        assert!(render(&diffs, "r", true).contains("\x1b[31m-a: 1\x1b[0m"));
        assert!(has_differences(&diffs));
        assert!(!has_differences(&[ClusterDiff {
            cluster: "x".into(),
            outcome: ClusterOutcome::Compared(vec![])
        }]));
    }
}
