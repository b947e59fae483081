//! Metrics of the clusters kudo talks to: up/down as the control plane sees it, failures by
//! bounded category, and every Kubernetes API request by verb and status code, measured by a
//! wrapper around the cluster's `kube::Client` ([`metered_client`]), so the engine, the
//! GitOps workers and the watches are all counted.

use std::sync::Arc;
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
}

impl ClusterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = ClusterMetrics {
            up: Family::default(),
            errors: Family::default(),
            api_requests: Family::default(),
            api_duration: Family::new_with_constructor(|| Histogram::new(super::latency_buckets())),
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
        m
    }

    /// Starts a cluster's error counters at zero for each of `categories` (every
    /// `ErrorKind`, passed in so metrics stay a leaf module), so a healthy fleet exports
    /// `kudo_cluster_errors_total ... 0` instead of nothing.
    pub fn init_cluster(&self, cluster: &str, categories: &[&'static str]) {
        for &category in categories {
            self.errors
                .get_or_create(&CategoryLabels {
                    cluster: cluster.into(),
                    category,
                })
                .inc_by(0);
        }
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

/// A client that sends through `client` and counts every request.
pub fn metered_client(
    client: kube::Client,
    cluster: &str,
    metrics: Arc<ClusterMetrics>,
) -> kube::Client {
    let namespace = client.default_namespace().to_string();
    let cluster: Arc<str> = Arc::from(cluster);
    let service = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let client = client.clone();
        let flight = InFlight {
            metrics: metrics.clone(),
            cluster: cluster.clone(),
            verb: verb_of(req.method(), req.uri()),
            started: Instant::now(),
            done: false,
        };
        async move {
            let result = client.send(req).await;
            flight.finish(match &result {
                Ok(response) => code_label(response.status().as_u16()),
                Err(_) => "unreachable",
            });
            result
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
    fn codes_are_a_closed_set() {
        assert_eq!(code_label(404), "404");
        assert_eq!(code_label(418), "4xx");
        assert_eq!(code_label(599), "5xx");
        assert_eq!(code_label(9999), "5xx");
        let distinct: std::collections::BTreeSet<_> = (0..1000u16).map(code_label).collect();
        assert!(distinct.len() <= 22, "{distinct:?}");
    }
}
