//! A real Prometheus for tests: Debian's, installed by `scripts/prometheus`, run on a free
//! loopback port as a child process that is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Installs Prometheus when missing; returns the directory of `prometheus` and `promtool`.
pub fn prometheus_bin() -> PathBuf {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/prometheus"))
        .arg("path")
        .output()
        .expect("scripts/prometheus runs");
    assert!(
        out.status.success(),
        "scripts/prometheus path: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A child process killed (if still running) when dropped.
pub struct Proc {
    pub child: Child,
    /// What it is, for messages (read by some test binaries including this module only).
    #[allow(dead_code)]
    pub what: &'static str,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts Prometheus in `work` with `config` (prometheus.yml text); returns it and its URL.
pub fn start(work: &Path, config: &str) -> (Proc, String) {
    let port = free_port();
    std::fs::write(work.join("prometheus.yml"), config).expect("prometheus.yml");
    let proc = Proc {
        child: Command::new(prometheus_bin().join("prometheus"))
            .arg(format!(
                "--config.file={}",
                work.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.join("prometheus.log")).expect("log"))
            .spawn()
            .expect("prometheus starts"),
        what: "prometheus",
    };
    (proc, format!("http://127.0.0.1:{port}"))
}
