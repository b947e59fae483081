//! Webhook authentication, pure: GitHub's `X-Hub-Signature-256` (HMAC-SHA256 of the body)
//! and GitLab's `X-Gitlab-Token` (the secret itself), checked against each repository's
//! secret in constant time. A repository whose secret file is unreadable or empty refuses
//! every request (fail closed), and the endpoint is rate limited by a token bucket.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::config::WebhookConfig;

/// Largest webhook body accepted (GitHub push payloads are far smaller in practice); a
/// larger one is answered 413 from its Content-Length, before it is read or checked.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Constant-time comparison of a presented secret with the expected one (empty never
/// matches).
pub fn same_secret(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// A repository's webhook secret as read for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookSecret {
    /// No `webhookSecretFile`: unsigned requests may sync it.
    Open,
    /// The secret (trimmed, never empty).
    Secret(String),
    /// `webhookSecretFile` is set but unusable: nothing may sync the repository through the
    /// webhook (failing closed), and this says why.
    Unavailable(String),
}

impl HookSecret {
    /// Reads a repository's secret file now (it may be rotated or removed at run time). An
    /// unreadable, empty or whitespace-only file is [`HookSecret::Unavailable`]: an empty key
    /// would accept an empty token and an HMAC anyone can compute.
    pub fn load(file: Option<&Path>) -> HookSecret {
        let Some(file) = file else {
            return HookSecret::Open;
        };
        match std::fs::read_to_string(file) {
            Err(e) => HookSecret::Unavailable(format!(
                "webhook secret file {} is unreadable ({e}); webhooks for this repository are refused",
                file.display()
            )),
            Ok(text) if text.trim().is_empty() => HookSecret::Unavailable(format!(
                "webhook secret file {} is empty; webhooks for this repository are refused",
                file.display()
            )),
            Ok(text) => HookSecret::Secret(text.trim().to_string()),
        }
    }

    /// Why the secret cannot be used, if it cannot.
    pub fn problem(&self) -> Option<&str> {
        match self {
            HookSecret::Unavailable(why) => Some(why),
            _ => None,
        }
    }

    fn key(&self) -> Option<&str> {
        match self {
            HookSecret::Secret(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }
}

/// Why a webhook request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("X-Hub-Signature-256 is not sha256=<hex>")]
    BadSignatureHeader,
    #[error("no X-Hub-Signature-256 or X-Gitlab-Token header")]
    Unsigned,
    #[error("signature or token matches no repository's webhook secret")]
    NoMatch,
    /// Nothing matched and some repositories' secrets could not be read: the request may have
    /// been for them (a server-side problem, answered 503).
    #[error(
        "signature or token matches no repository's webhook secret; the webhook secret of {} is unavailable",
        .0.join(", ")
    )]
    SecretUnavailable(Vec<String>),
    #[error("more than {per_minute} webhook requests per minute (burst {burst}); retry later")]
    RateLimited { per_minute: u32, burst: u32 },
}

/// The repositories a webhook request may sync, or why it is refused. A request that carries
/// a signature or token syncs the repositories whose secret it matches (none: refused); a
/// request with neither syncs the repositories configured without a secret (none: refused).
/// A repository whose secret is unavailable is never synced by a request.
pub fn authorize(
    headers: &axum::http::HeaderMap,
    body: &[u8],
    repos: &[(String, HookSecret)],
) -> Result<Vec<String>, HookError> {
    let github = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let gitlab = headers.get("x-gitlab-token").and_then(|v| v.to_str().ok());
    let matched: Vec<String> = match (github, gitlab) {
        (Some(sig), _) => {
            let Some(given) = sig
                .strip_prefix("sha256=")
                .and_then(|h| hex::decode(h).ok())
            else {
                return Err(HookError::BadSignatureHeader);
            };
            repos
                .iter()
                .filter(|(_, secret)| {
                    secret.key().is_some_and(|s| {
                        Hmac::<Sha256>::new_from_slice(s.as_bytes()).is_ok_and(|mut mac| {
                            mac.update(body);
                            mac.verify_slice(&given).is_ok()
                        })
                    })
                })
                .map(|(n, _)| n.clone())
                .collect()
        }
        (None, Some(token)) => repos
            .iter()
            .filter(|(_, secret)| secret.key().is_some_and(|s| same_secret(token, s)))
            .map(|(n, _)| n.clone())
            .collect(),
        (None, None) => {
            let open: Vec<String> = repos
                .iter()
                .filter(|(_, s)| *s == HookSecret::Open)
                .map(|(n, _)| n.clone())
                .collect();
            if open.is_empty() {
                return Err(HookError::Unsigned);
            }
            return Ok(open);
        }
    };
    if !matched.is_empty() {
        return Ok(matched);
    }
    let unavailable: Vec<String> = repos
        .iter()
        .filter(|(_, s)| s.problem().is_some())
        .map(|(n, _)| n.clone())
        .collect();
    if unavailable.is_empty() {
        Err(HookError::NoMatch)
    } else {
        Err(HookError::SecretUnavailable(unavailable))
    }
}

