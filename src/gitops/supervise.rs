//! The daemon never dies silently: its core tasks (the planner, each cluster's worker and
//! engine) run under a supervisor that restarts a task that ends or panics before the daemon
//! stops, with backoff, and logs and counts each restart. `/readyz` is red while any of them
//! is down ([`Health::down`]). Shutdown waits for every supervised task ([`Health::join`]),
//! so no engine writes after [`super::serve::Daemon::shutdown`] returns.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// How long shutdown waits for one supervised task before giving up on it.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A task that ran this long before stopping starts its backoff from the beginning again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// `planner`, `worker` or `engine` (bounded).
    pub component: &'static str,
    /// The cluster a worker or engine serves (empty for the planner).
    pub cluster: String,
}

/// Whether each supervised task runs, and the restart counters.
pub struct Health {
    components: Mutex<BTreeMap<String, bool>>,
    /// Each supervisor's task, by component name (a finished one before shutdown is down).
    handles: Mutex<Vec<(String, JoinHandle<()>)>>,
    restarts: Family<ComponentLabels, Counter>,
    up: Family<ComponentLabels, Gauge>,
}

fn display(labels: &ComponentLabels) -> String {
    if labels.cluster.is_empty() {
        labels.component.to_string()
    } else {
        format!("{} {}", labels.component, labels.cluster)
    }
}

/// Delay before restart number `n` (1-based): 100 ms doubling, capped at 30 s.
pub fn restart_delay(n: u32) -> Duration {
    let exp = n.saturating_sub(1).min(10);
    Duration::from_millis(100u64 << exp).min(Duration::from_secs(30))
}

impl Health {
    /// Registers `kudo_component_restarts_total` and `kudo_component_up`.
    pub fn register(registry: &mut Registry) -> Arc<Health> {
        let h = Health {
            components: Mutex::new(BTreeMap::new()),
            handles: Mutex::new(Vec::new()),
            restarts: Family::default(),
            up: Family::default(),
        };
        registry.register(
            "component_restarts",
            "Restarts of a core task of kudo serve after it stopped or panicked",
            h.restarts.clone(),
        );
        registry.register(
            "component_up",
            "1 while a core task of kudo serve runs, 0 while it waits to be restarted",
            h.up.clone(),
        );
        Arc::new(h)
    }

    /// Core tasks that are down (stopped or panicked, waiting for their restart), or whose
    /// supervisor itself ended.
    pub fn down(&self) -> Vec<String> {
        let mut down: Vec<String> = lock(&self.components)
            .iter()
            .filter(|(_, up)| !**up)
            .map(|(name, _)| name.clone())
            .collect();
        for (name, h) in lock(&self.handles).iter() {
            if h.is_finished() && !down.contains(name) {
                down.push(name.clone());
            }
        }
        down
    }

    fn set(&self, labels: &ComponentLabels, up: bool) {
        lock(&self.components).insert(display(labels), up);
        self.up.get_or_create(labels).set(i64::from(up));
    }

