//! The executor of the plan engine: one controller per cluster watches Instances, asks
//! [`crate::engine`] what a reconcile must do and performs it. Every Instance write goes
//! through [`crate::cluster::Cluster`], so its errors carry bounded categories.

pub mod controller;
pub mod drift;
pub mod freshness;
pub mod guard;
pub mod pipe;
pub mod prune;
pub mod reconcile;
pub mod runner;
