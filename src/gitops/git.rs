//! Git sync with libgit2: one bare mirror per repository in the cache dir, a fetch of just
//! the configured ref, and the tree at the resolved commit read straight from the object
//! database (no checkout) through the package loader's [`FileTree`].
//!
//! Also here: the revision of a plain local directory (a hash of its content), the poll
//! delay with jitter and failure backoff, and the debounced directory watcher.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use git2::{FetchOptions, Oid, RemoteCallbacks, Repository as GitRepo};
use sha2::{Digest, Sha256};
use tracing::debug;

use super::config::{Credentials, Repository};
use crate::package::{FileTree, PackageError};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("repository {repo}: cannot open the mirror {path}: {message}")]
    Mirror {
        repo: String,
        path: String,
        message: String,
    },
    #[error("repository {repo}: fetching {reference} from {url} failed: {message}")]
    Fetch {
        repo: String,
        url: String,
        reference: String,
        message: String,
    },
    #[error(
        "repository {repo}: ref {reference:?} does not exist in {url} (no such branch, tag or commit)"
    )]
    RefNotFound {
        repo: String,
        url: String,
        reference: String,
    },
    #[error("repository {repo}: commit {commit}: {message}")]
    Tree {
        repo: String,
        commit: String,
        message: String,
    },
    #[error("repository {repo}: cannot read credentials file {file}: {message}")]
    Credentials {
        repo: String,
        file: String,
        message: String,
    },
    #[error("directory {path}: {message}")]
    Dir { path: String, message: String },
}

/// A remote repository mirrored in the cache dir.
#[derive(Debug, Clone)]
pub struct GitSource {
    pub name: String,
    pub url: String,
    pub reference: Option<String>,
    pub subpath: String,
    pub mirror: PathBuf,
    credentials: Credentials,
}

const TARGET_REF: &str = "refs/kudo/target";
/// The commit fetched last, kept referenced while [`TARGET_REF`] is cleared for a fetch: the
/// fetch then negotiates from it (a "have"), so a one-file commit transfers the new objects
/// rather than the whole tree (libgit2 sends haves, and the local transport hides commits,
/// only for existing refs).
const PREVIOUS_REF: &str = "refs/kudo/previous";

#[derive(Debug, Clone, Copy)]
enum Depth {
    Shallow,
    Full,
}

impl GitSource {
    pub fn new(repo: &Repository, url: &str, cache_dir: &Path) -> GitSource {
        let digest = hex::encode(Sha256::digest(url.as_bytes()));
        GitSource {
            name: repo.name.clone(),
            url: url.to_string(),
            reference: repo.reference.clone(),
            subpath: repo.path.clone(),
            mirror: cache_dir.join(format!("{}-{}.git", repo.name, &digest[..12])),
            credentials: repo.credentials.clone(),
        }
    }

    fn describe_ref(&self) -> String {
        self.reference.clone().unwrap_or_else(|| "HEAD".to_string())
    }

    fn open(&self) -> Result<GitRepo, GitError> {
        let err = |e: git2::Error| GitError::Mirror {
            repo: self.name.clone(),
            path: self.mirror.display().to_string(),
            message: e.message().to_string(),
        };
        if self.mirror.join("HEAD").is_file() {
            GitRepo::open_bare(&self.mirror).map_err(err)
        } else {
            std::fs::create_dir_all(&self.mirror).map_err(|e| GitError::Mirror {
                repo: self.name.clone(),
                path: self.mirror.display().to_string(),
                message: e.to_string(),
            })?;
            GitRepo::init_bare(&self.mirror).map_err(err)
        }
    }

