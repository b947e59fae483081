//! Package repositories (KUDO's format): an `index.yaml` listing package versions and the
//! .tgz files they live in. The local list of repositories (`repositories.yaml` in the kudo
//! home), fetching indexes (ETag-conditional, cached on disk), downloading packages
//! (size-limited, sha256-verified, cached by digest) and building indexes for a folder.
//!
//! The kudo home is `$KUDO_HOME`, else `$XDG_CONFIG_HOME/kudo`, else `~/.config/kudo`:
//! `repositories.yaml` there, indexes under `cache/index/<repo>/`, packages under
//! `cache/packages/<sha256>.tgz`.

pub mod client;
pub mod frameworks;
pub mod http;
pub mod index;
pub mod store;

pub use client::{RepoClient, build_index};
pub use http::{HttpClient, HttpError, HttpOptions};
pub use index::{INDEX_FILE, Index, PackageVersion};
pub use store::{RepoEntry, RepoList, kudo_home};

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("index {url} does not parse: {reason}")]
    BadIndex { url: String, reason: String },
    #[error("repository {repo} has no package {name:?}; it has: {available}")]
    UnknownPackage {
        repo: String,
        name: String,
        available: String,
    },
    #[error("repository {repo} has no version of {name} matching {wanted}; available: {available}")]
    UnknownVersion {
        repo: String,
        name: String,
        wanted: String,
        available: String,
    },
    #[error(
        "{url}: digest mismatch, refused: the index says sha256 {expected}, the download is {actual}"
    )]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("no package repository named {name:?} (known: {known}); add one with `kudo repo add`")]
    UnknownRepo { name: String, known: String },
    #[error("repository {name:?} already exists (url {url}); remove it first")]
    RepoExists { name: String, url: String },
    #[error("{url}: not a URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{what} {value:?} is refused: {reason}")]
    Unsafe {
        what: String,
        value: String,
        reason: String,
    },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error(transparent)]
    Package(#[from] crate::package::PackageError),
}

impl RepoError {
    pub(crate) fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> RepoError {
        RepoError::File {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}

/// Whether `s` is a sha256 digest as indexes hold them: exactly 64 lower-case hex digits.
/// Digests name cache files, so nothing else may pass.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub use crate::util::is_safe_segment;

/// Lower-case hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
