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

/// How much a file tree may hold. An archive or directory past any of these is refused with
/// an error naming it and the limit, before the data is held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeLimits {
    /// Files (and, in an archive, entries of any kind).
    pub max_files: usize,
    /// Bytes of all files together (in an archive: of the whole uncompressed stream).
    pub max_bytes: u64,
    /// Bytes of one file.
    pub max_file_bytes: u64,
    /// Nested directories below the root.
    pub max_depth: usize,
}

impl TreeLimits {
    /// One framework package (`.tgz` or directory). KUDO's largest package is well under
    /// 1 MiB; these leave room for 64 times that.
    pub const PACKAGE: TreeLimits = TreeLimits {
        max_files: 10_000,
        max_bytes: 64 * MIB,
        max_file_bytes: 16 * MIB,
        max_depth: 64,
    };
    /// A local directory source of `kudo serve` (`frameworks/` and `instances/` of a fleet).
    pub const DIRECTORY: TreeLimits = TreeLimits {
        max_files: 100_000,
        max_bytes: 512 * MIB,
        max_file_bytes: 16 * MIB,
        max_depth: 64,
    };
}

const MIB: u64 = 1024 * 1024;

/// Bytes for messages: whole MiB where it divides, bytes otherwise.
fn bytes_text(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        format!("{n} bytes")
    }
}

/// A package directory or a directory source on disk. Nothing outside the root is ever
/// read: a symlink is followed only when its target (resolved) stays inside the root, a
/// link leaving it is an error naming the link (skipping it would silently drop files from
/// the desired state), and a directory link back to one of its own ancestors is a cycle,
/// also an error. Files and bytes are capped by [`TreeLimits`].
#[derive(Debug, Clone)]
pub struct DirTree {
    root: PathBuf,
    limits: TreeLimits,
}

/// What one walk has seen so far.
struct Walk {
    root: PathBuf,
    files: Vec<String>,
    bytes: u64,
    /// Resolved directories from the root to the one being read.
    ancestors: Vec<PathBuf>,
}

