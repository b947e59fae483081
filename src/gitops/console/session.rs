//! Console sessions: an API token exchanged once (`POST /login`) for a random session id in
//! an HttpOnly, SameSite=Strict cookie, because a browser's EventSource cannot send an
//! `Authorization` header.
//!
//! Guarantees:
//! - the token itself is never stored: a session keeps the token's name, its role and a
//!   SHA-256 of its value, and is valid only while the token's file still holds that value
//!   (rotating or removing a token ends its sessions at once);
//! - a write made with a session needs the session's CSRF token in the `X-Kudo-Csrf` header
//!   (a cookie alone never writes);
//! - sessions end after [`SESSION_TTL`], and at most [`MAX_SESSIONS`] are kept (the oldest
//!   goes first), so logins cannot grow memory without bound;
//! - session ids and CSRF tokens come from the operating system's random source (UUID v4,
//!   two per id: 244 random bits).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The session cookie's name.
pub const COOKIE: &str = "kudo_session";
/// The header a session's write must carry its CSRF token in.
pub const CSRF_HEADER: &str = "x-kudo-csrf";
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
pub const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The API token's name (who the audit log names).
    pub token: String,
    pub write: bool,
    pub csrf: String,
    token_hash: [u8; 32],
    created: Instant,
}

impl Session {
    /// Whether `value` (the token file's content now) is still the token this session was
    /// made from.
    pub fn token_matches(&self, value: &str) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(hash(value).ct_eq(&self.token_hash))
    }

    pub fn csrf_matches(&self, given: &str) -> bool {
        crate::gitops::webhook::same_secret(given, &self.csrf)
    }
}

fn hash(value: &str) -> [u8; 32] {
    Sha256::digest(value.trim().as_bytes()).into()
}

fn random_id() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for the token `name` with value `value`; returns its id.
    pub fn create(&self, name: &str, write: bool, value: &str) -> (String, Session) {
        self.create_at(name, write, value, Instant::now())
    }

    fn create_at(&self, name: &str, write: bool, value: &str, now: Instant) -> (String, Session) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| now.saturating_duration_since(s.created) < SESSION_TTL);
        while map.len() >= MAX_SESSIONS {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        let session = Session {
            token: name.to_string(),
            write,
            csrf: random_id(),
            token_hash: hash(value),
            created: now,
        };
        let id = random_id();
        map.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session `id` names (an expired one is removed).
    pub fn get(&self, id: &str) -> Option<Session> {
        self.get_at(id, Instant::now())
    }

    fn get_at(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get(id)?;
        if now.saturating_duration_since(s.created) >= SESSION_TTL {
            map.remove(id);
            return None;
        }
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The session id in a `Cookie` header, if any.
pub fn cookie_value(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value for a session (`secure` when the console is reached over HTTPS).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_no_token_and_ends_with_its_ttl_or_its_token() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (id, session) = s.create_at("ops", true, "s3cret\n", t0);
        assert!(session.token_matches("s3cret"));
        assert!(
            !session.token_matches("rotated"),
            "a rotated token ends the session"
        );
        assert!(!format!("{session:?}").contains("s3cret"));
        assert_ne!(id, session.csrf);
        assert_eq!(id.len(), 64);
        assert!(s.get_at(&id, t0 + Duration::from_secs(60)).is_some());
        assert!(s.get_at(&id, t0 + SESSION_TTL).is_none());
        assert!(s.get_at(&id, t0).is_none(), "an expired session is gone");
        assert!(s.get("unknown").is_none());
    }

    #[test]
    fn sessions_are_bounded_and_the_oldest_goes_first() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let (first, _) = s.create_at("a", false, "x", t0);
        for i in 1..=MAX_SESSIONS {
            s.create_at("a", false, "x", t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.get_at(&first, t0).is_none());
    }

    #[test]
    fn the_cookie_is_found_among_others_and_is_strict() {
        assert_eq!(
            cookie_value("theme=dark; kudo_session=abc ; x=y"),
            Some("abc")
        );
        assert_eq!(cookie_value("kudo_session="), None);
        assert_eq!(cookie_value("other=1"), None);
        let c = set_cookie("abc", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
    }
}
