//! Retry timing for steps in `ERROR`.

use std::time::Duration;

/// Delay before retry number `attempt` (1-based): doubling from 1 s, capped at 5 minutes, so
/// a broken dependency is retried quickly at first without hammering a cluster later.
pub fn retry_delay(attempt: u32) -> Duration {
    const BASE_MS: u64 = 1_000;
    const CAP: Duration = Duration::from_secs(300);
    let exp = attempt.saturating_sub(1).min(16);
    Duration::from_millis(BASE_MS.saturating_mul(1u64 << exp)).min(CAP)
}
