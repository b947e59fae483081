//! Git sync with libgit2: one bare mirror per repository in the cache dir, a fetch of just
//! the configured ref, and the tree at the resolved commit read straight from the object
//! database (no checkout) through the package loader's [`FileTree`].
//!
//! A new mirror is fetched at depth 1; checking that a new revision descends from the last
//! applied one deepens it to full history once, after which fetches stay incremental. Every
//! fetch runs under libgit2's connect and idle timeouts ([`set_network_timeout`]); SSH host
//! keys are checked against `knownHostsFile` with OpenSSH's host and port rules.
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
        "repository {repo}: fetching {reference} from {url} failed: the remote stopped answering ({message})"
    )]
    Stalled {
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

/// libgit2's network timeouts (connect, and each read or write), process-wide: the first
/// [`set_network_timeout`] wins, else [`DEFAULT_NETWORK_TIMEOUT`].
static NETWORK_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
static APPLY_TIMEOUTS: std::sync::Once = std::sync::Once::new();
/// At most this long without a byte from a remote (a server preparing a large pack sends
/// progress meanwhile); the daemon lowers it to its shortest repository `timeout`.
pub const DEFAULT_NETWORK_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets libgit2's connect and read/write timeouts for every later fetch of this process (the
/// first call wins: they are one C global). A remote that accepts and never answers then fails
/// the fetch instead of holding its thread forever; the daemon also abandons a sync past its
/// repository's `timeout`, so this only bounds how long an abandoned thread lingers.
pub fn set_network_timeout(timeout: Duration) {
    let _ = NETWORK_TIMEOUT.set(timeout);
}

#[allow(unsafe_code)] // libgit2 global options; see SAFETY below.
fn apply_network_timeouts() {
    APPLY_TIMEOUTS.call_once(|| {
        let t = *NETWORK_TIMEOUT.get_or_init(|| DEFAULT_NETWORK_TIMEOUT);
        let ms = i32::try_from(t.as_millis()).unwrap_or(i32::MAX).max(1);
        // SAFETY: libgit2 keeps these as plain ints, read when a fetch opens a connection.
        // Every fetch of this process goes through `GitSource::fetch`, which runs this once
        // before it (the `Once` orders the write before any read), so no fetch reads them while
        // they are written.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(ms);
            let _ = git2::opts::set_server_timeout_in_milliseconds(ms);
        }
    });
}