    /// Fetches the configured ref and returns the commit it points at. Blocking.
    pub fn sync(&self) -> Result<String, GitError> {
        let repo = self.open()?;
        let reference = self.describe_ref();
        if is_commit_id(&reference) {
            // A pinned commit: fetch only when the mirror does not have it yet.
            if let Ok(oid) = Oid::from_str(&reference)
                && repo.find_commit(oid).is_ok()
            {
                return Ok(oid.to_string());
            }
            // Any ancestor may be asked for, so this fetch is full (and unshallows the mirror).
            self.fetch(
                &repo,
                &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                Depth::Full,
            )?;
            let oid = Oid::from_str(&reference).map_err(|_| self.not_found())?;
            return match repo.find_commit(oid) {
                Ok(c) => Ok(c.id().to_string()),
                Err(_) => Err(self.not_found()),
            };
        }
        let specs: Vec<String> = match &self.reference {
            None => vec![format!("+HEAD:{TARGET_REF}")],
            Some(r) if r.starts_with("refs/") => vec![format!("+{r}:{TARGET_REF}")],
            Some(r) => vec![
                format!("+refs/heads/{r}:{TARGET_REF}"),
                format!("+refs/tags/{r}:{TARGET_REF}"),
            ],
        };
        if let Some(oid) = repo
            .find_reference(TARGET_REF)
            .ok()
            .and_then(|r| r.target())
        {
            // Best effort: without it the fetch is only bigger.
            let _ = repo.reference(PREVIOUS_REF, oid, true, "kudo: last fetched target");
        }
        let mut last = None;
        for spec in &specs {
            // A refspec whose source does not exist fetches nothing without failing, so the
            // target ref is cleared first and must exist afterwards.
            if let Ok(mut r) = repo.find_reference(TARGET_REF) {
                let _ = r.delete();
            }
            match self.fetch_shallow_first(&repo, spec) {
                Ok(()) => {
                    let Ok(obj) = repo.revparse_single(TARGET_REF) else {
                        last = Some(self.not_found());
                        continue;
                    };
                    let commit = obj.peel_to_commit().map_err(|e| GitError::Tree {
                        repo: self.name.clone(),
                        commit: obj.id().to_string(),
                        message: e.message().to_string(),
                    })?;
                    return Ok(commit.id().to_string());
                }
                Err(e @ GitError::RefNotFound { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| self.not_found()))
    }

    fn not_found(&self) -> GitError {
        GitError::RefNotFound {
            repo: self.name.clone(),
            url: self.url.clone(),
            reference: self.describe_ref(),
        }
    }

    /// Only the tip is needed to read a branch or tag, so fetch depth 1; a remote or transport
    /// that refuses shallow fetches gets a full one instead.
    fn fetch_shallow_first(&self, repo: &GitRepo, spec: &str) -> Result<(), GitError> {
        match self.fetch(repo, &[spec], Depth::Shallow) {
            Err(e @ GitError::Fetch { .. }) => {
                debug!(repository = %self.name, error = %e, "shallow fetch failed; fetching in full");
                self.fetch(repo, &[spec], Depth::Full)
            }
            other => other,
        }
    }

    fn fetch(&self, repo: &GitRepo, refspecs: &[&str], depth: Depth) -> Result<(), GitError> {
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| GitError::Fetch {
                repo: self.name.clone(),
                url: self.url.clone(),
                reference: self.describe_ref(),
                message: e.message().to_string(),
            })?;
        let mut callbacks = RemoteCallbacks::new();
        let creds = self.credentials.clone();
        let name = self.name.clone();
        let mut attempts = 0;
        callbacks.credentials(move |_url, username, allowed| {
            attempts += 1;
            if attempts > 3 {
                return Err(git2::Error::from_str("credentials rejected"));
            }
            credential(&name, &creds, username, allowed)
                .map_err(|e| git2::Error::from_str(&e.to_string()))
        });
        if let Some(known_hosts) = self.credentials.known_hosts_file.clone() {
            callbacks.certificate_check(move |cert, host| check_host_key(&known_hosts, cert, host));
        }
        let mut options = FetchOptions::new();
        options.remote_callbacks(callbacks);
        options.download_tags(git2::AutotagOption::None);
        match depth {
            Depth::Shallow => {
                options.depth(1);
            }
            // libgit2's GIT_FETCH_DEPTH_UNSHALLOW: deepen a shallow mirror to full history.
            Depth::Full if repo.is_shallow() => {
                options.depth(i32::MAX);
            }
            Depth::Full => {}
        }
        remote
            .fetch(refspecs, Some(&mut options), None)
            .map_err(|e| {
                let message = e.message().to_string();
                let missing = message.contains("couldn't find remote ref")
                    || message.contains("not found")
                    || e.code() == git2::ErrorCode::NotFound;
                if missing
                    && e.class() != git2::ErrorClass::Net
                    && e.class() != git2::ErrorClass::Os
                {
                    self.not_found()
                } else {
                    GitError::Fetch {
                        repo: self.name.clone(),
                        url: self.url.clone(),
                        reference: self.describe_ref(),
                        message,
                    }
                }
            })
    }

    /// The files at `commit` below the configured path, read from the mirror.
    pub fn tree(&self, commit: &str) -> Result<GitTree, GitError> {
        let repo = self.open()?;
        let err = |message: String| GitError::Tree {
            repo: self.name.clone(),
            commit: commit.to_string(),
            message,
        };
        let (root, paths) = {
            let oid = Oid::from_str(commit).map_err(|e| err(e.message().to_string()))?;
            let tree = repo
                .find_commit(oid)
                .and_then(|c| c.tree())
                .map_err(|e| err(e.message().to_string()))?;
            let root = if self.subpath.is_empty() {
                tree.id()
            } else {
                tree.get_path(Path::new(&self.subpath))
                    .map_err(|_| err(format!("path {:?} does not exist", self.subpath)))?
                    .id()
            };
            let mut paths = BTreeMap::new();
            let sub = repo
                .find_tree(root)
                .map_err(|e| err(e.message().to_string()))?;
            sub.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
                if entry.kind() == Some(git2::ObjectType::Blob) {
                    let path = format!("{dir}{}", entry.name().unwrap_or_default());
                    paths.insert(path, entry.id());
                }
                git2::TreeWalkResult::Ok
            })
            .map_err(|e| err(e.message().to_string()))?;
            (root, paths)
        };
        Ok(GitTree {
            describe: format!("{}@{}", self.name, &commit[..12.min(commit.len())]),
            repo,
            root,
            paths,
        })
    }
}

