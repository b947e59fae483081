//! GitOps: the control plane's configuration, Git sync and local watch, the desired state of
//! one revision (packages + instances, validated whole), placement of instances on clusters
//! and progressive rollout across them, and the `kudo serve` daemon tying it together.

pub mod agent;
pub mod config;
pub mod console;
pub mod daemon;
pub mod desired;
pub mod diff;
pub mod gates;
pub mod git;
pub mod leader;
pub mod ownership;
pub mod placement;
pub mod rollout;
pub mod serve;
pub mod shard;
pub mod signing;
pub mod stage_doc;
pub mod stages;
pub mod status;
pub mod supervise;
pub mod sync;
pub mod webhook;
pub mod windows;
