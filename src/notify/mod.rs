//! Notifications: what the control plane tells the outside world (generic webhooks,
//! Slack-compatible incoming webhooks, GitHub and GitLab commit statuses) about plans,
//! rollouts, refused revisions and clusters.
//!
//! Delivery never blocks reconciliation: [`Notifier::emit`] only puts the event on each
//! matching sink's bounded queue; a worker per sink delivers it with retries. A full queue,
//! a refused request (4xx) or a sink that stays down drops the delivery, counted in
//! `kudo_notify_dropped_total` and logged.

pub mod config;
mod dispatch;
pub mod events;
pub mod sink;

use serde::{Deserialize, Serialize};

pub use config::{NotifyConfig, SinkConfig, SinkKind};
pub use dispatch::Notifier;
pub use events::plan_events;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventKind {
    PlanStarted,
    PlanComplete,
    PlanFatalError,
    RolloutHalted,
    RevisionRefused,
    ClusterDown,
    ClusterUp,
    /// More GitOps deletions than `maxDeletions` wait for confirmation.
    DeletionsHeld,
    /// A write through the API (confirming deletions, ...), with the token's name.
    ApiWrite,
    /// A rollout waits for a gate (bake, prometheus, plan).
    GateWaiting,
    /// A rollout waits for a person to approve a stage.
    ApprovalRequired,
    RolloutPaused,
    RolloutResumed,
    /// A rollout waits for an instance it depends on (`dependsOn`).
    DependencyBlocked,
    /// A failed spec was reverted (`onFailure: revert` or `kudo rollout revert`).
    RolloutReverted,
}

impl EventKind {
    pub const ALL: [EventKind; 15] = [
        EventKind::PlanStarted,
        EventKind::PlanComplete,
        EventKind::PlanFatalError,
        EventKind::RolloutHalted,
        EventKind::RevisionRefused,
        EventKind::ClusterDown,
        EventKind::ClusterUp,
        EventKind::DeletionsHeld,
        EventKind::ApiWrite,
        EventKind::GateWaiting,
        EventKind::ApprovalRequired,
        EventKind::RolloutPaused,
        EventKind::RolloutResumed,
        EventKind::DependencyBlocked,
        EventKind::RolloutReverted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::PlanStarted => "planStarted",
            EventKind::PlanComplete => "planComplete",
            EventKind::PlanFatalError => "planFatalError",
            EventKind::RolloutHalted => "rolloutHalted",
            EventKind::RevisionRefused => "revisionRefused",
            EventKind::ClusterDown => "clusterDown",
            EventKind::ClusterUp => "clusterUp",
            EventKind::DeletionsHeld => "deletionsHeld",
            EventKind::ApiWrite => "apiWrite",
            EventKind::GateWaiting => "gateWaiting",
            EventKind::ApprovalRequired => "approvalRequired",
            EventKind::RolloutPaused => "rolloutPaused",
            EventKind::RolloutResumed => "rolloutResumed",
            EventKind::DependencyBlocked => "dependencyBlocked",
            EventKind::RolloutReverted => "rolloutReverted",
        }
    }
}

/// One thing that happened, as every sink receives it (the generic webhook's JSON body).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub event: EventKind,
    pub cluster: Option<String>,
    /// `namespace/name`.
    pub instance: Option<String>,
    pub plan: Option<String>,
    /// The plan status (PENDING, IN_PROGRESS, COMPLETE, FATAL_ERROR), or the cluster's
    /// (up, down), or `halted` / `refused`.
    pub status: String,
    /// The Git revision (commit) concerned, when known.
    pub revision: Option<String>,
    pub message: String,
    /// RFC 3339, when the control plane saw it.
    pub time: String,
}

impl Event {
    pub fn new(event: EventKind, status: impl Into<String>, message: impl Into<String>) -> Event {
        Event {
            event,
            cluster: None,
            instance: None,
            plan: None,
            status: status.into(),
            revision: None,
            message: message.into(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    pub fn cluster(mut self, c: &str) -> Event {
        self.cluster = Some(c.to_string());
        self
    }

    pub fn instance(mut self, i: &str) -> Event {
        self.instance = Some(i.to_string());
        self
    }

    pub fn revision(mut self, r: &str) -> Event {
        self.revision = Some(r.to_string());
        self
    }
}
