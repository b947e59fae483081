//! The production [`TaskRunner`]: renders a task's templates, decorates the objects,
//! applies or deletes them on one cluster in the fixed order, and reads their health.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::api::{AppliedObject, OperatorVersionSpec, Task};
use crate::cluster::{Cluster, ClusterError, ErrorKind, Health, ObjectRef, health};
use crate::package::{RenderContext, RenderedObject, context_value, render_task};

pub use crate::engine::objects::applied_object;
use crate::engine::objects::{Owner, decorate};
use crate::engine::tasks::{TaskKind, ToggleMode, dummy, toggle_mode};
use crate::engine::unknown_kind;
use crate::engine::workflow::{StepRef, TaskOutcome, TaskRunner};

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
    /// The control plane owning the Instance (its label, else the engine's own).
    pub control_plane: String,
    /// The declaring repository (the Instance's label); empty under `kudo manager`.
    pub repository: String,
    /// The Instance's inventory (`status.applied`): objects kudo applied before.
    pub inventory: std::collections::BTreeSet<AppliedObject>,
    /// Objects that existed before kudo's first apply (the Instance's
    /// [`crate::engine::objects::ADOPTED_OBJECTS_ANNOTATION`]).
    pub adopted: std::collections::BTreeSet<AppliedObject>,
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
    /// Objects applied in this pass, in order (the instance's inventory grows from these).
    pub applied: std::sync::Mutex<Vec<AppliedObject>>,
    /// Objects outside the inventory looked up in this pass: whether each was adopted.
    pub newly_adopted: std::sync::Mutex<BTreeMap<AppliedObject, bool>>,
}

