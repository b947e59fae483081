//! Webhook authentication, pure: GitHub's `X-Hub-Signature-256` (HMAC-SHA256 of the body)
//! and GitLab's `X-Gitlab-Token` (the secret itself), checked against each repository's
//! secret in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Largest webhook body accepted (GitHub push payloads are far smaller in practice); a
/// larger one is answered 413 from its Content-Length, before it is read or checked.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Constant-time comparison of a presented secret with the expected one (empty never
/// matches).
pub fn same_secret(given: &str, expected: &str) -> bool {
    !expected.is_empty() && bool::from(given.as_bytes().ct_eq(expected.as_bytes()))
}

/// The repositories a webhook request may sync, or why it is refused. A request that carries
/// a signature or token syncs the repositories whose secret it matches (none: refused); a
/// request with neither syncs the repositories configured without a secret (none: refused).
pub fn authorize(
    headers: &axum::http::HeaderMap,
    body: &[u8],
    repos: &[(String, Option<String>)],
) -> Result<Vec<String>, String> {
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
                return Err("X-Hub-Signature-256 is not sha256=<hex>".to_string());
            };
            repos
                .iter()
                .filter(|(_, secret)| {
                    secret.as_deref().is_some_and(|s| {
                        let mut mac = Hmac::<Sha256>::new_from_slice(s.as_bytes())
                            .expect("HMAC takes keys of any length");
                        mac.update(body);
                        mac.verify_slice(&given).is_ok()
                    })
                })
                .map(|(n, _)| n.clone())
                .collect()
        }
        (None, Some(token)) => repos
            .iter()
            .filter(|(_, secret)| {
                secret
                    .as_deref()
                    .is_some_and(|s| bool::from(s.as_bytes().ct_eq(token.as_bytes())))
            })
            .map(|(n, _)| n.clone())
            .collect(),
        (None, None) => {
            let open: Vec<String> = repos
                .iter()
                .filter(|(_, s)| s.is_none())
                .map(|(n, _)| n.clone())
                .collect();
            if open.is_empty() {
                return Err("no X-Hub-Signature-256 or X-Gitlab-Token header".to_string());
            }
            return Ok(open);
        }
    };
    if matched.is_empty() {
        Err("signature or token matches no repository's webhook secret".to_string())
    } else {
        Ok(matched)
    }
}

/// GitHub's signature header value for `body` under `secret` (for clients and tests).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn repos() -> Vec<(String, Option<String>)> {
        vec![
            ("a".into(), Some("s3cret".into())),
            ("b".into(), Some("other".into())),
            ("open".into(), None),
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
        assert!(
            authorize(&bad, body, &repos())
                .expect_err("refused")
                .contains("matches no")
        );
        // Same signature, tampered body.
        assert!(authorize(&good, b"{}", &repos()).is_err());
        let garbage = with("x-hub-signature-256", "md5=abc");
        assert!(
            authorize(&garbage, body, &repos())
                .expect_err("refused")
                .contains("sha256=<hex>")
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
}
