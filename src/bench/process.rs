//! Resource use from /proc (Linux): peak RSS and CPU seconds of this process or a child, and
//! CPU per thread, split into the simulated clusters' threads (named
//! [`crate::sim::runtime::THREAD_PREFIX`]) and the rest, the control plane.

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
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User + system CPU seconds of process `pid` so far (e.g. a `kudo sim` child).
pub fn pid_cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Peak RSS of process `pid` in bytes (see [`peak_rss_bytes`]).
pub fn pid_peak_rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = kib(&text, "VmHWM:")?;
    Some(hwm.max(kib(&text, "VmRSS:").unwrap_or(0)) * 1024)
}

/// utime + stime of a `stat` line (a process's or a thread's), in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    let (_, utime, stime) = parse_stat(stat)?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// The name (`comm`) and utime, stime in clock ticks of a `stat` line.
fn parse_stat(stat: &str) -> Option<(&str, u64, u64)> {
    // The name is in parentheses and may hold spaces and parentheses itself.
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    Some((
        name,
        fields.get(11)?.parse().ok()?,
        fields.get(12)?.parse().ok()?,
    ))
}

/// CPU seconds of each live thread of this process, by thread name.
pub fn thread_cpu_seconds() -> Vec<(String, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let ticks = clock_ticks();
    dir.filter_map(|e| {
        // A thread may end between the listing and the read: skip it.
        let text = std::fs::read_to_string(e.ok()?.path().join("stat")).ok()?;
        let (name, utime, stime) = parse_stat(&text)?;
        Some((name.to_string(), (utime + stime) as f64 / ticks))
    })
    .collect()
}

/// CPU seconds so far, split between the control plane and the simulated clusters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuSplit {
    pub control_plane: f64,
    pub simulators: f64,
}

impl CpuSplit {
    /// From this process's total, its threads and (when the clusters run in a child process)
    /// that child's total. Threads that ended are in the process total but not listed; they
    /// are the control plane's (the simulator runtime's workers live for the whole run).
    pub fn from_parts(process_total: f64, threads: &[(String, f64)], child: Option<f64>) -> Self {
        let in_process: f64 = threads
            .iter()
            .filter(|(name, _)| name.starts_with(crate::sim::runtime::THREAD_PREFIX))
            .map(|(_, s)| s)
            .sum();
        CpuSplit {
            control_plane: (process_total - in_process).max(0.0),
            simulators: in_process + child.unwrap_or(0.0),
        }
    }

    /// Reads /proc now; `sim_pid` is the process serving the clusters, if not this one.
    pub fn now(sim_pid: Option<u32>) -> CpuSplit {
        CpuSplit::from_parts(
            cpu_seconds().unwrap_or_default(),
            &thread_cpu_seconds(),
            sim_pid.and_then(pid_cpu_seconds),
        )
    }

    /// CPU used between `earlier` and `self`.
    pub fn since(&self, earlier: &CpuSplit) -> CpuSplit {
        CpuSplit {
            control_plane: (self.control_plane - earlier.control_plane).max(0.0),
            simulators: (self.simulators - earlier.simulators).max(0.0),
        }
    }
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

    #[test]
    fn stat_lines_with_odd_thread_names_parse() {
        // Fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime ...
        let line = "42 (kudo-sim (x) 1) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0";
        assert_eq!(parse_stat(line), Some(("kudo-sim (x) 1", 250, 50)));
        assert_eq!(parse_stat("42 (truncated"), None);
    }

    #[test]
    fn simulator_threads_are_split_from_the_control_plane() {
        let threads = vec![
            ("kudo".to_string(), 1.0),
            ("kudo-sim".to_string(), 2.5),
            ("tokio-runtime-w".to_string(), 3.0),
            ("kudo-sim".to_string(), 0.5),
        ];
        // 2 s of the total were threads that have ended: the control plane's.
        let split = CpuSplit::from_parts(9.0, &threads, None);
        assert_eq!(
            split,
            CpuSplit {
                control_plane: 6.0,
                simulators: 3.0
            }
        );
        // Clusters in a child process: its CPU is the simulators'; none of ours is.
        let child = CpuSplit::from_parts(4.0, &threads[..1], Some(7.0));
        assert_eq!((child.control_plane, child.simulators), (4.0, 7.0));
        let later = CpuSplit {
            control_plane: 10.0,
            simulators: 3.25,
        };
        assert_eq!(
            later.since(&split),
            CpuSplit {
                control_plane: 4.0,
                simulators: 0.25
            }
        );
    }

    /// A busy thread on a simulator runtime is counted as the simulators', not ours. Other
    /// tests of this process start and drop simulator runtimes of their own: a runtime that
    /// ends inside the window takes its threads' CPU out of the simulators' sum, so a window
    /// may read low. Up to five windows; a split that never counts the spin fails.
    #[test]
    fn a_simulator_runtime_thread_is_measured_as_simulator_cpu() {
        let rt = crate::sim::SimRuntime::new(1).expect("runtime");
        let mut seen = Vec::new();
        for _ in 0..5 {
            let used = spin_and_measure(&rt);
            if used.simulators >= 0.15 && used.simulators > used.control_plane {
                drop(rt);
                return;
            }
            seen.push(used);
        }
        panic!("the spin was never counted as simulator CPU: {seen:?}");
    }

    fn spin_and_measure(rt: &crate::sim::SimRuntime) -> CpuSplit {
        let before = CpuSplit::now(None);
        // Spins until its thread has used 0.2 s of CPU (however loaded the machine is).
        let spun = rt.handle().spawn(async {
            let thread_cpu = || {
                let mut ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                // SAFETY: `ts` is a valid out-pointer for the call.
                #[allow(unsafe_code)]
                unsafe {
                    libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts)
                };
                ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
            };
            let start = thread_cpu();
            let mut x = 0u64;
            while thread_cpu() - start < 0.2 {
                for _ in 0..10_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
                }
            }
            x
        });
        let main = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        main.block_on(spun).expect("spin ran");
        CpuSplit::now(None).since(&before)
    }
}
