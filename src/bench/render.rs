//! `kudo bench render`: templates per second over one package.

use super::{BenchError, Table};

pub fn run(
    _package: &std::path::Path,
    _seconds: f64,
) -> Result<(Table, serde_json::Value), BenchError> {
    Err(BenchError::Setup {
        scenario: "render",
        reason: "not built yet".into(),
    })
}
