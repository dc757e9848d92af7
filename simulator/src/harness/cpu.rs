//! CPU time of processes, from `/proc/<pid>/stat`: the simulator's own (every snapshot carries
//! it) and the tracker's, when the run is given its pid (`--tracker-pid`), so each ramp step
//! says which side ran out of CPU.

use std::collections::BTreeSet;

/// CPU time (user + system) this process has used so far, ms; 0 where `/proc` can't tell.
pub fn own_ms() -> u64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0, |s| parse_ms(&s).unwrap_or(0))
}

/// CPU time (user + system) process `pid` has used so far, ms; `None` when it can't be read
/// (gone, or not on this machine).
pub fn of_pid_ms(pid: u32) -> Option<u64> {
    parse_ms(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The CPUs process `pid` may run on (`Cpus_allowed_list` in /proc/PID/status: its affinity,
/// as `taskset` set it).
pub fn allowed_cpus(pid: u32) -> Option<BTreeSet<usize>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    parse_cpu_list(list.trim())
}

/// The CPUs of a list like `0`, `0-3` or `0,2-3`.
fn parse_cpu_list(list: &str) -> Option<BTreeSet<usize>> {
    let mut cpus = BTreeSet::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => {
                cpus.insert(part.parse::<usize>().ok()?);
            }
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// The CPUs this process may run on.
pub fn own_cpus() -> Option<BTreeSet<usize>> {
    allowed_cpus(std::process::id())
}

/// Busy and total time of `cpus` so far, in clock ticks, from `/proc/stat`: how much of those
/// CPUs anything at all used (busy is everything but idle and iowait).
pub fn cpus_busy(cpus: &BTreeSet<usize>) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_busy(&stat, cpus)
}

/// Interrupt time (irq and softirq) and total time of `cpus` so far, in clock ticks: on
/// loopback most of TCP's receive work runs as softirq, inside busy time but charged to no
/// process.
pub fn cpus_irq(cpus: &BTreeSet<usize>) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_irq(&stat, cpus)
}

fn parse_irq(stat: &str, cpus: &BTreeSet<usize>) -> Option<(u64, u64)> {
    let (mut irq, mut total, mut seen) = (0, 0, 0);
    for v in cpu_lines(stat, cpus) {
        // user nice system idle iowait irq softirq steal ...
        irq += v.get(5).copied().unwrap_or(0) + v.get(6).copied().unwrap_or(0);
        total += v.iter().take(8).sum::<u64>();
        seen += 1;
    }
    (seen > 0).then_some((irq, total))
}

/// The fields of the `cpuN` lines of `/proc/stat` for the CPUs in `cpus`.
fn cpu_lines<'a>(stat: &'a str, cpus: &'a BTreeSet<usize>) -> impl Iterator<Item = Vec<u64>> + 'a {
    stat.lines().filter_map(move |line| {
        let mut f = line.split_ascii_whitespace();
        let n = f
            .next()
            .and_then(|name| name.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())?;
        cpus.contains(&n)
            .then(|| f.filter_map(|x| x.parse().ok()).collect())
    })
}

fn parse_busy(stat: &str, cpus: &BTreeSet<usize>) -> Option<(u64, u64)> {
    let (mut busy, mut total, mut seen) = (0, 0, 0);
    for v in cpu_lines(stat, cpus) {
        // user nice system idle iowait irq softirq steal ...
        let all: u64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
        busy += all.saturating_sub(idle);
        total += all;
        seen += 1;
    }
    (seen > 0).then_some((busy, total))
}

/// utime + stime of a `/proc/<pid>/stat` line, in ms (clock ticks are 10 ms on Linux).
fn parse_ms(stat: &str) -> Option<u64> {
    // The name (field 2) may hold spaces; fields are counted after its closing parenthesis,
    // where the state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse() {
        let line = "4242 (sim ulator) S 1 2 3 4 5 6 7 8 9 10 250 125 0 0 20 0 3 0";
        assert_eq!(parse_ms(line), Some(3750));
        assert_eq!(parse_ms("garbage"), None);
        assert_eq!(parse_ms("1 (x) S 1 2"), None);
    }

    #[test]
    fn this_process_is_readable_by_pid() {
        let pid = std::process::id();
        assert!(of_pid_ms(pid).is_some());
        assert!(allowed_cpus(pid).is_some_and(|c| !c.is_empty()));
        assert_eq!(of_pid_ms(u32::MAX), None);
    }

    #[test]
    fn busy_cpus_read_from_proc_stat() {
        let stat = "cpu  10 0 10 80 0 0 0 0 0 0\n\
                    cpu0 5 0 5 40 0 0 0 0 0 0\n\
                    cpu1 1 0 1 2 6 0 0 0 0 0\n\
                    intr 1 2 3\n";
        let one: BTreeSet<usize> = [1].into();
        assert_eq!(parse_busy(stat, &one), Some((2, 10)));
        let both: BTreeSet<usize> = [0, 1].into();
        assert_eq!(parse_busy(stat, &both), Some((12, 60)));
        assert_eq!(parse_busy(stat, &[7].into()), None);
        assert!(own_cpus().is_some_and(|c| cpus_busy(&c).is_some()));
        let irq = "cpu1 1 0 1 2 6 3 4 0 0 0\n";
        assert_eq!(parse_irq(irq, &one), Some((7, 17)));
        assert_eq!(parse_irq(irq, &[0].into()), None);
    }

    #[test]
    fn cpu_lists_count() {
        let n = |l| parse_cpu_list(l).map(|c| c.len());
        assert_eq!(n("0"), Some(1));
        assert_eq!(n("0-3"), Some(4));
        assert_eq!(n("0,2-3"), Some(3));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(parse_cpu_list("3-1"), None);
    }
}
