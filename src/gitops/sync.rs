//! What keeps one repository's sync safe, beside the fetch itself (`git.rs`):
//!
//! - a deadline per sync: the blocking work runs on its own thread and is abandoned (counted
//!   as a failure) when it overruns, so a remote that never answers cannot stall the
//!   repository; an abandoned thread still running blocks the next attempt (one thread per
//!   repository at most);
//! - the pacing of the next sync: the poll interval, and after failures a backoff that neither
//!   a webhook nor a directory change skips (what arrives meanwhile coalesces into one sync);
//! - the last applied commit, persisted under the cache dir per repository name, URL and ref,
//!   so a branch moved back to an older (even signed) commit is refused across restarts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::config::Repository;
use super::desired;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error(
        "repository {repo}: the last applied commit file {file}: {message} (remove the file to trust the current revision again)"
    )]
    State {
        repo: String,
        file: String,
        message: String,
    },
    #[error(
        "repository {repo}: the sync did not finish within its timeout of {timeout:?} (a remote that does not answer?); abandoned, retried with backoff"
    )]
    TimedOut { repo: String, timeout: Duration },
    #[error(
        "repository {repo}: the previous sync, abandoned after {timeout:?}, is still running; no new one is started until it ends"
    )]
    StillRunning { repo: String, timeout: Duration },
    #[error("repository {repo}: the sync thread failed: {message}")]
    Panicked { repo: String, message: String },
}

/// The refusal of a revision that does not descend from the last applied one, as a revision
/// error: the last good revision keeps running and the status names both commits.
pub fn rollback_refused(repo: &str, new: &str, old: &str, store: &Path) -> desired::RevisionErrors {
    desired::RevisionErrors(vec![desired::DesiredError {
        revision: new.to_string(),
        file: "(history)".to_string(),
        line: None,
        reason: format!(
            "commit {new} does not descend from commit {old}, the last one applied from repository {repo} (the ref moved back or its history was rewritten); refused: set allowRollback: true on the repository to apply it, or remove {} to accept the current revision once",
            store.display()
        ),
    }])
}

/// The last applied commit of one repository (name, URL and ref: a changed `ref` or `url`
/// starts afresh), in a small JSON file under `<cacheDir>/applied/`.
#[derive(Debug, Clone)]
pub struct AppliedStore {
    repo: String,
    url: String,
    reference: String,
    path: PathBuf,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct AppliedFile {
    repository: String,
    url: String,
    #[serde(rename = "ref")]
    reference: String,
    commit: String,
}

impl AppliedStore {
    pub fn new(cache_dir: &Path, repo: &Repository, url: &str) -> AppliedStore {
        let reference = repo.reference.clone().unwrap_or_else(|| "HEAD".into());
        let mut hash = Sha256::new();
        for part in [repo.name.as_str(), url, reference.as_str()] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        let digest = hex::encode(hash.finalize());
        AppliedStore {
            path: cache_dir
                .join("applied")
                .join(format!("{}-{}.json", repo.name, &digest[..16])),
            repo: repo.name.clone(),
            url: url.to_string(),
            reference,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, message: impl std::fmt::Display) -> SyncError {
        SyncError::State {
            repo: self.repo.clone(),
            file: self.path.display().to_string(),
            message: message.to_string(),
        }
    }

    /// The commit applied last; `None` before the first. A file that cannot be read or makes
    /// no sense is an error (failing closed), never "no commit yet".
    pub fn load(&self) -> Result<Option<String>, SyncError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(e)),
        };
        let file: AppliedFile = serde_json::from_str(&text).map_err(|e| self.error(e))?;
        let is_commit =
            file.commit.len() == 40 && file.commit.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_commit {
            return Err(self.error(format!("{:?} is not a commit id", file.commit)));
        }
        Ok(Some(file.commit))
    }

    /// Records `commit` as applied (written whole, then renamed into place).
    pub fn save(&self, commit: &str) -> Result<(), SyncError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        let text = serde_json::to_string_pretty(&AppliedFile {
            repository: self.repo.clone(),
            url: self.url.clone(),
            reference: self.reference.clone(),
            commit: commit.to_string(),
        })
        .map_err(|e| self.error(e))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| self.error(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.error(e))
    }
}

/// Runs each sync's blocking work under a deadline and remembers an abandoned one.
pub struct Deadline<T> {
    repo: String,
    timeout: Duration,
    stuck: Option<tokio::task::JoinHandle<T>>,
}

impl<T: Send + 'static> Deadline<T> {
    pub fn new(repo: &str, timeout: Duration) -> Deadline<T> {
        Deadline {
            repo: repo.to_string(),
            timeout,
            stuck: None,
        }
    }

    /// Runs `work` on a blocking thread; returns by the deadline whatever the thread does.
    pub async fn run(&mut self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, SyncError> {
        if let Some(stuck) = &self.stuck {
            if !stuck.is_finished() {
                return Err(SyncError::StillRunning {
                    repo: self.repo.clone(),
                    timeout: self.timeout,
                });
            }
            self.stuck = None;
        }
        let mut handle = tokio::task::spawn_blocking(work);
        match tokio::time::timeout(self.timeout, &mut handle).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(SyncError::Panicked {
                repo: self.repo.clone(),
                message: e.to_string(),
            }),
            Err(_) => {
                self.stuck = Some(handle);
                Err(SyncError::TimedOut {
                    repo: self.repo.clone(),
                    timeout: self.timeout,
                })
            }
        }
    }
}

