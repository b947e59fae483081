//! Repository sync: one task per repository loads each new revision and keeps the last good
//! one; the good revisions combine into the desired state.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::{info, warn};

use super::state::{Shared, lock};
use crate::gitops::config::{Repository, Source};
use crate::gitops::desired::{self, DesiredState, short};
use crate::gitops::git::{GitSource, content_revision, next_poll};
use crate::gitops::placement::ClusterInfo;
use crate::metrics::gitops::SyncResult;
use crate::package::DirTree;

impl Shared {
    /// Combines the repositories' good revisions into one desired state; an instance defined
    /// by two repositories is kept from the first and reported.
    pub(super) fn recombine(&self) {
        let repos = lock(&self.repos);
        let mut combined: Option<DesiredState> = None;
        for r in repos.values() {
            let Some(good) = &r.good else { continue };
            let mut good = (**good).clone();
            for inst in good.instances.values_mut() {
                inst.repository = r.name.clone();
            }
            let good = &good;
            match &mut combined {
                None => combined = Some(good.clone()),
                Some(c) => {
                    c.revision = format!("{},{}", c.revision, good.revision);
                    c.frameworks.extend(good.frameworks.clone());
                    for (k, v) in &good.instances {
                        if c.instances.contains_key(k) {
                            warn!(repository = %r.name, instance = %k, "instance defined by two repositories; keeping the first");
                        } else {
                            c.instances.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
        }
        drop(repos);
        if let Some(c) = &combined {
            let secrets = crate::gitops::diff::all_secrets(c);
            crate::package::redact::set_process_secrets(secrets.clone());
            self.notifier.set_secrets(secrets);
        }
        *self.desired.write().unwrap_or_else(|p| p.into_inner()) = combined.map(Arc::new);
        self.plan();
    }
}

/// A new revision and what loading it gave.
type Loaded = (String, Result<DesiredState, desired::RevisionErrors>);

pub(super) async fn repo_task(
    shared: Arc<Shared>,
    repo: Repository,
    mut changes: tokio::sync::mpsc::Receiver<()>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let wake = shared.repo_wake[&repo.name].clone();
    let git = match &repo.source {
        Source::Git(url) => Some(GitSource::new(&repo, url, &shared.config().cache_dir)),
        Source::Dir(_) => None,
    };
    let mut last_seen: Option<String> = None;
    let cache = Arc::new(Mutex::new(desired::DesiredCache::new()));
    // libgit2's timeouts are process-wide: the shortest sync deadline of all repositories.
    if let Some(t) = shared.config().repositories.iter().map(|r| r.timeout).min() {
        crate::gitops::git::set_network_timeout(t.min(crate::gitops::git::DEFAULT_NETWORK_TIMEOUT));
    }
    let mut deadline = crate::gitops::sync::Deadline::new(&repo.name, repo.timeout);
    let mut clusters_epoch = 0;
    loop {
        // A kudo.yaml reload changed the clusters or their labels: load the revision again,
        // placement is resolved at load.
        let epoch = shared
            .clusters_epoch
            .load(std::sync::atomic::Ordering::SeqCst);
        if epoch != clusters_epoch {
            clusters_epoch = epoch;
            last_seen = None;
        }
        let failures = sync_once(
            &shared,
            &repo,
            git.as_ref(),
            &cache,
            &mut last_seen,
            &mut deadline,
        )
        .await;
        let delay = next_poll(repo.interval, failures, fastrand::f64());
        if crate::gitops::sync::wait_next(delay, failures, &wake, &mut changes, &mut stop).await {
            return;
        }
    }
}

/// The blocking part of one sync: `None` when the revision did not change.
type SyncWork = Result<Option<(Loaded, Meta)>, String>;

/// What a sync learned of the commit besides its content.
#[derive(Debug, Default)]
struct Meta {
    /// Unix time of the commit (None: a directory, or unreadable).
    time: Option<i64>,
    /// The verified signer (repositories with `verify:` only).
    signer: Option<String>,
}

/// One sync: new revision → verify (signature, ancestry) → load (blocking thread, under the
/// repository's deadline) → keep if good. Returns the number of consecutive failures (for
/// backoff).
async fn sync_once(
    shared: &Arc<Shared>,
    repo: &Repository,
    git: Option<&GitSource>,
    cache: &Arc<Mutex<desired::DesiredCache>>,
    last_seen: &mut Option<String>,
    deadline: &mut crate::gitops::sync::Deadline<SyncWork>,
) -> u32 {
    let cache = cache.clone();
    let clusters: Vec<ClusterInfo> = shared.slots().iter().map(|c| c.cluster_info()).collect();
    let mirror = git.map(|g| g.mirror.clone());
    let git = git.cloned();
    let source = repo.source.clone();
    let subpath = repo.path.clone();
    let seen = last_seen.clone();
    let package_repos = shared.config().package_repositories.clone();
    let package_cache = shared.config().cache_dir.join("package-repositories");
    let verify = repo.verify.clone();
    let name = repo.name.clone();
    let allow_rollback = repo.allow_rollback;
    let applied_store = git
        .as_ref()
        .map(|g| crate::gitops::sync::AppliedStore::new(&shared.config().cache_dir, repo, &g.url));
    let persist = !shared.dry_run;
    let started = Instant::now();
    let result = deadline
        .run(move || -> SyncWork {
            match (&git, &source) {
                (Some(g), _) => {
                    let commit = g.sync().map_err(|e| e.to_string())?;
                    if seen.as_deref() == Some(commit.as_str()) {
                        return Ok(None);
                    }
                    let refused = |errors| {
                        let time = commit_time(&g.mirror, &commit);
                        Ok(Some(((commit.clone(), Err(errors)), Meta { time, signer: None })))
                    };
                    let mut signer = None;
                    if let Some(verify) = &verify {
                        // A trust file that cannot be read is a failure (retried), not a
                        // verdict about this commit.
                        let trust =
                            crate::gitops::signing::Trust::load(verify).map_err(|e| e.to_string())?;
                        match crate::gitops::signing::verify_commit(&g.mirror, &commit, &trust) {
                            Ok(by) => {
                                info!(repository = %name, revision = short(&commit), signer = %by, "commit signature verified");
                                signer = Some(by.to_string());
                            }
                            Err(refusal) if refusal.is_verdict() => {
                                return refused(unsigned(&commit, refusal));
                            }
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                    let store = applied_store.as_ref();
                    if let Some(store) = store.filter(|_| !allow_rollback)
                        && let Some(old) = store.load().map_err(|e| e.to_string())?
                        && !g.descends_from(&commit, &old).map_err(|e| e.to_string())?
                    {
                        return refused(crate::gitops::sync::rollback_refused(
                            &name,
                            &commit,
                            &old,
                            store.path(),
                        ));
                    }
                    let tree = g.tree(&commit).map_err(|e| e.to_string())?;
                    let mut cache = lock(&cache);
                    let tree = crate::repo::frameworks::overlay_cached(
                        &tree,
                        &package_repos,
                        &package_cache,
                        &mut cache.repository_refs,
                    )?;
                    let loaded = desired::load_cached(&tree, &commit, &clusters, &mut cache);
                    if let (true, Ok(_), Some(store)) = (persist, &loaded, store) {
                        store.save(&commit).map_err(|e| e.to_string())?;
                    }
                    let time = commit_time(&g.mirror, &commit);
                    Ok(Some(((commit, loaded), Meta { time, signer })))
                }
                (None, Source::Dir(dir)) => {
                    let root = if subpath.is_empty() {
                        dir.clone()
                    } else {
                        dir.join(&subpath)
                    };
                    let tree = DirTree::new(root);
                    let rev = content_revision(&tree).map_err(|e| e.to_string())?;
                    if seen.as_deref() == Some(rev.as_str()) {
                        return Ok(None);
                    }
                    let mut cache = lock(&cache);
                    let tree = crate::repo::frameworks::overlay_cached(
                        &tree,
                        &package_repos,
                        &package_cache,
                        &mut cache.repository_refs,
                    )?;
                    let loaded = desired::load_cached(&tree, &rev, &clusters, &mut cache);
                    Ok(Some(((rev, loaded), Meta::default())))
                }
                (None, Source::Git(_)) => Err("internal: git source without a mirror".into()),
            }
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let took = started.elapsed().as_secs_f64();
    let gm = &shared.metrics.gitops;
    let webhook_error =
        crate::gitops::webhook::HookSecret::load(repo.webhook_secret_file.as_deref())
            .problem()
            .map(str::to_string);
    // Read before taking the lock the status views wait on.
    let commit = match (&mirror, &result) {
        (Some(mirror), Ok(Some(((rev, _), meta)))) => {
            Some(commit_info(mirror, rev, meta.signer.clone()))
        }
        _ => None,
    };
    let mut repos = lock(&shared.repos);
    // Dependencies no repository declares refuse the revision once every other repository
    // has loaded (until then they may be another's, and the rollout blocks instead).
    let result = match result {
        Ok(Some(((rev, Ok(state)), meta))) => {
            let others: Option<Vec<Arc<DesiredState>>> = repos
                .iter()
                .filter(|(name, _)| **name != repo.name)
                .map(|(_, s)| s.good.clone())
                .collect();
            let others: Option<Vec<&DesiredState>> =
                others.as_ref().map(|o| o.iter().map(|s| &**s).collect());
            let unknown = desired::unknown_dependencies(&state, others.as_deref());
            if unknown.is_empty() {
                Ok(Some(((rev, Ok(state)), meta)))
            } else {
                Ok(Some(((rev, Err(desired::RevisionErrors(unknown))), meta)))
            }
        }
        other => other,
    };
    let status = repos.entry(repo.name.clone()).or_default();
    if result.is_ok() {
        let epoch = shared
            .sync_epoch
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        status.synced_epoch = epoch;
        if matches!(result, Ok(Some(((_, Ok(_)), _)))) {
            status.loaded_epoch = epoch;
        }
    }
    status.webhook_error = webhook_error;
    if let Some(info) = commit {
        status.commit = info;
    }
    match result {
        Ok(None) => {
            gm.record_sync(&repo.name, SyncResult::unchanged, took, None);
            status.consecutive_failures = 0;
            // The source answers again: an earlier sync failure is over (a refused
            // revision's errors stay while that revision is the newest).
            if status.revision.is_some() && status.revision == status.applied_revision {
                status.errors.clear();
            }
            0
        }
        Ok(Some(((rev, Ok(state)), meta))) => {
            let time = meta.time;
            gm.record_sync(&repo.name, SyncResult::applied, took, Some(0));
            gm.set_revision(&repo.name, status.applied_revision.as_deref(), &rev);
            let seen_at = time.unwrap_or_else(|| jiff::Timestamp::now().as_second());
            lock(&shared.revision_times)
                .entry(rev.clone())
                .or_insert(seen_at);
            info!(repository = %repo.name, revision = short(&rev), instances = state.instances.len(), took_ms = started.elapsed().as_millis() as u64, "new revision applied");
            // Deletions confirmed by the commit itself: only where commits are verified.
            if let (Some(mirror), Some(_)) = (&mirror, &repo.verify)
                && let Some(up_to) = commit_message(mirror, &rev)
                    .as_deref()
                    .and_then(crate::gitops::ownership::confirm_trailer)
            {
                info!(target: "audit", repository = %repo.name, revision = short(&rev), up_to, "deletions confirmed by a verified commit's trailer");
                lock(&shared.confirmations).insert(repo.name.clone(), (rev.clone(), up_to));
            }
            *last_seen = Some(rev.clone());
            status.revision = Some(rev.clone());
            status.applied_revision = Some(rev);
            status.applied_commit = status.commit.clone();
            status.errors.clear();
            status.consecutive_failures = 0;
            status.good = Some(Arc::new(state));
            drop(repos);
            shared.recombine();
            0
        }
        Ok(Some(((rev, Err(errors)), _))) => {
            gm.record_sync(&repo.name, SyncResult::refused, took, Some(errors.0.len()));
            warn!(repository = %repo.name, revision = short(&rev), %errors, "revision refused; the last good revision keeps running");
            shared.notifier.emit(
                crate::notify::Event::new(
                    crate::notify::EventKind::RevisionRefused,
                    "refused",
                    errors.to_string(),
                )
                .revision(&rev),
            );
            *last_seen = Some(rev.clone());
            status.revision = Some(rev);
            status.errors = errors.0.iter().map(ToString::to_string).collect();
            status.consecutive_failures = 0;
            0
        }
        Err(message) => {
            gm.record_sync(&repo.name, SyncResult::failed, took, None);
            warn!(repository = %repo.name, error = %message, "sync failed; the last good revision keeps running");
            status.errors = vec![message];
            status.consecutive_failures += 1;
            status.consecutive_failures
        }
    }
}

/// A commit's message in a mirror (None when unreadable).
fn commit_message(mirror: &Path, commit: &str) -> Option<String> {
    let repo = git2::Repository::open_bare(mirror).ok()?;
    let oid = git2::Oid::from_str(commit).ok()?;
    Some(repo.find_commit(oid).ok()?.message()?.to_string())
}

/// A commit's subject and author in a mirror (None when unreadable).
fn commit_info(
    mirror: &Path,
    commit: &str,
    signer: Option<String>,
) -> Option<super::state::CommitInfo> {
    let repo = git2::Repository::open_bare(mirror).ok()?;
    let oid = git2::Oid::from_str(commit).ok()?;
    let c = repo.find_commit(oid).ok()?;
    let author = c.author();
    Some(super::state::CommitInfo {
        subject: c.summary().unwrap_or_default().to_string(),
        author: format!(
            "{} <{}>",
            author.name().unwrap_or_default(),
            author.email().unwrap_or_default()
        ),
        signer,
    })
}

/// Unix time of a commit in a mirror (None when unreadable: the first-seen time is used).
fn commit_time(mirror: &Path, commit: &str) -> Option<i64> {
    let repo = git2::Repository::open_bare(mirror).ok()?;
    let oid = git2::Oid::from_str(commit).ok()?;
    Some(repo.find_commit(oid).ok()?.time().seconds())
}

/// A commit refused for its signature, as a revision error (so it is reported like a bad
/// file and the last good revision keeps running).
fn unsigned(
    commit: &str,
    refusal: crate::gitops::signing::SigningError,
) -> desired::RevisionErrors {
    desired::RevisionErrors(vec![desired::DesiredError {
        revision: commit.to_string(),
        file: "(commit signature)".to_string(),
        line: None,
        reason: refusal.to_string(),
    }])
}
