//! Hostile inputs of issue 18 through real files: a decompression bomb given to
//! `kudo package verify` (the real binary, its peak memory measured by the kernel), and
//! local directory sources whose symlinks leave the tree or form cycles.
#![allow(unsafe_code)] // signals to child processes / a counting allocator; each site has a SAFETY comment

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use kudo::package::{DirTree, FileTree, Package};

/// Writes a gzip-compressed tar of `entries` files `templates/zN.yaml` of 8 MiB of zeros
/// each (each within the per-file limit, together far past the per-package one), without
/// ever holding the uncompressed data: 1 MiB of zeros is deflated once with a full flush
/// (byte-aligned, no reference to earlier data) and that segment is repeated.
fn write_bomb(path: &Path, entries: u64) {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    const MIB: usize = 1024 * 1024;
    const PER_ENTRY_MIB: u64 = 8;
    let mut c = Compress::new(Compression::best(), false);
    let mut deflate = |input: &[u8], flush: FlushCompress| -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len() + 64 * 1024);
        let before = c.total_in();
        c.compress_vec(input, &mut out, flush).expect("deflate");
        assert_eq!(c.total_in() - before, input.len() as u64, "all input taken");
        out
    };
    let zeros = vec![0u8; MIB];
    let body = deflate(&zeros, FlushCompress::Full);
    let mut chunk = Crc::new();
    chunk.update(&zeros);
    let mut crc = Crc::new();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    // gzip member header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
    out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff])
        .expect("write");
    for i in 0..entries {
        let mut header = tar::Header::new_gnu();
        header
            .set_path(format!("templates/z{i}.yaml"))
            .expect("path");
        header.set_size(PER_ENTRY_MIB * MIB as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        out.write_all(&deflate(header.as_bytes(), FlushCompress::Full))
            .expect("write");
        crc.update(header.as_bytes());
        for _ in 0..PER_ENTRY_MIB {
            out.write_all(&body).expect("write");
            crc.combine(&chunk);
        }
    }
    out.write_all(&deflate(&[0u8; 1024], FlushCompress::Finish))
        .expect("write");
    crc.update(&[0u8; 1024]);
    out.write_all(&crc.sum().to_le_bytes()).expect("write");
    out.write_all(&crc.amount().to_le_bytes()).expect("write");
    out.flush().expect("flush");
}

/// Runs the real binary and returns (success, stderr, peak resident KiB of that child).
/// The child is reaped with `wait4`, which also reports its peak memory.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&str]) -> (bool, String, i64) {
    let child = Command::new(env!("CARGO_BIN_EXE_kudo"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kudo runs");
    let pid = child.id() as libc::pid_t;
    let mut stderr = child.stderr.expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let mut status = 0;
    // SAFETY: plain FFI calls on zeroed, owned out-parameters; the child is ours and not
    // waited for elsewhere.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    let stderr = reader.join().expect("stderr reader");
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, stderr, usage.ru_maxrss)
}

#[test]
fn decompression_bomb_is_refused_within_bounded_memory() {
    let dir = tempfile::tempdir().expect("tmp");
    let bomb = dir.path().join("bomb.tgz");
    write_bomb(&bomb, 256);
    let size = std::fs::metadata(&bomb).expect("bomb").len();
    assert!(size < 4 * 1024 * 1024, "the bomb is small: {size} bytes");
    let path = bomb.to_str().expect("utf-8");
    let (ok, stderr, peak_kib) = run_measured(&["package", "verify", path]);
    println!(
        "{size}-byte .tgz declaring 2 GiB: refused, peak RSS of kudo package verify {} MiB",
        peak_kib / 1024
    );
    assert!(!ok, "the bomb must be refused: {stderr}");
    assert!(
        stderr.contains(path) && stderr.contains("64 MiB"),
        "the error names the package and the limit: {stderr}"
    );
    assert!(
        peak_kib < 512 * 1024,
        "peak RSS {peak_kib} KiB, bound is 512 MiB: {stderr}"
    );
}

fn symlink(target: impl AsRef<Path>, link: impl AsRef<Path>) {
    std::os::unix::fs::symlink(target, link).expect("symlink");
}

/// A minimal valid package in `dir`.
fn write_package(dir: &Path) {
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(
        dir.join("operator.yaml"),
        "apiVersion: kudo.dev/v1beta1\nname: demo\noperatorVersion: 0.1.0\ntasks: []\nplans: {}\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("params.yaml"),
        "apiVersion: kudo.dev/v1beta1\nparameters: []\n",
    )
    .expect("write");
}

