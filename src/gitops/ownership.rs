//! Who owns an Instance on a managed cluster, and which Instances GitOps may delete: pure
//! decisions, tested without a cluster.
//!
//! Guarantees (each one a reproduced way of losing a database before):
//! - An Instance labelled for another control plane is never touched.
//! - Nothing is deleted until every configured repository has loaded a good revision in this
//!   process; a repository that never loaded keeps its Instances (a remote that is down at
//!   start deletes nothing).
//! - An Instance is deleted only when the repository that owns it (its label) has a good
//!   revision loaded that no longer declares it on that cluster. An Instance whose owner is
//!   not configured any more, or that predates ownership labels and is not declared, is
//!   reported and kept.
//! - An instance moved to another repository changes owner in place (its labels are
//!   patched); it is never deleted and re-created.
//! - `kudo.dev/deletion-protection: "true"` on the live Instance turns deletion into a report.
//! - More than `maxDeletions` Instance×cluster deletions for one repository's revision are
//!   all held until that revision is confirmed.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::desired::DesiredInstance;
use crate::engine::objects::{CONTROL_PLANE_LABEL, REPOSITORY_LABEL};

/// The label every Instance applied by `kudo serve` has carried since the first release.
pub const MANAGED_LABEL: &str = "kudo.dev/managed-by";
/// Its value.
pub const MANAGED_VALUE: &str = "kudo-gitops";
/// On an Instance: removing its document from Git only reports.
pub const DELETION_PROTECTION_ANNOTATION: &str = "kudo.dev/deletion-protection";

/// Whose an observed Instance (one with [`MANAGED_LABEL`]) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This control plane's; the repository label (absent only on Instances written by
    /// hand with our control-plane label).
    Ours { repository: Option<String> },
    /// Applied before ownership labels existed (`managed-by` only): taken over when a
    /// repository declares it, otherwise kept.
    Legacy,
    /// Another control plane's: never touched.
    Foreign(String),
}

/// Classifies an Instance by its labels.
pub fn owner_of(labels: &BTreeMap<String, String>, control_plane: &str) -> Owner {
    match labels.get(CONTROL_PLANE_LABEL) {
        Some(cp) if cp == control_plane => Owner::Ours {
            repository: labels.get(REPOSITORY_LABEL).cloned(),
        },
        Some(other) => Owner::Foreign(other.clone()),
        None => Owner::Legacy,
    }
}

/// One observed Instance on one cluster.
#[derive(Debug, Clone)]
pub struct Live {
    pub owner: Owner,
    pub protected: bool,
    /// Already being deleted (nothing to decide).
    pub deleting: bool,
}

/// A repository as the deletion rules see it.
#[derive(Debug, Clone)]
pub struct RepoState {
    /// The good revision loaded in this process (None: none yet).
    pub loaded: Option<String>,
    pub max_deletions: u32,
    /// Deletions of this revision confirmed: up to this many (`u32::MAX`: all).
    pub confirmed: Option<(String, u32)>,
    /// Other repositories not synced since this revision was loaded: an instance it dropped
    /// may have moved to one of them, so its deletions wait for them.
    pub waiting_for: Vec<String>,
}

/// Deletions of one repository's revision waiting for confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldDeletions {
    pub revision: String,
    pub count: usize,
    pub max_deletions: u32,
    /// `cluster: namespace/name`, sorted.
    pub instances: Vec<String>,
}

impl HeldDeletions {
    pub fn message(&self, repository: &str) -> String {
        format!(
            "repository {repository} revision {}: {} instance deletions exceed maxDeletions ({}); \
             held until confirmed (kudo deletions confirm {repository} --revision {}, or a \
             verified commit with the trailer `Kudo-Confirm-Deletions: {}`): {}",
            super::desired::short(&self.revision),
            self.count,
            self.max_deletions,
            self.revision,
            self.count,
            self.instances.join(", ")
        )
    }
}

/// What one planner pass decided about ownership.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Cluster → Instance keys to delete now.
    pub delete: BTreeMap<String, BTreeSet<String>>,
    /// Cluster → Instance keys whose ownership labels must be rewritten (legacy or moved).
    pub relabel: BTreeMap<String, BTreeSet<String>>,
    /// Repository → deletions held for confirmation.
    pub held: BTreeMap<String, HeldDeletions>,
    /// Cluster → `namespace/name: why it is kept` (not declared, but not deleted).
    pub kept: BTreeMap<String, Vec<String>>,
    /// Repositories to sync now, so that waiting deletions can be decided.
    pub resync: BTreeSet<String>,
}

