//! Embedded simulated clusters: an in-process Kubernetes API plus a workload simulator.
//!
//! One implementation, two faces: [`SimCluster::client`] gives a `kube::Client` whose requests
//! go straight into the cluster's tower service (no sockets: a thousand clusters in one
//! process), and [`SimCluster::serve_http`] serves the same service on loopback for kubectl.
//!
//! Layers: `store` is the pure in-memory API server (objects, resourceVersion, managed fields,
//! finalizers, garbage collection, CRDs, watch history), tested without I/O; `service` is the
//! thin HTTP face (routing, discovery, watch streams, fault injection); `workload` plays the
//! controllers (Deployments become ready, Jobs finish, ...) against any `kube::Client`.
//!
//! # Where the simulation knowingly differs from a real API server
//! - No authentication, authorization or admission webhooks; every request is allowed.
//! - Validation covers what kudo and its tests hit: metadata names and labels, pod templates
//!   (containers, names, images, Job restartPolicy), workload selectors matching template
//!   labels, Service ports, ConfigMap/Secret keys, CRD structure, and structural-schema type,
//!   `required` and `enum` checks (with pruning) for custom resources. Built-in kinds are
//!   decoded through their k8s-openapi types, so wrong types are 400 and unknown fields are
//!   dropped; CEL rules, formats, min/max and defaults in CRD schemas are not enforced.
//! - Defaulting covers the common fields (replicas, strategies, pod template defaults,
//!   Service type/clusterIP/ports, Namespace finalizer and phase); rarer defaults are absent.
//! - Garbage collection, namespace termination and CRD removal happen synchronously within
//!   the DELETE call instead of moments later; objects whose owner never existed are kept.
//! - Custom resources are stored once and served at every served version by rewriting
//!   apiVersion (no conversion). Strategic merge patch is refused for custom resources (415),
//!   as the real server does; merge keys for built-ins come from a fixed table by field name.
//! - Server-side apply follows structured-merge-diff for maps, atomic lists and associative/
//!   set lists: built-in kinds from that table, custom resources from their schema's
//!   `x-kubernetes-list-type`/`-map-keys` (unmarked lists atomic; `conditions` keyed by
//!   `type` where the schema does not describe it). Maps are always granular (no
//!   `x-kubernetes-map-type: atomic`), and applied keys are not defaulted before diffing
//!   except a port's `protocol`.
//! - Field selectors accept any dotted path (the real server supports a few per kind).
//! - Lists are always served from the latest state (`resourceVersionMatch=Exact` is not
//!   honoured) and `continue` tokens are not bound to a snapshot.
//! - Watch history is one window of `ApiConfig::history_events` (default 128) events for all
//!   kinds, not a per-kind cache bounded by time; older resourceVersions get 410 Gone, and a
//!   watcher more than 256 events behind is ended with a 410 ERROR event (it relists).
//!   Bookmarks come every `bookmark_interval` (default 5 s). Watch selector transitions
//!   (MODIFIED into/out of a selector as ADDED/DELETED) follow the real cacher.
//! - Clusters have no Nodes, no ServiceAccount tokens and no Endpoints controller.
//! - `/openapi/v3` is a stub: one path per resource advertising the PATCH parameters
//!   (so kubectl uses server-side field validation), no schemas; `/openapi/v2` is 404, so
//!   `kubectl explain` does not work. `fieldValidation=Strict` is not enforced: unknown fields
//!   of built-in kinds are dropped silently, of custom resources pruned.
//! - JSON only: no protobuf, so kubectl's imperative generators (`kubectl create namespace`,
//!   `kubectl create configmap`, which send protobuf) get 415 with a hint; `kubectl create -f`,
//!   `kubectl apply [--server-side]`, `get`, `label`, `delete`, `get -w` work.
//! - Table output (`kubectl get`) has the usual columns for the core workload kinds and
//!   Name/Age for the rest; CRD `additionalPrinterColumns` are honoured for a JSONPath subset
//!   (`.a.b`, `[n]`, `[*]`, `[?(@.k=="v")]`).
//! - No pod logs/exec/port-forward/attach, no scale, eviction or binding subresources.
//! - The workload simulator plays controllers but creates no Pods or ReplicaSets for
//!   Deployments and friends; it only writes their status (DaemonSets behave as on one node).
//!   PVCs become Bound without a PersistentVolume; Pods never restart or fail.

