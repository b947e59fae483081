//! Real API servers for integration tests: runs `scripts/envtest up --clusters 3` once per
//! test process (the script's own file locks let parallel test binaries share one
//! environment, and it reuses a running one), then hands out cluster handles.
//!
//! There is no skipping: when the environment cannot be started the test fails and says why.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use kudo::cluster::{Cluster, ObjectRef};
use serde_json::json;

/// How many clusters the shared environment has (contexts envtest-1 ..= envtest-N).
pub const CLUSTERS: usize = 3;

/// Path of the environment's kubeconfig, starting the environment on first use.
pub fn kubeconfig() -> &'static Path {
    static KUBECONFIG: OnceLock<PathBuf> = OnceLock::new();
    KUBECONFIG.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/envtest");
        let out = Command::new(&script)
            .args(["up", "--clusters", &CLUSTERS.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            panic!(
                "these tests need real kube-apiservers, but `{} up --clusters {CLUSTERS}` failed \
                 ({}); its messages are above. stdout: {stdout}",
                script.display(),
                out.status
            );
        }
        let last = stdout.lines().last().unwrap_or_default();
        let path = last.strip_prefix("export KUBECONFIG=").unwrap_or_else(|| {
            panic!("scripts/envtest up printed no `export KUBECONFIG=` last line: {stdout:?}")
        });
        PathBuf::from(path.trim())
    })
}

/// A handle on envtest cluster `i` (1-based), named like its context.
pub async fn cluster(i: usize) -> Cluster {
    assert!(
        (1..=CLUSTERS).contains(&i),
        "envtest has clusters 1..={CLUSTERS}, not {i}"
    );
    let context = format!("envtest-{i}");
    Cluster::from_kubeconfig(&context, kubeconfig(), Some(&context))
        .await
        .unwrap_or_else(|e| panic!("envtest cluster {context}: {e}"))
}

/// The API server of envtest cluster 1 and the token of `nobody`, a user with no
/// permissions at all (for tests of "forbidden").
pub fn nobody() -> (String, String) {
    let kc = kubeconfig();
    let config = kube::config::Kubeconfig::read_from(kc).expect("envtest kubeconfig");
    let server = config.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .expect("server");
    let token = std::fs::read_to_string(kc.parent().expect("run dir").join("pki/nobody.token"))
        .expect("envtest writes pki/nobody.token");
    (server, token.trim().to_string())
}

/// A name unique across test processes and runs, for namespaces and cluster-scoped objects.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{:x}{}",
        std::process::id(),
        nanos % 0xfffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Create a fresh namespace, run `body` in it, then delete the namespace whatever happened
/// (a panicking body is re-raised after the cleanup).
pub async fn in_namespace<F, Fut>(cluster: &Cluster, prefix: &str, body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let ns = unique(prefix);
    cluster
        .apply(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .await
        .unwrap_or_else(|e| panic!("create test namespace {ns}: {e}"));
    let outcome = std::panic::AssertUnwindSafe(body(ns.clone()))
        .catch_unwind()
        .await;
    // The namespace controller finishes the deletion; no need to wait here.
    let cleanup = cluster
        .delete(&ObjectRef::new("v1", "Namespace", None, &ns))
        .await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    cleanup.unwrap_or_else(|e| panic!("delete test namespace {ns}: {e}"));
}
