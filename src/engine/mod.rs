//! The universal plan engine, as pure logic: what a reconcile of one Instance must do
//! ([`decide`]), which plan runs ([`trigger`]), how a pass over an active plan advances its
//! status tree ([`workflow`]), the tree itself ([`status`]), retry timing ([`backoff`]) and
//! the rules of pruning and drift. Nothing here sends a request: cluster I/O enters only
//! through [`workflow::TaskRunner`], and [`crate::manager`] performs what [`decide`] says.

pub mod backoff;
pub mod cache;
pub mod decide;
pub mod drift;
pub mod objects;
pub mod prune;
pub mod status;
pub mod tasks;
pub mod trigger;
pub mod unknown_kind;
pub mod workflow;

#[cfg(test)]
mod tests;
