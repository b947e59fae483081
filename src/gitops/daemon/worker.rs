//! The cluster worker: one per cluster, applies what the planner assigned, deletes what the
//! ownership decision picked, and observes the cluster's Instances.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::{info, warn};

use super::state::{ClusterSlot, Seen, Shared, lock};
use super::{FIELD_MANAGER, MANAGED_LABEL, REVISION_ANNOTATION};
use crate::api::Instance;
use crate::cluster::{Cluster, ClusterError, ObjectRef};
use crate::gitops::desired::{DesiredInstance, DesiredState, short};
use crate::gitops::git::next_poll;

pub(super) async fn cluster_worker(
    shared: Arc<Shared>,
    slot: Arc<ClusterSlot>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = slot.info.name.clone();
    let mut engine_started = false;
    let mut crds_installed = false;
    let mut failures: u32 = 0;
    // When the API server last answered the probe (see `Options::probe_interval`).
    let mut probed: Option<std::time::Instant> = None;
    // Sharded: every member observes every cluster (its engine waits for the claim).
    if let Some(mut leading) = shared.leading.clone().filter(|_| !shared.sharded())
        && !*leading.borrow()
    {
        lock(&slot.status).reason = Some("standby: another replica leads".into());
        tokio::select! {
            _ = leading.wait_for(|l| *l) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        lock(&slot.status).reason = Some("not probed yet".into());
    }
    loop {
        let result = async {
            if let Some(namespace) = &slot.agent {
                return super::agents::work(&shared, &slot, namespace).await;
            }
            if shared.dry_run {
                return dry_run_work(&shared, &slot).await;
            }
            if let Some((engine, gate)) = &slot.engine {
                if !engine_started {
                    start_claimed_engine(&shared, &slot, engine, gate, &stop);
                    engine_started = true;
                }
                // CRDs by whoever may write: the leader, else the member driving the cluster.
                if !crds_installed {
                    if shared.is_leader() {
                        install_crds(&slot.cluster).await?;
                        crds_installed = true;
                    } else if gate.owned() {
                        install_crds(engine).await?;
                        crds_installed = true;
                    }
                }
            }
            if !engine_started {
                install_crds(&slot.cluster).await?;
                let ctx = Arc::new(
                    crate::manager::reconcile::Context::with_metrics(
                        slot.cluster.clone(),
                        shared.options.engine_poll,
                        shared.engine_metrics.clone(),
                    )
                    .with_control_plane(&shared.config().control_plane),
                );
                let (rx, leading) = (stop.clone(), shared.leading.clone());
                // Supervised (restarted if it ever ends) and joined on shutdown; a restarted
                // worker finds it running.
                let started = shared.health.spawn("engine", &name, stop.clone(), move || {
                    crate::gitops::supervise::engine(ctx.clone(), rx.clone(), leading.clone())
                });
                engine_started = true;
                if started {
                    tokio::spawn(wake_on_instance_changes(slot.clone(), stop.clone()));
                    info!(cluster = %name, "CRDs installed, engine started");
                }
            }
            work(&shared, &slot).await?;
            // Sharded: a replica that neither leads nor drives this cluster probes it less
            // often (its watch still reports changes); the leader and the owner keep time.
            let interval = match &slot.engine {
                Some((_, gate)) if !gate.owned() && !shared.is_leader() => {
                    shared.options.probe_interval * 6
                }
                _ => shared.options.probe_interval,
            };
            if probed.is_none_or(|at| at.elapsed() >= interval) {
                let started = std::time::Instant::now();
                slot.cluster.probe().await?;
                lock(&slot.status).latency_ms = Some(started.elapsed().as_millis() as u64);
                probed = Some(std::time::Instant::now());
            }
            Ok(())
        }
        .await;
        if result.is_err() {
            probed = None;
        }
        let delay = match result {
            Ok(()) => {
                failures = 0;
                let mut st = lock(&slot.status);
                if !st.up {
                    info!(cluster = %name, "cluster up");
                }
                // Back up after being down (the first probe at start is not news).
                if !st.up && st.reason.as_deref() != Some("not probed yet") {
                    shared.notifier.emit(
                        crate::notify::Event::new(crate::notify::EventKind::ClusterUp, "up", "")
                            .cluster(&name),
                    );
                }
                st.up = true;
                st.reason = None;
                st.category = None;
                st.last_contact = Some(
                    jiff::Timestamp::now()
                        .round(jiff::Unit::Second)
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                );
                shared.metrics.cluster.set_up(&name, true, None);
                shared.options.observe_interval
            }
            Err(e) => {
                failures += 1;
                let mut st = lock(&slot.status);
                if st.up || failures == 1 {
                    warn!(cluster = %name, category = e.kind().as_str(), error = %e, "cluster down");
                    shared.notifier.emit(
                        crate::notify::Event::new(
                            crate::notify::EventKind::ClusterDown,
                            "down",
                            format!("{}: {e}", e.kind().as_str()),
                        )
                        .cluster(&name),
                    );
                }
                st.up = false;
                st.reason = Some(format!("{}: {e}", e.kind().as_str()));
                st.category = Some(e.kind().as_str().to_string());
                shared
                    .metrics
                    .cluster
                    .set_up(&name, false, Some(e.kind().as_str()));
                next_poll(
                    shared.options.observe_interval.max(Duration::from_secs(1)),
                    failures,
                    fastrand::f64(),
                )
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = slot.wake.notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Sharded: the cluster's own Instance watch (observed whether or not this member drives the
/// cluster) and the engine that runs while this member holds the cluster's claim.
fn start_claimed_engine(
    shared: &Arc<Shared>,
    slot: &Arc<ClusterSlot>,
    engine: &Arc<Cluster>,
    gate: &Arc<crate::gitops::shard::gate::ClusterGate>,
    stop: &tokio::sync::watch::Receiver<bool>,
) {
    let name = slot.info.name.clone();
    let (cluster, rx) = (slot.cluster.clone(), stop.clone());
    shared
        .health
        .spawn("observer", &name, stop.clone(), move || {
            crate::manager::controller::watch_instances(cluster.clone(), rx.clone())
        });
    let (engine, s) = (engine.clone(), shared.clone());
    let make = move || {
        Arc::new(
            crate::manager::reconcile::Context::with_metrics(
                engine.clone(),
                s.options.engine_poll,
                s.engine_metrics.clone(),
            )
            .with_control_plane(&s.config().control_plane)
            .with_private_instances(),
        )
    };
    let (rx, owns) = (stop.clone(), gate.subscribe());
    let started = shared.health.spawn("engine", &name, stop.clone(), move || {
        crate::gitops::supervise::claimed_engine(make.clone(), rx.clone(), owns.clone())
    });
    if started {
        tokio::spawn(wake_on_instance_changes(slot.clone(), stop.clone()));
        info!(cluster = %name, "observing; the engine runs while this member holds the cluster's claim");
    }
}

/// Wakes the cluster worker whenever an Instance changes (its plan status above all), so a
/// rollout wave advances on the event that finishes it, not on the next poll; the worker's
/// interval remains the fallback. The events are the engine's Instance watch's: the
/// cluster has one.
async fn wake_on_instance_changes(
    slot: Arc<ClusterSlot>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = slot.cluster.changes(crate::api::API_VERSION, "Instance");
    loop {
        tokio::select! {
            changed = changes.changed() => match changed {
                Ok(()) => slot.wake.notify_one(),
                Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Installs kudo's CRDs on a cluster where they are missing and waits until they are served.
pub async fn install_crds(cluster: &Cluster) -> Result<(), ClusterError> {
    let mut names = Vec::new();
    for crd in crate::api::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let r = ObjectRef::new(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            &name,
        );
        if cluster.get_opt(&r).await?.is_none() {
            let value = serde_json::to_value(&crd).unwrap_or_default();
            cluster.apply_as(&value, FIELD_MANAGER).await?;
        }
        names.push(r);
    }
    for r in names {
        cluster.wait_healthy(&r, Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// One pass on one cluster: apply what the planner assigned, delete what is no longer
/// desired here, observe, and re-plan when something changed.
async fn work(shared: &Arc<Shared>, slot: &ClusterSlot) -> Result<(), ClusterError> {
    let desired = shared
        .desired
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let cluster = &slot.cluster;
    if let Some(d) = &desired {
        let control_plane = &shared.config().control_plane;
        let assigned = lock(&slot.apply).clone();
        for key in &assigned {
            // A lapsed lease stops writes here (and in the cluster's client).
            if !shared.is_leader() {
                return Ok(());
            }
            if let Some(inst) = d.instances.get(key) {
                apply_instance_as(cluster, d, inst, control_plane).await?;
            }
        }
        gate_and_revert_writes(shared, slot, d).await?;
        // Ownership labels of legacy or moved Instances: labels only, never the spec (a
        // wave not yet due must not get the new spec early).
        let relabel = lock(&slot.relabel).clone();
        for key in &relabel {
            if !shared.is_leader() {
                return Ok(());
            }
            if let Some(inst) = d.instances.get(key) {
                info!(cluster = %slot.info.name, instance = %key, repository = %inst.repository, "taking over ownership labels");
                cluster
                    .merge_patch(&json!({
                        "apiVersion": crate::api::API_VERSION,
                        "kind": "Instance",
                        "metadata": {
                            "name": inst.name,
                            "namespace": inst.namespace,
                            "labels": ownership_labels(inst, control_plane),
                        },
                    }))
                    .await?;
            }
        }
        // Only what the planner's ownership decision picked, and only while the Instance we
        // observed is still ours (re-checked under the lock).
        let unwanted: Vec<(String, ObjectRef, Option<String>)> = {
            let picked = lock(&slot.delete).clone();
            lock(&slot.seen)
                .iter()
                .flat_map(|seen| seen.iter())
                .filter(|(key, s)| {
                    picked.contains(*key)
                        && matches!(s.owner, crate::gitops::ownership::Owner::Ours { .. })
                        && s.instance.metadata.deletion_timestamp.is_none()
                })
                .map(|(key, s)| {
                    let r = ObjectRef::new(
                        crate::api::API_VERSION,
                        "Instance",
                        s.instance.metadata.namespace.as_deref(),
                        s.instance.metadata.name.clone().unwrap_or_default(),
                    );
                    (key.clone(), r, s.instance.metadata.uid.clone())
                })
                .collect()
        };
        for (key, r, uid) in &unwanted {
            if !shared.is_leader() {
                return Ok(());
            }
            // What was observed may come from the watch cache: the deletion rests on the
            // Instance as the API server has it now (still ours, still the same object).
            let current = cluster
                .get_opt(r)
                .await?
                .and_then(|v| serde_json::from_value::<Instance>(v).ok());
            let still_ours = current.is_some_and(|i| {
                i.metadata.uid == *uid
                    && i.metadata.deletion_timestamp.is_none()
                    && matches!(
                        Seen::new(i, &shared.config().control_plane).owner,
                        crate::gitops::ownership::Owner::Ours { .. }
                    )
            });
            if !still_ours {
                info!(cluster = %slot.info.name, instance = %key, "not deleting: the Instance changed owner or identity since it was observed");
                continue;
            }
            info!(cluster = %slot.info.name, instance = %key, "instance no longer declared here by its repository; deleting");
            cluster.delete_uid(r, uid.as_deref()).await?;
        }
    }
    // From the engine's Instance watch once it has listed; the API until then. The count is
    // read before the cache, so an event landing in between is seen by the next pass.
    let changes = *cluster
        .changes(crate::api::API_VERSION, "Instance")
        .borrow();
    if *lock(&slot.observed_changes) == Some(changes) {
        return Ok(());
    }
    let selector = format!("{MANAGED_LABEL}={FIELD_MANAGER}");
    let (live, from_cache) =
        match cluster.cached_list_all(crate::api::API_VERSION, "Instance", &selector) {
            Some(cached) => (cached, true),
            None => (
                cluster
                    .list(&[(crate::api::API_VERSION, "Instance")], None, &selector)
                    .await?,
                false,
            ),
        };
    let mut seen = BTreeMap::new();
    for v in live {
        if let Ok(instance) = serde_json::from_value::<Instance>(v) {
            let key = format!(
                "{}/{}",
                instance.metadata.namespace.clone().unwrap_or_default(),
                instance.metadata.name.clone().unwrap_or_default()
            );
            seen.insert(key, Seen::new(instance, &shared.config().control_plane));
        }
    }
    {
        let mut previous = lock(&slot.seen);
        // The first observation is the baseline: a restarted daemon does not replay history.
        if let Some(prev) = previous.as_ref() {
            for (key, s) in &seen {
                let before = prev.get(key).map(|p| &p.instance);
                for event in crate::notify::plan_events(&slot.info.name, before, &s.instance) {
                    shared.notifier.emit(event);
                }
            }
        }
        *previous = Some(Arc::new(seen));
    }
    *lock(&slot.observed_changes) = from_cache.then_some(changes);
    shared
        .observations
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    shared.request_plan();
    Ok(())
}

/// The writes of `plan` gates (run a plan on an Instance) and of reverts (give the good spec
/// back), each sent once per Instance and spec: a plan trigger is checked against the
/// Instance as the API server has it now and sent with its resourceVersion, so it can never
/// start the plan a second time.
async fn gate_and_revert_writes(
    shared: &Arc<Shared>,
    slot: &ClusterSlot,
    d: &DesiredState,
) -> Result<(), ClusterError> {
    let cluster = &slot.cluster;
    let triggers = lock(&slot.trigger).clone();
    let reverts = lock(&slot.revert).clone();
    let mut wanted = std::collections::BTreeSet::new();
    for (key, plan) in &triggers {
        let Some(inst) = d.instances.get(key) else {
            continue;
        };
        let id = format!(
            "{key}|{plan}|{}",
            super::planner::spec_id_of(&inst.operator_version, &inst.parameters)
        );
        wanted.insert(id.clone());
        if lock(&slot.sent).contains(&id) || !shared.is_leader() {
            continue;
        }
        let r = ObjectRef::new(
            crate::api::API_VERSION,
            "Instance",
            Some(&inst.namespace),
            &inst.name,
        );
        let Some(live) = cluster
            .get_opt(&r)
            .await?
            .and_then(|v| serde_json::from_value::<Instance>(v).ok())
        else {
            continue;
        };
        let run =
            crate::gitops::rollout::plan_run(&live, &inst.operator_version, &inst.parameters, plan);
        if run == crate::gitops::rollout::PlanRun::NotRun {
            info!(cluster = %slot.info.name, instance = %key, %plan, "running the plan of a plan gate");
            let patch = json!({
                "apiVersion": crate::api::API_VERSION,
                "kind": "Instance",
                "metadata": {
                    "name": inst.name,
                    "namespace": inst.namespace,
                    "resourceVersion": live.metadata.resource_version,
                },
                "spec": {"planExecution": {"planName": plan, "uid": null, "status": null}},
            });
            match cluster.merge_patch(&patch).await {
                Ok(_) => {}
                // Changed since the GET: the next pass looks again.
                Err(e) if e.kind() == crate::cluster::ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        lock(&slot.sent).insert(id);
    }
    for (key, to) in &reverts {
        let Some(good) = to.state.instances.get(key) else {
            continue;
        };
        let id = format!(
            "{key}|revert|{}",
            super::planner::spec_id_of(&good.operator_version, &good.parameters)
        );
        wanted.insert(id.clone());
        if lock(&slot.sent).contains(&id) || !shared.is_leader() {
            continue;
        }
        warn!(cluster = %slot.info.name, instance = %key, revision = short(&to.state.revision), plan = to.plan.as_deref().unwrap_or("(its trigger plan)"), "reverting to the last good spec");
        apply_instance_with(
            cluster,
            &to.state,
            good,
            &shared.config().control_plane,
            to.plan.as_deref(),
        )
        .await?;
        lock(&slot.sent).insert(id);
    }
    lock(&slot.sent).retain(|id| wanted.contains(id));
    Ok(())
}

/// The labels recording who owns a GitOps Instance.
fn ownership_labels(inst: &DesiredInstance, control_plane: &str) -> Value {
    let mut labels = json!({
        MANAGED_LABEL: FIELD_MANAGER,
        crate::engine::objects::CONTROL_PLANE_LABEL: control_plane,
        "kudo.dev/operator": inst.framework,
    });
    if !inst.repository.is_empty() {
        labels[crate::engine::objects::REPOSITORY_LABEL] = json!(inst.repository);
    }
    labels
}

/// [`apply_instance_as`] for the default control plane.
pub async fn apply_instance(
    cluster: &Cluster,
    d: &DesiredState,
    inst: &DesiredInstance,
) -> Result<(), ClusterError> {
    apply_instance_as(
        cluster,
        d,
        inst,
        crate::engine::objects::DEFAULT_CONTROL_PLANE,
    )
    .await
}

/// Server-side applies what one desired instance needs on a cluster: its namespace, its
/// framework's Operator and OperatorVersion, and the Instance spec, labelled with its
/// owners (control plane, repository).
pub async fn apply_instance_as(
    cluster: &Cluster,
    d: &DesiredState,
    inst: &DesiredInstance,
    control_plane: &str,
) -> Result<(), ClusterError> {
    apply_instance_with(cluster, d, inst, control_plane, None).await
}

/// [`apply_instance_as`], and with `plan` the engine runs that plan for the new spec instead
/// of the one its triggers pick (a manual trigger in the same write; a version change still
/// runs the upgrade plan, as in KUDO).
async fn apply_instance_with(
    cluster: &Cluster,
    d: &DesiredState,
    inst: &DesiredInstance,
    control_plane: &str,
    plan: Option<&str>,
) -> Result<(), ClusterError> {
    info!(cluster = %cluster.name(), instance = %inst.key(), revision = short(&d.revision), "applying instance spec");
    for obj in instance_objects(d, inst, control_plane, plan) {
        cluster.apply_as(&obj, FIELD_MANAGER).await?;
    }
    Ok(())
}

/// What one desired instance needs on a cluster, in the order to apply it: its namespace,
/// its framework's Operator and OperatorVersion, and the Instance spec labelled with its
/// owners (pure: an agent cluster gets the same list through the management cluster).
pub(crate) fn instance_objects(
    d: &DesiredState,
    inst: &DesiredInstance,
    control_plane: &str,
    plan: Option<&str>,
) -> Vec<Value> {
    let rev = &d.revision;
    let mut out = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": inst.namespace}}),
    ];
    if let Some(fw) = d
        .frameworks
        .get(&(inst.framework.clone(), inst.version.clone()))
    {
        for obj in [
            serde_json::to_value(&fw.operator).unwrap_or_default(),
            serde_json::to_value(&fw.operator_version).unwrap_or_default(),
        ] {
            let mut obj = obj;
            obj["metadata"]["namespace"] = json!(inst.namespace);
            obj["metadata"]["annotations"][REVISION_ANNOTATION] = json!(rev);
            strip_empty_status(&mut obj);
            out.push(obj);
        }
    }
    let mut body = json!({
        "apiVersion": crate::api::API_VERSION,
        "kind": "Instance",
        "metadata": {
            "name": inst.name,
            "namespace": inst.namespace,
            "labels": ownership_labels(inst, control_plane),
            "annotations": {
                REVISION_ANNOTATION: rev,
                crate::engine::drift::SELF_HEAL_ANNOTATION: inst.self_heal.to_string(),
                crate::gitops::ownership::DELETION_PROTECTION_ANNOTATION: inst.deletion_protection.to_string(),
            },
        },
        "spec": {
            "operatorVersion": {"name": inst.operator_version},
            "parameters": inst.parameters,
        },
    });
    if let Some(plan) = plan {
        body["spec"]["planExecution"] = json!({"planName": plan, "uid": ""});
    }
    out.push(body);
    out
}

/// A `--dry-run` pass on one cluster: observe (read only) and record what a real pass would
/// change, as [`crate::gitops::diff::instance_changes`] sees it.
async fn dry_run_work(shared: &Arc<Shared>, slot: &ClusterSlot) -> Result<(), ClusterError> {
    let listed = slot
        .cluster
        .list(
            &[(crate::api::API_VERSION, "Instance")],
            None,
            &format!("{MANAGED_LABEL}={FIELD_MANAGER}"),
        )
        .await;
    let values = match listed {
        Ok(v) => v,
        // No kudo CRDs yet: nothing of ours lives there.
        Err(e) if e.kind() == crate::cluster::ErrorKind::UnknownKind => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut live = BTreeMap::new();
    for v in values {
        if let Ok(instance) = serde_json::from_value::<Instance>(v) {
            // Another control plane's Instances are none of this one's business.
            let owner = Seen::new(instance.clone(), &shared.config().control_plane).owner;
            if matches!(owner, crate::gitops::ownership::Owner::Foreign(_)) {
                continue;
            }
            let key = format!(
                "{}/{}",
                instance.metadata.namespace.clone().unwrap_or_default(),
                instance.metadata.name.clone().unwrap_or_default()
            );
            live.insert(key, instance);
        }
    }
    let desired = shared
        .desired
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let pending: Vec<String> = match &desired {
        Some(d) => crate::gitops::diff::instance_changes(d, &slot.info.name, &live)
            .iter()
            .map(|c| {
                crate::gitops::diff::describe_change(c)
                    .trim_end()
                    .to_string()
            })
            .collect(),
        None => Vec::new(),
    };
    {
        let mut st = lock(&slot.status);
        if st.pending_changes != pending {
            for change in &pending {
                info!(cluster = %slot.info.name, %change, "dry run: would apply");
            }
        }
        st.pending_changes = pending;
    }
    let seen = live
        .into_iter()
        .map(|(k, instance)| (k, Seen::new(instance, &shared.config().control_plane)))
        .collect();
    *lock(&slot.seen) = Some(Arc::new(seen));
    shared.request_plan();
    Ok(())
}

fn strip_empty_status(obj: &mut Value) {
    if let Some(map) = obj.as_object_mut() {
        map.remove("status");
    }
}
