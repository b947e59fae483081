//! `kudo bench git`: a generated repository (many framework versions, thousands of instance
//! files), cold sync, then a one-file commit.

use super::{BenchError, Table};

#[derive(Debug, Clone)]
pub struct GitOptions {
    /// Framework versions in the generated repository.
    pub versions: usize,
    /// Instance files under `instances/`.
    pub instances: usize,
    /// Simulated clusters registered (placement is computed against them).
    pub clusters: usize,
}

pub fn run(_opts: &GitOptions) -> Result<(Table, serde_json::Value), BenchError> {
    Err(BenchError::Setup {
        scenario: "git",
        reason: "not built yet".into(),
    })
}