const TARGET_REF: &str = "refs/kudo/target";
/// The commit fetched last, kept referenced while [`TARGET_REF`] is cleared for a fetch: the
/// fetch then negotiates from it (a "have"), so a one-file commit transfers the new objects
/// rather than the whole tree (libgit2 sends haves, and the local transport hides commits,
/// only for existing refs).
const PREVIOUS_REF: &str = "refs/kudo/previous";
/// Where the configured ref is fetched with full history to check ancestry (kept: it is one
/// more "have" for later fetches).
const DEEPEN_REF: &str = "refs/kudo/deepen";

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
        let specs = self.target_specs(TARGET_REF);
        let previous = repo
            .find_reference(TARGET_REF)
            .ok()
            .and_then(|r| r.target());
        if let Some(oid) = previous {
            // Best effort: without it the fetch is only bigger.
            let _ = repo.reference(PREVIOUS_REF, oid, true, "kudo: last fetched target");
        }
        // Depth 1 into a new or still shallow mirror (a cold start reads only the tip); a mirror
        // with full history (deepened to check ancestry, see `descends_from`) gets ordinary
        // incremental fetches, which keep it whole.
        let shallow = previous.is_none() || repo.is_shallow();
        let mut last = None;
        for spec in &specs {
            // A refspec whose source does not exist fetches nothing without failing, so the
            // target ref is cleared first and must exist afterwards.
            if let Ok(mut r) = repo.find_reference(TARGET_REF) {
                let _ = r.delete();
            }
            let fetched = if shallow {
                self.fetch_shallow_first(&repo, spec)
            } else {
                self.fetch(&repo, &[spec], Depth::Full)
            };
            match fetched {
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

    /// Whether commit `new` is `old` or descends from it. A shallow mirror cannot tell when
    /// `old` is behind its shallow boundary: the configured ref is then fetched with full
    /// history (once; later fetches stay incremental) and asked again. Blocking.
    pub fn descends_from(&self, new: &str, old: &str) -> Result<bool, GitError> {
        if new == old {
            return Ok(true);
        }
        let err = |e: git2::Error| GitError::Tree {
            repo: self.name.clone(),
            commit: new.to_string(),
            message: e.message().to_string(),
        };
        let new_oid = Oid::from_str(new).map_err(err)?;
        let Ok(old_oid) = Oid::from_str(old) else {
            return Ok(false);
        };
        let repo = self.open()?;
        let known = |repo: &GitRepo| {
            repo.find_commit(old_oid).is_ok()
                && repo.graph_descendant_of(new_oid, old_oid).unwrap_or(false)
        };
        if known(&repo) {
            return Ok(true);
        }
        if !repo.is_shallow() {
            return Ok(false);
        }
        debug!(repository = %self.name, "deepening the shallow mirror to check ancestry");
        let mut fetched = false;
        for spec in self.target_specs(DEEPEN_REF) {
            match self.fetch(&repo, &[spec.as_str()], Depth::Full) {
                Ok(()) => fetched = true,
                Err(GitError::RefNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if !fetched {
            return Err(self.not_found());
        }
        let repo = self.open()?;
        Ok(known(&repo))
    }

    /// Refspecs that fetch the configured ref into `into` (a branch or a tag of that name).
    fn target_specs(&self, into: &str) -> Vec<String> {
        match &self.reference {
            None => vec![format!("+HEAD:{into}")],
            // A pinned commit may be anywhere: every branch and tag.
            Some(r) if is_commit_id(r) => vec![
                "+refs/heads/*:refs/heads/*".to_string(),
                "+refs/tags/*:refs/tags/*".to_string(),
            ],
            Some(r) if r.starts_with("refs/") => vec![format!("+{r}:{into}")],
            Some(r) => vec![
                format!("+refs/heads/{r}:{into}"),
                format!("+refs/tags/{r}:{into}"),
            ],
        }
    }

    /// Only the tip is needed to read a branch or tag, so fetch depth 1; a remote or transport
    /// that refuses shallow fetches gets a full one instead (not one that stopped answering:
    /// that would only wait as long again).
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
        apply_network_timeouts();
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
            let port = ssh_port(&self.url);
            callbacks.certificate_check(move |cert, host| {
                check_host_key(&known_hosts, cert, host, port)
            });
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
                // libgit2 reports a socket timeout as GIT_TIMEOUT over http(s), as a plain
                // error over git:// ("timed out") and ssh ("Timed out waiting on socket").
                if e.code() == git2::ErrorCode::Timeout
                    || message.to_ascii_lowercase().contains("timed out")
                {
                    GitError::Stalled {
                        repo: self.name.clone(),
                        url: self.url.clone(),
                        reference: self.describe_ref(),
                        message,
                    }
                } else if missing
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

/// Accepts an SSH host key only when `known_hosts` lists it for the host and port.
fn check_host_key(
    known_hosts: &Path,
    cert: &git2::cert::Cert<'_>,
    host: &str,
    port: u16,
) -> Result<git2::CertificateCheckStatus, git2::Error> {
    let Some(hostkey) = cert.as_hostkey().and_then(|h| h.hostkey()) else {
        return Ok(git2::CertificateCheckStatus::CertificatePassthrough);
    };
    let text = std::fs::read_to_string(known_hosts)
        .map_err(|e| git2::Error::from_str(&format!("{}: {e}", known_hosts.display())))?;
    known_host(&text, host, port, hostkey)
        .map(|()| git2::CertificateCheckStatus::CertificateOk)
        .map_err(|reason| git2::Error::from_str(&format!("{}: {reason}", known_hosts.display())))
}

/// The port an SSH URL connects to: `ssh://[user@]host:port/...`, else 22 (scp-like URLs
/// cannot name a port).
fn ssh_port(url: &str) -> u16 {
    let Some(rest) = url.strip_prefix("ssh://") else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let port = match host_port.strip_prefix('[') {
        // [v6-address]:port
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// OpenSSH's known_hosts semantics for one host key (`key_blob`, the SSH wire encoding):
/// a line lists comma-separated patterns (`*` and `?` wildcards, `!` negation, hashed
/// `|1|salt|hash` entries); a plain pattern names port 22 and `[host]:port` that port only.
/// `@revoked` lines refuse their key; `@cert-authority` lines are not supported (host
/// certificates are not checked) and never match.
pub fn known_host(text: &str, host: &str, port: u16, key_blob: &[u8]) -> Result<(), String> {
    use base64::Engine;
    let target = if port == 22 {
        host.to_ascii_lowercase()
    } else {
        format!("[{}]:{port}", host.to_ascii_lowercase())
    };
    let mut accepted = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace().peekable();
        let marker = fields.next_if(|f| f.starts_with('@'));
        let (Some(hosts), Some(_kind), Some(key)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !hosts_match(hosts, &target) {
            continue;
        }
        let same_key = base64::engine::general_purpose::STANDARD
            .decode(key)
            .is_ok_and(|k| k == key_blob);
        match marker {
            Some("@revoked") if same_key => {
                return Err(format!("the host key of {target} is marked @revoked"));
            }
            None if same_key => accepted = true,
            _ => {}
        }
    }
    if accepted {
        Ok(())
    } else {
        Err(format!(
            "the host key of {target} is not listed (a `host` entry is for port 22, `[host]:port` for that port)"
        ))
    }
}

/// One known_hosts host field against `target` (`host` or `[host]:port`, lowercase).
fn hosts_match(field: &str, target: &str) -> bool {
    if let Some(hashed) = field.strip_prefix("|1|") {
        return hashed_host_matches(hashed, target);
    }
    let mut matched = false;
    for pattern in field.split(',') {
        let (negated, pattern) = match pattern.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, pattern),
        };
        if wildcard_match(&pattern.to_ascii_lowercase(), target) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, host))`, as `HashKnownHosts yes` writes.
fn hashed_host_matches(hashed: &str, target: &str) -> bool {
    use base64::Engine;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(target.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH's `match_pattern`: `*` any run, `?` any one character; the whole text must match.
pub(crate) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative with one backtrack point (the last `*`): linear in practice, no recursion.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
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
            max_deletions: crate::gitops::config::DEFAULT_MAX_DELETIONS,
            verify: None,
            timeout: Duration::from_secs(120),
            allow_rollback: false,
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

    const HOST_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBkNOJ1W3eUDhdzsKqGzXeMY7pHXPD4nN2Rk0dfRgH6x";
    const OTHER_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIMEmjuufGTmB5KJO9XzSojwA4jgoNk1XJOUd+nYgrgi+";

    fn blob(key: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .expect("base64")
    }

    #[test]
    fn known_hosts_entries_match_their_port_only() {
        let key = blob(HOST_KEY);
        let plain = format!("git.example.com ssh-ed25519 {HOST_KEY}\n");
        assert_eq!(known_host(&plain, "git.example.com", 22, &key), Ok(()));
        let err = known_host(&plain, "git.example.com", 2222, &key).expect_err("other port");
        assert!(err.contains("[git.example.com]:2222"), "{err}");
        let bracketed = format!("[git.example.com]:2222 ssh-ed25519 {HOST_KEY}\n");
        assert_eq!(
            known_host(&bracketed, "git.example.com", 2222, &key),
            Ok(())
        );
        assert!(known_host(&bracketed, "git.example.com", 22, &key).is_err());
        assert!(known_host(&bracketed, "git.example.com", 22222, &key).is_err());
        assert!(known_host(&bracketed, "git.example.co", 2222, &key).is_err());
        // The key must be the listed one.
        assert!(known_host(&plain, "git.example.com", 22, &blob(OTHER_KEY)).is_err());
    }

    #[test]
    fn known_hosts_patterns_markers_and_hashed_entries() {
        let key = blob(HOST_KEY);
        let text = format!(
            "# comment\n*.example.com,!evil.example.com ssh-ed25519 {HOST_KEY}\n[10.0.0.?]:2200 ssh-ed25519 {HOST_KEY}\n"
        );
        assert_eq!(known_host(&text, "git.example.com", 22, &key), Ok(()));
        assert!(known_host(&text, "evil.example.com", 22, &key).is_err());
        assert_eq!(known_host(&text, "10.0.0.7", 2200, &key), Ok(()));
        assert!(known_host(&text, "10.0.0.17", 2200, &key).is_err());
        let revoked = format!("{text}@revoked * ssh-ed25519 {HOST_KEY}\n");
        let err = known_host(&revoked, "git.example.com", 22, &key).expect_err("revoked");
        assert!(err.contains("@revoked"), "{err}");
        let ca = format!("@cert-authority * ssh-ed25519 {HOST_KEY}\n");
        assert!(known_host(&ca, "git.example.com", 22, &key).is_err());
        // Hashed by ssh-keygen itself.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        std::fs::write(
            &file,
            format!("[git.example.com]:2222 ssh-ed25519 {HOST_KEY}\ngit.example.com ssh-ed25519 {OTHER_KEY}\n"),
        )
        .expect("write");
        let out = std::process::Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&file)
            .output()
            .expect("ssh-keygen -H runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let hashed = std::fs::read_to_string(&file).expect("read");
        assert!(hashed.starts_with("|1|"), "{hashed}");
        assert_eq!(known_host(&hashed, "git.example.com", 2222, &key), Ok(()));
        assert!(known_host(&hashed, "git.example.com", 22, &key).is_err());
        assert_eq!(
            known_host(&hashed, "git.example.com", 22, &blob(OTHER_KEY)),
            Ok(())
        );
    }

    #[test]
    fn ssh_ports_come_from_the_url() {
        assert_eq!(ssh_port("ssh://git@host:2222/repo.git"), 2222);
        assert_eq!(ssh_port("ssh://host/repo.git"), 22);
        assert_eq!(ssh_port("ssh://git@[::1]:2200/repo.git"), 2200);
        assert_eq!(ssh_port("git@host:org/repo.git"), 22);
        assert_eq!(ssh_port("ssh://host:notaport/x"), 22);
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("g?t", "git"));
        assert!(wildcard_match("*.example.com", "a.b.example.com"));
        assert!(!wildcard_match("*.example.com", "example.com"));
        assert!(wildcard_match("a*b*c", "aXbYbc"));
        assert!(!wildcard_match("git", "gitx"));
    }
}
