//! `kudo bench`: reproducible scale measurements (DESIGN §7 keeps timing out of tests).
//!
//! Each scenario prints a table on stdout and returns its figures as JSON (written with
//! `--json FILE`). Scenarios that compare sizes run every size in a child process of this
//! binary, so peak RSS and CPU seconds belong to that size alone.
//!
//! - `fanout`: K simulated clusters × M instances, commit (webhook) to every plan COMPLETE,
//!   against the ideal critical path for the same latency and readiness delay;
//! - `rollout`: one parameter change over the same fleet, `parallel` and `maxUnavailable` waves;
//! - `coldstart`: a daemon restarted mid-rollout: time to ready and to every plan continuing;
//! - `git`: a generated repository, cold sync then a one-file commit (what was re-parsed);
//! - `render`: templates per second over a package (default: KUDO's kafka);
//! - `shards`: the fleet driven by several sharded `kudo serve` processes against one, and a
//!   member killed (`kill -9`): handover time, clusters moved, what the new owners wrote;
//! - `agents`: the control plane's cost per cluster in push mode against agent (pull) mode;
//! - `idle`: the fanout fleet converged, then observed: requests per second per cluster and
//!   the control plane's share of a core while nothing changes.

pub mod agents;
pub mod clusters;
pub mod demo;
pub mod fleet;
pub mod git;
pub mod process;
pub mod render;
pub mod report;
pub mod shards;
pub mod usage;

pub use report::Table;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench {scenario}: {reason}")]
    Setup {
        scenario: &'static str,
        reason: String,
    },
    #[error("bench {scenario}: timed out after {seconds}s waiting for {what}")]
    Timeout {
        scenario: &'static str,
        what: String,
        seconds: u64,
    },
    #[error("bench {scenario}: child run failed: {reason}")]
    Child {
        scenario: &'static str,
        reason: String,
    },
}