pub mod error;
pub mod managed;
pub mod patch;
pub mod resources;
pub mod runtime;
pub mod selector;
pub mod server;
pub mod service;
pub mod store;
pub mod table;
pub mod validate;
pub mod workload;

use std::net::SocketAddr;
use std::sync::Arc;

pub use error::SimError;
pub use runtime::SimRuntime;
pub use service::{ApiConfig, Faults, SimService};
pub use store::Store;

/// One simulated cluster: cheap to clone (handles share the state).
#[derive(Debug, Clone)]
pub struct SimCluster {
    shared: Arc<service::Shared>,
    /// The simulator runtime it answers on (see [`runtime`]); None: the caller's.
    runtime: Option<tokio::runtime::Handle>,
}

impl SimCluster {
    pub fn new(name: &str) -> SimCluster {
        SimCluster::with_config(name, ApiConfig::default())
    }

    pub fn with_config(name: &str, config: ApiConfig) -> SimCluster {
        SimCluster {
            shared: Arc::new(service::Shared::new(name, config)),
            runtime: None,
        }
    }

    /// This cluster answering requests, simulating workloads and serving HTTP on `runtime`
    /// (a [`SimRuntime`]'s handle), so its CPU is not the caller's.
    pub fn on_runtime(mut self, runtime: tokio::runtime::Handle) -> SimCluster {
        self.runtime = Some(runtime);
        self
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The tower service answering this cluster's API requests.
    pub fn service(&self) -> SimService {
        match &self.runtime {
            Some(rt) => SimService::on_runtime(self.shared.clone(), rt.clone()),
            None => SimService::new(self.shared.clone()),
        }
    }

    /// A kube client talking to this cluster in process. Needs a Tokio runtime.
    pub fn client(&self) -> kube::Client {
        kube::Client::new(self.service(), "default")
    }

    /// Run-time switchable faults of this cluster.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Direct access to the store (for tests and measurements).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        self.shared.with_store(f)
    }

    /// Starts the workload simulator for this cluster (stops when the handle is dropped).
    pub fn spawn_workloads(&self, config: workload::WorkloadConfig) -> workload::Workloads {
        match &self.runtime {
            Some(rt) => {
                // Tasks and the client's buffer start on the simulator runtime, and the
                // client calls the store directly (it already runs there).
                let _on = rt.enter();
                let direct = kube::Client::new(SimService::new(self.shared.clone()), "default");
                workload::spawn(direct, config)
            }
            None => workload::spawn(self.client(), config),
        }
    }

    /// Serves this cluster over HTTP on `addr` (e.g. `127.0.0.1:0`).
    pub async fn serve_http(&self, addr: SocketAddr) -> std::io::Result<server::HttpServer> {
        match &self.runtime {
            Some(rt) => rt
                .spawn(server::serve(self.shared.clone(), addr))
                .await
                .map_err(std::io::Error::other)?,
            None => server::serve(self.shared.clone(), addr).await,
        }
    }
}

/// A kubeconfig with one context per (name, server URL), current context the first.
pub fn kubeconfig(clusters: &[(String, String)]) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, url) in clusters {
        out.push_str(&format!("- name: {name}\n  cluster:\n    server: {url}\n"));
    }
    out.push_str("users:\n- name: sim\n  user: {}\ncontexts:\n");
    for (name, _) in clusters {
        out.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: sim\n    namespace: default\n"
        ));
    }
    if let Some((first, _)) = clusters.first() {
        out.push_str(&format!("current-context: {first}\n"));
    }
    out
}