    /// Runs `make()`'s future under supervision until `stop` turns true; `false` (and
    /// nothing started) when a task of that name is already supervised.
    pub fn spawn<F, Fut>(
        self: &Arc<Self>,
        component: &'static str,
        cluster: &str,
        stop: watch::Receiver<bool>,
        make: F,
    ) -> bool
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let labels = ComponentLabels {
            component,
            cluster: cluster.to_string(),
        };
        let name = display(&labels);
        {
            let mut components = lock(&self.components);
            if components.contains_key(&name) {
                return false;
            }
            components.insert(name.clone(), true);
        }
        let handle = tokio::spawn(supervise(self.clone(), labels, stop, make));
        lock(&self.handles).push((name, handle));
        true
    }

    /// Forgets the tasks of a cluster taken out of the config (after its stop signal) and
    /// waits for them to end, so a cluster added back under that name never has two engines.
    pub async fn retire(&self, cluster: &str) {
        let suffix = format!(" {cluster}");
        let retired: Vec<(String, JoinHandle<()>)> = {
            let mut handles = lock(&self.handles);
            let (gone, kept) = std::mem::take(&mut *handles)
                .into_iter()
                .partition(|(name, _)| name.ends_with(&suffix));
            *handles = kept;
            gone
        };
        lock(&self.components).retain(|name, _| !name.ends_with(&suffix));
        for component in ["worker", "engine"] {
            self.up.remove(&ComponentLabels {
                component,
                cluster: cluster.to_string(),
            });
        }
        for (name, h) in retired {
            if tokio::time::timeout(JOIN_TIMEOUT, h).await.is_err() {
                warn!(component = %name, "a retired task did not stop within {JOIN_TIMEOUT:?}");
            }
        }
    }

    /// Waits for every supervised task (after the stop signal), each for at most
    /// [`JOIN_TIMEOUT`].
    /// Returns the tasks that did not stop in time (abandoned; none when the stop signal
    /// reached every task).
    pub async fn join(&self) -> Vec<String> {
        let mut late = Vec::new();
        loop {
            let handles: Vec<_> = std::mem::take(&mut *lock(&self.handles));
            if handles.is_empty() {
                return late;
            }
            for (name, h) in handles {
                if tokio::time::timeout(JOIN_TIMEOUT, h).await.is_err() {
                    warn!(component = %name, "a supervised task did not stop within {JOIN_TIMEOUT:?}");
                    late.push(name);
                }
            }
        }
    }
}

