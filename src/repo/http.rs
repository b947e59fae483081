//! An HTTP client done once for package repositories and notification sinks: rustls with the
//! system roots plus an optional CA file, connect and total timeouts, retries with jittered
//! exponential backoff on connection errors and 5xx (and 429), never on other 4xx, and a
//! size limit on every response body.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("HTTP client: {0}")]
    Build(String),
    #[error("{method} {url}: {reason} (gave up after {attempts} attempt(s))")]
    Transport {
        method: String,
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("{method} {url}: HTTP {status} (after {attempts} attempt(s)): {excerpt}")]
    Status {
        method: String,
        url: String,
        status: u16,
        attempts: u32,
        excerpt: String,
    },
    #[error("{method} {url}: the response is larger than the limit of {limit} bytes")]
    TooLarge {
        method: String,
        url: String,
        limit: u64,
    },
}

impl HttpError {
    /// The HTTP status of a refused request, if any.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub connect_timeout: Duration,
    /// Upper bound of one attempt, body included.
    pub timeout: Duration,
    /// Attempts after the first one.
    pub retries: u32,
    /// First backoff; doubled per attempt (with jitter), capped at `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Largest accepted response body.
    pub max_bytes: u64,
    /// PEM file of extra trusted CAs (added to the system roots).
    pub ca_file: Option<PathBuf>,
    /// Errors and logs show request URLs as `scheme://host:port/…` (for URLs that are
    /// secrets themselves, such as Slack webhooks).
    pub redact_urls: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            max_bytes: 64 * 1024 * 1024,
            ca_file: None,
            redact_urls: false,
        }
    }
}

/// A response whose body was read whole (within the limit).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// One request to send (rebuilt for every attempt).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn get(url: impl Into<String>) -> Request {
        Request {
            method: reqwest::Method::GET,
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn post_json(url: impl Into<String>, body: &serde_json::Value) -> Request {
        Request {
            method: reqwest::Method::POST,
            url: url.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: Some(body.to_string().into_bytes()),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    options: HttpOptions,
}

impl HttpClient {
    pub fn new(options: HttpOptions) -> Result<HttpClient, HttpError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(options.connect_timeout)
            .timeout(options.timeout)
            .user_agent(concat!("kudo/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &options.ca_file {
            let ca_err = |reason: String| HttpError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| HttpError::Build(e.to_string()))?;
        Ok(HttpClient { client, options })
    }

    pub fn options(&self) -> &HttpOptions {
        &self.options
    }

    /// The URL as errors and logs show it.
    fn shown(&self, url: &str) -> String {
        if self.options.redact_urls {
            super::client::redact_url(url)
        } else {
            url.to_string()
        }
    }

    /// Sends with retries. 2xx and 304 are answers; other 4xx fail at once; 5xx, 429 and
    /// connection errors are retried with backoff until the retries are spent.
    pub async fn send(&self, req: &Request) -> Result<Response, HttpError> {
        self.send_limited(req, self.options.max_bytes).await
    }

    /// [`HttpClient::send`] with a lower body limit for this request.
    pub async fn send_limited(&self, req: &Request, max_bytes: u64) -> Result<Response, HttpError> {
        let limit = max_bytes.min(self.options.max_bytes);
        let method = req.method.to_string();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let outcome = self.attempt(req, limit).await;
            let retryable = match &outcome {
                Ok(r) if r.status == 429 || r.status >= 500 => true,
                Ok(_) => false,
                Err(HttpError::Transport { .. }) => true,
                Err(_) => false,
            };
            if !retryable || attempt > self.options.retries {
                return match outcome {
                    Ok(r) if (200..300).contains(&r.status) || r.status == 304 => Ok(r),
                    Ok(r) => Err(HttpError::Status {
                        method,
                        url: self.shown(&req.url),
                        status: r.status,
                        attempts: attempt,
                        excerpt: excerpt(&r.body),
                    }),
                    Err(HttpError::Transport { reason, .. }) => Err(HttpError::Transport {
                        method,
                        url: self.shown(&req.url),
                        attempts: attempt,
                        reason,
                    }),
                    Err(e) => Err(e),
                };
            }
            let delay = backoff(&self.options, attempt, fastrand::f64());
            tracing::debug!(%method, url = %self.shown(&req.url), attempt, delay_ms = delay.as_millis() as u64, "retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, req: &Request, limit: u64) -> Result<Response, HttpError> {
        let method = req.method.to_string();
        // reqwest puts the URL in its messages; it is shown once, by us, redacted if asked.
        let transport = |e: reqwest::Error| HttpError::Transport {
            method: method.clone(),
            url: self.shown(&req.url),
            attempts: 1,
            reason: error_chain(&e.without_url()),
        };
        let mut b = self.client.request(req.method.clone(), &req.url);
        for (k, v) in &req.headers {
            b = b.header(k, v);
        }
        if let Some(body) = &req.body {
            b = b.body(body.clone());
        }
        let mut resp = b.send().await.map_err(transport)?;
        let too_large = || HttpError::TooLarge {
            method: method.clone(),
            url: self.shown(&req.url),
            limit,
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() as u64 + chunk.len() as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The wait before attempt `attempt + 1`: base·2^(attempt-1), capped, with ±50% jitter.
pub fn backoff(options: &HttpOptions, attempt: u32, jitter: f64) -> Duration {
    let exp = options
        .backoff
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let capped = exp.min(options.max_backoff);
    capped.mul_f64(0.5 + jitter.clamp(0.0, 1.0))
}

/// At most 200 characters of a body, on one line, for logs and errors.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 200 {
        format!("{}…", one_line.chars().take(200).collect::<String>())
    } else if one_line.is_empty() {
        "(empty body)".into()
    } else {
        one_line
    }
}

/// reqwest's error with its causes (it hides the useful part, e.g. "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let o = HttpOptions {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..Default::default()
        };
        assert_eq!(backoff(&o, 1, 0.5), Duration::from_millis(100));
        assert_eq!(backoff(&o, 2, 0.5), Duration::from_millis(200));
        assert_eq!(backoff(&o, 3, 0.5), Duration::from_millis(350));
        assert_eq!(backoff(&o, 30, 0.0), Duration::from_millis(175));
    }

    #[test]
    fn excerpt_is_short_and_on_one_line() {
        assert_eq!(excerpt(b"bad\n  request"), "bad request");
        assert_eq!(excerpt(b""), "(empty body)");
        assert_eq!(excerpt(&[b'x'; 500]).chars().count(), 201);
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = HttpClient::new(HttpOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
