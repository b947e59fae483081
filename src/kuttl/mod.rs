//! kuttl-compatible testing (`kudo test`): suite and case files ([`case`]) and the
//! partial-object matching rules of asserts ([`crate::util::subset`]), both pure; commands
//! ([`command`]), the report ([`report`]) and the [`runner`] that talks to a cluster.

pub mod case;
pub mod command;
pub mod report;
pub mod runner;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum KuttlError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: invalid YAML: {message}", file.display())]
    Yaml { file: PathBuf, message: String },
    #[error("{}: {reason}", file.display())]
    Invalid { file: PathBuf, reason: String },
    #[error("test case {case} ({}) has no steps: expected files named like 00-install.yaml", dir.display())]
    NoSteps { case: String, dir: PathBuf },
}
