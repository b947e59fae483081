//! Metrics of the clusters kudo talks to: up/down as the control plane sees it, failures by
//! bounded category, and every Kubernetes API request by verb and status code, measured by a
//! wrapper around the cluster's `kube::Client` ([`metered_client`]), so the engine, the
//! GitOps workers and the watches are all counted. Watch streams are also followed while
//! open, so a watch that ends and is started again (server timeout, 410 Gone, lost
//! connection; after a 410 the watcher relists first) is counted as a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::engine::ClusterLabels;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub cluster: String,
    /// One of [`VERBS`].
    pub verb: &'static str,
    /// An HTTP status code from a closed list, a class (`4xx`), or `unreachable`/`timeout`.
    pub code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabels {
    pub cluster: String,
    pub verb: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    pub cluster: String,
    /// `ErrorKind::as_str` of the failure, never its text.
    pub category: &'static str,
}

/// Every value the `verb` label takes.
pub const VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "discovery",
];

pub struct ClusterMetrics {
    pub up: Family<ClusterLabels, Gauge>,
    pub errors: Family<CategoryLabels, Counter>,
    pub api_requests: Family<RequestLabels, Counter>,
    pub api_duration: Family<VerbLabels, Histogram>,
    pub watches_open: Family<ClusterLabels, Gauge>,
    pub watch_restarts: Family<ClusterLabels, Counter>,
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ClusterMetrics {
            up: Family::default(),
            errors: Family::default(),
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(|| Histogram::new(super::latency_buckets())),
            watches_open: Family::default(),
            watch_restarts: Family::default(),
        };
        registry.register(
            "cluster_up",
            "1 when the control plane's last pass on the cluster succeeded, else 0",
            m.up.clone(),
        );
        registry.register(
            "cluster_errors",
            "Failed control-plane passes on a cluster by bounded error category",
            m.errors.clone(),
        );
        registry.register(
            "cluster_api_requests",
            "Kubernetes API requests by cluster, verb and status code",
            m.api_requests.clone(),
        );
        registry.register(
            "cluster_api_request_duration_seconds",
            "Time to the response headers of a Kubernetes API request (watches: to the stream start)",
            m.api_duration.clone(),
        );
        registry.register(
            "cluster_watches_open",
            "Watch streams open on the cluster",
            m.watches_open.clone(),
        );
        registry.register(
            "cluster_watch_restarts",
            "Watch requests that replace a stream which ended (timeout, 410 Gone, lost connection)",
            m.watch_restarts.clone(),
        );
        m
    }

    /// Starts a cluster's series at zero: watches open and restarted, and the error
    /// counter of each of `categories` (every `ErrorKind`, passed in so metrics stay a leaf
    /// module), so a healthy fleet exports `kudo_cluster_errors_total ... 0` instead of
    /// nothing.
    pub fn init_cluster(&self, cluster: &str, categories: &[&'static str]) {
        let labels = ClusterLabels {
            cluster: cluster.into(),
        };
        self.watches_open.get_or_create(&labels).set(0);
        self.watch_restarts.get_or_create(&labels).inc_by(0);
        for &category in categories {
            self.errors
                .get_or_create(&CategoryLabels {
                    cluster: cluster.into(),
                    category,
                })
                .inc_by(0);
        }
    }

    /// Drops the gauges of a cluster taken out of the config (a removed cluster is not
    /// down; counters stay, as Prometheus expects of counters).
    pub fn forget_cluster(&self, cluster: &str) {
        let labels = ClusterLabels {
            cluster: cluster.into(),
        };
        self.up.remove(&labels);
        self.watches_open.remove(&labels);
    }

    /// Records the outcome of one control-plane pass on a cluster.
    pub fn set_up(&self, cluster: &str, up: bool, category: Option<&'static str>) {
        self.up
            .get_or_create(&ClusterLabels {
                cluster: cluster.into(),
            })
            .set(i64::from(up));
        if let Some(category) = category {
            self.errors
                .get_or_create(&CategoryLabels {
                    cluster: cluster.into(),
                    category,
                })
                .inc();
        }
    }

    pub(crate) fn observe(
        &self,
        cluster: &str,
        verb: &'static str,
        code: &'static str,
        started: Instant,
    ) {
        self.api_requests
            .get_or_create(&RequestLabels {
                cluster: cluster.into(),
                verb,
                code,
            })
            .inc();
        self.api_duration
            .get_or_create(&VerbLabels {
                cluster: cluster.into(),
                verb,
            })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// The Kubernetes verb of a request, from its method and path (`/api/v1/...`,
/// `/apis/<group>/<version>/...`, optionally `namespaces/<ns>/` before the resource).
pub fn verb_of(method: &http::Method, uri: &http::Uri) -> &'static str {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    if rest.is_empty() {
        return "discovery";
    }
    let rest = match rest {
        ["namespaces", _, _, ..] => &rest[2..],
        other => other,
    };
    let collection = rest.len() == 1;
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if collection => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if collection => "deletecollection",
        http::Method::DELETE => "delete",
        _ => "get",
    }
}