/// A tree at one commit, read from the object database.
pub struct GitTree {
    describe: String,
    repo: GitRepo,
    root: Oid,
    /// Path → blob id, sorted by path.
    paths: BTreeMap<String, Oid>,
}

impl FileTree for GitTree {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn paths(&self) -> Result<Vec<String>, PackageError> {
        Ok(self.paths.keys().cloned().collect())
    }

    fn content_id(&self, path: &str) -> Option<String> {
        self.paths.get(path).map(|oid| format!("blob:{oid}"))
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, PackageError> {
        let io = |message: String| PackageError::Io {
            path: format!("{}:{path}", self.describe),
            source: std::io::Error::other(message),
        };
        let oid = match self.paths.get(path) {
            Some(oid) => *oid,
            None => {
                let tree = self
                    .repo
                    .find_tree(self.root)
                    .map_err(|e| io(e.message().to_string()))?;
                tree.get_path(Path::new(path))
                    .map_err(|e| io(e.message().to_string()))?
                    .id()
            }
        };
        let blob = self
            .repo
            .find_blob(oid)
            .map_err(|e| io(e.message().to_string()))?;
        Ok(blob.content().to_vec())
    }
}

fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_secret(repo: &str, file: &Path) -> Result<String, GitError> {
    std::fs::read_to_string(file)
        .map(|s| s.trim().to_string())
        .map_err(|e| GitError::Credentials {
            repo: repo.to_string(),
            file: file.display().to_string(),
            message: e.to_string(),
        })
}

fn credential(
    repo: &str,
    c: &Credentials,
    username: Option<&str>,
    allowed: git2::CredentialType,
) -> Result<git2::Cred, GitError> {
    let git = |e: git2::Error| GitError::Credentials {
        repo: repo.to_string(),
        file: "(credentials)".to_string(),
        message: e.message().to_string(),
    };
    if allowed.contains(git2::CredentialType::SSH_KEY)
        && let Some(key) = &c.ssh_key_file
    {
        return git2::Cred::ssh_key(username.unwrap_or("git"), None, key, None).map_err(git);
    }
    if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
        if let Some(token) = &c.token_file {
            let token = read_secret(repo, token)?;
            return git2::Cred::userpass_plaintext("x-access-token", &token).map_err(git);
        }
        if let (Some(u), Some(p)) = (&c.username_file, &c.password_file) {
            let user = read_secret(repo, u)?;
            let pass = read_secret(repo, p)?;
            return git2::Cred::userpass_plaintext(&user, &pass).map_err(git);
        }
    }
    git2::Cred::default().map_err(git)
}

