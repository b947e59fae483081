//! Sharding (issue 23, in progress): spreading clusters over several `kudo serve` replicas.
//! So far the pure cores the daemon will be built on, each tested without I/O:
//! - `members`: who is live (member Leases), config-hash agreement, one process per name;
//! - `assign`: rendezvous hashing of clusters over the live members;
//! - `fence`: the per-cluster claim that keeps two members from driving one cluster.
//!
//! Not wired into the daemon yet; see the closing note of session 6 for the plan.

pub mod assign;
pub mod fence;
pub mod members;