/// A status code as a bounded label value: common codes as themselves, others by class.
pub fn code_label(status: u16) -> &'static str {
    const KNOWN: [&str; 17] = [
        "200", "201", "202", "204", "400", "401", "403", "404", "405", "409", "410", "422", "429",
        "500", "502", "503", "504",
    ];
    let text = status.to_string();
    if let Some(known) = KNOWN.iter().find(|k| **k == text) {
        return known;
    }
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// One request in flight: counted as `timeout` if it is dropped before an answer (the
/// cluster layer drops requests that exceed their deadline).
struct InFlight {
    metrics: Arc<ClusterMetrics>,
    cluster: Arc<str>,
    verb: &'static str,
    started: Instant,
    done: bool,
}

impl InFlight {
    fn finish(mut self, code: &'static str) {
        self.done = true;
        self.metrics
            .observe(&self.cluster, self.verb, code, self.started);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.metrics
                .observe(&self.cluster, self.verb, "timeout", self.started);
        }
    }
}

/// Open and most-ever-open streams per watch (path and selectors) of one client: a watch
/// started while fewer are open than once were replaces one that ended.
#[derive(Debug, Default)]
pub(crate) struct WatchTracker {
    streams: HashMap<String, (u32, u32)>,
}

impl WatchTracker {
    /// What identifies a watch: its path and selectors, not its resourceVersion.
    pub(crate) fn key(uri: &http::Uri) -> String {
        let mut key = uri.path().to_string();
        for pair in uri.query().unwrap_or_default().split('&') {
            if pair.starts_with("labelSelector=") || pair.starts_with("fieldSelector=") {
                key.push('&');
                key.push_str(pair);
            }
        }
        key
    }

    /// A watch request is being sent: true when it restarts one that ended.
    pub(crate) fn starting(&mut self, key: &str) -> bool {
        self.streams
            .get(key)
            .is_some_and(|(open, peak)| open < peak)
    }

    /// The request was answered with a stream.
    pub(crate) fn opened(&mut self, key: &str) {
        let (open, peak) = self.streams.entry(key.to_string()).or_default();
        *open += 1;
        *peak = (*peak).max(*open);
    }

    /// The stream ended (its body was dropped).
    pub(crate) fn closed(&mut self, key: &str) {
        if let Some((open, _)) = self.streams.get_mut(key) {
            *open = open.saturating_sub(1);
        }
    }
}

/// Held by an open watch's response body: closes it in the tracker and the gauge when the
/// body is dropped.
struct OpenWatch {
    tracker: Arc<Mutex<WatchTracker>>,
    key: String,
    gauge: Gauge,
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closed(&self.key);
        self.gauge.dec();
    }
}

