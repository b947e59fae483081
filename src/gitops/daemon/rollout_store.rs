//! Where the rollout state the clusters cannot tell (approvals, pauses, when a stage finished
//! or a gate started: [`Saved`]) is kept, so that it survives restarts and leader handovers.
//!
//! - Without leader election: `rollout-state.json` under `cacheDir`, read at start and
//!   written by the planner after each pass that changed it (a replica is alone with its file).
//! - With leader election: the ConfigMap [`CONFIGMAP_NAME`] beside the Lease (same cluster,
//!   same namespace), key [`DATA_KEY`]. Every replica reads it at start (a corrupt one stops
//!   the start, as a corrupt file does), and reads it again each time it becomes the leader:
//!   a standby's memory is as old as its start, and acting on it would resume a rollout paused
//!   since. Until that read succeeded the replica assigns no spec to any cluster, writes no
//!   state and refuses rollout actions. Writes happen in the [`keeper`] task (the planner's
//!   pass is synchronous code under locks and never waits on an API server), only when the
//!   state changed, through the leader-gated client (a replica whose lease lapsed cannot
//!   write), and with the last read `resourceVersion` (a write over a change this replica
//!   has not seen fails and is logged instead of silently overwriting it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::rollouts::{self, Saved};
use super::state::{Shared, lock};
use super::{FIELD_MANAGER, ServeError};
use crate::gitops::config::Config;