/// Decides deletions and takeovers over every observed cluster. `observed` maps a cluster
/// to its Instances by key (clusters never observed are absent); `declared` is the combined
/// desired state (each instance knows its repository).
pub fn decide(
    declared: &BTreeMap<String, DesiredInstance>,
    repos: &BTreeMap<String, RepoState>,
    observed: &BTreeMap<String, BTreeMap<String, Live>>,
) -> Decision {
    let mut d = Decision::default();
    let all_loaded = repos.values().all(|r| r.loaded.is_some());
    // Deletion candidates per repository: (cluster, key).
    let mut candidates: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (cluster, instances) in observed {
        for (key, live) in instances {
            if live.deleting {
                continue;
            }
            let wanted = declared.get(key);
            let here = wanted.is_some_and(|w| w.targets.contains(cluster));
            let mut keep = |why: String| {
                d.kept
                    .entry(cluster.clone())
                    .or_default()
                    .push(format!("{key}: {why}"));
            };
            match &live.owner {
                Owner::Foreign(_) => continue,
                Owner::Legacy => {
                    if here {
                        d.relabel
                            .entry(cluster.clone())
                            .or_default()
                            .insert(key.clone());
                    } else {
                        keep("applied before ownership labels and declared by no repository; left in place".into());
                    }
                    continue;
                }
                Owner::Ours { repository } => {
                    if here {
                        if let Some(w) = wanted
                            && repository.as_deref() != Some(w.repository.as_str())
                        {
                            d.relabel
                                .entry(cluster.clone())
                                .or_default()
                                .insert(key.clone());
                        }
                        continue;
                    }
                    // A placement change counts against the repository declaring it now.
                    let owner = match wanted {
                        Some(w) => Some(w.repository.clone()),
                        None => repository.clone(),
                    };
                    let Some(owner) = owner else {
                        keep("no owning repository label; left in place".into());
                        continue;
                    };
                    let Some(state) = repos.get(&owner) else {
                        keep(format!(
                            "its repository {owner} is not configured; left in place"
                        ));
                        continue;
                    };
                    if state.loaded.is_none() {
                        keep(format!(
                            "repository {owner} has not loaded a good revision since start; left in place"
                        ));
                        continue;
                    }
                    if !all_loaded {
                        let waiting: Vec<&str> = repos
                            .iter()
                            .filter(|(_, r)| r.loaded.is_none())
                            .map(|(n, _)| n.as_str())
                            .collect();
                        keep(format!(
                            "nothing is deleted until every repository has loaded once (waiting for {})",
                            waiting.join(", ")
                        ));
                        continue;
                    }
                    if !state.waiting_for.is_empty() {
                        d.resync.extend(state.waiting_for.iter().cloned());
                        keep(format!(
                            "dropped by {owner}; waiting for {} to sync first (it may have moved there)",
                            state.waiting_for.join(", ")
                        ));
                        continue;
                    }
                    if live.protected {
                        keep(format!(
                            "no longer declared by {owner}, but deletionProtection is set; left in place"
                        ));
                        continue;
                    }
                    candidates
                        .entry(owner)
                        .or_default()
                        .push((cluster.clone(), key.clone()));
                }
            }
        }
    }
    for (repo, list) in candidates {
        let Some(state) = repos.get(&repo) else {
            continue;
        };
        let revision = state.loaded.clone().unwrap_or_default();
        let allowed = match &state.confirmed {
            Some((rev, up_to)) if *rev == revision => (*up_to).max(state.max_deletions),
            _ => state.max_deletions,
        };
        if list.len() > allowed as usize {
            let mut instances: Vec<String> =
                list.iter().map(|(c, k)| format!("{c}: {k}")).collect();
            instances.sort();
            d.held.insert(
                repo,
                HeldDeletions {
                    revision,
                    count: list.len(),
                    max_deletions: state.max_deletions,
                    instances,
                },
            );
            continue;
        }
        for (cluster, key) in list {
            d.delete.entry(cluster).or_default().insert(key);
        }
    }
    d
}