async fn supervise<F, Fut>(
    health: Arc<Health>,
    labels: ComponentLabels,
    mut stop: watch::Receiver<bool>,
    mut make: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let name = display(&labels);
    let mut restarts: u32 = 0;
    loop {
        // Spawned after the stop (a worker that was still starting): nothing to run.
        if *stop.borrow() {
            return;
        }
        health.set(&labels, true);
        let started = Instant::now();
        // Spawned, so that a panic ends only this run and is seen here.
        let ended = tokio::spawn(make()).await;
        if *stop.borrow() {
            return;
        }
        health.set(&labels, false);
        match ended {
            Ok(()) => error!(component = %name, "core task stopped unexpectedly; restarting it"),
            Err(e) if e.is_panic() => {
                let message = crate::manager::guard::panic_message(e.into_panic().as_ref());
                error!(component = %name, panic = %message, "core task panicked; restarting it");
            }
            Err(e) => error!(component = %name, error = %e, "core task ended; restarting it"),
        }
        health.restarts.get_or_create(&labels).inc();
        restarts = if started.elapsed() >= HEALTHY_RUN {
            1
        } else {
            restarts.saturating_add(1)
        };
        tokio::select! {
            _ = tokio::time::sleep(restart_delay(restarts)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        info!(component = %name, restarts, "restarting core task");
    }
}

/// One cluster's engine controller, as the supervisor runs it: with leader election it
/// starts only while this replica leads and stops as soon as it does not (the `leading`
/// watch turns false once the lease was not renewed within `renewDeadline`), so no engine
/// write outlives the lease.
pub async fn engine(
    ctx: Arc<crate::manager::reconcile::Context>,
    mut stop: watch::Receiver<bool>,
    leading: Option<watch::Receiver<bool>>,
) {
    if let Some(mut l) = leading.clone() {
        tokio::select! {
            led = l.wait_for(|v| *v) => if led.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
    let cluster = ctx.cluster.name().to_string();
    let cluster_name = cluster.clone();
    let mut stopped = stop.clone();
    let shutdown = async move {
        match leading {
            Some(mut l) => tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = l.wait_for(|v| !*v) => {
                    warn!(%cluster, "no longer allowed to write here (leadership or the cluster's claim ended): stopping the engine");
                }
            },
            None => {
                let _ = stop.wait_for(|s| *s).await;
            }
        }
    };
    let run = crate::manager::controller::run_with(ctx, None, shutdown);
    tokio::pin!(run);
    tokio::select! {
        _ = &mut run => {}
        () = async { let _ = stopped.wait_for(|s| *s).await; } => {
            // The controller drains what runs; bounded, since a reconcile waiting on a slow
            // cluster would hold the whole shutdown. Dropped after that, like a crash (the
            // engine is restart-safe: the next start resumes from the Instance).
            if tokio::time::timeout(ENGINE_DRAIN, &mut run).await.is_err() {
                warn!(%cluster_name, "engine still draining after {ENGINE_DRAIN:?}; stopped");
            }
        }
    }
}

/// A sharded member's engine for one cluster: runs (with a fresh context from `make`) while
/// `owns` is true, stops when it turns false, and starts again when the claim comes back;
/// ends only on `stop`. (Its writes are fenced per request by the claim gate, so the drain
/// of a stopping engine cannot write after the claim ended.)
pub async fn claimed_engine(
    make: impl Fn() -> Arc<crate::manager::reconcile::Context>,
    mut stop: watch::Receiver<bool>,
    mut owns: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            owned = owns.wait_for(|v| *v) => if owned.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        engine(make(), stop.clone(), Some(owns.clone())).await;
        if *stop.borrow() {
            return;
        }
    }
}

/// How long a stopping engine may finish its running reconciles.
pub const ENGINE_DRAIN: Duration = Duration::from_secs(5);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn restart_backoff_doubles_and_is_capped() {
        assert_eq!(restart_delay(1), Duration::from_millis(100));
        assert_eq!(restart_delay(2), Duration::from_millis(200));
        assert_eq!(restart_delay(50), Duration::from_secs(30));
    }

    /// A task that panics twice is restarted each time (counted, down in between), runs on
    /// the third start, and shutdown waits for it.
    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_joined_on_shutdown() {
        let mut registry = Registry::with_prefix("kudo");
        let health = Health::register(&mut registry);
        let (stop_tx, stop) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let (running_tx, mut running) = watch::channel(false);
        let finished = Arc::new(AtomicU32::new(0));
        let (r, f, s) = (runs.clone(), finished.clone(), stop.clone());
        assert!(health.spawn("engine", "c1", stop.clone(), move || {
            let n = r.fetch_add(1, Ordering::SeqCst) + 1;
            let (running_tx, f, mut s) = (running_tx.clone(), f.clone(), s.clone());
            async move {
                if n < 3 {
                    panic!("run {n} fails");
                }
                running_tx.send_replace(true);
                let _ = s.wait_for(|v| *v).await;
                f.fetch_add(1, Ordering::SeqCst);
            }
        }));
        assert!(
            !health.spawn("engine", "c1", stop.clone(), || async {}),
            "one supervisor per task"
        );
        running.wait_for(|v| *v).await.expect("third run starts");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(health.down().is_empty(), "{:?}", health.down());
        let text = crate::metrics::encode(&registry);
        assert!(
            text.contains("kudo_component_restarts_total{component=\"engine\",cluster=\"c1\"} 2"),
            "{text}"
        );
        stop_tx.send_replace(true);
        health.join().await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "shutdown waited for the task"
        );
    }

    #[tokio::test]
    async fn a_stopped_task_is_down_until_restarted() {
        let mut registry = Registry::with_prefix("kudo");
        let health = Health::register(&mut registry);
        let (stop_tx, stop) = watch::channel(false);
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        // Ends at once every time: down between restarts.
        health.spawn("planner", "", stop, move || {
            r.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while health.down().is_empty() && Instant::now() < deadline {
            tokio::task::yield_now().await;
        }
        assert_eq!(health.down(), vec!["planner".to_string()]);
        while runs.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(runs.load(Ordering::SeqCst) >= 2, "restarted");
        stop_tx.send_replace(true);
        health.join().await;
    }
}