/// The ConfigMap holding the rollout state when leader election is configured.
pub const CONFIGMAP_NAME: &str = "kudo-rollout-state";
/// Its data key: the same JSON as the file.
pub const DATA_KEY: &str = "rollout-state.json";
/// Upper bound of one ConfigMap request (a hung API server must not stall the keeper forever).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// A failure to read or write the rollout state's ConfigMap; each names it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "rollout state: ConfigMap {namespace}/{name}, key {key}: {reason} (approvals and pauses; fix the key or delete the ConfigMap)"
    )]
    Corrupt {
        namespace: String,
        name: String,
        key: String,
        reason: String,
    },
    #[error("rollout state: ConfigMap {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("rollout state: ConfigMap {namespace}/{name}: no answer within {timeout:?}")]
    Timeout {
        namespace: String,
        name: String,
        timeout: Duration,
    },
    #[error(
        "rollout state: ConfigMap {namespace}/{name} changed since this replica read it (resourceVersion {expected}); not overwritten now, written over it on the next pass"
    )]
    Conflict {
        namespace: String,
        name: String,
        expected: String,
    },
    #[error("rollout state: ConfigMap {namespace}/{name}: cannot build a client: {source}")]
    Client {
        namespace: String,
        name: String,
        #[source]
        source: crate::cluster::ClusterError,
    },
    #[error("rollout state: ConfigMap {namespace}/{name}: cannot encode the state: {source}")]
    Encode {
        namespace: String,
        name: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The rollout state's ConfigMap, through one client, with the `resourceVersion` this
/// replica last read or wrote (`None`: it did not exist then).
pub struct ConfigMapStore {
    api: Api<ConfigMap>,
    namespace: String,
    resource_version: Option<String>,
}

impl ConfigMapStore {
    /// The ConfigMap [`CONFIGMAP_NAME`] in `namespace`, through `client` (the leader-gated
    /// one in the daemon).
    pub fn new(client: kube::Client, namespace: &str) -> ConfigMapStore {
        ConfigMapStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            resource_version: None,
        }
    }

    /// `namespace/name`, for logs and messages.
    pub fn object(&self) -> String {
        format!("{}/{CONFIGMAP_NAME}", self.namespace)
    }

    fn api_error(&self, source: kube::Error) -> StoreError {
        StoreError::Api {
            namespace: self.namespace.clone(),
            name: CONFIGMAP_NAME.to_string(),
            source,
        }
    }

    fn timeout(&self) -> StoreError {
        StoreError::Timeout {
            namespace: self.namespace.clone(),
            name: CONFIGMAP_NAME.to_string(),
            timeout: REQUEST_TIMEOUT,
        }
    }

    /// Reads the state. A missing ConfigMap (or key) is an empty state; a key that does not
    /// parse is [`StoreError::Corrupt`]: dropping it would resume paused rollouts.
    pub async fn load(&mut self) -> Result<Saved, StoreError> {
        let cm = tokio::time::timeout(REQUEST_TIMEOUT, self.api.get_opt(CONFIGMAP_NAME))
            .await
            .map_err(|_| self.timeout())?
            .map_err(|e| self.api_error(e))?;
        let Some(cm) = cm else {
            self.resource_version = None;
            return Ok(Saved::default());
        };
        self.resource_version = cm.metadata.resource_version.clone();
        match cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) {
            None => Ok(Saved::default()),
            Some(text) => serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
                namespace: self.namespace.clone(),
                name: CONFIGMAP_NAME.to_string(),
                key: DATA_KEY.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Writes `saved`: creates the ConfigMap when this replica saw none, else replaces the
    /// version it last read or wrote. On a conflict (someone else created or changed it) the
    /// current `resourceVersion` is taken, so that the next write (the next pass) goes through:
    /// the leader's state is what its planner acts on.
    pub async fn store(&mut self, saved: &Saved) -> Result<(), StoreError> {
        // Compact: a ConfigMap holds at most 1 MiB.
        let text = serde_json::to_string(saved).map_err(|source| StoreError::Encode {
            namespace: self.namespace.clone(),
            name: CONFIGMAP_NAME.to_string(),
            source,
        })?;
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIGMAP_NAME.to_string()),
                namespace: Some(self.namespace.clone()),
                resource_version: self.resource_version.clone(),
                labels: Some(
                    [(
                        "app.kubernetes.io/managed-by".to_string(),
                        "kudo".to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            data: Some([(DATA_KEY.to_string(), text)].into()),
            ..Default::default()
        };
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..Default::default()
        };
        let request = async {
            match &self.resource_version {
                None => self.api.create(&params, &cm).await,
                Some(_) => self.api.replace(CONFIGMAP_NAME, &params, &cm).await,
            }
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, request)
            .await
            .map_err(|_| self.timeout())?;
        match result {
            Ok(written) => {
                self.resource_version = written.metadata.resource_version;
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let expected = self
                    .resource_version
                    .clone()
                    .unwrap_or_else(|| "none: it did not exist".to_string());
                // Take the current version for the next write; its content stays unread.
                if let Ok(Ok(current)) =
                    tokio::time::timeout(REQUEST_TIMEOUT, self.api.get_opt(CONFIGMAP_NAME)).await
                {
                    self.resource_version = current.and_then(|c| c.metadata.resource_version);
                }
                Err(StoreError::Conflict {
                    namespace: self.namespace.clone(),
                    name: CONFIGMAP_NAME.to_string(),
                    expected,
                })
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                // Deleted since it was read: create it on the next write.
                self.resource_version = None;
                Err(self.api_error(kube::Error::Api(status)))
            }
            Err(e) => Err(self.api_error(e)),
        }
    }
}

/// How the daemon writes the rollout state (see the module doc).
pub(super) enum Sink {
    /// `cacheDir/rollout-state.json`, written in the planner's pass.
    File(PathBuf),
    /// The ConfigMap (named for messages): the [`keeper`] task writes the latest state sent.
    Keeper {
        object: String,
        tx: watch::Sender<Option<Saved>>,
    },
    /// Read at start, never written (`--dry-run` with leader election: the state is the
    /// leader's).
    ReadOnly,
}

/// Where the state lives, what it held at start, and the keeper's part when it is a ConfigMap.
pub(super) struct Opened {
    pub(super) saved: Saved,
    pub(super) sink: Sink,
    /// Whether the memory read now is the one to act on (see [`Shared::rollout_state_current`]).
    pub(super) current: bool,
    pub(super) keeper: Option<(ConfigMapStore, watch::Receiver<Option<Saved>>)>,
}

/// Chooses the store (the ConfigMap with leader election, else the file) and reads it. A
/// state that does not parse stops the start, naming the file or the ConfigMap and key. An
/// unreachable ConfigMap does not: every replica reads it again when it becomes the leader,
/// and plans no rollout until that read succeeded.
pub(super) async fn open(
    config: &Config,
    leading: Option<&watch::Receiver<bool>>,
    dry_run: bool,
) -> Result<Opened, ServeError> {
    let Some(le) = &config.leader_election else {
        let path = config.cache_dir.join(rollouts::STATE_FILE);
        let saved = rollouts::load(&path).map_err(ServeError::RolloutState)?;
        return Ok(Opened {
            saved,
            sink: Sink::File(path),
            current: true,
            keeper: None,
        });
    };
    let client = match crate::gitops::leader::election_client(le).await {
        Ok(client) => client,
        // A dry run only shows the state; it runs where the lease's cluster may be unknown.
        Err(e) if dry_run => {
            warn!(error = %e, "dry run: cannot reach the rollout state's ConfigMap; showing rollouts without it");
            return Ok(Opened {
                saved: Saved::default(),
                sink: Sink::ReadOnly,
                current: true,
                keeper: None,
            });
        }
        Err(source) => {
            return Err(StoreError::Client {
                namespace: le.namespace.clone(),
                name: CONFIGMAP_NAME.to_string(),
                source,
            }
            .into());
        }
    };
    let client = match leading {
        Some(l) => crate::gitops::leader::leader_gated_client(client, l.clone()),
        None => client,
    };
    let mut store = ConfigMapStore::new(client, &le.namespace);
    let saved = match store.load().await {
        Ok(saved) => saved,
        Err(e @ StoreError::Corrupt { .. }) => return Err(e.into()),
        Err(e) => {
            warn!(error = %e, "cannot read the rollout state now; it is read again when this replica leads");
            Saved::default()
        }
    };
    if dry_run {
        return Ok(Opened {
            saved,
            sink: Sink::ReadOnly,
            current: true,
            keeper: None,
        });
    }
    let (tx, rx) = watch::channel(None);
    Ok(Opened {
        saved,
        sink: Sink::Keeper {
            object: store.object(),
            tx,
        },
        current: false,
        keeper: Some((store, rx)),
    })
}

impl Shared {
    /// Whether this replica's rollout memory is the one to act on: always with the file; with
    /// the ConfigMap, once it was read in this leadership term. Until then the planner
    /// assigns no spec, no state is written and rollout actions are refused.
    pub(super) fn rollout_state_current(&self) -> bool {
        self.rollout_current
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Refuses a rollout action on a replica whose state is not current (a standby): what it
    /// changed would be dropped when it next reads the state.
    pub(super) fn rollout_writable(&self) -> Result<(), rollouts::RolloutError> {
        if self.rollout_state_current() {
            return Ok(());
        }
        let object = match &self.rollout_sink {
            Sink::Keeper { object, .. } => format!("ConfigMap {object}"),
            Sink::File(path) => path.display().to_string(),
            Sink::ReadOnly => "the leader's ConfigMap".to_string(),
        };
        Err(rollouts::RolloutError::NotLeader(format!(
            "this replica does not lead (or has not read the rollout state from {object} yet): send rollout actions to the leader"
        )))
    }

    /// Makes `saved` the running state. Under the pass lock, so that no planner pass that
    /// started from the old memory publishes it over this one.
    pub(super) fn install_rollout_state(&self, saved: Saved) {
        let _one_at_a_time = lock(&self.pass_lock);
        *lock(&self.rollout_memory) = saved.rollouts.clone();
        *lock(&self.rollout_pauses) = saved.pauses.clone();
        *lock(&self.rollout_saved) = Some(saved);
    }

    fn set_rollout_current(&self, current: bool) {
        self.rollout_current
            .store(current, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Resolves when this replica stops leading (never without leader election).
async fn lost(leading: Option<watch::Receiver<bool>>) {
    match leading {
        // An ended election (sender dropped) counts as lost.
        Some(mut l) => {
            let _ = l.wait_for(|v| !*v).await;
        }
        None => std::future::pending().await,
    }
}

/// The ConfigMap's task: each time this replica becomes the leader, reads the state (retrying
/// until it succeeds; meanwhile the replica is not ready and plans no rollout), installs it
/// and asks for a pass; then writes each state the planner sends that differs from the last
/// one written, until leadership ends (then waits to lead again) or the daemon stops (then
/// writes what is still unwritten).
pub(super) async fn keeper(
    shared: Arc<Shared>,
    mut store: ConfigMapStore,
    mut saves: watch::Receiver<Option<Saved>>,
    mut stop: watch::Receiver<bool>,
) {
    let retry = shared
        .options
        .observe_interval
        .clamp(Duration::from_millis(200), Duration::from_secs(10));
    let object = store.object();
    loop {
        if let Some(mut leading) = shared.leading.clone() {
            tokio::select! {
                led = leading.wait_for(|l| *l) => if led.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        let mut logged: Option<String> = None;
        let saved = loop {
            if !shared.is_leader() {
                // Not ready was about leading with an unread state; a standby is ready.
                *lock(&shared.rollout_state_error) = None;
                break None;
            }
            match store.load().await {
                Ok(saved) => break Some(saved),
                Err(e) => {
                    let message = e.to_string();
                    if logged.as_deref() != Some(message.as_str()) {
                        if matches!(e, StoreError::Corrupt { .. }) {
                            error!(configmap = %object, error = %e, "leading, but the rollout state does not parse: no rollout is planned until it is fixed");
                        } else {
                            warn!(configmap = %object, error = %e, "leading, but cannot read the rollout state yet; retrying");
                        }
                        logged = Some(message.clone());
                    }
                    *lock(&shared.rollout_state_error) = Some(message);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(retry) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        };
        let Some(saved) = saved else { continue };
        info!(configmap = %object, rollouts = saved.rollouts.len(), pauses = saved.pauses.len(), "leading: rollout state read");
        shared.install_rollout_state(saved);
        *lock(&shared.rollout_state_error) = None;
        // Whatever a pass sent before this read is stale.
        saves.borrow_and_update();
        shared.set_rollout_current(true);
        shared.request_plan();
        let mut failing = false;
        loop {
            let stopping = tokio::select! {
                changed = saves.changed() => if changed.is_err() { return } else { false },
                _ = lost(shared.leading.clone()) => {
                    shared.set_rollout_current(false);
                    info!(configmap = %object, "not leading: the rollout state is read again when this replica leads");
                    break;
                }
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopping && !shared.is_leader() {
                return;
            }
            write_latest(&shared, &mut store, &mut saves, &mut failing).await;
            if stopping {
                return;
            }
        }
    }
}

/// Writes the latest state sent unless it is the one written last. A failure is logged (once
/// per run of failures) and retried when the next pass sends the state again.
async fn write_latest(
    shared: &Shared,
    store: &mut ConfigMapStore,
    saves: &mut watch::Receiver<Option<Saved>>,
    failing: &mut bool,
) {
    let Some(next) = saves.borrow_and_update().clone() else {
        return;
    };
    if lock(&shared.rollout_saved).as_ref() == Some(&next) {
        return;
    }
    match store.store(&next).await {
        Ok(()) => {
            if *failing {
                info!(configmap = %store.object(), "rollout state written again");
            }
            *failing = false;
            *lock(&shared.rollout_saved) = Some(next);
        }
        Err(e) => {
            if *failing {
                debug!(error = %e, "cannot write the rollout state; retrying on the next pass");
            } else {
                warn!(error = %e, "cannot write the rollout state; retrying on the next pass");
            }
            *failing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::stages::{Approval, Memory};
    use crate::sim::SimCluster;

    fn state(paused: &str) -> Saved {
        Saved {
            version: 1,
            rollouts: [(
                "apps/db".to_string(),
                Memory {
                    spec: "s1".into(),
                    approvals: [(
                        "prod".to_string(),
                        Approval {
                            by: "alice".into(),
                            at: 7,
                        },
                    )]
                    .into(),
                    ..Memory::default()
                },
            )]
            .into(),
            pauses: [(
                paused.to_string(),
                Approval {
                    by: "bob".into(),
                    at: 8,
                },
            )]
            .into(),
        }
    }

    async fn namespace(sim: &SimCluster, name: &str) {
        let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(sim.client());
        let ns = k8s_openapi::api::core::v1::Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
    }

    /// A missing ConfigMap is an empty state; what one replica writes, another reads (the
    /// same JSON as the file); a second write replaces the first.
    #[tokio::test]
    async fn a_missing_configmap_is_empty_and_a_written_state_reads_back() {
        let sim = SimCluster::new("mgmt");
        namespace(&sim, "kudo-system").await;
        let mut a = ConfigMapStore::new(sim.client(), "kudo-system");
        assert_eq!(a.load().await.expect("load"), Saved::default());
        a.store(&state("apps/zk")).await.expect("create");
        a.store(&state("apps/kafka")).await.expect("replace");
        let mut b = ConfigMapStore::new(sim.client(), "kudo-system");
        assert_eq!(b.load().await.expect("load"), state("apps/kafka"));
        let api: Api<ConfigMap> = Api::namespaced(sim.client(), "kudo-system");
        let cm = api.get(CONFIGMAP_NAME).await.expect("configmap");
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(DATA_KEY))
            .expect("data key");
        let parsed: Saved = serde_json::from_str(text).expect("the file's JSON");
        assert_eq!(parsed, state("apps/kafka"));
    }

    /// A key that does not parse is refused, naming the ConfigMap and the key.
    #[tokio::test]
    async fn a_corrupt_configmap_is_refused_naming_it_and_the_key() {
        let sim = SimCluster::new("mgmt");
        namespace(&sim, "ops").await;
        let api: Api<ConfigMap> = Api::namespaced(sim.client(), "ops");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(CONFIGMAP_NAME.into()),
                ..Default::default()
            },
            data: Some([(DATA_KEY.to_string(), "{not json".to_string())].into()),
            ..Default::default()
        };
        api.create(&PostParams::default(), &cm)
            .await
            .expect("create");
        let err = ConfigMapStore::new(sim.client(), "ops")
            .load()
            .await
            .expect_err("corrupt");
        let text = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
        assert!(
            text.contains("ConfigMap ops/kudo-rollout-state")
                && text.contains("key rollout-state.json"),
            "{text}"
        );
    }

    /// A write over a change this store has not read is refused once (nothing overwritten
    /// then), and the next write goes through.
    #[tokio::test]
    async fn a_write_over_an_unseen_change_conflicts_once() {
        let sim = SimCluster::new("mgmt");
        namespace(&sim, "ops").await;
        let mut a = ConfigMapStore::new(sim.client(), "ops");
        let mut b = ConfigMapStore::new(sim.client(), "ops");
        a.load().await.expect("a reads");
        b.load().await.expect("b reads");
        a.store(&state("apps/zk")).await.expect("a creates");
        let err = b
            .store(&state("apps/kafka"))
            .await
            .expect_err("b conflicts");
        assert!(
            matches!(err, StoreError::Conflict { .. }) && err.to_string().contains("ops/"),
            "{err}"
        );
        assert_eq!(b.load().await.expect("read"), state("apps/zk"), "kept");
        a.store(&state("apps/db")).await.expect("a replaces");
        assert!(
            b.store(&state("apps/kafka")).await.is_err(),
            "stale version"
        );
        b.store(&state("apps/kafka")).await.expect("then b writes");
        assert_eq!(a.load().await.expect("read"), state("apps/kafka"));
    }

    /// Through the leader-gated client, a replica that does not lead cannot write the state
    /// (it can still read it).
    #[tokio::test]
    async fn a_replica_that_does_not_lead_cannot_write() {
        let sim = SimCluster::new("mgmt");
        namespace(&sim, "ops").await;
        let (tx, rx) = watch::channel(false);
        let gated = crate::gitops::leader::leader_gated_client(sim.client(), rx);
        let mut store = ConfigMapStore::new(gated, "ops");
        assert_eq!(store.load().await.expect("reads"), Saved::default());
        let err = store.store(&state("apps/zk")).await.expect_err("refused");
        assert!(err.to_string().contains("not the leader"), "{err}");
        tx.send_replace(true);
        store
            .store(&state("apps/zk"))
            .await
            .expect("the leader writes");
        let mut plain = ConfigMapStore::new(sim.client(), "ops");
        assert_eq!(plain.load().await.expect("read"), state("apps/zk"));
    }
}
