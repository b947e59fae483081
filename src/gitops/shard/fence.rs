//! Fencing: a member drives a cluster (its cache, engine, drift repair) only while it holds
//! that cluster's claim, so two members never drive one cluster at once, even while they
//! disagree about who is live.
//!
//! The claim is one record per cluster in the management cluster (a `coordination.k8s.io`
//! Lease: holder, renew time, duration), written with compare-and-swap (resourceVersion).
//!
//! Guarantees, given clocks that differ by less than `margin`:
//! - a member starts a cluster's engine only after its own write of the claim succeeded,
//!   and only when the claim was free: never held, released, expired (`renewed + duration`
//!   passed) or already its own;
//! - a member's writes to a cluster stop at `renewed + duration - margin` of its last
//!   successful renewal ([`Claim::deadline`]), whether or not it can still reach the
//!   management cluster, so they end before anyone else may acquire the claim;
//! - a member that no longer owns a cluster stops its engine first, then releases the claim
//!   (the new owner then starts at once instead of waiting for the expiry).

/// A cluster's claim as last read (or written) by a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// None: released or never taken.
    pub holder: Option<String>,
    /// When the holder last renewed it (ms since the epoch).
    pub renewed_ms: i64,
    pub duration_ms: i64,
}

impl Claim {
    pub fn expires_ms(&self) -> i64 {
        self.renewed_ms + self.duration_ms
    }

    /// Until when its holder may write to the cluster.
    pub fn deadline(&self, margin_ms: i64) -> i64 {
        self.expires_ms() - margin_ms
    }

    /// Whether `me` may take it now.
    pub fn free_for(&self, me: &str, now_ms: i64) -> bool {
        match &self.holder {
            None => true,
            Some(h) if h == me => true,
            Some(_) => now_ms >= self.expires_ms(),
        }
    }
}

/// What a member does next about one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing: another member owns it, or it runs and the claim is fresh.
    Idle,
    /// Write the claim as ours (compare-and-swap); start the engine once the write succeeded.
    Acquire,
    /// Write a new renew time (compare-and-swap).
    Renew,
    /// Another member's claim has not ended: wait until `until_ms`.
    Wait { holder: String, until_ms: i64 },
    /// Stop the engine now (not ours any more, or our claim is about to end unrenewed).
    Stop,
    /// The engine is stopped: hand the claim back.
    Release,
}

/// The inputs of one decision, all as this member sees them.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub me: &'a str,
    /// The owner the assignment gives over the live members (see `super::assign`).
    pub owner: Option<&'a str>,
    /// The claim as last read; None when no claim record exists.
    pub claim: Option<&'a Claim>,
    /// Whether this member's engine for the cluster runs.
    pub running: bool,
    pub now_ms: i64,
    /// Clock skew the fencing tolerates (also how early a claim is renewed at the latest).
    pub margin_ms: i64,
}