/// Lists and hashes `root` on a thread, so a walk that never ends fails the test instead
/// of hanging it.
fn walk(root: &Path) -> Result<String, String> {
    let (tx, rx) = mpsc::channel();
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        let tree = DirTree::new(&root);
        let _ = tx.send(kudo::gitops::git::content_revision(&tree).map_err(|e| e.to_string()));
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the walk of the tree finishes")
}

#[test]
fn symlink_out_of_a_directory_source_is_refused_and_named() {
    let dir = tempfile::tempdir().expect("tmp");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(outside.join("secret.yaml"), "password: hunter2\n").expect("write");
    let root = dir.path().join("repo");
    write_package(&root);
    symlink(
        outside.join("secret.yaml"),
        root.join("templates/leak.yaml"),
    );
    let e = walk(&root).expect_err("a link leaving the tree is refused");
    assert!(
        e.contains("templates/leak.yaml") && e.contains("outside"),
        "the link is named: {e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let e = Package::load_path(&root).expect_err("package refused too");
    assert!(e.to_string().contains("templates/leak.yaml"), "{e}");

    // A directory link leaving the tree is refused the same way.
    std::fs::remove_file(root.join("templates/leak.yaml")).expect("rm");
    symlink(&outside, root.join("templates/out"));
    let e = walk(&root).expect_err("refused");
    assert!(e.contains("templates/out"), "{e}");

    // A link inside the tree is followed.
    std::fs::remove_file(root.join("templates/out")).expect("rm");
    std::fs::create_dir_all(root.join("shared")).expect("mkdir");
    std::fs::write(root.join("shared/cm.yaml"), "kind: ConfigMap\n").expect("write");
    symlink("../shared/cm.yaml", root.join("templates/cm.yaml"));
    let pkg = Package::load_path(&root).expect("inside links are fine");
    assert_eq!(pkg.templates["cm.yaml"], "kind: ConfigMap\n");
}

#[test]
fn symlink_cycles_in_a_directory_source_end_with_an_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("repo");
    write_package(&root);
    std::fs::create_dir_all(root.join("instances/a")).expect("mkdir");
    // Two links back to the root: followed blindly, 2^40 paths before the kernel's limit.
    symlink("..", root.join("instances/loop1"));
    symlink("../..", root.join("instances/a/loop2"));
    let e = walk(&root).expect_err("a cycle is refused");
    assert!(
        e.contains("cycle") && (e.contains("instances/loop1") || e.contains("loop2")),
        "{e}"
    );
}

#[test]
fn directory_sources_are_capped_in_files() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path().join("repo");
    std::fs::create_dir_all(&root).expect("mkdir");
    let tree = DirTree::with_limits(
        &root,
        kudo::package::TreeLimits {
            max_files: 10,
            ..kudo::package::TreeLimits::DIRECTORY
        },
    );
    for i in 0..11 {
        std::fs::write(root.join(format!("f{i}")), "x").expect("write");
    }
    let e = tree.paths().expect_err("11 files > 10").to_string();
    assert!(e.contains("10 files") && e.contains("repo"), "{e}");
}

/// The inodes watched by every inotify instance of this process (from /proc/self/fdinfo).
fn watched_inodes() -> Vec<u64> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").expect("fdinfo") {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines().filter(|l| l.starts_with("inotify wd:")) {
            if let Some(ino) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("ino:"))
                .and_then(|h| u64::from_str_radix(h, 16).ok())
            {
                out.push(ino);
            }
        }
    }
    out
}

#[tokio::test]
async fn watching_a_directory_source_stays_inside_it() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("tmp");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(outside.join("deep")).expect("mkdir");
    let root = dir.path().join("repo");
    std::fs::create_dir_all(root.join("instances")).expect("mkdir");
    symlink(&outside, root.join("instances/out"));
    symlink("..", root.join("instances/loop"));
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    let _watcher =
        kudo::gitops::git::watch_dir(&root, Duration::from_millis(50), tx).expect("watching works");
    let inodes = watched_inodes();
    let own = std::fs::metadata(root.join("instances"))
        .expect("meta")
        .ino();
    assert!(inodes.contains(&own), "the tree is watched: {inodes:?}");
    for d in [outside.clone(), outside.join("deep")] {
        let ino = std::fs::metadata(&d).expect("meta").ino();
        assert!(
            !inodes.contains(&ino),
            "{} outside the tree is watched",
            d.display()
        );
    }
}
