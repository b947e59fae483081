//! Frameworks of a GitOps revision taken from package repositories: an instance document with
//! `spec.repository: NAME` gets `spec.framework` at exactly `spec.version` from that
//! repository of `kudo.yaml` (`packageRepositories`). The package is fetched (index
//! ETag-cached, .tgz verified and cached by digest) and laid over the revision's tree as
//! `frameworks/<name>/<version>/`, so the desired-state loader treats it like any framework
//! in Git. A revision that also holds that folder is refused.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{HttpOptions, RepoClient, RepoEntry};
use crate::package::{FRAMEWORKS_DIR, INSTANCES_DIR};
use crate::package::{FileTree, PackageError, open, split_documents};

#[derive(Deserialize)]
struct RefDoc {
    spec: RefSpec,
}

#[derive(Deserialize)]
struct RefSpec {
    framework: String,
    version: String,
    #[serde(default)]
    repository: Option<String>,
}

/// Unpacked bytes of all repository packages one revision may lay over its tree (each
/// package is also capped, see `crate::package::TreeLimits::PACKAGE`).
pub const MAX_OVERLAY_BYTES: u64 = 256 * 1024 * 1024;

/// (repository, framework, version) → the first file naming it.
type Refs = BTreeMap<(String, String, String), String>;

/// The repository references of a tree's instance documents (documents that do not parse
/// are left to the loader to report).
pub fn repository_refs(tree: &dyn FileTree) -> Result<Refs, PackageError> {
    repository_refs_cached(tree, &mut RefsCache::default())
}

/// The `(repository, framework, version)` references of instance files, by file content
/// (a Git blob id, or a hash of the bytes when the tree has no ids): looking for them means
/// parsing every instance document, which at thousands of files costs more than a whole
/// incremental load. What the latest call did not use is dropped.
#[derive(Debug, Default)]
pub struct RefsCache {
    by_content: HashMap<String, Vec<(String, String, String)>>,
}

/// [`repository_refs`], parsing only the files `cache` does not know by content.
pub fn repository_refs_cached(
    tree: &dyn FileTree,
    cache: &mut RefsCache,
) -> Result<Refs, PackageError> {
    let mut out = Refs::new();
    let mut used = HashSet::new();
    for path in tree.paths()? {
        if !path.starts_with(INSTANCES_DIR) || !(path.ends_with(".yaml") || path.ends_with(".yml"))
        {
            continue;
        }
        let mut bytes = None;
        let key = match tree.content_id(&path) {
            Some(id) => id,
            None => {
                let b = tree.read(&path)?;
                let key = format!("sha256:{}", hex::encode(Sha256::digest(&b)));
                bytes = Some(b);
                key
            }
        };
        if !cache.by_content.contains_key(&key) {
            let b = match bytes {
                Some(b) => b,
                None => tree.read(&path)?,
            };
            let refs = String::from_utf8(b)
                .map(|text| file_refs(&text))
                .unwrap_or_default();
            cache.by_content.insert(key.clone(), refs);
        }
        for (repo, framework, version) in cache.by_content.get(&key).into_iter().flatten() {
            out.entry((repo.clone(), framework.clone(), version.clone()))
                .or_insert_with(|| path.clone());
        }
        used.insert(key);
    }
    cache.by_content.retain(|k, _| used.contains(k));
    Ok(out)
}

/// The references of one file's documents, in order.
fn file_refs(text: &str) -> Vec<(String, String, String)> {
    split_documents(text)
        .into_iter()
        .filter_map(|(_, doc)| match serde_saphyr::from_str::<RefDoc>(doc) {
            Ok(RefDoc {
                spec:
                    RefSpec {
                        framework,
                        version,
                        repository: Some(repo),
                    },
            }) => Some((repo, framework, version)),
            _ => None,
        })
        .collect()
}

/// A tree with extra files laid over it.
pub struct Overlay<'a> {
    inner: &'a dyn FileTree,
    extra: BTreeMap<String, Vec<u8>>,
}

impl FileTree for Overlay<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn paths(&self) -> Result<Vec<String>, PackageError> {
        let mut all: BTreeSet<String> = self.inner.paths()?.into_iter().collect();
        all.extend(self.extra.keys().cloned());
        Ok(all.into_iter().collect())
    }
    fn read(&self, path: &str) -> Result<Vec<u8>, PackageError> {
        match self.extra.get(path) {
            Some(b) => Ok(b.clone()),
            None => self.inner.read(path),
        }
    }
    fn content_id(&self, path: &str) -> Option<String> {
        if self.extra.contains_key(path) {
            None
        } else {
            self.inner.content_id(path)
        }
    }
}

/// `tree` with the repository frameworks its instances name laid over it. Blocks on the
/// downloads (call it from a blocking thread inside a Tokio runtime). Errors name the
/// instance file and the repository.
pub fn overlay<'a>(
    tree: &'a dyn FileTree,
    repos: &[RepoEntry],
    cache: &Path,
) -> Result<Overlay<'a>, String> {
    overlay_cached(tree, repos, cache, &mut RefsCache::default())
}

