//! `simulator pairs`: the relay's throughput per core, on fixed pairs of viewers.
//!
//! The other modes emulate an audience (arrivals, swarms, negotiations, departures), whose cost
//! in the simulator is about the tracker's own, so one simulator core can't saturate one
//! tracker core. This mode measures the relay alone: `--connections` viewers in pairs, each
//! pair alone in a swarm, joined once; then every viewer keeps `--in-flight` messages on the
//! way to its partner, closed loop (each message received is answered with the next one), for
//! `--duration` after a `--warmup`. The messages are the browser captures' (fixtures/): one
//! side of a pair sends its SDP offer and candidate batches in turn, the other its answer and
//! candidates. The same load runs against the bare relay (`--server bare`), the ceiling of a
//! WebSocket relay on the machine, so the two are compared with the same generator.
//!
//! It reports relayed messages per second (messages received, a batch counted by its
//! messages), latency (send to receive), and, with `--server-pid`, the server's CPU and its
//! own over the same seconds, from /proc: the figure is the server's only while the generator
//! has CPU to spare, which the report says.
//!
//! One thread (a `LocalSet` on `main`'s current-thread runtime): counters are `Cell`s, no
//! atomics or locks on the per-message path.

pub mod conn;
pub mod frames;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use swarmtrack_protocol::Format;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::frames::Server;
use crate::harness::cpu;
use crate::native::options::FormatArg;
use crate::native::payload::{Browser, Payloads};
use crate::target::Target;

/// Pairs set up at once.
const SETUP_CONCURRENCY: usize = 32;

/// `pairs`: fixed pairs, closed loop.
#[derive(Debug, Clone, Args)]
pub struct PairsArgs {
    /// The server: swarmtrack's `/v1/ws` URL, or the bare relay's (`ws://127.0.0.1:PORT/`).
    #[arg(long)]
    pub url: String,
    /// What the server is: swarmtrack, or the bare relay run with `--json`.
    #[arg(long, value_enum, default_value = "swarmtrack")]
    pub server: Server,
    /// Frame format (the bare relay speaks JSON only).
    #[arg(long, value_enum, default_value = "json")]
    pub format: FormatArg,
    /// Viewers, in pairs (even).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Messages each viewer keeps on the way to its partner.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Load before the measurement starts.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// The server's process id: its CPU over the measured seconds, from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Write the report here, as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl PairsArgs {
    /// Checks the options.
    ///
    /// # Errors
    /// An option out of range, named.
    pub fn validate(&self) -> Result<(), String> {
        Target::parse(&self.url, false).map_err(|e| e.to_string())?;
        if self.connections < 2 || !self.connections.is_multiple_of(2) {
            return Err("--connections must be even and at least 2".into());
        }
        if !(1..=64).contains(&self.in_flight) {
            return Err("--in-flight must be 1..=64".into());
        }
        if self.server == Server::Bare && self.format == FormatArg::Msgpack {
            return Err("the bare relay speaks JSON only".into());
        }
        if self.duration < Duration::from_secs(1) {
            return Err("--duration must be at least 1s".into());
        }
        if let Some(pid) = self.server_pid
            && cpu::of_pid_ms(pid).is_none()
        {
            return Err(format!(
                "--server-pid {pid}: no such process (/proc/{pid}/stat)"
            ));
        }
        Ok(())
    }

    fn format(&self) -> Format {
        match self.format {
            FormatArg::Json => Format::Json,
            FormatArg::Msgpack => Format::MsgPack,
        }
    }
}

