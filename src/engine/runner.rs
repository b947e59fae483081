//! The production [`TaskRunner`]: renders a task's templates, decorates the objects,
//! applies or deletes them on one cluster in the fixed order, and reads their health.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::{OperatorVersionSpec, Task};
use crate::cluster::{Cluster, ClusterError, ErrorKind, Health, ObjectRef, health};
use crate::package::{RenderContext, context_value, render_task};

use super::objects::{Owner, decorate};
use super::tasks::{TaskKind, ToggleMode, dummy, toggle_mode};
use super::workflow::{StepRef, TaskOutcome, TaskRunner};

/// Who the objects belong to, fixed for one reconcile.
#[derive(Debug, Clone, Default)]
pub struct InstanceInfo {
    pub operator: String,
    pub operator_version: String,
    pub app_version: String,
    pub version: String,
    pub instance: String,
    pub instance_uid: String,
    pub namespace: String,
    pub plan_uid: String,
}

/// Runs tasks against one cluster for one instance.
pub struct ClusterRunner<'a> {
    pub cluster: &'a Cluster,
    pub ov: &'a OperatorVersionSpec,
    pub info: &'a InstanceInfo,
    /// The `.Params` value (validated).
    pub params: &'a Value,
    /// Resolved parameter strings (Toggle reads its boolean here).
    pub values: &'a BTreeMap<String, Option<String>>,
}

impl ClusterRunner<'_> {
    fn data(&self, at: &StepRef<'_>) -> Value {
        let ctx = RenderContext {
            instance_name: self.info.instance.clone(),
            namespace: self.info.namespace.clone(),
            operator_name: self.info.operator.clone(),
            operator_version: self.info.version.clone(),
            app_version: self.info.app_version.clone(),
            plan_name: at.plan.to_string(),
            phase_name: at.phase.to_string(),
            step_name: at.step.to_string(),
            pipes: BTreeMap::new(),
        };
        context_value(&ctx, self.params.clone())
    }

    /// Renders and decorates the task's objects, in template then document order.
    async fn objects(&self, at: &StepRef<'_>, task: &Task) -> Result<Vec<Value>, TaskOutcome> {
        let rendered = render_task(self.ov, task, &self.data(at))
            .map_err(|e| TaskOutcome::Fatal(e.to_string()))?;
        let owner = Owner {
            operator: &self.info.operator,
            operator_version: &self.info.operator_version,
            instance: &self.info.instance,
            instance_uid: &self.info.instance_uid,
            namespace: &self.info.namespace,
            plan: at.plan,
            plan_uid: &self.info.plan_uid,
            phase: at.phase,
            step: at.step,
        };
        let mut out = Vec::with_capacity(rendered.len());
        for mut r in rendered {
            let as_value = serde_json::to_value(&r.object)
                .map_err(|e| TaskOutcome::Fatal(format!("{}: {e}", r.template)))?;
            let namespaced = self
                .cluster
                .is_namespaced(&as_value)
                .await
                .map_err(|e| outcome_of(&e))?;
            decorate(&mut r.object, &owner, namespaced);
            out.push(
                serde_json::to_value(&r.object)
                    .map_err(|e| TaskOutcome::Fatal(format!("{}: {e}", r.template)))?,
            );
        }
        Ok(out)
    }

    async fn apply(&self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        let objects = match self.objects(at, task).await {
            Ok(o) => o,
            Err(outcome) => return outcome,
        };
        let mut waiting = Vec::new();
        for obj in &objects {
            let live = match self.cluster.apply(obj).await {
                Ok(live) => live,
                Err(e) => return outcome_of(&e),
            };
            match health::evaluate(&live) {
                Health::Healthy => {}
                Health::Progressing(why) => waiting.push(format!("{}: {why}", describe(&live))),
                Health::Failed(why) => {
                    return TaskOutcome::Fatal(format!("{} failed: {why}", describe(&live)));
                }
            }
        }
        if waiting.is_empty() {
            TaskOutcome::Done
        } else {
            TaskOutcome::InProgress(waiting.join("; "))
        }
    }

    async fn delete(&self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        let objects = match self.objects(at, task).await {
            Ok(o) => o,
            Err(outcome) => return outcome,
        };
        let mut waiting = Vec::new();
        // Reverse apply order: dependents go first.
        for obj in objects.iter().rev() {
            let r = match ObjectRef::from_object(obj) {
                Ok(r) => r,
                Err(why) => return TaskOutcome::Fatal(why),
            };
            match self.cluster.delete(&r).await {
                Ok(None) => {}
                Ok(Some(_)) => waiting.push(format!("{r} is being deleted")),
                Err(e) => return outcome_of(&e),
            }
        }
        if waiting.is_empty() {
            TaskOutcome::Done
        } else {
            TaskOutcome::InProgress(waiting.join("; "))
        }
    }
}

impl TaskRunner for ClusterRunner<'_> {
    async fn run(&mut self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        match TaskKind::parse(&task.kind) {
            None => TaskOutcome::Fatal(format!(
                "task {} has unknown kind {:?} (known: Apply, Delete, Toggle, Dummy, Pipe, KudoOperator)",
                task.name, task.kind
            )),
            Some(TaskKind::Dummy) => dummy(&task.spec),
            Some(TaskKind::Apply) => self.apply(at, task).await,
            Some(TaskKind::Delete) => self.delete(at, task).await,
            Some(TaskKind::Toggle) => {
                let value = self
                    .values
                    .get(&task.spec.parameter)
                    .map(|v| v.as_deref().unwrap_or(""));
                match toggle_mode(&task.spec.parameter, value) {
                    Ok(ToggleMode::Apply) => self.apply(at, task).await,
                    Ok(ToggleMode::Delete) => self.delete(at, task).await,
                    Err(why) => TaskOutcome::Fatal(why),
                }
            }
            Some(TaskKind::Pipe) => TaskOutcome::InProgress(
                "Pipe tasks wait for a pod to run; this manager does not run pipe pods yet".into(),
            ),
            Some(TaskKind::KudoOperator) => TaskOutcome::Fatal(
                "KudoOperator tasks (child instances) are not supported by this manager yet".into(),
            ),
        }
    }
}

/// Transient cluster problems are retried; an object the API server refuses as invalid will
/// not become valid by retrying, so it stops the plan.
fn outcome_of(e: &ClusterError) -> TaskOutcome {
    match e.kind() {
        ErrorKind::Invalid => TaskOutcome::Fatal(e.to_string()),
        _ => TaskOutcome::Error(e.to_string()),
    }
}

fn describe(obj: &Value) -> String {
    ObjectRef::from_object(obj)
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "object".into())
}