/// [`overlay`], finding the references through `refs` (kept across revisions by
/// `kudo serve`, so an unchanged instance file is not parsed again).
pub fn overlay_cached<'a>(
    tree: &'a dyn FileTree,
    repos: &[RepoEntry],
    cache: &Path,
    refs: &mut RefsCache,
) -> Result<Overlay<'a>, String> {
    let refs = repository_refs_cached(tree, refs).map_err(|e| e.to_string())?;
    let mut extra = BTreeMap::new();
    if refs.is_empty() {
        return Ok(Overlay { inner: tree, extra });
    }
    let existing: BTreeSet<String> = tree
        .paths()
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "internal: package repositories need a Tokio runtime".to_string())?;
    let mut overlaid: u64 = 0;
    for ((repo, name, version), file) in refs {
        let fail = |reason: String| format!("{file}: spec.repository {repo}: {reason}");
        // Both become folders of the overlaid tree.
        for (field, value) in [("spec.framework", &name), ("spec.version", &version)] {
            if !super::is_safe_segment(value) {
                return Err(fail(format!(
                    "{field} {value:?} must be a plain name (no '/', '..' or control characters)"
                )));
            }
        }
        let prefix = format!("{FRAMEWORKS_DIR}{name}/{version}/");
        if existing.iter().any(|p| p.starts_with(&prefix)) {
            return Err(fail(format!(
                "{prefix} exists in the revision too; use one or the other"
            )));
        }
        let entry = repos.iter().find(|r| r.name == repo).ok_or_else(|| {
            let known: Vec<&str> = repos.iter().map(|r| r.name.as_str()).collect();
            fail(format!(
                "not in packageRepositories of the configuration (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        let client = RepoClient::new(entry, cache, HttpOptions::default())
            .map_err(|e| fail(e.to_string()))?;
        let path = handle
            .block_on(async {
                let index = client.index().await?;
                let pv = index.resolve(&repo, &name, Some(&version), None)?;
                if pv.operator_version != version {
                    return Err(super::RepoError::UnknownVersion {
                        repo: repo.clone(),
                        name: name.clone(),
                        wanted: format!("operator version {version} (exactly)"),
                        available: pv.operator_version.clone(),
                    });
                }
                client.download(pv).await
            })
            .map_err(|e| fail(e.to_string()))?;
        let pkg = open(&path).map_err(|e| fail(e.to_string()))?;
        for p in pkg.paths().map_err(|e| fail(e.to_string()))? {
            let bytes = pkg.read(&p).map_err(|e| fail(e.to_string()))?;
            overlaid += bytes.len() as u64;
            if overlaid > MAX_OVERLAY_BYTES {
                return Err(fail(format!(
                    "the packages of this revision's repositories hold more than {} MiB together",
                    MAX_OVERLAY_BYTES / (1024 * 1024)
                )));
            }
            extra.insert(format!("{prefix}{p}"), bytes);
        }
    }
    Ok(Overlay { inner: tree, extra })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::MemTree;

    fn mem<const N: usize>(files: [(&str, &str); N]) -> MemTree {
        MemTree::new(
            "t",
            files
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn finds_repository_references_only() {
        let tree = mem([
            (
                "instances/a.yaml",
                "spec: {framework: kafka, version: 1.0.0, repository: community}\n---\nspec: {framework: zk, version: 0.1.0}\n",
            ),
            (
                "instances/b.yaml",
                "spec: {framework: kafka, version: 1.0.0, repository: community}\n",
            ),
            ("frameworks/zk/0.1.0/operator.yaml", "name: zk\n"),
        ]);
        let refs = repository_refs(&tree).expect("refs");
        assert_eq!(refs.len(), 1);
        assert_eq!(
            refs[&("community".into(), "kafka".into(), "1.0.0".into())],
            "instances/a.yaml"
        );
    }

    #[test]
    fn references_are_parsed_again_only_for_changed_files() {
        let a = "spec: {framework: kafka, version: 1.0.0, repository: community}\n";
        let b = "spec: {framework: zk, version: 0.1.0}\n";
        let mut cache = RefsCache::default();
        let refs = repository_refs_cached(
            &mem([("instances/a.yaml", a), ("instances/b.yaml", b)]),
            &mut cache,
        )
        .expect("refs");
        assert_eq!(refs.len(), 1);
        assert_eq!(cache.by_content.len(), 2);
        // b.yaml now names a repository too; a.yaml is taken from the cache.
        let b2 = "spec: {framework: zk, version: 0.1.0, repository: community}\n";
        let refs = repository_refs_cached(
            &mem([("instances/a.yaml", a), ("instances/b.yaml", b2)]),
            &mut cache,
        )
        .expect("refs");
        assert_eq!(refs.len(), 2);
        assert_eq!(
            refs[&("community".into(), "zk".into(), "0.1.0".into())],
            "instances/b.yaml"
        );
        assert_eq!(cache.by_content.len(), 2, "the old b.yaml is dropped");
        // a.yaml loses its reference: the cached one must not linger.
        let refs =
            repository_refs_cached(&mem([("instances/a.yaml", b)]), &mut cache).expect("refs");
        assert!(refs.is_empty(), "{refs:?}");
    }

    #[test]
    fn framework_or_version_that_is_a_path_is_refused() {
        let repos = [RepoEntry {
            name: "community".into(),
            url: "http://127.0.0.1:1/repo".into(),
            ca_file: None,
        }];
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let _g = rt.enter();
        for spec in [
            "{framework: ../../x, version: 1.0.0, repository: community}",
            "{framework: kafka, version: ../1.0.0, repository: community}",
        ] {
            let tree = mem([("instances/a.yaml", &format!("spec: {spec}\n"))]);
            let e = overlay(&tree, &repos, Path::new("/nonexistent"))
                .err()
                .expect("refused");
            assert!(
                e.contains("instances/a.yaml") && e.contains("plain name"),
                "{e}"
            );
        }
    }

    #[test]
    fn an_unknown_repository_is_named_with_the_file() {
        let tree = mem([(
            "instances/a.yaml",
            "spec: {framework: kafka, version: 1.0.0, repository: nope}\n",
        )]);
        let rt = tokio::runtime::Runtime::new().expect("rt");
        let _g = rt.enter();
        let e = overlay(&tree, &[], Path::new("/nonexistent"))
            .err()
            .expect("refused");
        assert!(e.contains("instances/a.yaml") && e.contains("nope"), "{e}");
    }
}