/// Accepts an SSH host key only when `known_hosts` lists it for the host.
fn check_host_key(
    known_hosts: &Path,
    cert: &git2::cert::Cert<'_>,
    host: &str,
) -> Result<git2::CertificateCheckStatus, git2::Error> {
    let Some(hostkey) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
        return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
    };
    use base64::Engine;
    let text = std::fs::read_to_string(known_hosts)
        .map_err(|e| git2::Error::from_str(&format!("{}: {e}", known_hosts.display())))?;
    let ok = text.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(key)) = (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        hosts
            .split(',')
            .any(|h| h == host || h.trim_start_matches('[').starts_with(&format!("{host}]")))
            && base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|k| k == hostkey)
    });
    if ok {
        Ok(git2::CertificateCheckStatus::CertificateOk)
    } else {
        Err(git2::Error::from_str(&format!(
            "host key of {host} is not in {}",
            known_hosts.display()
        )))
    }
}

/// The revision of a plain directory: a hash over every file's path and content, so an
/// unchanged tree keeps its revision and any change gives a new one.
pub fn content_revision(tree: &dyn FileTree) -> Result<String, PackageError> {
    let mut hash = Sha256::new();
    for p in tree.paths()? {
        let content = tree.read(&p)?;
        hash.update(p.as_bytes());
        hash.update([0]);
        hash.update((content.len() as u64).to_le_bytes());
        hash.update(&content);
    }
    Ok(format!("dir-{}", &hex::encode(hash.finalize())[..36]))
}

/// How long to wait before the next poll: the interval with ±10% jitter after a success;
/// after `failures` consecutive failures, a doubling delay (from 1 s) capped at 8 intervals.
pub fn next_poll(interval: Duration, failures: u32, jitter: f64) -> Duration {
    let jitter = 0.9 + 0.2 * jitter.clamp(0.0, 1.0);
    let base = if failures == 0 {
        interval
    } else {
        let backoff = Duration::from_secs(1) * 2u32.saturating_pow(failures.min(16) - 1);
        backoff.min(interval * 8).max(Duration::from_secs(1))
    };
    base.mul_f64(jitter)
}

