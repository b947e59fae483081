//! A panic inside one reconcile (a template function, a bug) must not take the cluster's
//! whole engine with it: kube-runtime polls every reconcile inside the controller's own
//! future, so an uncaught panic ends that future and with it every Instance's plans on the
//! cluster. [`reconcile_guarded`] catches it, logs it, counts it (`category="panic"`),
//! reports it on the Instance (condition [`PANIC_CONDITION`]) and has that Instance retried
//! with backoff while the others carry on.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::json;
use tracing::{error, info, warn};

use crate::api::{Instance, OperatorVersion};
use crate::metrics::engine::{ErrorLabels, ReconcileLabels, ReconcileResult};

use super::reconcile::{Context, ReconcileError, reconcile};
use crate::engine::backoff::retry_delay;

/// Instance condition set while its reconcile panics (status `True`), `False` once a
/// reconcile succeeds again.
pub const PANIC_CONDITION: &str = "ReconcilePanicked";
/// Metric category (`kudo_reconcile_errors_total{category}`) of a caught panic.
pub const PANIC_CATEGORY: &str = "panic";

/// A reconcile error, or a panic caught in one.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("cluster {cluster}: instance {namespace}/{name}: reconcile panicked: {message}")]
    Panicked {
        cluster: String,
        namespace: String,
        name: String,
        message: String,
    },
}

impl GuardError {
    pub fn category(&self) -> &'static str {
        match self {
            GuardError::Reconcile(e) => e.category(),
            GuardError::Panicked { .. } => PANIC_CATEGORY,
        }
    }
}

/// Consecutive panics per instance (`namespace/name`), for the retry backoff.
#[derive(Debug, Default)]
pub struct Panics(Mutex<BTreeMap<String, u32>>);

impl Panics {
    fn record(&self, key: &str, panicked: bool) -> u32 {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if panicked {
            let n = m.entry(key.to_string()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            m.remove(key);
            0
        }
    }

    /// How long to wait before reconciling a panicking instance again (doubling from 1 s,
    /// capped at 5 minutes, as failing steps are retried).
    pub fn delay(&self, key: &str) -> Duration {
        let n = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(1);
        retry_delay(n)
    }
}

/// The message a panic was raised with (`panic!("...")` or a formatted one).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Runs `fut`, turning a panic while polling it into `Err(message)`.
pub async fn catch_panic<F: Future>(fut: F) -> Result<F::Output, String> {
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map_err(|payload| panic_message(payload.as_ref()))
}

fn key_of(inst: &Instance) -> String {
    format!(
        "{}/{}",
        inst.namespace().unwrap_or_default(),
        inst.name_any()
    )
}

/// [`reconcile`], with a panic caught and reported instead of ending the controller.
pub async fn reconcile_guarded(
    inst: Arc<Instance>,
    ctx: Arc<Context>,
    panics: Arc<Panics>,
) -> Result<Action, GuardError> {
    guard(inst.clone(), ctx.clone(), panics, reconcile(inst, ctx)).await
}

/// Runs one reconcile of `inst` (`attempt`), catching a panic: logged, counted
/// (`kudo_reconcile_errors_total{category="panic"}`), reported on the Instance as the
/// `ReconcilePanicked` condition (sensitive values scrubbed), and retried with backoff. A
/// clean pass afterwards clears the condition.
pub async fn guard<F>(
    inst: Arc<Instance>,
    ctx: Arc<Context>,
    panics: Arc<Panics>,
    attempt: F,
) -> Result<Action, GuardError>
where
    F: Future<Output = Result<Action, super::reconcile::ReconcileError>>,
{
    let key = key_of(&inst);
    match catch_panic(attempt).await {
        Ok(result) => {
            panics.record(&key, false);
            if result.is_ok() && has_panic_condition(&inst) {
                set_panic_condition(&inst, &ctx, None).await;
            }
            Ok(result?)
        }
        Err(message) => {
            let attempt = panics.record(&key, true);
            let message = scrub_sensitive(&inst, &ctx, &message).await;
            let cluster = ctx.cluster.name().to_string();
            error!(
                %cluster,
                instance = %key,
                panic = %message,
                attempt,
                "reconcile panicked; the engine carries on and retries this instance with backoff"
            );
            ctx.metrics
                .reconciles
                .get_or_create(&ReconcileLabels {
                    cluster: cluster.clone(),
                    result: ReconcileResult::error,
                })
                .inc();
            ctx.metrics
                .reconcile_errors
                .get_or_create(&ErrorLabels {
                    cluster: cluster.clone(),
                    category: PANIC_CATEGORY,
                })
                .inc();
            set_panic_condition(&inst, &ctx, Some(&message)).await;
            Err(GuardError::Panicked {
                cluster,
                namespace: inst.namespace().unwrap_or_default(),
                name: inst.name_any(),
                message,
            })
        }
    }
}

/// When to look at an instance again after an error: a panicking one with backoff, other
/// errors after 5 s (as before).
pub fn error_action(inst: &Instance, error: &GuardError, panics: &Panics) -> Action {
    match error {
        GuardError::Panicked { .. } => Action::requeue(panics.delay(&key_of(inst))),
        GuardError::Reconcile(e) => {
            warn!(
                instance = %inst.name_any(),
                category = e.category(),
                error = %e,
                "reconcile failed"
            );
            Action::requeue(Duration::from_secs(5))
        }
    }
}

fn has_panic_condition(inst: &Instance) -> bool {
    inst.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == PANIC_CONDITION && c.status == "True")
    })
}

