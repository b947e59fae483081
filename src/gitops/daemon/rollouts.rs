//! What people do to rollouts through the API (approve a stage, pause, resume), and the
//! rollout state the clusters cannot tell (approvals, pauses, when a stage finished or a
//! cluster got its spec), kept in `rollout-state.json` under `cacheDir`, or with leader
//! election in a ConfigMap (see `super::rollout_store`), so a restart or a new leader
//! continues where the rollout was.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::rollout_store::Sink;
use super::state::{Shared, lock};
use crate::gitops::rollout::State;
use crate::gitops::stages::{Approval, Memory};

/// The file's name under `cacheDir`.
pub const STATE_FILE: &str = "rollout-state.json";

/// The file's (or the ConfigMap key's) content.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Saved {
    pub version: u32,
    #[serde(default)]
    pub rollouts: BTreeMap<String, Memory>,
    #[serde(default)]
    pub pauses: BTreeMap<String, Approval>,
}

/// Why a rollout action was refused; the HTTP status follows the kind.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("no instance {key} in the desired state (instances: {known})")]
    Unknown { key: String, known: String },
    #[error("{0}")]
    Conflict(String),
    /// A standby (or a new leader still reading the state) would lose the change.
    #[error("{0}")]
    NotLeader(String),
}

/// Reads the saved state; a missing file is an empty state. A file that does not parse
/// stops the start (naming it): silently dropping it would resume paused rollouts.
pub fn load(path: &Path) -> Result<Saved, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            format!(
                "{}: {e} (the rollout state: approvals and pauses; fix it or move it away)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes `saved` atomically (a temporary file renamed over the old one).
pub fn store(path: &Path, saved: &Saved) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(saved).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn describe(state: Option<&State>) -> String {
    match state {
        None => "not planned yet".into(),
        Some(State::Progressing { wave, waves }) => {
            format!("progressing, wave {} of {waves}", wave + 1)
        }
        Some(State::Waiting { stage, gate, .. }) => format!("stage {stage} waiting for {gate}"),
        Some(State::Paused) => "paused".into(),
        Some(State::Complete) => "complete".into(),
        Some(State::Halted { cluster, .. }) => format!("halted on cluster {cluster}"),
    }
}

impl Shared {
    fn known_instance(&self, key: &str) -> Result<(), RolloutError> {
        let desired = self
            .desired
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let instances: Vec<String> = desired
            .map(|d| d.instances.keys().cloned().collect())
            .unwrap_or_default();
        if instances.iter().any(|k| k == key) {
            Ok(())
        } else {
            Err(RolloutError::Unknown {
                key: key.to_string(),
                known: instances.join(", "),
            })
        }
    }

    /// Approves `stage` of `key`'s rollout; only a stage waiting for its approval can be.
    pub fn approve_stage(&self, key: &str, stage: &str, by: &str) -> Result<(), RolloutError> {
        self.known_instance(key)?;
        self.rollout_writable()?;
        // A pass publishes the memory it started from: without the lock, one running now
        // would drop this approval.
        let one_at_a_time = lock(&self.pass_lock);
        let state = lock(&self.rollouts).get(key).cloned();
        match &state {
            Some(State::Waiting { stage: s, gate, .. }) if s == stage && gate == "approval" => {}
            other => {
                return Err(RolloutError::Conflict(format!(
                    "stage {stage:?} of {key} is not waiting for approval (the rollout is {})",
                    describe(other.as_ref())
                )));
            }
        }
        {
            let mut memory = lock(&self.rollout_memory);
            let Some(m) = memory.get_mut(key) else {
                return Err(RolloutError::Conflict(format!(
                    "{key}: the rollout has no state yet; try again"
                )));
            };
            m.approvals.insert(
                stage.to_string(),
                Approval {
                    by: by.to_string(),
                    at: self.options.clock.now_ms(),
                },
            );
        }
        drop(one_at_a_time);
        info!(target: "audit", instance = key, stage, token = by, "rollout stage approved");
        self.notifier.emit(
            crate::notify::Event::new(
                crate::notify::EventKind::ApiWrite,
                "approved",
                format!("stage {stage} of {key} approved by {by}"),
            )
            .instance(key),
        );
        self.save_rollout_state();
        self.request_plan();
        Ok(())
    }

    /// Reverts `key`'s current spec to its last good spec by hand (see
    /// [`crate::gitops::stages::revert`]); the planner's next pass gives it back to the
    /// clusters. Returns the reason the rollout now shows.
    pub fn revert_rollout(&self, key: &str, by: &str) -> Result<String, RolloutError> {
        self.known_instance(key)?;
        self.rollout_writable()?;
        // As for approvals: a pass running now would publish the memory it started from.
        let one_at_a_time = lock(&self.pass_lock);
        let reason = {
            let mut memory = lock(&self.rollout_memory);
            let Some(m) = memory.get_mut(key) else {
                return Err(RolloutError::Conflict(format!(
                    "{key}: the rollout has no state yet; try again"
                )));
            };
            crate::gitops::stages::revert(
                m,
                by,
                "reverted by hand (kudo rollout revert)",
                self.options.clock.now_ms(),
            )
            .map_err(|why| RolloutError::Conflict(format!("{key} cannot be reverted: {why}")))?;
            m.reverted
                .as_ref()
                .map(|r| r.reason.clone())
                .unwrap_or_default()
        };
        drop(one_at_a_time);
        info!(target: "audit", instance = key, token = by, "rollout reverted through the API");
        if let Some((ns, name)) = key.split_once('/') {
            self.metrics.gitops.count_revert(ns, name);
        }
        self.notifier.emit(
            crate::notify::Event::new(
                crate::notify::EventKind::RolloutReverted,
                "reverted",
                reason.clone(),
            )
            .instance(key),
        );
        self.save_rollout_state();
        self.request_plan();
        Ok(reason)
    }

    /// Pauses (`true`) or resumes `key`'s rollout through the API. Idempotent; a resume does
    /// not lift `paused: true` written in Git.
    pub fn set_paused(&self, key: &str, paused: bool, by: &str) -> Result<bool, RolloutError> {
        self.known_instance(key)?;
        self.rollout_writable()?;
        let changed = {
            let mut pauses = lock(&self.rollout_pauses);
            if paused {
                pauses
                    .insert(
                        key.to_string(),
                        Approval {
                            by: by.to_string(),
                            at: self.options.clock.now_ms(),
                        },
                    )
                    .is_none()
            } else {
                pauses.remove(key).is_some()
            }
        };
        let what = if paused { "paused" } else { "resumed" };
        info!(target: "audit", instance = key, token = by, changed, "rollout {what} through the API");
        self.save_rollout_state();
        self.request_plan();
        Ok(changed)
    }

    /// Writes the rollout state when it changed since the last write (the file now; the
    /// ConfigMap through its keeper task). A failed write is logged and retried on the next
    /// pass; the running state is unaffected. A replica whose state is not current (a
    /// standby) writes nothing.
    pub(super) fn save_rollout_state(&self) {
        if !self.rollout_state_current() {
            return;
        }
        // When clusters got their spec is not kept: after a restart the deadline clock
        // starts anew (later, never earlier), and the file stays small and quiet.
        let rollouts = lock(&self.rollout_memory)
            .iter()
            .map(|(k, m)| {
                (
                    k.clone(),
                    Memory {
                        spec: m.spec.clone(),
                        applied_at: BTreeMap::new(),
                        complete_since: m.complete_since.clone(),
                        approvals: m.approvals.clone(),
                        gate_since: m.gate_since.clone(),
                        gates_passed: m.gates_passed.clone(),
                        last_good: m.last_good.clone(),
                        reverted: m.reverted.clone(),
                    },
                )
            })
            .collect();
        let saved = Saved {
            version: 1,
            rollouts,
            pauses: lock(&self.rollout_pauses).clone(),
        };
        let mut last = lock(&self.rollout_saved);
        if last.as_ref() == Some(&saved) {
            return;
        }
        let path = match &self.rollout_sink {
            Sink::File(path) => path,
            // The keeper records what it wrote; until then each pass sends the state again.
            Sink::Keeper { tx, .. } => {
                tx.send_replace(Some(saved));
                return;
            }
            Sink::ReadOnly => return,
        };
        if let Some(dir) = path.parent()
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            warn!(file = %path.display(), error = %e, "cannot write the rollout state");
            return;
        }
        match store(path, &saved) {
            Ok(()) => *last = Some(saved),
            Err(e) => warn!(file = %path.display(), error = %e, "cannot write the rollout state"),
        }
    }
}
