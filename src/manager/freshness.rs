//! Whether a copy of an Instance already shows the engine's own last write to it.
//!
//! The engine reads Instances from a watch's store and writes them through the API. Nothing
//! orders the store behind the writes: an event of another kind (an owned object the pass
//! just applied, a person's edit) can wake the instance while the store still holds the copy
//! the last pass started from. A pass on that copy acts on a state the engine already left:
//! it would start the plan again under a new uid, or run a finished step again and take back
//! a person's edit. So the engine remembers, per Instance, the resourceVersion each pass
//! read and the one its last write returned, and skips a pass on an older copy; the write's
//! own event brings the newer one.
//!
//! Guarantees:
//! - A copy with the resourceVersion the writing pass read is always older (the write
//!   changed the object), whatever the form of resourceVersions.
//! - etcd-backed API servers hand out resourceVersions as increasing integers (Kubernetes
//!   1.34 made comparing them part of the API); when both parse, a copy older than the write
//!   is recognised too, even after another writer's change in between.
//! - Nothing is held once a copy at or past the write is seen: the map only holds writes
//!   whose event is still on its way.
//! - The wait is bounded ([`MAX_WAIT`]): should the event never come (resourceVersions that
//!   went back, as after an etcd restore), the instance is reconciled again, not stopped.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a pass waits at most for its Instance's watch to deliver the engine's write.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct OwnWrites {
    /// Instance (namespace/name) → resourceVersion read by the pass, written by it, and when.
    pending: Mutex<BTreeMap<String, (String, String, Instant)>>,
}

impl OwnWrites {
    /// Records that a pass which read `read` left the Instance at `written`. A write that
    /// changed nothing (the server keeps the resourceVersion) has no event to wait for.
    pub fn record(&self, key: &str, read: String, written: String) {
        if read == written {
            self.lock().remove(key);
        } else {
            self.lock()
                .insert(key.to_string(), (read, written, Instant::now()));
        }
    }

    /// Whether a copy at `current` predates the engine's last write to `key`. A copy that
    /// does not forgets the write.
    pub fn behind(&self, key: &str, current: Option<&str>) -> bool {
        self.behind_at(key, current, Instant::now())
    }

    fn behind_at(&self, key: &str, current: Option<&str>, now: Instant) -> bool {
        let mut pending = self.lock();
        let Some((read, written, at)) = pending.get(key) else {
            return false;
        };
        let current = current.unwrap_or_default();
        let older = now.saturating_duration_since(*at) < MAX_WAIT
            && (current == read
                || matches!(
                    (current.parse::<u64>(), written.parse::<u64>()),
                    (Ok(c), Ok(w)) if c < w
                ));
        if !older {
            if now.saturating_duration_since(*at) >= MAX_WAIT {
                // Should never happen: the watch lost the event of the engine's own write
                // (or resourceVersions went back). Logged so a stall can be traced to it.
                tracing::warn!(instance = %key, read = %read, written = %written, current = %current, "the Instance watch never showed the engine's own write within {MAX_WAIT:?}; reconciling the copy it has");
            }
            pending.remove(key);
        }
        older
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, String, Instant)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_behind_until_the_write_arrives() {
        let w = OwnWrites::default();
        assert!(
            !w.behind("ns/a", Some("5")),
            "no write, nothing to wait for"
        );
        w.record("ns/a", "5".into(), "9".into());
        assert!(w.behind("ns/a", Some("5")), "the copy the pass read");
        assert!(
            w.behind("ns/a", Some("7")),
            "another writer's change before ours"
        );
        assert!(!w.behind("ns/b", Some("5")), "another instance");
        assert!(!w.behind("ns/a", Some("9")), "the write itself");
        assert!(!w.behind("ns/a", Some("5")), "forgotten once seen");
    }

    /// A merge patch that changes nothing keeps the resourceVersion and sends no event:
    /// waiting for one would stop the instance for good.
    #[test]
    fn a_write_that_changed_nothing_is_not_waited_for() {
        let w = OwnWrites::default();
        w.record("ns/a", "5".into(), "5".into());
        assert!(!w.behind("ns/a", Some("5")));
        w.record("ns/a", "5".into(), "9".into());
        w.record("ns/a", "9".into(), "9".into());
        assert!(!w.behind("ns/a", Some("9")));
    }

    #[test]
    fn the_wait_for_an_event_is_bounded() {
        let w = OwnWrites::default();
        w.record("ns/a", "5".into(), "9".into());
        let later = Instant::now() + MAX_WAIT;
        assert!(w.behind_at("ns/a", Some("5"), Instant::now()));
        assert!(!w.behind_at("ns/a", Some("5"), later), "no event came");
        assert!(!w.behind("ns/a", Some("5")), "and the write is forgotten");
    }

    #[test]
    fn a_later_copy_counts_as_fresh() {
        let w = OwnWrites::default();
        w.record("ns/a", "5".into(), "9".into());
        assert!(!w.behind("ns/a", Some("12")));
    }

    #[test]
    fn opaque_versions_fall_back_to_the_copy_that_was_read() {
        let w = OwnWrites::default();
        w.record("ns/a", "abc".into(), "xyz".into());
        assert!(w.behind("ns/a", Some("abc")));
        assert!(!w.behind("ns/a", Some("def")));
        w.record("ns/a", "abc".into(), "xyz".into());
        assert!(
            !w.behind("ns/a", None),
            "a copy without a version is not the one read"
        );
    }
}