/// A client that sends through `client` and counts every request.
pub fn metered_client(
    client: kube::Client,
    cluster: &str,
    metrics: Arc<ClusterMetrics>,
) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    let cluster: Arc<str> = Arc::from(cluster);
    let tracker: Arc<Mutex<WatchTracker>> = Arc::default();
    let labels = ClusterLabels {
        cluster: cluster.to_string(),
    };
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let client = client.clone();
        let verb = verb_of(req.method(), req.uri());
        let flight = InFlight {
            metrics: metrics.clone(),
            cluster: cluster.clone(),
            verb,
            started: Instant::now(),
            done: false,
        };
        let watch = (verb == "watch").then(|| {
            let key = WatchTracker::key(req.uri());
            let restart = tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .starting(&key);
            if restart {
                metrics.watch_restarts.get_or_create(&labels).inc();
            }
            (
                tracker.clone(),
                key,
                metrics.watches_open.get_or_create(&labels).clone(),
            )
        });
        async move {
            let result = client.send(req).await;
            flight.finish(match &result {
                Ok(response) => code_label(response.status().as_u16()),
                Err(_) => "unreachable",
            });
            let response = result?;
            let open = match watch {
                Some((tracker, key, gauge)) if response.status().is_success() => {
                    tracker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .opened(&key);
                    gauge.inc();
                    Some(OpenWatch {
                        tracker,
                        key,
                        gauge,
                    })
                }
                _ => None,
            };
            // The body keeps the stream counted open until the client drops it.
            Ok::<_, kube::Error>(response.map(|body| {
                http_body_util::BodyExt::map_frame(body, move |frame| {
                    let _open = &open;
                    frame
                })
            }))
        }
    });
    kube::Client::new(service, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verb(method: &str, uri: &str) -> &'static str {
        verb_of(&method.parse().expect("method"), &uri.parse().expect("uri"))
    }

    #[test]
    fn verbs_from_method_and_path() {
        assert_eq!(verb("GET", "/api/v1"), "discovery");
        assert_eq!(verb("GET", "/apis/kudo.dev/v1beta1"), "discovery");
        assert_eq!(verb("GET", "/api/v1/namespaces"), "list");
        assert_eq!(verb("GET", "/api/v1/namespaces/ns1"), "get");
        assert_eq!(verb("GET", "/api/v1/namespaces/ns1/configmaps"), "list");
        assert_eq!(verb("GET", "/api/v1/namespaces/ns1/configmaps/x"), "get");
        assert_eq!(
            verb("GET", "/apis/kudo.dev/v1beta1/instances?watch=true&rv=1"),
            "watch"
        );
        assert_eq!(
            verb(
                "PATCH",
                "/apis/kudo.dev/v1beta1/namespaces/a/instances/i/status"
            ),
            "patch"
        );
        assert_eq!(verb("POST", "/api/v1/namespaces/a/pods"), "create");
        assert_eq!(verb("PUT", "/api/v1/namespaces/a/pods/p"), "update");
        assert_eq!(verb("DELETE", "/api/v1/namespaces/a/pods/p"), "delete");
        assert_eq!(
            verb("DELETE", "/api/v1/namespaces/a/pods"),
            "deletecollection"
        );
        assert_eq!(verb("DELETE", "/api/v1/namespaces/a"), "delete");
        for (m, u) in [("GET", "/x"), ("OPTIONS", "/api/v1/pods/p")] {
            assert!(VERBS.contains(&verb(m, u)));
        }
    }

    #[test]
    fn a_watch_started_again_after_its_stream_ended_is_a_restart() {
        let key = |u: &str| WatchTracker::key(&u.parse().expect("uri"));
        let a =
            key("/apis/kudo.dev/v1beta1/instances?watch=true&resourceVersion=1&timeoutSeconds=290");
        let a_later = key("/apis/kudo.dev/v1beta1/instances?resourceVersion=99&watch=true");
        let selected = key("/api/v1/pods?watch=true&labelSelector=app%3Dx");
        assert_eq!(
            a, a_later,
            "the resourceVersion does not make another watch"
        );
        assert_ne!(key("/api/v1/pods?watch=true"), selected);
        let mut t = WatchTracker::default();
        // Two watchers of the same thing (engine and worker) start: neither is a restart.
        assert!(!t.starting(&a));
        t.opened(&a);
        assert!(!t.starting(&a));
        t.opened(&a);
        assert!(!t.starting(&selected));
        t.opened(&selected);
        // One ends (timeout): the next watch of it restarts it, and a refused attempt too.
        t.closed(&a);
        assert!(t.starting(&a), "replaces the ended stream");
        assert!(
            t.starting(&a),
            "a retry before a stream opens is still a restart"
        );
        t.opened(&a);
        assert!(!t.starting(&a), "both streams open again");
        assert!(!t.starting(&selected));
    }

    /// Through a real client: a watch is open while its stream lives, and watching the same
    /// thing again after it ended counts one restart.
    #[tokio::test]
    async fn a_client_counts_open_watches_and_restarts() {
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{Api, WatchParams};
        let mut registry = Registry::default();
        let m = Arc::new(ClusterMetrics::register(&mut registry));
        m.init_cluster("w", &["unreachable"]);
        let sim = crate::sim::SimCluster::new("w");
        let api: Api<ConfigMap> =
            Api::namespaced(metered_client(sim.client(), "w", m.clone()), "default");
        let labels = ClusterLabels {
            cluster: "w".into(),
        };
        let open = || m.watches_open.get_or_create(&labels).get();
        let restarts = || m.watch_restarts.get_or_create(&labels).get();
        let first = api
            .watch(&WatchParams::default(), "0")
            .await
            .expect("watch");
        assert_eq!((open(), restarts()), (1, 0));
        drop(first);
        assert_eq!((open(), restarts()), (0, 0));
        let again = api
            .watch(&WatchParams::default(), "0")
            .await
            .expect("watch");
        assert_eq!((open(), restarts()), (1, 1));
        let other = api
            .watch(&WatchParams::default().labels("app=x"), "0")
            .await
            .expect("watch");
        assert_eq!(
            (open(), restarts()),
            (2, 1),
            "another selector is a new watch"
        );
        drop((again, other));
        assert_eq!(open(), 0);
    }

    #[test]
    fn codes_are_a_closed_set() {
        assert_eq!(code_label(404), "404");
        assert_eq!(code_label(418), "4xx");
        assert_eq!(code_label(599), "5xx");
        assert_eq!(code_label(9999), "5xx");
        let distinct: std::collections::BTreeSet<_> = (0..1000u16).map(code_label).collect();
        assert!(distinct.len() <= 22, "{distinct:?}");
    }
}