/// Marks an object adopted: the annotation, and no owner reference to the instance.
fn mark_adopted(obj: &mut Value, instance_uid: &str) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(
                crate::engine::objects::ADOPTED_ANNOTATION.into(),
                Value::String("true".into()),
            );
        }
        if let Some(refs) = meta
            .get_mut("ownerReferences")
            .and_then(Value::as_array_mut)
        {
            refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(instance_uid));
            if refs.is_empty() {
                meta.remove("ownerReferences");
            }
        }
    }
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
            pipes: super::pipe::names(self.ov, &self.info.instance),
        };
        context_value(&ctx, self.params.clone())
    }

    /// Renders and decorates the task's objects, in template then document order.
    async fn objects(&self, at: &StepRef<'_>, task: &Task) -> Result<Vec<Value>, TaskOutcome> {
        let rendered = render_task(self.ov, task, &self.data(at))
            .map_err(|e| TaskOutcome::Fatal(e.to_string()))?;
        let owner = self.owner(at);
        let mut out = Vec::with_capacity(rendered.len());
        for r in rendered {
            let raw = serde_json::to_value(&r.object)
                .map_err(|e| TaskOutcome::Fatal(format!("{}: {e}", r.template)))?;
            let namespaced = self
                .cluster
                .is_namespaced(&raw)
                .await
                .map_err(|e| outcome_of(&e))?;
            out.push(self.decorated(&owner, r, namespaced)?);
        }
        Ok(out)
    }

    /// One rendered object with kudo's labels, annotations, namespace and owner (or the
    /// adopted mark).
    fn decorated(
        &self,
        owner: &Owner<'_>,
        mut r: RenderedObject,
        namespaced: bool,
    ) -> Result<Value, TaskOutcome> {
        decorate(&mut r.object, owner, namespaced);
        let mut value = serde_json::to_value(&r.object)
            .map_err(|e| TaskOutcome::Fatal(format!("{}: {e}", r.template)))?;
        if applied_object(&value).is_some_and(|e| self.info.adopted.contains(&e)) {
            mark_adopted(&mut value, &self.info.instance_uid);
        }
        Ok(value)
    }

    /// Renders, then decorates and applies each object in order, so a CRD applied by the
    /// task is on the cluster before the task's objects of its kind are resolved.
    async fn apply(&self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        let rendered = match render_task(self.ov, task, &self.data(at)) {
            Ok(r) => r,
            Err(e) => return TaskOutcome::Fatal(e.to_string()),
        };
        let owner = self.owner(at);
        let mut earlier: Vec<Value> = Vec::with_capacity(rendered.len());
        let mut waiting = Vec::new();
        for r in rendered {
            let raw = match serde_json::to_value(&r.object) {
                Ok(v) => v,
                Err(e) => return TaskOutcome::Fatal(format!("{}: {e}", r.template)),
            };
            let namespaced = match self.cluster.is_namespaced(&raw).await {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::UnknownKind => {
                    return self
                        .unknown_kind(at, task, &r.template, &raw, &earlier)
                        .await;
                }
                Err(e) => return outcome_of(&e),
            };
            let template = r.template.clone();
            let obj = match self.decorated(&owner, r, namespaced) {
                Ok(v) => v,
                Err(outcome) => return outcome,
            };
            let mut obj = match self.adopt_if_preexisting(&obj).await {
                Ok(obj) => obj,
                Err(e) => return outcome_of(&e),
            };
            crate::engine::cache::stamp(&mut obj);
            // Applied once per step run: a later pass (or a restarted manager) finds the
            // object as kudo applied it in the watch cache and only reads its health.
            let current = ObjectRef::from_object(&obj)
                .ok()
                .and_then(|r| self.cluster.cached(&r))
                .filter(|live| crate::engine::cache::carries(live, &obj));
            let live = match current {
                Some(live) => live,
                None => match self.cluster.apply(&obj).await {
                    Ok(live) => live,
                    Err(e) if e.kind() == ErrorKind::UnknownKind => {
                        return self.unknown_kind(at, task, &template, &raw, &earlier).await;
                    }
                    Err(e) => return outcome_of(&e),
                },
            };
            earlier.push(raw);
            self.record(&live);
            match health::evaluate(&live) {
                Health::Healthy => {}
                Health::Progressing(why) => {
                    // `Deployment ns/web: 1 of 3 replicas available`, the kind said once.
                    let kind = live.get("kind").and_then(Value::as_str).unwrap_or_default();
                    let why = why
                        .strip_prefix(&format!("{kind}: "))
                        .unwrap_or(&why)
                        .to_string();
                    waiting.push(format!("{}: {why}", describe(&live)));
                }
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

    /// `obj` (rendered from `template`) has a kind the cluster does not serve, even after
    /// the discovery refresh: fatal, unless a CRD applied earlier in the plan (or earlier in
    /// this task, `earlier`) defines it, which is waited for, bounded (see [`unknown_kind`]).
    async fn unknown_kind(
        &self,
        at: &StepRef<'_>,
        task: &Task,
        template: &str,
        obj: &Value,
        earlier: &[Value],
    ) -> TaskOutcome {
        let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind) = (s("/apiVersion"), s("/kind"));
        let (group, _) = crate::cluster::object::split_api_version(api_version);
        let object = match s("/metadata/namespace") {
            "" => s("/metadata/name").to_string(),
            ns => format!("{ns}/{}", s("/metadata/name")),
        };
        let missing = unknown_kind::Missing {
            cluster: self.cluster.name(),
            plan: at.plan,
            template,
            api_version,
            kind,
            object: &object,
        };
        let mut definer = unknown_kind::defining_crd(earlier, group, kind).map(|(crd, v)| {
            (
                crd,
                v,
                format!(
                    "step {}, task {}, earlier in the same task",
                    at.step, task.name
                ),
            )
        });
        if definer.is_none() {
            let index = self
                .ov
                .plans
                .get(at.plan)
                .and_then(|p| p.phases.iter().find(|p| p.name == at.phase))
                .and_then(|p| p.steps.iter().find(|s| s.name == at.step))
                .and_then(|s| s.tasks.iter().position(|t| *t == task.name))
                .unwrap_or(0);
            let toggle = |name: &str| self.values.get(name).map(|v| v.as_deref().unwrap_or(""));
            for (phase, step, t) in unknown_kind::earlier_applying_tasks(self.ov, at, index, toggle)
            {
                let here = StepRef {
                    plan: at.plan,
                    phase,
                    step,
                    started: at.started,
                };
                // A task that does not render now cannot have applied anything this run.
                let Ok(objects) = render_task(self.ov, t, &self.data(&here)) else {
                    continue;
                };
                let values: Vec<Value> = objects
                    .iter()
                    .filter_map(|o| serde_json::to_value(&o.object).ok())
                    .collect();
                if let Some((crd, v)) = unknown_kind::defining_crd(&values, group, kind) {
                    definer = Some((crd, v, format!("step {step}, task {}", t.name)));
                    break;
                }
            }
        }
        let definer = definer.map(|(crd, versions, place)| unknown_kind::Definer {
            api_version: crd
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            name: crd
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            place,
            versions,
        });
        let live = match &definer {
            None => String::new(),
            Some(d) => {
                let r = ObjectRef::new(&d.api_version, "CustomResourceDefinition", None, &d.name);
                match self.cluster.get_opt(&r).await {
                    Ok(live) => unknown_kind::crd_state(live.as_ref()),
                    Err(e) => return outcome_of(&e),
                }
            }
        };
        let elapsed = k8s_openapi::jiff::Timestamp::now()
            .duration_since(at.started)
            .unsigned_abs();
        unknown_kind::verdict(
            &missing,
            definer.as_ref(),
            &live,
            elapsed,
            unknown_kind::step_timeout(self.ov, at),
        )
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

impl ClusterRunner<'_> {
    /// An object kudo is about to apply for the first time that already exists and that
    /// kudo did not make was made by someone else (a Namespace, a CRD, a person's
    /// ConfigMap): kudo still applies its fields, but the object is recorded as adopted on
    /// the Instance first (so a crash cannot forget it), marked `kudo.dev/adopted`, and gets
    /// no owner reference, so neither pruning, instance deletion nor garbage collection
    /// ever removes it. Objects in the inventory cost no request.
    async fn adopt_if_preexisting(&self, obj: &Value) -> Result<Value, ClusterError> {
        let Some(entry) = applied_object(obj) else {
            return Ok(obj.clone());
        };
        // Objects the Instance lists as adopted are marked by `objects` already; objects in
        // the inventory are kudo's; objects looked up earlier in this pass keep that answer.
        let known = if self.info.adopted.contains(&entry) || self.info.inventory.contains(&entry) {
            Some(false)
        } else {
            self.newly_adopted_contains(&entry)
        };
        let adopted = if let Some(adopted) = known {
            adopted
        } else {
            let r = ObjectRef::from_object(obj).map_err(|reason| ClusterError::BadObject {
                cluster: self.cluster.name().to_string(),
                object: entry.name.clone(),
                reason,
            })?;
            // Made by kudo for another instance (a shared cluster-scoped object) is not
            // adopted: it goes when the last instance listing it goes.
            let preexisting = match self.cluster.get_opt(&r).await? {
                None => false,
                Some(live) => !crate::engine::prune::made_by_kudo(&live),
            };
            if preexisting {
                self.record_adoption(&entry).await?;
            }
            self.newly_adopted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(entry.clone(), preexisting);
            preexisting
        };
        let mut obj = obj.clone();
        if adopted {
            mark_adopted(&mut obj, &self.info.instance_uid);
        }
        Ok(obj)
    }

    fn newly_adopted_contains(&self, entry: &AppliedObject) -> Option<bool> {
        self.newly_adopted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(entry)
            .copied()
    }

    /// Adds an object to the Instance's adopted list (a merge patch of one annotation).
    async fn record_adoption(&self, entry: &AppliedObject) -> Result<(), ClusterError> {
        let mut all = self.info.adopted.clone();
        all.extend(
            self.newly_adopted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|(_, adopted)| **adopted)
                .map(|(e, _)| e.clone()),
        );
        all.insert(entry.clone());
        let list: Vec<&AppliedObject> = all.iter().collect();
        let text = serde_json::to_string(&list).unwrap_or_default();
        tracing::info!(kind = %entry.kind, name = %entry.name, namespace = %entry.namespace,
            "object existed before kudo applied it: adopted (no owner reference, never deleted)");
        self.cluster
            .merge_patch(&serde_json::json!({
                "apiVersion": crate::api::API_VERSION,
                "kind": "Instance",
                "metadata": {
                    "name": self.info.instance,
                    "namespace": self.info.namespace,
                    "annotations": {crate::engine::objects::ADOPTED_OBJECTS_ANNOTATION: text},
                },
            }))
            .await
            .map(|_| ())
    }

    /// Adds an applied object to this pass's inventory.
    fn record(&self, live: &Value) {
        if let Some(entry) = applied_object(live) {
            let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
            if !applied.contains(&entry) {
                applied.push(entry);
            }
        }
    }

    /// Every object the instance's current version and parameters render for any plan
    /// (Apply tasks, and Toggle tasks whose parameter is on), namespaced as applied.
    pub async fn desired_objects(
        &self,
    ) -> Result<std::collections::BTreeSet<AppliedObject>, String> {
        Ok(self
            .desired_values(None)
            .await?
            .iter()
            .filter_map(applied_object)
            .collect())
    }

    /// The rendered, decorated objects behind [`Self::desired_objects`], each once: the
    /// rendering of `first_plan` (the plan that ran last) wins, then plans in name order.
    pub async fn desired_values(&self, first_plan: Option<&str>) -> Result<Vec<Value>, String> {
        let mut plans: Vec<_> = self.ov.plans.iter().collect();
        plans.sort_by_key(|(name, _)| Some(name.as_str()) != first_plan);
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (plan_name, plan) in plans {
            for phase in &plan.phases {
                for step in &phase.steps {
                    let at = StepRef {
                        plan: plan_name,
                        phase: &phase.name,
                        step: &step.name,
                        started: k8s_openapi::jiff::Timestamp::now(),
                    };
                    for task_name in &step.tasks {
                        let Some(task) = self.ov.tasks.iter().find(|t| &t.name == task_name) else {
                            continue;
                        };
                        let applies = match &task.kind {
                            TaskKind::Apply => true,
                            TaskKind::Toggle => {
                                let value = self
                                    .values
                                    .get(&task.spec.parameter)
                                    .map(|v| v.as_deref().unwrap_or(""));
                                toggle_mode(&task.spec.parameter, value) == Ok(ToggleMode::Apply)
                            }
                            _ => false,
                        };
                        if !applies {
                            continue;
                        }
                        let objects = self.objects(&at, task).await.map_err(|o| match o {
                            TaskOutcome::Fatal(m)
                            | TaskOutcome::Error(m)
                            | TaskOutcome::InProgress(m) => m,
                            TaskOutcome::Done => String::new(),
                        })?;
                        for obj in objects {
                            if let Some(key) = applied_object(&obj)
                                && seen.insert(key)
                            {
                                out.push(obj);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Deletes the given inventory objects that still belong to the instance (see
    /// [`super::prune::delete_owned`]).
    pub async fn prune(
        &self,
        stale: &[AppliedObject],
    ) -> Result<(Vec<AppliedObject>, Vec<String>), String> {
        let claim = crate::engine::prune::Claim {
            operator: &self.info.operator,
            instance: &self.info.instance,
            namespace: &self.info.namespace,
            uid: &self.info.instance_uid,
        };
        super::prune::delete_owned(self.cluster, &claim, stale).await
    }

    /// A `KudoOperator` task: a child Instance of another operator (installed beside the
    /// parent, as `kudo install` does for dependencies), owned by the parent, healthy once
    /// its own plan has run to completion with the parameters asked for.
    async fn kudo_operator(&self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        let spec = &task.spec;
        if spec.package.is_empty() {
            return TaskOutcome::Fatal(format!("KudoOperator task {} names no package", task.name));
        }
        let child = if spec.instance_name.is_empty() {
            format!("{}-{}", self.info.instance, spec.package)
        } else {
            spec.instance_name.clone()
        };
        let parameters = match self.child_parameters(at, task) {
            Ok(p) => p,
            Err(outcome) => return outcome,
        };
        let ov_name = match self.child_operator_version(task).await {
            Ok(Some(name)) => name,
            Ok(None) => {
                return TaskOutcome::Error(format!(
                    "no OperatorVersion of operator {} (version {:?}, app version {:?}) in namespace {}; install it first",
                    spec.package, spec.operator_version, spec.app_version, self.info.namespace
                ));
            }
            Err(outcome) => return outcome,
        };
        let mut object: kube::api::DynamicObject = match serde_json::from_value(serde_json::json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": "Instance",
            "metadata": {"name": child},
            "spec": {"operatorVersion": {"name": ov_name}, "parameters": parameters},
        })) {
            Ok(o) => o,
            Err(e) => return TaskOutcome::Fatal(format!("child instance {child}: {e}")),
        };
        decorate(&mut object, &self.owner(at), true);
        // The child is an instance of its own operator; the parent is recorded by the
        // owner reference and the kudo.dev/instance label.
        if let Some(labels) = object.metadata.labels.as_mut() {
            labels.insert(
                crate::engine::objects::OPERATOR_LABEL.into(),
                spec.package.clone(),
            );
        }
        let value = match serde_json::to_value(&object) {
            Ok(v) => v,
            Err(e) => return TaskOutcome::Fatal(format!("child instance {child}: {e}")),
        };
        let live = match self.cluster.apply(&value).await {
            Ok(live) => live,
            Err(e) => return outcome_of(&e),
        };
        self.record(&live);
        // Healthy once its manager has run a plan for exactly this spec to completion.
        match health::evaluate(&live) {
            Health::Healthy => TaskOutcome::Done,
            Health::Progressing(why) => {
                TaskOutcome::InProgress(format!("child instance {child}: {why}"))
            }
            Health::Failed(why) => TaskOutcome::Fatal(format!("child instance {child}: {why}")),
        }
    }

    /// A `Pipe` task: runs the `pod` template's Pod until it is running, copies each piped
    /// file (at most 1 MiB) out of it into a ConfigMap or Secret named by
    /// [`super::pipe::artifact_name`] (templates see the name as `.Pipes.<key>`), then
    /// deletes the pod. Done once every artifact exists, so a finished pipe is never re-run;
    /// on a cluster without nodes the pod never runs and the task stays in progress.
    async fn pipe(&self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        let mut artifacts = Vec::new();
        for spec in &task.spec.pipe {
            let name = super::pipe::artifact_name(&self.info.instance, &task.name, &spec.key);
            let kind = match spec.kind.as_str() {
                "ConfigMap" | "Secret" => spec.kind.as_str(),
                other => {
                    return TaskOutcome::Fatal(format!(
                        "pipe {} of task {}: kind must be ConfigMap or Secret, got {other:?}",
                        spec.key, task.name
                    ));
                }
            };
            let r = ObjectRef::new("v1", kind, Some(&self.info.namespace), name.clone());
            match self.cluster.get_opt(&r).await {
                Ok(Some(_)) => {}
                Ok(None) => artifacts.push((spec, kind, name)),
                Err(e) => return outcome_of(&e),
            }
        }
        if artifacts.is_empty() {
            return TaskOutcome::Done;
        }
        let pod_template = &task.spec.pod;
        let Some(text) = self.ov.templates.get(pod_template) else {
            return TaskOutcome::Fatal(format!(
                "pipe pod template {pod_template} is not among the templates"
            ));
        };
        let rendered = match crate::template::render(pod_template, text, &self.data(at)) {
            Ok(r) => r,
            Err(e) => return TaskOutcome::Fatal(e.to_string()),
        };
        let mut objects = match crate::package::parse_documents(pod_template, &rendered) {
            Ok(o) => o,
            Err(e) => return TaskOutcome::Fatal(e.to_string()),
        };
        if objects.len() != 1 || objects[0].types.as_ref().is_none_or(|t| t.kind != "Pod") {
            return TaskOutcome::Fatal(format!(
                "pipe pod template {pod_template} must render exactly one Pod"
            ));
        }
        let mut pod = objects.remove(0);
        decorate(&mut pod, &self.owner(at), true);
        let value = match serde_json::to_value(&pod) {
            Ok(v) => v,
            Err(e) => return TaskOutcome::Fatal(format!("{pod_template}: {e}")),
        };
        let live = match self.cluster.apply(&value).await {
            Ok(live) => live,
            Err(e) => return outcome_of(&e),
        };
        match health::evaluate(&live) {
            Health::Healthy => {}
            Health::Progressing(why) => {
                return TaskOutcome::InProgress(format!("pipe pod {}: {why}", describe(&live)));
            }
            Health::Failed(why) => {
                return TaskOutcome::Fatal(format!("pipe pod {} failed: {why}", describe(&live)));
            }
        }
        let pod_name = live
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for (spec, kind, name) in artifacts {
            let content = match super::pipe::read_file(
                self.cluster.client(),
                &self.info.namespace,
                &pod_name,
                &spec.file,
            )
            .await
            {
                Ok(c) => c,
                Err(why) => return TaskOutcome::Error(why),
            };
            let mut object: kube::api::DynamicObject = match serde_json::from_value(
                super::pipe::artifact(kind, &name, &spec.file, &content),
            ) {
                Ok(o) => o,
                Err(e) => return TaskOutcome::Fatal(format!("pipe {}: {e}", spec.key)),
            };
            decorate(&mut object, &self.owner(at), true);
            let value = match serde_json::to_value(&object) {
                Ok(v) => v,
                Err(e) => return TaskOutcome::Fatal(format!("pipe {}: {e}", spec.key)),
            };
            match self.cluster.apply(&value).await {
                Ok(live) => self.record(&live),
                Err(e) => return outcome_of(&e),
            }
        }
        let pod_ref = ObjectRef::new("v1", "Pod", Some(&self.info.namespace), pod_name);
        if let Err(e) = self.cluster.delete(&pod_ref).await {
            return outcome_of(&e);
        }
        TaskOutcome::Done
    }

    /// The child's parameters: the task's `parameterFile` template rendered to a YAML map
    /// (values that are not strings become their YAML text, as KUDO stores parameters).
    fn child_parameters(
        &self,
        at: &StepRef<'_>,
        task: &Task,
    ) -> Result<BTreeMap<String, String>, TaskOutcome> {
        let file = &task.spec.parameter_file;
        if file.is_empty() {
            return Ok(BTreeMap::new());
        }
        let text = self.ov.templates.get(file).ok_or_else(|| {
            TaskOutcome::Fatal(format!("parameterFile {file} is not among the templates"))
        })?;
        let rendered = crate::template::render(file, text, &self.data(at))
            .map_err(|e| TaskOutcome::Fatal(e.to_string()))?;
        let map: BTreeMap<String, Value> = serde_saphyr::from_str(&rendered).map_err(|e| {
            TaskOutcome::Fatal(format!("parameterFile {file}: not a YAML map: {e}"))
        })?;
        Ok(map
            .into_iter()
            .map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    Value::Bool(_) | Value::Number(_) => v.to_string(),
                    other => crate::template::to_yaml(&other),
                };
                (k, text)
            })
            .collect())
    }

    /// The child's OperatorVersion in the instance's namespace: the one matching the task's
    /// versions, or the highest version of the operator when none is given.
    async fn child_operator_version(&self, task: &Task) -> Result<Option<String>, TaskOutcome> {
        let spec = &task.spec;
        // From the engine's OperatorVersion watch once it has listed; the API until then.
        let cached = self.cluster.cached_list(
            crate::api::API_VERSION,
            "OperatorVersion",
            &self.info.namespace,
            "",
        );
        let all = match cached {
            Some(all) => all,
            None => self
                .cluster
                .list(
                    &[(crate::api::API_VERSION, "OperatorVersion")],
                    Some(&self.info.namespace),
                    "",
                )
                .await
                .map_err(|e| outcome_of(&e))?,
        };
        let mut candidates: Vec<(String, String)> = all
            .iter()
            .filter(|ov| {
                ov.pointer("/spec/operator/name").and_then(Value::as_str)
                    == Some(spec.package.as_str())
            })
            .filter(|ov| {
                let field = |p: &str| ov.pointer(p).and_then(Value::as_str).unwrap_or_default();
                (spec.operator_version.is_empty()
                    || field("/spec/version") == spec.operator_version)
                    && (spec.app_version.is_empty()
                        || field("/spec/appVersion") == spec.app_version)
            })
            .filter_map(|ov| {
                Some((
                    ov.pointer("/spec/version")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    ov.pointer("/metadata/name")?.as_str()?.to_string(),
                ))
            })
            .collect();
        candidates.sort_by(|a, b| version_order(&a.0, &b.0));
        Ok(candidates.pop().map(|(_, name)| name))
    }

    fn owner<'b>(&'b self, at: &StepRef<'b>) -> Owner<'b> {
        Owner {
            operator: &self.info.operator,
            operator_version: &self.info.operator_version,
            instance: &self.info.instance,
            instance_uid: &self.info.instance_uid,
            namespace: &self.info.namespace,
            control_plane: &self.info.control_plane,
            repository: &self.info.repository,
            plan: at.plan,
            phase: at.phase,
            step: at.step,
        }
    }
}

/// Orders versions like `1.2.10` > `1.2.9`: numeric where both parts are numbers.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<String> { v.split(['.', '-', '+']).map(str::to_string).collect() };
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if ord != std::cmp::Ordering::Equal {
            return ord;
        }
    }
    pa.len().cmp(&pb.len())
}

impl TaskRunner for ClusterRunner<'_> {
    async fn run(&mut self, at: &StepRef<'_>, task: &Task) -> TaskOutcome {
        match &task.kind {
            TaskKind::Other(kind) => TaskOutcome::Fatal(format!(
                "task {} has unknown kind {kind:?} (known: Apply, Delete, Toggle, Dummy, Pipe, KudoOperator)",
                task.name
            )),
            TaskKind::Dummy => dummy(&task.spec),
            TaskKind::Apply => self.apply(at, task).await,
            TaskKind::Delete => self.delete(at, task).await,
            TaskKind::Toggle => {
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
            TaskKind::Pipe => self.pipe(at, task).await,
            TaskKind::KudoOperator => self.kudo_operator(at, task).await,
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

#[cfg(test)]
mod tests {
    use super::version_order;
    use std::cmp::Ordering;

    #[test]
    fn versions_order_numerically() {
        assert_eq!(version_order("1.2.10", "1.2.9"), Ordering::Greater);
        assert_eq!(version_order("0.1.0", "0.1.0"), Ordering::Equal);
        assert_eq!(version_order("1.0", "1.0.1"), Ordering::Less);
    }
}