/// What the connections count, read by the run at the window's ends.
pub struct Tally {
    start: Instant,
    /// Relayed messages received.
    received: Cell<u64>,
    /// True inside the measured window: latencies are recorded.
    measuring: Cell<bool>,
    latency_us: RefCell<Histogram<u64>>,
    /// `error` replies by code, frames that aren't messages, connections lost.
    faults: RefCell<BTreeMap<String, u64>>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            start: Instant::now(),
            received: Cell::new(0),
            measuring: Cell::new(false),
            latency_us: RefCell::new(Histogram::new_with_bounds(1, 60_000_000, 3)?),
            faults: RefCell::new(BTreeMap::new()),
        })
    }

    /// µs since the run started: what a message carries as its send time.
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// A relayed message came in, sent at `sent_us` if it says.
    pub fn relayed(&self, sent_us: Option<u64>) {
        self.received.set(self.received.get() + 1);
        if self.measuring.get()
            && let Some(sent) = sent_us
        {
            let _ = self
                .latency_us
                .borrow_mut()
                .record(self.now_us().saturating_sub(sent).max(1));
        }
    }

    /// Something went wrong, of kind `what`.
    pub fn fault(&self, what: &str) {
        *self
            .faults
            .borrow_mut()
            .entry(what.to_string())
            .or_default() += 1;
    }
}

/// The report of a run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The server.
    pub server: Server,
    /// `json` or `msgpack`.
    pub format: &'static str,
    /// Viewers.
    pub connections: usize,
    /// Messages each kept on the way.
    pub in_flight: usize,
    /// Mean bytes of a message frame sent.
    pub frame_bytes: usize,
    /// Seconds measured.
    pub secs: f64,
    /// Relayed messages received in them.
    pub messages: u64,
    /// Per second.
    pub msgs_per_s: f64,
    /// The slowest and fastest whole second.
    pub per_s_min: u64,
    /// See `per_s_min`.
    pub per_s_max: u64,
    /// Latency, send to receive, µs.
    pub p50_us: u64,
    /// See `p50_us`.
    pub p99_us: u64,
    /// The server's CPU-seconds in the window, with `--server-pid`.
    pub server_cpu_s: Option<f64>,
    /// The generator's.
    pub load_cpu_s: f64,
    /// How the server's CPU was spent over the window, with `--server-pid`.
    pub server_cpus: Option<CpuUse>,
    /// How the generator's CPU was spent.
    pub load_cpus: Option<CpuUse>,
    /// `error` replies by code, unreadable frames, lost connections.
    pub faults: BTreeMap<String, u64>,
    /// Which side ran out: `server`, `load`, `both`, `others` (other processes took a
    /// CPU) or `neither`.
    pub ran_out: &'static str,
    /// The same, in words, with the figures.
    pub verdict: String,
}

/// How the CPUs a process may run on were spent over the window, as shares of their time.
///
/// The kernel charges an interrupt to the CPU's interrupt time and also to the process it
/// interrupted, so `process` and `interrupts` overlap (their sum may pass 100 %), and `others`
/// (busy time less both) is a lower bound: other processes took at least that much.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuUse {
    /// By the process (its user and system time, interrupts that hit it included).
    pub process: f64,
    /// In interrupts (on loopback mostly TCP's receive work, done in the sender's system call).
    pub interrupts: f64,
    /// By other processes, at least.
    pub others: f64,
}

impl CpuUse {
    /// A share of the CPUs' time that leaves less than this idle counts as all of it.
    const FULL: f64 = 0.9;

    fn busy(&self) -> f64 {
        self.process + self.interrupts + self.others
    }

    fn full(&self) -> bool {
        self.busy() >= Self::FULL
    }

    fn taken(&self) -> bool {
        self.others >= 1.0 - Self::FULL
    }
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} % itself, {:.0} % interrupts, other processes at least {:.0} %",
            self.process * 100.0,
            self.interrupts * 100.0,
            self.others * 100.0
        )
    }
}

/// Readings at the window's start or end: a process's CPU time, and its CPUs' busy,
/// interrupt and total ticks.
struct Reading {
    process_ms: Option<u64>,
    busy: Option<(u64, u64)>,
    irq: Option<(u64, u64)>,
}

impl Reading {
    fn take(process_ms: Option<u64>, cpus: Option<&BTreeSet<usize>>) -> Self {
        Self {
            process_ms,
            busy: cpus.and_then(cpu::cpus_busy),
            irq: cpus.and_then(cpu::cpus_irq),
        }
    }