/// A token bucket over the webhook endpoint: `burst` requests at once, refilled at
/// `rate_per_minute`. Checked before any secret is read or HMAC computed.
#[derive(Debug)]
pub struct RateLimiter {
    config: WebhookConfig,
    /// Tokens left and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    pub fn new(config: WebhookConfig) -> RateLimiter {
        RateLimiter {
            config,
            state: Mutex::new((f64::from(config.burst.max(1)), Instant::now())),
        }
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&self) -> Result<(), Duration> {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> Result<(), Duration> {
        let per_second = f64::from(self.config.rate_per_minute.max(1)) / 60.0;
        let capacity = f64::from(self.config.burst.max(1));
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *state;
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        let tokens = (tokens + elapsed * per_second).min(capacity);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / per_second))
        }
    }

    pub fn refusal(&self) -> HookError {
        HookError::RateLimited {
            per_minute: self.config.rate_per_minute,
            burst: self.config.burst,
        }
    }
}

/// GitHub's signature header value for `body` under `secret` (for clients and tests).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length: this never fails.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn repos() -> Vec<(String, HookSecret)> {
        vec![
            ("a".into(), HookSecret::Secret("s3cret".into())),
            ("b".into(), HookSecret::Secret("other".into())),
            ("open".into(), HookSecret::Open),
        ]
    }

    fn with(name: &'static str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, value.parse().expect("header"));
        h
    }

    #[test]
    fn github_hmac() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = with("x-hub-signature-256", &github_signature("s3cret", body));
        assert_eq!(authorize(&good, body, &repos()), Ok(vec!["a".to_string()]));
        let bad = with("x-hub-signature-256", &github_signature("wrong", body));
        assert_eq!(authorize(&bad, body, &repos()), Err(HookError::NoMatch));
        // Same signature, tampered body.
        assert!(authorize(&good, b"{}", &repos()).is_err());
        let garbage = with("x-hub-signature-256", "md5=abc");
        assert_eq!(
            authorize(&garbage, body, &repos()),
            Err(HookError::BadSignatureHeader)
        );
    }

    #[test]
    fn gitlab_token() {
        let ok = with("x-gitlab-token", "other");
        assert_eq!(authorize(&ok, b"", &repos()), Ok(vec!["b".to_string()]));
        assert!(authorize(&with("x-gitlab-token", "nope"), b"", &repos()).is_err());
    }

    #[test]
    fn unsigned_requests_only_reach_open_repositories() {
        assert_eq!(
            authorize(&HeaderMap::new(), b"", &repos()),
            Ok(vec!["open".to_string()])
        );
        let closed = &repos()[..2];
        assert!(authorize(&HeaderMap::new(), b"", closed).is_err());
    }

    #[test]
    fn an_unusable_secret_file_refuses_every_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blank = dir.path().join("blank");
        std::fs::write(&blank, " \n\t\n").expect("write");
        let missing = dir.path().join("missing");
        let blank_secret = HookSecret::load(Some(&blank));
        let missing_secret = HookSecret::load(Some(&missing));
        assert!(
            blank_secret
                .problem()
                .is_some_and(|p| p.contains("is empty")),
            "{blank_secret:?}"
        );
        assert!(
            missing_secret
                .problem()
                .is_some_and(|p| p.contains("is unreadable") && p.contains("missing")),
            "{missing_secret:?}"
        );
        let repos = vec![
            ("blank".to_string(), blank_secret),
            ("gone".to_string(), missing_secret),
        ];
        let body = b"{}";
        // Unsigned, an empty token, an HMAC made with an empty key: all refused.
        assert_eq!(
            authorize(&HeaderMap::new(), body, &repos),
            Err(HookError::Unsigned)
        );
        let refused = HookError::SecretUnavailable(vec!["blank".into(), "gone".into()]);
        assert_eq!(
            authorize(&with("x-gitlab-token", ""), body, &repos),
            Err(refused.clone())
        );
        let empty_key = with("x-hub-signature-256", &github_signature("", body));
        assert_eq!(authorize(&empty_key, body, &repos), Err(refused));
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").expect("write");
        assert_eq!(
            HookSecret::load(Some(&secret)),
            HookSecret::Secret("s3cret".into())
        );
        assert_eq!(HookSecret::load(None), HookSecret::Open);
    }

    #[test]
    fn the_rate_limiter_is_a_token_bucket() {
        let limiter = RateLimiter::new(WebhookConfig {
            rate_per_minute: 60,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.take_at(t0), Ok(()));
        }
        let wait = limiter.take_at(t0).expect_err("bucket empty");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        // One token per second comes back, never more than the burst.
        assert_eq!(limiter.take_at(t0 + Duration::from_secs(1)), Ok(()));
        assert!(limiter.take_at(t0 + Duration::from_secs(1)).is_err());
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.take_at(later), Ok(()));
        }
        assert!(limiter.take_at(later).is_err());
        assert!(limiter.refusal().to_string().contains("more than 60"));
    }
}