/// A panic message names whatever the panicking code held, possibly a sensitive
/// parameter's value: those are scrubbed (all parameter values when the OperatorVersion
/// cannot be read to tell which are sensitive).
async fn scrub_sensitive(inst: &Instance, ctx: &Context, message: &str) -> String {
    use crate::package::redact;
    let ov_name = inst.spec.operator_version.name.clone().unwrap_or_default();
    let ns = inst
        .spec
        .operator_version
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| inst.namespace().unwrap_or_default());
    let sensitive = match ctx
        .cluster
        .get_resource_opt::<OperatorVersion>(&ns, &ov_name)
        .await
    {
        Ok(Some(ov)) => redact::sensitive_names(&ov.spec.parameters),
        _ => inst.spec.parameters.keys().cloned().collect(),
    };
    redact::scrub(
        message,
        &redact::secret_values(&inst.spec.parameters, &sensitive),
    )
}

/// Sets (`Some(message)`) or clears (`None`) the panic condition on the live Instance.
/// Best effort: a cluster that cannot take the write still has the log and the metric.
async fn set_panic_condition(inst: &Instance, ctx: &Context, message: Option<&str>) {
    let namespace = inst.namespace().unwrap_or_default();
    let name = inst.name_any();
    let live = match ctx
        .cluster
        .get_resource_opt::<Instance>(&namespace, &name)
        .await
    {
        Ok(Some(live)) => live,
        Ok(None) => return,
        Err(e) => {
            warn!(instance = %key_of(inst), error = %e, "cannot record the panic on the instance");
            return;
        }
    };
    let mut status = live.status.unwrap_or_default();
    let (value, reason, text) = match message {
        Some(m) => ("True", "Panic", format!("reconcile panicked: {m}")),
        None => (
            "False",
            "Recovered",
            "the last reconcile finished without a panic".to_string(),
        ),
    };
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == PANIC_CONDITION)
    {
        Some(c) => {
            if c.status == value && c.message == text {
                return;
            }
            if c.status != value {
                c.last_transition_time = Some(now);
            }
            c.status = value.into();
            c.reason = reason.into();
            c.message = text;
        }
        None if message.is_none() => return,
        None => status.conditions.push(crate::api::Condition {
            type_: PANIC_CONDITION.into(),
            status: value.into(),
            reason: reason.into(),
            message: text,
            last_transition_time: Some(now),
            observed_generation: None,
        }),
    }
    let patch = json!({"status": {"conditions": status.conditions}});
    match ctx
        .cluster
        .merge_patch_resource_status::<Instance>(&namespace, &name, &patch)
        .await
    {
        Ok(_) if message.is_none() => {
            info!(instance = %key_of(inst), "reconcile recovered from its panic");
        }
        Ok(_) => {}
        Err(e) => {
            warn!(instance = %key_of(inst), error = %e, "cannot record the panic on the instance");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_future_is_caught_with_its_message() {
        let caught = catch_panic(async {
            tokio::task::yield_now().await;
            let v: Vec<u8> = Vec::new();
            if v.is_empty() {
                panic!("boom at step {}", 3);
            }
            1
        })
        .await;
        assert_eq!(caught, Err("boom at step 3".to_string()));
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
        let literal = catch_panic(async { std::panic::panic_any(5_u8) }).await;
        assert_eq!(literal, Err("(a panic without a message)".to_string()));
    }

    #[test]
    fn panicking_instances_back_off_and_recover() {
        let p = Panics::default();
        assert_eq!(p.record("a/x", true), 1);
        assert_eq!(p.delay("a/x"), Duration::from_secs(1));
        assert_eq!(p.record("a/x", true), 2);
        assert_eq!(p.delay("a/x"), Duration::from_secs(2));
        assert_eq!(
            p.delay("b/y"),
            Duration::from_secs(1),
            "others are not affected"
        );
        p.record("a/x", false);
        assert_eq!(p.delay("a/x"), Duration::from_secs(1));
    }
}
