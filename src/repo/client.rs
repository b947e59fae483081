//! Talking to one repository: its index (conditional on the cached ETag) and its packages
//! (verified against the index digest, cached by digest). Also builds an index for a folder.

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::http::{HttpClient, HttpOptions, Request};
use super::index::{Index, PackageVersion};
use super::store::{RepoEntry, write_atomic};
use super::{RepoError, sha256_hex};
use crate::package::Package;

/// Packages are small (KUDO's largest is well under 1 MiB); anything past this is refused.
pub const MAX_PACKAGE_BYTES: u64 = 20 * 1024 * 1024;
/// Indexes of big repositories run to a few MiB.
pub const MAX_INDEX_BYTES: u64 = 32 * 1024 * 1024;

pub struct RepoClient {
    repo: RepoEntry,
    http: HttpClient,
    /// `<home>/cache`.
    cache: PathBuf,
}

impl RepoClient {
    pub fn new(
        repo: &RepoEntry,
        cache: &Path,
        mut options: HttpOptions,
    ) -> Result<RepoClient, RepoError> {
        if options.ca_file.is_none() {
            options.ca_file = repo.ca_file.clone();
        }
        Ok(RepoClient {
            repo: repo.clone(),
            http: HttpClient::new(options)?,
            cache: cache.to_path_buf(),
        })
    }

    fn index_dir(&self) -> PathBuf {
        self.cache.join("index").join(&self.repo.name)
    }

    /// The repository's index: a 304 to `If-None-Match` with the cached ETag reuses the
    /// cached copy; when the repository cannot be reached a cached copy is used with a warning.
    pub async fn index(&self) -> Result<Index, RepoError> {
        let url = self.repo.index_url();
        let dir = self.index_dir();
        let body_path = dir.join("index.yaml");
        let etag_path = dir.join("etag");
        // Cached entries are only trusted for the URL they were fetched from.
        let url_path = dir.join("url");
        let cached_for_url =
            std::fs::read_to_string(&url_path).is_ok_and(|u| u.trim() == url.as_str());
        let cached = if cached_for_url {
            std::fs::read(&body_path).ok()
        } else {
            None
        };
        let etag = cached
            .as_ref()
            .and_then(|_| std::fs::read_to_string(&etag_path).ok());
        let mut req = Request::get(&url);
        if let Some(tag) = &etag {
            req = req.header("if-none-match", tag.trim());
        }
        let resp = match self.http.send_limited(&req, MAX_INDEX_BYTES).await {
            Ok(r) => r,
            Err(e @ super::HttpError::Transport { .. }) => match &cached {
                Some(body) => {
                    warn!(repository = %self.repo.name, error = %e, "repository unreachable; using the cached index");
                    return Index::parse(&url, &String::from_utf8_lossy(body));
                }
                None => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        if resp.status == 304
            && let Some(body) = cached
        {
            info!(repository = %self.repo.name, "index unchanged (ETag)");
            return Index::parse(&url, &String::from_utf8_lossy(&body));
        }
        let text = String::from_utf8(resp.body).map_err(|_| RepoError::BadIndex {
            url: url.clone(),
            reason: "not UTF-8".into(),
        })?;
        let index = Index::parse(&url, &text)?;
        write_atomic(&body_path, text.as_bytes())?;
        write_atomic(&url_path, url.as_bytes())?;
        match resp
            .headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
        {
            Some(tag) => write_atomic(&etag_path, tag.as_bytes())?,
            None => {
                let _ = std::fs::remove_file(&etag_path);
            }
        }
        Ok(index)
    }

    /// The package file, downloaded unless the cache holds it; its sha256 must equal the
    /// index digest, else it is refused and nothing is kept.
    pub async fn download(&self, pv: &PackageVersion) -> Result<PathBuf, RepoError> {
        let digest = pv.digest.to_ascii_lowercase();
        let path = self.cache.join("packages").join(format!("{digest}.tgz"));
        if let Ok(bytes) = std::fs::read(&path) {
            if sha256_hex(&bytes) == digest {
                return Ok(path);
            }
            let _ = std::fs::remove_file(&path);
        }
        let mut last = None;
        for u in &pv.urls {
            let url = resolve_url(&self.repo.url, u)?;
            match self
                .http
                .send_limited(&Request::get(&url), MAX_PACKAGE_BYTES)
                .await
            {
                Ok(resp) => {
                    let actual = sha256_hex(&resp.body);
                    if actual != digest {
                        return Err(RepoError::DigestMismatch {
                            url,
                            expected: digest,
                            actual,
                        });
                    }
                    write_atomic(&path, &resp.body)?;
                    return Ok(path);
                }
                Err(e) => {
                    warn!(repository = %self.repo.name, %url, error = %e, "download failed");
                    last = Some(e);
                }
            }
        }
        Err(match last {
            Some(e) => e.into(),
            None => RepoError::BadIndex {
                url: self.repo.index_url(),
                reason: format!("{} {} has no url", pv.name, pv.operator_version),
            },
        })
    }
}

/// A package URL from the index, absolute or relative to the repository URL.
pub fn resolve_url(repo_url: &str, u: &str) -> Result<String, RepoError> {
    let bad = |reason: String| RepoError::BadUrl {
        url: u.to_string(),
        reason,
    };
    if let Ok(abs) = reqwest::Url::parse(u) {
        return Ok(abs.to_string());
    }
    let base = reqwest::Url::parse(&format!("{}/", repo_url.trim_end_matches('/')))
        .map_err(|e| bad(format!("repository URL {repo_url}: {e}")))?;
    base.join(u)
        .map(|x| x.to_string())
        .map_err(|e| bad(e.to_string()))
}

/// The index of every `.tgz` package in `dir` (sorted by file name). URLs are the file name
/// below `base_url`, or just the file name (relative to the repository) without one.
pub fn build_index(dir: &Path, base_url: Option<&str>) -> Result<Index, RepoError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| RepoError::file(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tgz"))
        .collect();
    files.sort();
    let mut index = Index::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| RepoError::file(&file, e))?;
        let package = Package::load_path(&file)?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let url = match base_url {
            Some(b) => format!("{}/{name}", b.trim_end_matches('/')),
            None => name,
        };
        index.upsert(PackageVersion::of(
            &package.operator,
            &sha256_hex(&bytes),
            url,
        ));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_resolve_below_the_repository() {
        assert_eq!(
            resolve_url("http://h:1/repo", "kafka-1.0.0.tgz").expect("rel"),
            "http://h:1/repo/kafka-1.0.0.tgz"
        );
        assert_eq!(
            resolve_url("http://h:1/repo/", "https://cdn/x.tgz").expect("abs"),
            "https://cdn/x.tgz"
        );
    }
}