pub fn decide(i: &Input) -> Action {
    let mine = i.claim.is_some_and(|c| c.holder.as_deref() == Some(i.me));
    if i.owner != Some(i.me) {
        return if i.running {
            Action::Stop
        } else if mine {
            Action::Release
        } else {
            Action::Idle
        };
    }
    match i.claim {
        Some(c) if mine => {
            if i.running && i.now_ms >= c.deadline(i.margin_ms) {
                // Not renewed in time: we cannot prove we are alone any more.
                Action::Stop
            } else if i.now_ms >= c.renewed_ms + c.duration_ms / 3 {
                Action::Renew
            } else if i.running {
                Action::Idle
            } else {
                // Ours and fresh (a restart of this member): take it again before starting.
                Action::Acquire
            }
        }
        Some(c) if !c.free_for(i.me, i.now_ms) => {
            if i.running {
                Action::Stop
            } else {
                Action::Wait {
                    holder: c.holder.clone().unwrap_or_default(),
                    until_ms: c.expires_ms(),
                }
            }
        }
        _ => Action::Acquire,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(holder: Option<&str>, renewed_ms: i64) -> Claim {
        Claim {
            holder: holder.map(str::to_string),
            renewed_ms,
            duration_ms: 15_000,
        }
    }

    fn input<'a>(
        me: &'a str,
        owner: Option<&'a str>,
        c: Option<&'a Claim>,
        running: bool,
        now_ms: i64,
    ) -> Input<'a> {
        Input {
            me,
            owner,
            claim: c,
            running,
            now_ms,
            margin_ms: 2_000,
        }
    }

    #[test]
    fn each_case_has_one_answer() {
        let theirs = claim(Some("b"), 0);
        let mine = claim(Some("a"), 0);
        let free = claim(None, 0);
        // The owner waits for another's live claim, takes an expired or released one.
        assert_eq!(
            decide(&input("a", Some("a"), Some(&theirs), false, 1_000)),
            Action::Wait {
                holder: "b".into(),
                until_ms: 15_000
            }
        );
        assert_eq!(
            decide(&input("a", Some("a"), Some(&theirs), false, 15_000)),
            Action::Acquire
        );
        assert_eq!(
            decide(&input("a", Some("a"), Some(&free), false, 1)),
            Action::Acquire
        );
        assert_eq!(
            decide(&input("a", Some("a"), None, false, 1)),
            Action::Acquire
        );
        // Running on its own claim: idle, renew after a third, stop at the deadline.
        assert_eq!(
            decide(&input("a", Some("a"), Some(&mine), true, 1_000)),
            Action::Idle
        );
        assert_eq!(
            decide(&input("a", Some("a"), Some(&mine), true, 5_000)),
            Action::Renew
        );
        assert_eq!(
            decide(&input("a", Some("a"), Some(&mine), true, 13_000)),
            Action::Stop
        );
        // Not the owner: stop, then release; someone else's claim is left alone.
        assert_eq!(
            decide(&input("a", Some("b"), Some(&mine), true, 1)),
            Action::Stop
        );
        assert_eq!(
            decide(&input("a", Some("b"), Some(&mine), false, 1)),
            Action::Release
        );
        assert_eq!(
            decide(&input("a", Some("b"), Some(&theirs), false, 1)),
            Action::Idle
        );
        assert_eq!(decide(&input("a", None, None, false, 1)), Action::Idle);
    }

    /// A model run: members that see the member set differently (joins, `kill -9`,
    /// partitions from the management cluster), acting in random order on one cluster's
    /// claim with compare-and-swap. A member's writes count only until its deadline (the
    /// claim-gated client refuses them after). At no moment may two members be able to
    /// write.
    #[test]
    fn two_members_never_drive_one_cluster_at_once() {
        #[derive(Clone)]
        struct Member {
            name: String,
            running: bool,
            /// Its last successful renewal's deadline (writes refused after it).
            deadline: i64,
            view: Option<Claim>,
            alive: bool,
            partitioned: bool,
        }
        const MARGIN: i64 = 2_000;
        let members = ["m0", "m1", "m2", "m3"];
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut ms: Vec<Member> = members
                .iter()
                .map(|n| Member {
                    name: n.to_string(),
                    running: false,
                    deadline: 0,
                    view: None,
                    alive: true,
                    partitioned: false,
                })
                .collect();
            let mut store: Option<Claim> = None;
            let mut version = 0u64;
            let mut now = 0i64;
            let mut handovers = 0;
            let mut last_writer: Option<String> = None;
            for _ in 0..2_000 {
                now += rng.i64(0..1_500);
                // Faults and recoveries.
                let k = rng.usize(..ms.len());
                match rng.u8(..40) {
                    0 => {
                        ms[k].alive = false; // kill -9: engine gone with the process
                        ms[k].running = false;
                    }
                    1 => {
                        ms[k].alive = true;
                        ms[k].view = None;
                    }
                    2 => ms[k].partitioned = !ms[k].partitioned,
                    _ => {}
                }
                // Each member's own idea of who is live: itself, plus a random subset.
                let i = rng.usize(..ms.len());
                if !ms[i].alive {
                    continue;
                }
                let live: Vec<&str> = ms
                    .iter()
                    .filter(|m| m.name == ms[i].name || (m.alive && rng.bool()))
                    .map(|m| m.name.as_str())
                    .collect();
                let owner = super::super::assign::owner("prod-eu", &live).map(str::to_string);
                if !ms[i].partitioned {
                    ms[i].view = store.clone();
                }
                let seen_version = version;
                let action = decide(&Input {
                    me: &ms[i].name,
                    owner: owner.as_deref(),
                    claim: ms[i].view.as_ref(),
                    running: ms[i].running,
                    now_ms: now,
                    margin_ms: MARGIN,
                });
                let me = ms[i].name.clone();
                let write = |store: &mut Option<Claim>, version: &mut u64, c: Claim| -> bool {
                    // Compare-and-swap on what this member read; a partitioned one cannot write.
                    if ms[i].partitioned || *version != seen_version {
                        return false;
                    }
                    *store = Some(c);
                    *version += 1;
                    true
                };
                match action {
                    Action::Acquire | Action::Renew => {
                        let c = Claim {
                            holder: Some(me.clone()),
                            renewed_ms: now,
                            duration_ms: 15_000,
                        };
                        // Acquiring checks the claim as stored (the server's answer).
                        let free = store.as_ref().is_none_or(|s| s.free_for(&me, now));
                        if free && write(&mut store, &mut version, c.clone()) {
                            ms[i].deadline = c.deadline(MARGIN);
                            ms[i].view = Some(c);
                            ms[i].running = true;
                        }
                    }
                    Action::Stop => ms[i].running = false,
                    Action::Release => {
                        let c = Claim {
                            holder: None,
                            renewed_ms: now,
                            duration_ms: 15_000,
                        };
                        if !ms[i].running && write(&mut store, &mut version, c.clone()) {
                            ms[i].view = Some(c);
                        }
                    }
                    Action::Idle | Action::Wait { .. } => {}
                }
                let writers: Vec<&str> = ms
                    .iter()
                    .filter(|m| m.alive && m.running && now < m.deadline)
                    .map(|m| m.name.as_str())
                    .collect();
                assert!(
                    writers.len() <= 1,
                    "seed {seed}: {writers:?} can both write to the cluster at {now} ms"
                );
                if let Some(w) = writers.first()
                    && last_writer.as_deref() != Some(*w)
                {
                    handovers += 1;
                    last_writer = Some(w.to_string());
                }
            }
            assert!(
                handovers > 1,
                "seed {seed}: the run never handed the cluster over"
            );
        }
    }
}