    /// The use between `self` and `end` (clock ticks are 10 ms).
    fn until(&self, end: &Reading) -> Option<CpuUse> {
        let share = |a: Option<(u64, u64)>, b: Option<(u64, u64)>| match (a, b) {
            (Some((x0, t0)), Some((x1, t1))) if t1 > t0 => {
                Some(((x1 - x0) as f64 / (t1 - t0) as f64, (t1 - t0) * 10))
            }
            _ => None,
        };
        let (busy, total_ms) = share(self.busy, end.busy)?;
        let (interrupts, _) = share(self.irq, end.irq)?;
        // total_ms is the time of all the CPUs together, so this is the process's cores over
        // the CPUs' count.
        let process = end.process_ms?.saturating_sub(self.process_ms?) as f64 / total_ms as f64;
        Some(CpuUse {
            process,
            interrupts,
            others: (busy - interrupts - process).max(0.0),
        })
    }
}

/// Runs the load and prints the report's line.
///
/// # Errors
/// Bad options, a pair that couldn't be set up, a report that couldn't be written.
pub async fn run(args: PairsArgs) -> anyhow::Result<()> {
    args.validate().map_err(anyhow::Error::msg)?;
    // The soft descriptor limit up to the hard one (what the CLI does for the other modes).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let report = tokio::task::LocalSet::new()
        .run_until(measure(&args))
        .await?;
    println!(
        "RESULT server={:?} format={} connections={} in_flight={} frame_bytes={} msgs_per_s={:.0} \
         (per second {}-{}) p50_us={} p99_us={} server_cpu_s={} load_cpu_s={:.2} faults={:?} \
         ran_out={}",
        report.server,
        report.format,
        report.connections,
        report.in_flight,
        report.frame_bytes,
        report.msgs_per_s,
        report.per_s_min,
        report.per_s_max,
        report.p50_us,
        report.p99_us,
        report
            .server_cpu_s
            .map_or_else(|| "-".to_string(), |s| format!("{s:.2}")),
        report.load_cpu_s,
        report.faults,
        report.ran_out,
    );
    println!("{}", report.verdict);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn measure(args: &PairsArgs) -> anyhow::Result<Report> {
    let format = args.format();
    let target = Target::parse(&args.url, format == Format::MsgPack)?;
    let payloads = Rc::new(Payloads::load(Duration::from_millis(15), false)?);
    let tally = Rc::new(Tally::new()?);
    let setups =
        futures_util::stream::iter(0..args.connections / 2)
            .map(|pair| {
                let (target, payloads) = (target.clone(), Rc::clone(&payloads));
                // Chromium and Firefox pairs in turn: their SDPs and candidate batches differ.
                let browser = if pair % 2 == 0 {
                    Browser::Chrome
                } else {
                    Browser::Firefox
                };
                async move {
                    conn::pair(&target, args.server, format, pair, payloads.script(browser)).await
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
    let (go, stop) = (CancellationToken::new(), CancellationToken::new());
    let (mut frame_bytes, mut frames) = (0, 0);
    for setup in setups {
        for side in setup? {
            frame_bytes += side.cycle.iter().map(frames::Template::len).sum::<usize>();
            frames += side.cycle.len();
            tokio::task::spawn_local(conn::relay(
                side,
                args.in_flight,
                go.clone(),
                stop.clone(),
                Rc::clone(&tally),
            ));
        }
    }
    go.cancel();
    tokio::time::sleep(args.warmup).await;

    let server_cpus = args.server_pid.and_then(cpu::allowed_cpus);
    let load_cpus = cpu::own_cpus();
    let server_pid_ms = || args.server_pid.and_then(cpu::of_pid_ms);
    let server0 = Reading::take(server_pid_ms(), server_cpus.as_ref());
    let load0 = Reading::take(Some(cpu::own_ms()), load_cpus.as_ref());
    let t0 = Instant::now();
    let n0 = tally.received.get();
    tally.measuring.set(true);
    let (mut last, mut per_s) = (n0, Vec::new());
    let whole = args.duration.as_secs();
    for s in 1..=whole {
        tokio::time::sleep_until(t0 + Duration::from_secs(s)).await;
        let n = tally.received.get();
        per_s.push(n - last);
        last = n;
    }
    tokio::time::sleep_until(t0 + args.duration).await;
    tally.measuring.set(false);
    let secs = t0.elapsed().as_secs_f64();
    let messages = tally.received.get() - n0;
    let server1 = Reading::take(server_pid_ms(), server_cpus.as_ref());
    let load1 = Reading::take(Some(cpu::own_ms()), load_cpus.as_ref());
    stop.cancel();

    let server_cpu_s = match (server0.process_ms, server1.process_ms) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / 1000.0),
        _ => None,
    };
    let load_cpu_s = load1
        .process_ms
        .unwrap_or(0)
        .saturating_sub(load0.process_ms.unwrap_or(0)) as f64
        / 1000.0;
    let server_use = server0.until(&server1);
    let load_use = load0.until(&load1);
    let (ran_out, verdict) = verdict(server_use, load_use);
    let latency = tally.latency_us.borrow();
    Ok(Report {
        server: args.server,
        format: match format {
            Format::Json => "json",
            Format::MsgPack => "msgpack",
        },
        connections: args.connections,
        in_flight: args.in_flight,
        frame_bytes: frame_bytes / frames.max(1),
        secs,
        messages,
        msgs_per_s: messages as f64 / secs,
        per_s_min: per_s.iter().copied().min().unwrap_or(0),
        per_s_max: per_s.iter().copied().max().unwrap_or(0),
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        server_cpu_s,
        load_cpu_s,
        server_cpus: server_use,
        load_cpus: load_use,
        ran_out,
        verdict,
        faults: tally.faults.borrow().clone(),
    })
}

/// Which side ran out of CPU: the one whose CPU was full with its own work and interrupts
/// (on loopback a sender's system call does much of the receiver's TCP work, so interrupts
/// belong to both); `others` when other processes took a tenth or more of a full CPU.
fn verdict(server: Option<CpuUse>, load: Option<CpuUse>) -> (&'static str, String) {
    let (Some(server), Some(load)) = (server, load) else {
        return (
            "unknown",
            "the server's CPU is unknown (no --server-pid)".into(),
        );
    };
    let both = format!("server's CPU: {server}; load generator's CPU: {load}");
    let (side, words) = match (server.full(), load.full()) {
        (true, _) if server.taken() => ("others", "other processes took the server's CPU"),
        (_, true) if load.taken() => ("others", "other processes took the load generator's CPU"),
        (true, true) => ("both", "both CPUs were full"),
        (true, false) => (
            "server",
            "the server ran out of CPU, the load generator had some to spare",
        ),
        (false, true) => (
            "load",
            "the load generator ran out of CPU first: the figure is a floor",
        ),
        (false, false) => ("neither", "neither CPU was full (bounded by round trips)"),
    };
    (side, format!("{words} ({both})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_name_the_side_that_ran_out() {
        let u = |process, interrupts, others| {
            Some(CpuUse {
                process,
                interrupts,
                others,
            })
        };
        let side = |s, l| verdict(s, l).0;
        assert_eq!(side(u(0.8, 0.19, 0.0), u(0.6, 0.1, 0.0)), "server");
        assert_eq!(side(u(0.6, 0.1, 0.0), u(0.8, 0.15, 0.0)), "load");
        assert_eq!(side(u(0.8, 0.15, 0.0), u(0.8, 0.15, 0.0)), "both");
        assert_eq!(side(u(0.5, 0.1, 0.38), u(0.5, 0.1, 0.0)), "others");
        assert_eq!(side(u(0.5, 0.1, 0.0), u(0.4, 0.1, 0.2)), "neither");
        assert_eq!(side(u(0.5, 0.1, 0.0), u(0.5, 0.1, 0.35)), "others");
        assert_eq!(side(None, u(0.5, 0.1, 0.0)), "unknown");
        let words = verdict(u(0.8, 0.19, 0.0), u(0.6, 0.1, 0.0)).1;
        assert!(
            words.contains("80 % itself, 19 % interrupts, other processes at least 0 %"),
            "{words}"
        );
    }
}
