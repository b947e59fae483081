//! Which member of a sharded control plane drives which cluster: rendezvous (highest
//! random weight) hashing over the live members.
//!
//! Guarantees:
//! - every replica computes the same owner from the same member set, whatever its build:
//!   the weight is the first 8 bytes of SHA-256 over `member \0 cluster`, not a hasher
//!   whose keys or algorithm may change between Rust versions;
//! - a member joining takes only the clusters it now wins (about 1/N of them); a member
//!   leaving gives up only its own clusters, each to the member that wins it next; no other
//!   cluster moves;
//! - no member list, no owner (nothing is driven until a member is live).

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// The weight of `member` for `cluster`: the highest weight owns it.
pub fn weight(member: &str, cluster: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(member.as_bytes());
    h.update([0u8]);
    h.update(cluster.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The member that owns `cluster` among `members` (ties, which SHA-256 makes vanishingly
/// rare, go to the smaller name so every replica agrees).
pub fn owner<'a, S: AsRef<str>>(cluster: &str, members: &'a [S]) -> Option<&'a str> {
    members.iter().map(AsRef::as_ref).max_by(|a, b| {
        weight(a, cluster)
            .cmp(&weight(b, cluster))
            .then_with(|| b.cmp(a))
    })
}

/// Every cluster's owner.
pub fn assign<S: AsRef<str>, M: AsRef<str>>(
    clusters: &[S],
    members: &[M],
) -> BTreeMap<String, String> {
    clusters
        .iter()
        .filter_map(|c| {
            Some((
                c.as_ref().to_string(),
                owner(c.as_ref(), members)?.to_string(),
            ))
        })
        .collect()
}

/// The clusters whose owner differs between two assignments: `(cluster, from, to)`, `None`
/// where a side has no owner.
pub fn moves(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| ((*k).clone(), before.get(k).cloned(), after.get(k).cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cluster-{i:05}")).collect()
    }

    #[test]
    fn a_fourth_member_takes_a_quarter_and_a_leaving_one_gives_up_only_its_own() {
        let clusters = names(10_000);
        let three = ["kudo-0", "kudo-1", "kudo-2"];
        let four = ["kudo-0", "kudo-1", "kudo-2", "kudo-3"];
        let before = assign(&clusters, &three);
        let after = assign(&clusters, &four);
        let moved = moves(&before, &after);
        let share = moved.len() as f64 / clusters.len() as f64;
        assert!(
            (0.20..=0.30).contains(&share),
            "adding a fourth member moved {share:.3} of the clusters"
        );
        assert!(
            moved
                .iter()
                .all(|(_, _, to)| to.as_deref() == Some("kudo-3")),
            "every moved cluster goes to the newcomer"
        );
        // kudo-1 leaves: only its clusters move, each to another member.
        let without = assign(&clusters, &["kudo-0", "kudo-2", "kudo-3"]);
        let moved = moves(&after, &without);
        let owned = after.values().filter(|m| *m == "kudo-1").count();
        assert_eq!(moved.len(), owned);
        assert!(
            moved
                .iter()
                .all(|(_, from, to)| from.as_deref() == Some("kudo-1")
                    && to.as_deref() != Some("kudo-1")
                    && to.is_some())
        );
        // The load is even enough to matter: no member above 30% of 10,000 with four.
        for m in four {
            let n = after.values().filter(|v| *v == m).count();
            assert!((2_000..=3_000).contains(&n), "{m} owns {n}");
        }
    }

    #[test]
    fn every_replica_agrees_whatever_the_order_of_its_member_list() {
        let clusters = names(500);
        let a = assign(&clusters, &["b", "a", "c"]);
        let b = assign(&clusters, &["c", "b", "a"]);
        assert_eq!(a, b);
        assert!(assign(&clusters, &Vec::<String>::new()).is_empty());
        assert_eq!(owner("x", &["only"]), Some("only"));
        // The weight is fixed by its definition (SHA-256), not by the build.
        assert_eq!(weight("kudo-0", "prod-eu"), weight("kudo-0", "prod-eu"));
        assert_ne!(weight("kudo-0", "prod-eu"), weight("kudo-1", "prod-eu"));
    }
}
