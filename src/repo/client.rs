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

    fn index_dir(&self) -> Result<PathBuf, RepoError> {
        if !super::is_safe_segment(&self.repo.name) {
            return Err(RepoError::Unsafe {
                what: "repository name".into(),
                value: self.repo.name.clone(),
                reason: "it names a cache folder: no '/', '..' or control characters".into(),
            });
        }
        Ok(self.cache.join("index").join(&self.repo.name))
    }

    /// The cache file of a package: only a sha256 digest may name it (checked again here,
    /// whatever built the `PackageVersion`), so it is always inside `cache/packages/`.
    fn package_path(&self, digest: &str) -> Result<PathBuf, RepoError> {
        if !super::is_sha256_hex(digest) {
            return Err(RepoError::Unsafe {
                what: format!("digest of a package of repository {}", self.repo.name),
                value: digest.to_string(),
                reason: "not 64 lower-case hex digits".into(),
            });
        }
        Ok(self.cache.join("packages").join(format!("{digest}.tgz")))
    }

    /// The repository's index: a 304 to `If-None-Match` with the cached ETag reuses the
    /// cached copy; when the repository cannot be reached a cached copy is used with a warning.
    pub async fn index(&self) -> Result<Index, RepoError> {
        let url = self.repo.index_url();
        let dir = self.index_dir()?;
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
        // Only a plausible ETag is kept: it is sent back as a header.
        match resp
            .headers
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|t| t.len() <= 1024 && t.bytes().all(|b| b.is_ascii_graphic()))
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
        let digest = pv.digest.clone();
        let path = self.package_path(&digest)?;
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
    let url = match reqwest::Url::parse(u) {
        Ok(abs) => abs,
        Err(_) => {
            let base = reqwest::Url::parse(&format!("{}/", repo_url.trim_end_matches('/')))
                .map_err(|e| bad(format!("repository URL {}: {e}", redact_url(repo_url))))?;
            base.join(u).map_err(|e| bad(e.to_string()))?
        }
    };
    // An index may point anywhere over HTTP(S), but not at local files or other schemes,
    // and never with credentials in the URL.
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "scheme {:?} is not http or https",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RepoError::BadUrl {
            url: redact_url(u),
            reason: "credentials in a package URL are refused".into(),
        });
    }
    Ok(url.to_string())
}

/// A URL for messages and logs: scheme, host and port only, with `/…` when there was more.
/// Sink URLs (a Slack webhook's path is its secret) and URLs with credentials are shown so.
pub fn redact_url(u: &str) -> String {
    match reqwest::Url::parse(u) {
        Ok(url) => {
            let host = url.host_str().unwrap_or_default();
            let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
            let more = url.path() != "/" || url.query().is_some() || url.fragment().is_some();
            format!(
                "{}://{host}{port}{}",
                url.scheme(),
                if more { "/…" } else { "" }
            )
        }
        Err(_) => "(a URL that does not parse)".to_string(),
    }
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
        // A package past the download limit could never be fetched from the index.
        let size = std::fs::metadata(&file)
            .map_err(|e| RepoError::file(&file, e))?
            .len();
        if size > MAX_PACKAGE_BYTES {
            return Err(RepoError::file(
                &file,
                format!(
                    "{size} bytes, larger than the {} MiB a package may be",
                    MAX_PACKAGE_BYTES / (1024 * 1024)
                ),
            ));
        }
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
    fn package_urls_must_be_http_without_credentials() {
        for bad in [
            "file:///etc/passwd",
            "ftp://h/x.tgz",
            "https://user:s3cret@h/x.tgz",
            "https://t0ken@h/x.tgz",
        ] {
            let e = resolve_url("http://h:1/repo", bad).unwrap_err().to_string();
            assert!(!e.contains("s3cret") && !e.contains("t0ken"), "{e}");
        }
    }

    #[test]
    fn cache_paths_are_built_only_from_digests_and_plain_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut entry = RepoEntry {
            name: "../../x".into(),
            url: "http://127.0.0.1:1".into(),
            ca_file: None,
        };
        let client = RepoClient::new(&entry, dir.path(), HttpOptions::default()).expect("client");
        assert!(client.index_dir().is_err());
        entry.name = "ok".into();
        let client = RepoClient::new(&entry, dir.path(), HttpOptions::default()).expect("client");
        assert!(client.package_path(&"../".repeat(21)).is_err());
        assert!(client.package_path(&"A".repeat(64)).is_err());
        let good = "0123456789abcdef".repeat(4);
        assert_eq!(
            client.package_path(&good).expect("digest"),
            dir.path().join("packages").join(format!("{good}.tgz"))
        );
    }

    #[test]
    fn sink_urls_are_redacted_to_scheme_and_host() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/XYZ"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://u:p@127.0.0.1:8080/?token=x"),
            "http://127.0.0.1:8080/…"
        );
        assert_eq!(redact_url("https://h/"), "https://h");
        assert!(!redact_url("not a url with s3cret").contains("s3cret"));
    }

    #[test]
    fn indexing_a_package_past_the_download_limit_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let big = std::fs::File::create(dir.path().join("big.tgz")).expect("create");
        big.set_len(MAX_PACKAGE_BYTES + 1).expect("sparse file");
        let e = build_index(dir.path(), None).unwrap_err().to_string();
        assert!(e.contains("big.tgz") && e.contains("20 MiB"), "{e}");
    }

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
