//! This process's resource use, from /proc (Linux): peak RSS and CPU seconds.

/// Peak resident set size in bytes (`VmHWM`), None off Linux. At least the current RSS:
/// recent kernels compute `VmHWM` from approximate per-CPU counters and `VmRSS` from exact
/// sums, so `VmHWM` alone can read below `VmRSS`.
pub fn peak_rss_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let hwm = kib(&text, "VmHWM:")?;
    Some(hwm.max(kib(&text, "VmRSS:").unwrap_or(0)) * 1024)
}

/// Current resident set size in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    status_kib("VmRSS:").map(|k| k * 1024)
}

fn status_kib(key: &str) -> Option<u64> {
    kib(&std::fs::read_to_string("/proc/self/status").ok()?, key)
}

fn kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// User + system CPU seconds of this process so far.
pub fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

#[allow(unsafe_code)] // sysconf(3); see SAFETY below.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible() {
        let now = rss_bytes().expect("linux");
        let peak = peak_rss_bytes().expect("linux");
        assert!(peak >= now && now > 1024 * 1024, "peak {peak} now {now}");
        let before = cpu_seconds().expect("linux");
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_seconds().expect("linux") >= before);
    }
}
