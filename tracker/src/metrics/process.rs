//! The standard `process_*` metrics, read from /proc at scrape time (Linux; elsewhere they are
//! left out): the CPU and memory a load test needs to see the tracker's own use.

use std::time::{SystemTime, UNIX_EPOCH};

/// What /proc says about this process.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub resident_bytes: u64,
    /// Virtual memory, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The descriptor limit (soft).
    pub max_fds: u64,
    /// Start time, seconds since the Unix epoch.
    pub start_time: f64,
}

/// Clock ticks per second of /proc/*/stat times; 100 on every Linux this runs on.
const TICKS_PER_SEC: f64 = 100.0;

/// Reads the figures, or `None` where /proc isn't there.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // man proc(5): fields 14, 15 utime, stime; 22 starttime. `rest` starts at field 3.
    let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_seconds = (num(14)? + num(15)?) as f64 / TICKS_PER_SEC;
    // Resident size from `status` (kB) rather than `stat` (pages of a size /proc doesn't give).
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split(' ')
        .next()?
        .parse()
        .ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let start_time = now - uptime + num(22)? as f64 / TICKS_PER_SEC;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        })
        .unwrap_or(0);
    Some(ProcessStats {
        cpu_seconds,
        resident_bytes: kb("VmRSS:").unwrap_or(0),
        virtual_bytes: kb("VmSize:").unwrap_or(0),
        open_fds,
        max_fds,
        start_time,
    })
}
