//! The universal plan engine, as pure logic: which plan runs ([`trigger`]), how a pass over
//! an active plan advances its status tree ([`workflow`]), the tree itself ([`status`]) and
//! retry timing ([`backoff`]). Cluster I/O enters only through [`workflow::TaskRunner`].

pub mod backoff;
pub mod cache;
pub mod controller;
pub mod drift;
pub mod freshness;
pub mod guard;
pub mod objects;
pub mod pipe;
pub mod prune;
pub mod reconcile;
pub mod runner;
pub mod status;
pub mod tasks;
pub mod trigger;
pub mod unknown_kind;
pub mod workflow;

#[cfg(test)]
mod tests;
