//! The cluster layer's conformance suite, unchanged, against a simulated cluster (the same
//! suite runs against real kube-apiservers in tests/cluster_envtest.rs).

mod support;

use kudo::cluster::Cluster;
use kudo::sim::SimCluster;

/// Every case gets its own simulated cluster, driven in process through the tower service.
async fn simulated() -> Cluster {
    let sim = SimCluster::new("sim-conformance");
    Cluster::from_client(sim.name(), sim.client())
}

conformance_suite!(simulated);
