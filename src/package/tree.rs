//! Where a package's files come from. The loader only needs "which files exist" and "what
//! bytes does this one hold", so a directory, a `.tgz` and (later) a Git tree at a commit all
//! feed it the same way, without a checkout.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use super::PackageError;

/// A read-only tree of files. Paths are relative to the package root, `/`-separated.
pub trait FileTree {
    /// What the tree is, for messages: a directory path, a `.tgz` file, `repo@commit:dir`.
    fn describe(&self) -> String;
    /// Every regular file in the tree, sorted.
    fn paths(&self) -> Result<Vec<String>, PackageError>;
    /// The content of one file listed by `paths`.
    fn read(&self, path: &str) -> Result<Vec<u8>, PackageError>;
    /// A cheap identity of one file's content (a Git blob id), when the tree knows one
    /// without reading the file; callers hash the content otherwise.
    fn content_id(&self, _path: &str) -> Option<String> {
        None
    }
}

/// A package directory on disk.
#[derive(Debug, Clone)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirTree { root: root.into() }
    }

    fn walk(&self, dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<(), PackageError> {
        let entries = std::fs::read_dir(dir).map_err(|source| PackageError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| PackageError::Io {
                path: dir.display().to_string(),
                source,
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            // Follows symlinks, as KUDO's reader (filepath.Walk + ReadFile) reads their targets.
            let path = entry.path();
            if path.is_dir() {
                self.walk(&path, &rel, out)?;
            } else if path.is_file() {
                out.push(rel);
            }
        }
        Ok(())
    }
}

impl FileTree for DirTree {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn paths(&self) -> Result<Vec<String>, PackageError> {
        if !self.root.is_dir() {
            return Err(PackageError::NotADirectory {
                path: self.root.display().to_string(),
            });
        }
        let mut out = Vec::new();
        self.walk(&self.root, "", &mut out)?;
        out.sort();
        Ok(out)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, PackageError> {
        let full = self.root.join(path);
        std::fs::read(&full).map_err(|source| PackageError::Io {
            path: full.display().to_string(),
            source,
        })
    }
}

/// Files held in memory: what a `.tgz` unpacks to, and what a Git tree walk can produce.
#[derive(Debug, Clone, Default)]
pub struct MemTree {
    name: String,
    files: BTreeMap<String, Vec<u8>>,
}

impl MemTree {
    pub fn new(name: impl Into<String>, files: BTreeMap<String, Vec<u8>>) -> Self {
        MemTree {
            name: name.into(),
            files,
        }
    }

    /// Reads a gzip-compressed tar archive. Entries whose path would leave the package root
    /// (absolute, or with `..`) are refused. KUDO's `package create` writes the files under
    /// one top-level folder; when every file sits below one folder and there is no
    /// `operator.yaml` at the root, that folder is the package root.
    pub fn from_tgz(name: impl Into<String>, bytes: &[u8]) -> Result<Self, PackageError> {
        let name = name.into();
        let archive_err = |message: String| PackageError::Archive {
            archive: name.clone(),
            message,
        };
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let mut files = BTreeMap::new();
        let entries = archive.entries().map_err(|e| archive_err(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| archive_err(e.to_string()))?;
            let raw = entry.path().map_err(|e| archive_err(e.to_string()))?;
            let raw_text = raw.display().to_string();
            let kind = entry.header().entry_type();
            let mut parts = Vec::new();
            for component in raw.components() {
                match component {
                    Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                    Component::CurDir => {}
                    Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                        return Err(PackageError::EscapingEntry {
                            archive: name.clone(),
                            entry: raw_text,
                        });
                    }
                }
            }
            if kind.is_dir() || parts.is_empty() {
                continue;
            }
            if kind.is_symlink() || kind.is_hard_link() {
                // A link can point anywhere; packages hold plain files only.
                return Err(PackageError::EscapingEntry {
                    archive: name.clone(),
                    entry: format!("{raw_text} (a link)"),
                });
            }
            if !kind.is_file() {
                continue;
            }
            let mut content = Vec::new();
            entry
                .read_to_end(&mut content)
                .map_err(|e| archive_err(format!("{raw_text}: {e}")))?;
            files.insert(parts.join("/"), content);
        }
        Ok(MemTree {
            files: strip_single_folder(files),
            name,
        })
    }
}

fn strip_single_folder(files: BTreeMap<String, Vec<u8>>) -> BTreeMap<String, Vec<u8>> {
    if files.contains_key("operator.yaml") {
        return files;
    }
    let mut tops = files.keys().map(|p| p.split_once('/').map(|(top, _)| top));
    let Some(Some(first)) = tops.next() else {
        return files;
    };
    let first = first.to_string();
    if !tops.all(|t| t == Some(first.as_str())) {
        return files;
    }
    let prefix = format!("{first}/");
    files
        .into_iter()
        .map(|(p, c)| (p[prefix.len()..].to_string(), c))
        .collect()
}

impl FileTree for MemTree {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn paths(&self) -> Result<Vec<String>, PackageError> {
        Ok(self.files.keys().cloned().collect())
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, PackageError> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| PackageError::MissingFile {
                package: self.name.clone(),
                file: path.to_string(),
            })
    }
}

/// Opens a package path: a directory, or a `.tgz`/`.tar.gz` file.
pub fn open(path: &Path) -> Result<Box<dyn FileTree>, PackageError> {
    if path.is_dir() {
        return Ok(Box::new(DirTree::new(path)));
    }
    let bytes = std::fs::read(path).map_err(|source| PackageError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Box::new(MemTree::from_tgz(
        path.display().to_string(),
        &bytes,
    )?))
}