/// Waits for the next sync: `delay` (the poll interval, or the backoff after `failures`), or
/// earlier on a webhook or a directory change, except after failures: then the backoff is
/// waited out whatever arrives (it all coalesces into the one sync after it). True on stop.
pub async fn wait_next(
    delay: Duration,
    failures: u32,
    wake: &Notify,
    changes: &mut tokio::sync::mpsc::Receiver<()>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    let until = tokio::time::Instant::now() + delay;
    let early = tokio::select! {
        _ = tokio::time::sleep_until(until) => false,
        _ = wake.notified() => true,
        Some(()) = changes.recv() => true,
        _ = stop.wait_for(|s| *s) => return true,
    };
    if early && failures > 0 {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = stop.wait_for(|s| *s) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gitops::config::Source;

    fn repo(name: &str, reference: Option<&str>) -> Repository {
        Repository {
            name: name.into(),
            source: Source::Git("https://h/x.git".into()),
            reference: reference.map(str::to_string),
            path: String::new(),
            interval: Duration::from_secs(60),
            credentials: Default::default(),
            webhook_secret_file: None,
            max_deletions: crate::gitops::config::DEFAULT_MAX_DELETIONS,
            verify: None,
            timeout: Duration::from_secs(120),
            allow_rollback: false,
        }
    }

    const C1: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn the_last_applied_commit_is_kept_per_name_url_and_ref() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = AppliedStore::new(dir.path(), &repo("r", Some("main")), "https://h/x.git");
        assert_eq!(main.load(), Ok(None));
        main.save(C1).expect("save");
        let again = AppliedStore::new(dir.path(), &repo("r", Some("main")), "https://h/x.git");
        assert_eq!(again.load(), Ok(Some(C1.to_string())));
        for other in [
            AppliedStore::new(dir.path(), &repo("r", Some("release")), "https://h/x.git"),
            AppliedStore::new(dir.path(), &repo("r", Some("main")), "https://h/y.git"),
            AppliedStore::new(dir.path(), &repo("s", Some("main")), "https://h/x.git"),
        ] {
            assert_eq!(other.load(), Ok(None), "{}", other.path().display());
        }
        std::fs::write(
            main.path(),
            r#"{"repository":"r","url":"u","ref":"main","commit":"../x"}"#,
        )
        .expect("write");
        let err = main.load().expect_err("refused").to_string();
        assert!(
            err.contains("repository r: the last applied commit file")
                && err.contains("\"../x\" is not a commit id"),
            "{err}"
        );
        std::fs::write(main.path(), "not json").expect("write");
        assert!(main.load().is_err());
    }

    #[tokio::test]
    async fn a_sync_past_its_deadline_is_abandoned_and_blocks_the_next_until_it_ends() {
        let mut deadline = Deadline::new("r", Duration::from_millis(50));
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let err = deadline
            .run(move || {
                let _ = wait.recv();
                1
            })
            .await
            .expect_err("abandoned");
        assert!(
            matches!(err, SyncError::TimedOut { .. }) && err.to_string().contains("abandoned"),
            "{err}"
        );
        let err = deadline.run(|| 2).await.expect_err("still running");
        assert!(matches!(err, SyncError::StillRunning { .. }), "{err}");
        release.send(()).expect("release");
        let ended = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match deadline.run(|| 3).await {
                Ok(v) => {
                    assert_eq!(v, 3);
                    break;
                }
                Err(SyncError::StillRunning { .. }) => {
                    assert!(tokio::time::Instant::now() < ended, "never ended");
                    tokio::task::yield_now().await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[tokio::test]
    async fn many_wakes_during_a_sync_coalesce_into_one_more_sync() {
        let wake = Notify::new();
        let (_tx, mut changes) = tokio::sync::mpsc::channel(1);
        let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
        // 100 hooks while a sync runs...
        for _ in 0..100 {
            wake.notify_one();
        }
        let interval = Duration::from_millis(300);
        // ...start one more sync at once,
        let t0 = tokio::time::Instant::now();
        assert!(!wait_next(Duration::from_secs(3600), 0, &wake, &mut changes, &mut stop).await);
        assert!(t0.elapsed() < Duration::from_secs(3600));
        // and no other: the next waits for its interval.
        let t0 = tokio::time::Instant::now();
        assert!(!wait_next(interval, 0, &wake, &mut changes, &mut stop).await);
        assert!(t0.elapsed() >= interval, "{:?}", t0.elapsed());
    }

    #[tokio::test]
    async fn a_wake_does_not_skip_the_failure_backoff() {
        let wake = Notify::new();
        let (_tx, mut changes) = tokio::sync::mpsc::channel(1);
        let (_stop_tx, mut stop) = tokio::sync::watch::channel(false);
        // No failures: a wake syncs at once (well before an hour's poll interval).
        wake.notify_one();
        let t0 = tokio::time::Instant::now();
        let hour = Duration::from_secs(3600);
        assert!(!wait_next(hour, 0, &wake, &mut changes, &mut stop).await);
        assert!(t0.elapsed() < hour);
        // After a failure: the whole backoff, however many wakes.
        let backoff = Duration::from_millis(300);
        for _ in 0..100 {
            wake.notify_one();
        }
        let t0 = tokio::time::Instant::now();
        assert!(!wait_next(backoff, 1, &wake, &mut changes, &mut stop).await);
        assert!(t0.elapsed() >= backoff, "{:?}", t0.elapsed());
    }
}