impl DirTree {
    /// A directory source, with [`TreeLimits::DIRECTORY`].
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DirTree::with_limits(root, TreeLimits::DIRECTORY)
    }

    pub fn with_limits(root: impl Into<PathBuf>, limits: TreeLimits) -> Self {
        DirTree {
            root: root.into(),
            limits,
        }
    }

    fn io(path: &Path, source: std::io::Error) -> PackageError {
        PackageError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    fn limit(&self, what: String) -> PackageError {
        PackageError::TooLarge {
            package: self.describe(),
            what,
        }
    }

    fn escaping(&self, link: &str, target: &Path) -> PackageError {
        PackageError::EscapingLink {
            package: self.describe(),
            link: link.to_string(),
            target: target.display().to_string(),
        }
    }

    /// The resolved root; every file read must resolve below it.
    fn canonical_root(&self) -> Result<PathBuf, PackageError> {
        std::fs::canonicalize(&self.root).map_err(|e| Self::io(&self.root, e))
    }

    fn walk(&self, w: &mut Walk, dir: &Path, prefix: &str) -> Result<(), PackageError> {
        if w.ancestors.len() > self.limits.max_depth {
            return Err(self.limit(format!(
                "{prefix}: more than {} nested directories",
                self.limits.max_depth
            )));
        }
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Self::io(dir, e))? {
            let entry = entry.map_err(|e| Self::io(dir, e))?;
            entries.push(entry.file_name().to_string_lossy().into_owned());
        }
        entries.sort();
        for name in entries {
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            let path = dir.join(&name);
            let meta = std::fs::symlink_metadata(&path).map_err(|e| Self::io(&path, e))?;
            let (real, meta) = if meta.file_type().is_symlink() {
                // Followed once, to its final target, and only inside the root.
                let real = match std::fs::canonicalize(&path) {
                    Ok(r) => r,
                    Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                        return Err(PackageError::LinkCycle {
                            package: self.describe(),
                            link: rel,
                        });
                    }
                    // A dangling link holds no file.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Self::io(&path, e)),
                };
                if !real.starts_with(&w.root) {
                    return Err(self.escaping(&rel, &real));
                }
                let meta = std::fs::metadata(&real).map_err(|e| Self::io(&path, e))?;
                (real, meta)
            } else {
                (path.clone(), meta)
            };
            if meta.is_dir() {
                // Not a link: its resolved path is its (resolved) parent's plus its name.
                let real = match (real == path, w.ancestors.last()) {
                    (true, Some(parent)) => parent.join(&name),
                    _ => real,
                };
                if w.ancestors.contains(&real) {
                    return Err(PackageError::LinkCycle {
                        package: self.describe(),
                        link: rel,
                    });
                }
                w.ancestors.push(real);
                self.walk(w, &path, &rel)?;
                w.ancestors.pop();
            } else if meta.is_file() {
                if w.files.len() >= self.limits.max_files {
                    return Err(self.limit(format!("more than {} files", self.limits.max_files)));
                }
                if meta.len() > self.limits.max_file_bytes {
                    return Err(self.limit(format!(
                        "{rel} is larger than {}",
                        bytes_text(self.limits.max_file_bytes)
                    )));
                }
                w.bytes += meta.len();
                if w.bytes > self.limits.max_bytes {
                    return Err(self.limit(format!(
                        "its files hold more than {}",
                        bytes_text(self.limits.max_bytes)
                    )));
                }
                w.files.push(rel);
            }
            // Sockets, FIFOs and devices hold no package data (and a FIFO would block).
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
        let root = self.canonical_root()?;
        let mut w = Walk {
            root: root.clone(),
            files: Vec::new(),
            bytes: 0,
            ancestors: vec![root],
        };
        self.walk(&mut w, &self.root, "")?;
        w.files.sort();
        Ok(w.files)
    }

    /// Checked again at read time (the tree may have changed since `paths`): the file must
    /// resolve inside the root, be a regular file and stay within the per-file limit.
    fn read(&self, path: &str) -> Result<Vec<u8>, PackageError> {
        let full = self.root.join(path);
        let real = std::fs::canonicalize(&full).map_err(|e| Self::io(&full, e))?;
        if !real.starts_with(self.canonical_root()?) {
            return Err(self.escaping(path, &real));
        }
        let file = std::fs::File::open(&real).map_err(|e| Self::io(&full, e))?;
        let meta = file.metadata().map_err(|e| Self::io(&full, e))?;
        if !meta.is_file() {
            return Err(Self::io(&full, std::io::Error::other("not a regular file")));
        }
        let max = self.limits.max_file_bytes;
        let mut content = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut content)
            .map_err(|e| Self::io(&full, e))?;
        if content.len() as u64 > max {
            return Err(self.limit(format!("{path} is larger than {}", bytes_text(max))));
        }
        Ok(content)
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

    /// Reads a gzip-compressed tar archive within [`TreeLimits::PACKAGE`].
    pub fn from_tgz(name: impl Into<String>, bytes: &[u8]) -> Result<Self, PackageError> {
        MemTree::from_tgz_reader(name, bytes, TreeLimits::PACKAGE)
    }

    /// Reads a gzip-compressed tar archive from a stream. Entries whose path would leave the
    /// package root (absolute, or with `..`) and links are refused. The uncompressed stream
    /// (headers included), the number of entries and each file's size are capped by
    /// `limits`, counted while decompressing, so a small archive claiming gigabytes (a
    /// decompression bomb) is refused after at most `limits.max_bytes` of work and memory.
    /// KUDO's `package create` writes the files under one top-level folder; when every file
    /// sits below one folder and there is no `operator.yaml` at the root, that folder is
    /// the package root.
    pub fn from_tgz_reader(
        name: impl Into<String>,
        reader: impl Read,
        limits: TreeLimits,
    ) -> Result<Self, PackageError> {
        let name = name.into();
        let archive_err = |message: String| PackageError::Archive {
            archive: name.clone(),
            message,
        };
        let too_large = |what: String| PackageError::TooLarge {
            package: name.clone(),
            what,
        };
        let over_total = || {
            too_large(format!(
                "its uncompressed content is larger than {}",
                bytes_text(limits.max_bytes)
            ))
        };
        let counted = Counted {
            inner: flate2::read::GzDecoder::new(reader),
            left: limits.max_bytes,
            exceeded: std::rc::Rc::new(std::cell::Cell::new(false)),
        };
        let exceeded = counted.exceeded.clone();
        // A read error caused by the budget is reported as the budget.
        let fail = |message: String| {
            if exceeded.get() {
                over_total()
            } else {
                archive_err(message)
            }
        };
        let mut archive = tar::Archive::new(counted);
        let mut files = BTreeMap::new();
        let entries = archive.entries().map_err(|e| fail(e.to_string()))?;
        for (count, entry) in entries.enumerate() {
            if count >= limits.max_files {
                return Err(too_large(format!("more than {} entries", limits.max_files)));
            }
            let mut entry = entry.map_err(|e| fail(e.to_string()))?;
            let raw = entry.path().map_err(|e| fail(e.to_string()))?;
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
            let declared = entry.size();
            if declared > limits.max_file_bytes {
                return Err(too_large(format!(
                    "entry {raw_text} is larger than {}",
                    bytes_text(limits.max_file_bytes)
                )));
            }
            if declared > limits.max_bytes {
                return Err(over_total());
            }
            let mut content = Vec::new();
            (&mut entry)
                .take(limits.max_file_bytes)
                .read_to_end(&mut content)
                .map_err(|e| fail(format!("{raw_text}: {e}")))?;
            files.insert(parts.join("/"), content);
        }
        Ok(MemTree {
            files: strip_single_folder(files),
            name,
        })
    }
}

/// A reader that fails once more than `left` bytes have come through, and says so.
struct Counted<R> {
    inner: R,
    left: u64,
    exceeded: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            // One more byte tells a stream of exactly the limit from a longer one.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.set(true);
                    Err(std::io::Error::other("uncompressed size limit reached"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
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
        .map(|(p, c)| (p.strip_prefix(&prefix).unwrap_or(&p).to_string(), c))
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

/// Opens a package path: a directory, or a `.tgz`/`.tar.gz` file, within
/// [`TreeLimits::PACKAGE`]. The archive is decompressed as it is read from disk.
pub fn open(path: &Path) -> Result<Box<dyn FileTree>, PackageError> {
    if path.is_dir() {
        return Ok(Box::new(DirTree::with_limits(path, TreeLimits::PACKAGE)));
    }
    let file = std::fs::File::open(path).map_err(|source| PackageError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Box::new(MemTree::from_tgz_reader(
        path.display().to_string(),
        std::io::BufReader::new(file),
        TreeLimits::PACKAGE,
    )?))
}