/// The count a `Kudo-Confirm-Deletions:` trailer confirms (`all` or a whole number); the
/// last such trailer of the message wins. `None` when absent or unreadable.
pub fn confirm_trailer(message: &str) -> Option<u32> {
    let mut found = None;
    for line in message.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case("Kudo-Confirm-Deletions") {
            continue;
        }
        let value = value.trim();
        found = if value.eq_ignore_ascii_case("all") {
            Some(u32::MAX)
        } else {
            value.parse::<u32>().ok()
        };
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::rollout::Strategy;

    fn declared(key: &str, repo: &str, targets: &[&str]) -> (String, DesiredInstance) {
        let (ns, name) = key.split_once('/').expect("key");
        (
            key.to_string(),
            DesiredInstance {
                file: "instances/x.yaml".into(),
                name: name.into(),
                namespace: ns.into(),
                framework: "f".into(),
                version: "1".into(),
                operator_version: "f-1".into(),
                parameters: Default::default(),
                strategy: Strategy::Parallel,
                canary: Vec::new(),
                depends_on: Vec::new(),
                rollout: crate::gitops::stages::RolloutSpec::legacy(Strategy::Parallel, &[], &[]),
                targets: targets.iter().map(|t| t.to_string()).collect(),
                self_heal: true,
                deletion_protection: false,
                repository: repo.into(),
            },
        )
    }

    fn ours(repo: &str) -> Live {
        Live {
            owner: Owner::Ours {
                repository: Some(repo.into()),
            },
            protected: false,
            deleting: false,
        }
    }

    fn repo(loaded: Option<&str>) -> RepoState {
        RepoState {
            loaded: loaded.map(str::to_string),
            max_deletions: 5,
            confirmed: None,
            waiting_for: Vec::new(),
        }
    }

    fn observed(cluster: &str, items: &[(&str, Live)]) -> BTreeMap<String, BTreeMap<String, Live>> {
        [(
            cluster.to_string(),
            items
                .iter()
                .map(|(k, l)| (k.to_string(), l.clone()))
                .collect(),
        )]
        .into()
    }

    #[test]
    fn labels_say_whose_an_instance_is() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            owner_of(&labels(&[(MANAGED_LABEL, MANAGED_VALUE)]), "kudo"),
            Owner::Legacy
        );
        assert_eq!(
            owner_of(
                &labels(&[
                    (CONTROL_PLANE_LABEL, "kudo"),
                    (REPOSITORY_LABEL, "platform")
                ]),
                "kudo"
            ),
            Owner::Ours {
                repository: Some("platform".into())
            }
        );
        assert_eq!(
            owner_of(&labels(&[(CONTROL_PLANE_LABEL, "blue")]), "green"),
            Owner::Foreign("blue".into())
        );
    }

    #[test]
    fn a_repository_that_never_loaded_keeps_its_instances() {
        let repos = [
            ("a".to_string(), repo(Some("r1"))),
            ("b".to_string(), repo(None)),
        ]
        .into();
        let obs = observed("c1", &[("ns/from-b", ours("b")), ("ns/from-a", ours("a"))]);
        let d = decide(&BTreeMap::new(), &repos, &obs);
        assert!(d.delete.is_empty(), "{d:?}");
        let kept = d.kept["c1"].join("\n");
        assert!(
            kept.contains("ns/from-b: repository b has not loaded"),
            "{kept}"
        );
        assert!(kept.contains("ns/from-a: nothing is deleted until every repository has loaded once (waiting for b)"), "{kept}");
    }

    #[test]
    fn an_instance_is_deleted_only_when_its_loaded_owner_no_longer_declares_it() {
        let repos = [("a".to_string(), repo(Some("r1")))].into();
        let decl: BTreeMap<_, _> = [declared("ns/keep", "a", &["c1"])].into();
        let obs = observed("c1", &[("ns/keep", ours("a")), ("ns/gone", ours("a"))]);
        let d = decide(&decl, &repos, &obs);
        assert_eq!(d.delete["c1"], ["ns/gone".to_string()].into());
        assert!(d.held.is_empty());
    }

    #[test]
    fn other_control_planes_and_unconfigured_owners_are_untouched() {
        let repos = [("a".to_string(), repo(Some("r1")))].into();
        let foreign = Live {
            owner: Owner::Foreign("blue".into()),
            protected: false,
            deleting: false,
        };
        let obs = observed(
            "c1",
            &[("ns/theirs", foreign), ("ns/orphan", ours("gone-repo"))],
        );
        let d = decide(&BTreeMap::new(), &repos, &obs);
        assert!(d.delete.is_empty(), "{d:?}");
        assert!(
            d.kept["c1"]
                .iter()
                .any(|k| k.contains("repository gone-repo is not configured"))
        );
        assert!(!d.kept["c1"].iter().any(|k| k.contains("ns/theirs")));
    }

    #[test]
    fn a_moved_instance_is_relabelled_not_deleted() {
        let repos = [
            ("a".to_string(), repo(Some("r1"))),
            ("b".to_string(), repo(Some("r2"))),
        ]
        .into();
        let decl: BTreeMap<_, _> = [declared("ns/db", "b", &["c1"])].into();
        let obs = observed("c1", &[("ns/db", ours("a"))]);
        let d = decide(&decl, &repos, &obs);
        assert!(d.delete.is_empty());
        assert_eq!(d.relabel["c1"], ["ns/db".to_string()].into());
    }

    #[test]
    fn a_dropped_instance_waits_until_every_other_repository_synced_after_the_drop() {
        let mut a = repo(Some("r1"));
        a.waiting_for = vec!["b".into()];
        let repos = [("a".to_string(), a), ("b".to_string(), repo(Some("r2")))].into();
        let d = decide(
            &BTreeMap::new(),
            &repos,
            &observed("c1", &[("ns/db", ours("a"))]),
        );
        assert!(d.delete.is_empty());
        assert_eq!(d.resync, ["b".to_string()].into());
        assert!(d.kept["c1"][0].contains("waiting for b to sync first"));
    }

    #[test]
    fn legacy_instances_are_taken_over_when_declared_and_kept_otherwise() {
        let repos = [("a".to_string(), repo(Some("r1")))].into();
        let decl: BTreeMap<_, _> = [declared("ns/db", "a", &["c1"])].into();
        let legacy = Live {
            owner: Owner::Legacy,
            protected: false,
            deleting: false,
        };
        let obs = observed("c1", &[("ns/db", legacy.clone()), ("ns/old", legacy)]);
        let d = decide(&decl, &repos, &obs);
        assert!(d.delete.is_empty());
        assert_eq!(d.relabel["c1"], ["ns/db".to_string()].into());
        assert!(d.kept["c1"][0].starts_with("ns/old: applied before ownership labels"));
    }

    #[test]
    fn deletion_protection_reports_instead_of_deleting() {
        let repos = [("a".to_string(), repo(Some("r1")))].into();
        let mut live = ours("a");
        live.protected = true;
        let d = decide(
            &BTreeMap::new(),
            &repos,
            &observed("c1", &[("ns/db", live)]),
        );
        assert!(d.delete.is_empty());
        assert!(d.kept["c1"][0].contains("deletionProtection"));
    }

    #[test]
    fn more_deletions_than_allowed_are_held_until_that_revision_is_confirmed() {
        let mut state = repo(Some("r1"));
        state.max_deletions = 2;
        let mut obs: BTreeMap<String, BTreeMap<String, Live>> = BTreeMap::new();
        for c in ["c1", "c2"] {
            for k in ["ns/a", "ns/b"] {
                obs.entry(c.into()).or_default().insert(k.into(), ours("a"));
            }
        }
        let repos: BTreeMap<_, _> = [("a".to_string(), state.clone())].into();
        let d = decide(&BTreeMap::new(), &repos, &obs);
        assert!(d.delete.is_empty());
        let held = &d.held["a"];
        assert_eq!((held.count, held.revision.as_str()), (4, "r1"));
        assert!(held.message("a").contains("exceed maxDeletions (2)"));
        // Confirming another revision changes nothing; confirming this one releases all.
        state.confirmed = Some(("r0".into(), u32::MAX));
        let repos: BTreeMap<_, _> = [("a".to_string(), state.clone())].into();
        assert!(decide(&BTreeMap::new(), &repos, &obs).delete.is_empty());
        state.confirmed = Some(("r1".into(), 3));
        let repos: BTreeMap<_, _> = [("a".to_string(), state.clone())].into();
        assert!(
            decide(&BTreeMap::new(), &repos, &obs).delete.is_empty(),
            "3 < 4"
        );
        state.confirmed = Some(("r1".into(), u32::MAX));
        let repos: BTreeMap<_, _> = [("a".to_string(), state)].into();
        let d = decide(&BTreeMap::new(), &repos, &obs);
        assert_eq!(d.delete.values().map(BTreeSet::len).sum::<usize>(), 4);
    }

    #[test]
    fn a_placement_change_counts_as_a_deletion() {
        let mut state = repo(Some("r1"));
        state.max_deletions = 0;
        let repos = [("a".to_string(), state)].into();
        let decl: BTreeMap<_, _> = [declared("ns/db", "a", &["c2"])].into();
        let d = decide(&decl, &repos, &observed("c1", &[("ns/db", ours("a"))]));
        assert_eq!(d.held["a"].instances, ["c1: ns/db"]);
    }

    #[test]
    fn the_confirm_trailer_is_read_from_the_commit_message() {
        assert_eq!(
            confirm_trailer("drop dev\n\nKudo-Confirm-Deletions: 12\n"),
            Some(12)
        );
        assert_eq!(
            confirm_trailer("x\n\nkudo-confirm-deletions: all"),
            Some(u32::MAX)
        );
        assert_eq!(confirm_trailer("x\n\nKudo-Confirm-Deletions: many"), None);
        assert_eq!(confirm_trailer("no trailer"), None);
    }
}
