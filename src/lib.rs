//! kudo: KUDO's universal operator as a multi-cluster GitOps control plane.
//!
//! Data flows one way: Git revision → packages + instances → per-cluster desired Instance →
//! engine step → apply → status written back → metrics read from status.

pub mod api;
pub mod bench;
pub mod cli;
pub mod cluster;
pub mod engine;
pub mod gitops;
pub mod kuttl;
pub mod manager;
pub mod metrics;
pub mod notify;
pub mod package;
pub mod repo;
pub mod sim;
pub mod template;
pub mod typed;
pub mod util;
