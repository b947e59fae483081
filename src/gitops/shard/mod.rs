//! Sharding (`sharding: {enabled: true}`): spreading clusters over several `kudo serve`
//! replicas with Kubernetes Leases in the management cluster.
//!
//! One replica leads (the leader election Lease): it syncs Git, plans rollouts and is the
//! only writer of Instance specs. Every replica is a member: it holds a member Lease and
//! drives (cache, engine, drift repair: the only writer of Instance status and owned
//! objects) the clusters the assignment gives it, each only while it holds the cluster's
//! claim. Every replica watches every cluster's Instances, so any replica's status and
//! console show the whole fleet.
//!
//! Pure cores, tested without I/O:
//! - `members`: who is live (member Leases), config-hash agreement, one process per name;
//! - `assign`: rendezvous hashing of clusters over the live members;
//! - `fence`: the per-cluster claim that keeps two members from driving one cluster.
//!
//! With I/O: `gate` (the per-request write fence and the write log) and `member` (the loop
//! that renews, assigns, claims and releases).

pub mod assign;
pub mod fence;
pub mod gate;
pub mod member;
pub mod members;
