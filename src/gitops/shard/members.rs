//! Membership: who is live in a sharded control plane, read from one Lease per member in
//! the leader's namespace (`kudo-member-<name>`, holder `<name>/<process id>`, annotated
//! with the hash of the member's kudo.yaml).
//!
//! Guarantees:
//! - a member counts as live while its Lease is unexpired; the live set is the same on
//!   every replica that read the same Leases (sorted names);
//! - a member whose kudo.yaml differs from ours is not counted, and is named with why: two
//!   configs would assign clusters differently;
//! - a second process under a live member's name is refused at start (its Lease is held by
//!   another process id and has not expired), so a name never drives clusters twice.

/// A member Lease as read from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLease {
    /// The member's stable name (the pod name, e.g. a StatefulSet ordinal).
    pub name: String,
    /// The process that holds it (a random id per start).
    pub process: String,
    pub renewed_ms: i64,
    pub duration_ms: i64,
    /// SHA-256 of the member's kudo.yaml as it runs it.
    pub config_hash: String,
    /// Whether the member led (held the leader election Lease) at its last renewal.
    pub leader: bool,
}

impl MemberLease {
    pub fn live(&self, now_ms: i64) -> bool {
        now_ms < self.renewed_ms + self.duration_ms
    }
}

/// The live members that share our config, and the live ones left out with why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub members: Vec<String>,
    pub excluded: Vec<(String, String)>,
}

pub fn membership(leases: &[MemberLease], config_hash: &str, now_ms: i64) -> Membership {
    let mut m = Membership::default();
    for l in leases.iter().filter(|l| l.live(now_ms)) {
        if l.config_hash == config_hash {
            m.members.push(l.name.clone());
        } else {
            m.excluded.push((
                l.name.clone(),
                format!(
                    "member {} runs another kudo.yaml (hash {}, ours {}): it takes no cluster until the configs match",
                    l.name,
                    short(&l.config_hash),
                    short(config_hash)
                ),
            ));
        }
    }
    m.members.sort();
    m.members.dedup();
    m.excluded.sort();
    m
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// The kudo.yaml hash the fleet runs: the leader's (it alone writes Instance specs, so its
/// config is the one that counts), from the live Lease marked leader that was renewed last.
/// `None` while no live leader is seen (callers keep the last one they knew).
pub fn reference_hash(leases: &[MemberLease], now_ms: i64) -> Option<String> {
    leases
        .iter()
        .filter(|l| l.leader && l.live(now_ms))
        .max_by_key(|l| l.renewed_ms)
        .map(|l| l.config_hash.clone())
}

/// Whether this process may take the member name `name` (its Lease as read, if any).
pub fn may_start(
    name: &str,
    process: &str,
    lease: Option<&MemberLease>,
    now_ms: i64,
) -> Result<(), String> {
    match lease {
        Some(l) if l.live(now_ms) && l.process != process => Err(format!(
            "member name {name} is held by another live process ({}) until {} ms; a second process under one name would drive its clusters twice",
            l.process,
            l.renewed_ms + l.duration_ms
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(name: &str, process: &str, renewed_ms: i64, hash: &str) -> MemberLease {
        MemberLease {
            name: name.into(),
            process: process.into(),
            renewed_ms,
            duration_ms: 15_000,
            config_hash: hash.into(),
            leader: false,
        }
    }

    #[test]
    fn expired_and_differently_configured_members_are_not_counted() {
        let leases = [
            lease("kudo-2", "p", 10_000, "aaaa"),
            lease("kudo-0", "p", 10_000, "aaaa"),
            lease("kudo-1", "p", 0, "aaaa"),
            lease("kudo-3", "p", 10_000, "bbbbbbbbbbbbbbbbbbbbb"),
        ];
        let m = membership(&leases, "aaaa", 20_000);
        assert_eq!(
            m.members,
            vec!["kudo-0", "kudo-2"],
            "kudo-1 expired at 15 s"
        );
        assert_eq!(m.excluded.len(), 1);
        assert!(
            m.excluded[0].1.contains("another kudo.yaml")
                && m.excluded[0].1.contains("bbbbbbbbbbbb")
        );
    }

    #[test]
    fn the_fleets_config_is_the_live_leaders() {
        let mut a = lease("kudo-0", "p", 10_000, "old");
        let mut b = lease("kudo-1", "p", 12_000, "new");
        assert_eq!(reference_hash(&[a.clone(), b.clone()], 13_000), None);
        a.leader = true;
        assert_eq!(
            reference_hash(&[a.clone(), b.clone()], 13_000).as_deref(),
            Some("old")
        );
        // A handover: both marked for a moment; the later renewal is the new leader.
        b.leader = true;
        assert_eq!(
            reference_hash(&[a.clone(), b.clone()], 13_000).as_deref(),
            Some("new")
        );
        assert_eq!(
            reference_hash(&[a, b], 40_000),
            None,
            "an expired leader Lease is no reference"
        );
    }

    #[test]
    fn a_second_process_under_a_live_name_is_refused() {
        let held = lease("kudo-0", "first", 10_000, "h");
        let e = may_start("kudo-0", "second", Some(&held), 12_000).expect_err("refused");
        assert!(e.contains("kudo-0") && e.contains("first"), "{e}");
        assert!(
            may_start("kudo-0", "first", Some(&held), 12_000).is_ok(),
            "its own restart"
        );
        assert!(
            may_start("kudo-0", "second", Some(&held), 25_000).is_ok(),
            "expired"
        );
        assert!(may_start("kudo-0", "second", None, 0).is_ok());
    }
}
