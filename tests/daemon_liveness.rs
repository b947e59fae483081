//! A cluster's liveness as the daemon reports it. The daemon reads Instances from its
//! watch cache, so a converged cluster sends no request of its own: a partition must still
//! show the cluster down (with the reason), and the end of the partition up again.

#[path = "support/gitfleet.rs"]
mod gitfleet;

use gitfleet::*;
use kudo::gitops::serve::Daemon;

fn cluster_state(daemon: &Daemon, name: &str) -> Option<(bool, Option<String>)> {
    let doc = daemon.shared.status();
    doc.clusters
        .iter()
        .find(|c| c.name == name)
        .map(|c| (c.up, c.reason.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_converged_cluster_is_reported_down_and_then_up_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Repo::new(dir.path(), "a");
    a.write(
        "instances/one.yaml",
        &instance_doc("one", "team-a", &[], ""),
    );
    a.commit("a");
    let fleet = Fleet::new(&["c1"]);
    let c1 = fleet.cluster("c1");
    let daemon = Daemon::start(
        fleet.config(dir.path(), "", &[("a", a.url(), "")]),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&c1, "team-a", "one").await;
    wait_until("c1 up", || async {
        match cluster_state(&daemon, "c1") {
            Some((true, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    fleet.sims["c1"].faults().set_partitioned(true);
    wait_until("c1 seen down, naming the partition", || async {
        match cluster_state(&daemon, "c1") {
            Some((false, Some(reason))) if reason.contains("simulated partition of cluster c1") => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    fleet.sims["c1"].faults().set_partitioned(false);
    wait_until("c1 up again", || async {
        match cluster_state(&daemon, "c1") {
            Some((true, None)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}

/// A converged fleet where nothing changes costs nothing per pass: the workers read the
/// watch cache's change count and rebuild no observation (before, every worker copied and
/// decoded every Instance each interval and asked for a planner pass, which at 1,000
/// clusters kept most of a core busy while idle).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_converged_fleet_rebuilds_no_observation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Repo::new(dir.path(), "a");
    a.write(
        "instances/one.yaml",
        &instance_doc("one", "team-a", &[], ""),
    );
    a.commit("a");
    let fleet = Fleet::new(&["c1", "c2"]);
    let daemon = Daemon::start(
        fleet.config(dir.path(), "", &[("a", a.url(), "")]),
        fleet.options(),
    )
    .await
    .expect("daemon");
    wait_complete(&fleet.cluster("c1"), "team-a", "one").await;
    wait_complete(&fleet.cluster("c2"), "team-a", "one").await;
    // Settles once the last status write has been observed: then five planner passes (each
    // after several worker intervals) see no new observation.
    wait_until("observations stop while nothing changes", || async {
        let before = daemon.shared.observations();
        wait_passes(&daemon.shared, 5).await;
        let after = daemon.shared.observations();
        if after == before {
            Ok(())
        } else {
            Err(format!(
                "{} observations during 5 planner passes",
                after - before
            ))
        }
    })
    .await;
    // Still observed on change: an edit of the Instance is seen.
    let before = daemon.shared.observations();
    fleet
        .cluster("c1")
        .merge_patch(&serde_json::json!({
            "apiVersion": "kudo.dev/v1beta1",
            "kind": "Instance",
            "metadata": {"name": "one", "namespace": "team-a", "annotations": {"example.com/touched": "yes"}},
        }))
        .await
        .expect("patch");
    wait_until("the change observed", || async {
        if daemon.shared.observations() > before {
            Ok(())
        } else {
            Err("no observation".into())
        }
    })
    .await;
    let late = daemon.shutdown().await;
    assert!(
        late.is_empty(),
        "tasks that did not stop on shutdown: {late:?}"
    );
}