/// Watches a directory (recursively) and sends one message per settled burst of changes.
/// The returned watcher must be kept alive. Symlinks are not followed: a link out of the
/// tree would watch (and exhaust inotify watches on) what lies outside it, and the sync
/// reads only inside the root anyway (see `DirTree`).
pub fn watch_dir(
    path: &Path,
    debounce: Duration,
    tx: tokio::sync::mpsc::Sender<()>,
) -> Result<notify::RecommendedWatcher, GitError> {
    use notify::Watcher;
    let (raw_tx, mut raw_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::RecommendedWatcher::new(
        move |res: notify::Result<notify::Event>| {
            if res.is_ok_and(|e| !e.kind.is_access()) {
                let _ = raw_tx.send(());
            }
        },
        notify::Config::default().with_follow_symlinks(false),
    )
    .map_err(|e| GitError::Dir {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    watcher
        .watch(path, notify::RecursiveMode::Recursive)
        .map_err(|e| GitError::Dir {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Wait for a quiet period: editors write several events per save.
            loop {
                match tokio::time::timeout(debounce, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::MemTree;

    #[test]
    fn poll_delay_jitters_and_backs_off() {
        let i = Duration::from_secs(60);
        assert_eq!(next_poll(i, 0, 0.5), i);
        assert!(next_poll(i, 0, 0.0) < i && next_poll(i, 0, 1.0) > i);
        assert_eq!(next_poll(i, 1, 0.5), Duration::from_secs(1));
        assert_eq!(next_poll(i, 4, 0.5), Duration::from_secs(8));
        assert_eq!(next_poll(i, 30, 0.5), i * 8, "capped at 8 intervals");
    }

    #[test]
    fn content_revision_follows_content() {
        let a = MemTree::new("a", [("x".to_string(), b"1".to_vec())].into());
        let b = MemTree::new("b", [("x".to_string(), b"1".to_vec())].into());
        let c = MemTree::new("c", [("x".to_string(), b"2".to_vec())].into());
        let d = MemTree::new("d", [("y".to_string(), b"1".to_vec())].into());
        let ra = content_revision(&a).expect("hash");
        assert_eq!(ra, content_revision(&b).expect("hash"));
        assert_ne!(ra, content_revision(&c).expect("hash"));
        assert_ne!(ra, content_revision(&d).expect("hash"));
    }

    /// Objects in a pack, from its `.idx` (version 2: the last fanout entry).
    fn pack_objects(idx: &Path) -> u32 {
        let bytes = std::fs::read(idx).expect("idx");
        assert_eq!(&bytes[..4], b"\xfftOc", "idx v2");
        let at = 8 + 255 * 4;
        u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    fn packs(mirror: &Path) -> std::collections::BTreeSet<PathBuf> {
        std::fs::read_dir(mirror.join("objects/pack"))
            .expect("pack dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "idx"))
            .collect()
    }

    #[test]
    fn a_one_file_commit_fetches_only_new_objects() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = GitRepo::init_bare(dir.path().join("src.git")).expect("init");
        let sig = git2::Signature::now("t", "t@kudo.invalid").expect("sig");
        let commit = |files: &[(String, String)], parent: Option<Oid>| {
            let mut b = git2::build::TreeUpdateBuilder::new();
            for (p, c) in files {
                let blob = src.blob(c.as_bytes()).expect("blob");
                b.upsert(p.as_str(), blob, git2::FileMode::Blob);
            }
            let base = match parent {
                Some(p) => src.find_commit(p).and_then(|c| c.tree()).expect("tree"),
                None => {
                    let t = src
                        .treebuilder(None)
                        .and_then(|t| t.write())
                        .expect("empty");
                    src.find_tree(t).expect("empty tree")
                }
            };
            let tree = b.create_updated(&src, &base).expect("update");
            let tree = src.find_tree(tree).expect("tree");
            let parents: Vec<git2::Commit<'_>> = parent
                .map(|p| src.find_commit(p).expect("parent"))
                .into_iter()
                .collect();
            let parents: Vec<&git2::Commit<'_>> = parents.iter().collect();
            src.commit(Some("refs/heads/main"), &sig, &sig, "c", &tree, &parents)
                .expect("commit")
        };
        let files: Vec<(String, String)> = (0..40)
            .map(|i| (format!("instances/i{i}.yaml"), format!("n: {i}\n")))
            .collect();
        let first = commit(&files, None);
        let repo = Repository {
            name: "t".into(),
            source: super::super::config::Source::Git(String::new()),
            reference: Some("main".into()),
            path: String::new(),
            interval: Duration::from_secs(60),
            credentials: Default::default(),
            webhook_secret_file: None,
            verify: None,
        };
        let url = format!("file://{}", dir.path().join("src.git").display());
        let g = GitSource::new(&repo, &url, &dir.path().join("cache"));
        assert_eq!(g.sync().expect("first sync"), first.to_string());
        let before = packs(&g.mirror);
        let second = commit(
            &[("instances/i7.yaml".into(), "n: 700\n".into())],
            Some(first),
        );
        assert_eq!(g.sync().expect("second sync"), second.to_string());
        let new: Vec<PathBuf> = packs(&g.mirror).difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "{new:?}");
        // The commit, the root tree, instances/ and the blob: not the 40 files again.
        assert_eq!(pack_objects(&new[0]), 4);
        let tree = g.tree(&second.to_string()).expect("tree");
        assert_eq!(tree.read("instances/i7.yaml").expect("read"), b"n: 700\n");
        assert_eq!(tree.read("instances/i8.yaml").expect("read"), b"n: 8\n");
    }

    #[test]
    fn commit_ids() {
        assert!(is_commit_id("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit_id("main"));
    }
}
