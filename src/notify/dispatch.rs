//! Delivery: one bounded queue and one worker per sink, so a slow or hanging sink delays
//! only its own deliveries, and [`Notifier::emit`] never waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::config::{NotifyConfig, SinkConfig, SinkKind};
use super::{Event, sink};
use crate::metrics::notify::{DropLabels, DropReason, NotifyMetrics, SinkLabels};
use crate::repo::http::{HttpClient, HttpError, HttpOptions};

/// Hands events to the sinks. Cheap to clone; workers stop when the last clone is dropped.
#[derive(Clone, Default)]
pub struct Notifier {
    sinks: Arc<Vec<SinkHandle>>,
    metrics: Arc<NotifyMetrics>,
    /// Values of sensitive parameters, scrubbed from every event (see [`Notifier::set_secrets`]).
    secrets: Arc<std::sync::RwLock<Vec<String>>>,
}

struct SinkHandle {
    config: Arc<SinkConfig>,
    tx: mpsc::Sender<Event>,
    /// Queue-full drops so far, to log the first and then every 100th.
    full_drops: AtomicU64,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Notifier {
    /// Starts one worker per sink (needs a Tokio runtime) and registers the metrics.
    /// A sink whose HTTP client cannot be built (bad CA file) is logged and left out.
    pub fn start(
        config: &NotifyConfig,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Notifier {
        let metrics = Arc::new(NotifyMetrics::register(registry));
        let mut sinks = Vec::new();
        for s in &config.sinks {
            metrics.init_sink(&s.name);
            let client = match HttpClient::new(HttpOptions {
                connect_timeout: s.timeout,
                timeout: s.timeout,
                retries: s.retries,
                backoff: s.backoff,
                max_backoff: s.backoff.saturating_mul(16),
                max_bytes: 1024 * 1024,
                ca_file: s.ca_file.clone(),
                // Webhook and Slack URLs may be secrets themselves (a Slack webhook's path
                // is its key); commit-status APIs hold their token in a header instead.
                redact_urls: matches!(s.kind, SinkKind::Webhook { .. } | SinkKind::Slack { .. }),
            }) {
                Ok(c) => c,
                Err(e) => {
                    warn!(sink = %s.name, error = %e, "notification sink disabled");
                    continue;
                }
            };
            let (tx, rx) = mpsc::channel(config.queue_size);
            let config = Arc::new(s.clone());
            tokio::spawn(worker(config.clone(), client, rx, metrics.clone()));
            sinks.push(SinkHandle {
                config,
                tx,
                full_drops: AtomicU64::new(0),
            });
        }
        Notifier {
            sinks: Arc::new(sinks),
            metrics,
            secrets: Default::default(),
        }
    }

    pub fn metrics(&self) -> &NotifyMetrics {
        &self.metrics
    }

    /// The sensitive values no event may carry (the daemon sets them per desired state):
    /// a plan message quoting an API server's error may hold one.
    pub fn set_secrets(&self, secrets: Vec<String>) {
        *self.secrets.write().unwrap_or_else(|p| p.into_inner()) = secrets;
    }

    /// Queues the event for every sink that wants it; never waits.
    pub fn emit(&self, mut event: Event) {
        {
            let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
            if !secrets.is_empty() {
                event.message = crate::package::redact::scrub(&event.message, &secrets);
            }
        }
        for s in self.sinks.iter() {
            if !s.config.wants(&event) {
                continue;
            }
            match s.tx.try_send(event.clone()) {
                Ok(()) => self.queued(&s.config.name, 1),
                Err(mpsc::error::TrySendError::Full(e)) => {
                    self.drop_counted(&s.config.name, DropReason::queue_full);
                    let n = s.full_drops.fetch_add(1, Ordering::Relaxed);
                    if n % 100 == 0 {
                        warn!(sink = %s.config.name, event = e.event.as_str(), dropped_so_far = n + 1, "notification queue full; dropping");
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.drop_counted(&s.config.name, DropReason::gave_up);
                }
            }
        }
    }

    fn queued(&self, sink: &str, delta: i64) {
        self.metrics
            .queued
            .get_or_create(&SinkLabels {
                sink: sink.to_string(),
            })
            .inc_by(delta);
    }

    fn drop_counted(&self, sink: &str, reason: DropReason) {
        self.metrics
            .dropped
            .get_or_create(&DropLabels {
                sink: sink.to_string(),
                reason,
            })
            .inc();
    }
}

async fn worker(
    config: Arc<SinkConfig>,
    client: HttpClient,
    mut rx: mpsc::Receiver<Event>,
    metrics: Arc<NotifyMetrics>,
) {
    let labels = SinkLabels {
        sink: config.name.clone(),
    };
    while let Some(event) = rx.recv().await {
        metrics.queued.get_or_create(&labels).dec();
        let token = match token(&config.kind) {
            Ok(t) => t,
            Err(reason) => {
                warn!(sink = %config.name, %reason, "cannot read the sink's token; dropping");
                count_drop(&metrics, &config.name, DropReason::gave_up);
                continue;
            }
        };
        let Some(req) = sink::request(&config.kind, token.as_deref(), &event) else {
            continue;
        };
        match client.send(&req).await {
            Ok(_) => {
                debug!(sink = %config.name, event = event.event.as_str(), "notification delivered");
                metrics.delivered.get_or_create(&labels).inc();
            }
            Err(e @ HttpError::Status { status, .. }) if (400..500).contains(&status) => {
                warn!(sink = %config.name, event = event.event.as_str(), status, error = %e, "notification refused; not retried");
                count_drop(&metrics, &config.name, DropReason::rejected);
            }
            Err(e) => {
                warn!(sink = %config.name, event = event.event.as_str(), error = %e, "notification dropped");
                count_drop(&metrics, &config.name, DropReason::gave_up);
            }
        }
    }
}

fn count_drop(metrics: &NotifyMetrics, sink: &str, reason: DropReason) {
    metrics
        .dropped
        .get_or_create(&DropLabels {
            sink: sink.to_string(),
            reason,
        })
        .inc();
}

/// The sink's token, read at each delivery so a rotated file is picked up.
fn token(kind: &SinkKind) -> Result<Option<String>, String> {
    let file = match kind {
        SinkKind::GitHub { token_file, .. } | SinkKind::GitLab { token_file, .. } => token_file,
        _ => &None,
    };
    match file {
        None => Ok(None),
        Some(f) => std::fs::read_to_string(f)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| format!("{}: {e}", f.display())),
    }
}
