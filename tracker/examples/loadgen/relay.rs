//! `loadgen relay`: pairs of viewers signaling to each other as fast as the tracker relays.
//!
//! Pair `i` is alone in swarm `pair-<i>`: the answerer joins first, the offerer joins second
//! and gets the answerer in `peers`. Then the offerer sends offer, cands, offer, cands, ... and
//! the answerer answer, cands, ... with the real browser captures of [`crate::payload`]. It is a
//! load shape, not a negotiation state machine: each side's stream is independent, so the mix
//! is 1/4 offers, 1/4 answers, 1/2 candidate batches.
//!
//! Closed loop (default): each sender keeps at most `window` messages in flight and sends the
//! next when one of its earlier messages reaches the other side; the messages its window allows
//! at one moment go out in one write, each still its own frame (`--flush-each` writes them one
//! by one). Open loop (`--rate R`): the senders share R messages/s, each on a fixed schedule;
//! the report's `max_lag_us` says how far behind schedule the senders fell (when it is large,
//! the offered rate was not achieved and the latency figures undercount the backlog).
//!
//! Every message's `sid` is its send time in nanoseconds since the process started; the
//! receiving side subtracts it from its own clock (one process, one clock). After a warm-up,
//! the messages stamped inside the measured window are counted and timed; after the window a
//! short grace period lets those in flight arrive. Progress lines on stderr mark the window
//! (`loadgen: measuring ...`, `loadgen: window closed`) so a script can sample the tracker's
//! CPU time at its edges; the JSON report goes to stdout.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tracker::protocol::{Format, PeerId};

use crate::conn::{self, Target, Ws};
use crate::idle::MAX_CONNECTIONS;
use crate::payload::{Payload, PayloadKind};
use crate::signals::{Clock, Pacing, Receiver, Role, Sender, Shared, Sink, new_histogram};

/// How long connecting and joining all pairs may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one handshake step (welcome, peers) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// After the window, how long messages stamped inside it may take to arrive.
const GRACE: Duration = Duration::from_secs(2);

/// Frame format on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WireFormat {
    /// JSON text frames.
    Json,
    /// MessagePack binary frames.
    Msgpack,
}

impl WireFormat {
    fn format(self) -> Format {
        match self {
            WireFormat::Json => Format::Json,
            WireFormat::Msgpack => Format::MsgPack,
        }
    }
}

/// Arguments of `loadgen relay`.
#[derive(Args, Debug)]
pub struct RelayArgs {
    /// The tracker's native endpoint, e.g. ws://127.0.0.1:8000/v1/ws (loopback only).
    #[arg(long)]
    url: String,
    /// A second tracker: each pair's offerer connects here, so every signal crosses instances
    /// (through Redis). Without it both viewers of a pair use `--url`.
    #[arg(long)]
    url2: Option<String>,
    /// Pairs of viewers (two connections each).
    #[arg(long, default_value_t = 200)]
    pairs: usize,
    /// Length of the measured window, seconds (after the warm-up).
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Open loop: messages per second in total, spread evenly over all senders. Without it,
    /// closed loop with `--window` messages in flight per sender.
    #[arg(long)]
    rate: Option<u64>,
    /// Frame format.
    #[arg(long, value_enum, default_value_t = WireFormat::Json)]
    format: WireFormat,
    /// Whose captured SDP and candidates to send.
    #[arg(long, value_enum, default_value_t = PayloadKind::Chrome)]
    payload: PayloadKind,
    /// Closed loop: messages in flight per sender.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Warm-up before the measured window, seconds.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Pairs being set up at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Spread connections over source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..))]
    source_addrs: u8,
    /// Closed loop: write each message on its own (one syscall each, like a lone browser)
    /// instead of writing all the messages the window allows at once.
    #[arg(long)]
    flush_each: bool,
}

/// The JSON report printed on stdout.
#[derive(Serialize)]
struct Report {
    pairs: usize,
    format: &'static str,
    payload: &'static str,
    duration_secs: u64,
    /// Messages stamped inside the window (sent or attempted).
    sent: u64,
    /// Of those, how many reached the other side.
    received: u64,
    msgs_per_sec: f64,
    latency_us: Latency,
    /// `error` replies by code, plus the load generator's own failures, over the whole run.
    errors: BTreeMap<String, u64>,
    /// `closed` (window) or `open` (fixed rate).
    mode: &'static str,
    window: Option<usize>,
    rate: Option<u64>,
    /// `sent - received`: dropped, or later than the grace period.
    lost: u64,
    /// Closed-loop windows refilled after hearing nothing back for 2 s.
    stalls: u64,
    /// Connections that ended before the run did.
    closed: u64,
    /// Open loop: the furthest a message due in the window went out behind its schedule, µs.
    max_lag_us: Option<u64>,
    /// Whether each message was written on its own.
    flush_each: bool,
}

/// Relay latency percentiles in microseconds.
#[derive(Serialize)]
struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

/// Runs `loadgen relay`; `started` is the clock origin of the `sid` stamps.
///
/// # Errors
/// A bad argument or URL. Setup failures are reported on stderr with exit code 1.
pub async fn run(args: RelayArgs, started: Instant) -> anyhow::Result<ExitCode> {
    if args.pairs == 0 || args.pairs * 2 > MAX_CONNECTIONS {
        eprintln!(
            "loadgen: --pairs must be 1..={} ({MAX_CONNECTIONS} connections: the process file \
             limit is 20,000 descriptors)",
            MAX_CONNECTIONS / 2
        );
        return Ok(ExitCode::from(2));
    }
    if args.duration_secs == 0 || args.window == 0 || args.concurrency == 0 || args.rate == Some(0)
    {
        eprintln!("loadgen: --duration-secs, --window, --concurrency and --rate must be > 0");
        return Ok(ExitCode::from(2));
    }
    let format = args.format.format();
    let target = Target::parse(&args.url, Some(format))?;
    let target2 = match &args.url2 {
        Some(url) => Some(Target::parse(url, Some(format))?),
        None => None,
    };
    let payload = Arc::new(Payload::load(args.payload)?);

    eprintln!(
        "loadgen: connecting {} pairs to {} ({}, {} payload)",
        args.pairs,
        target.addr(),
        format.as_str(),
        args.payload.as_str()
    );
    let Some(pairs) = open_pairs(&target, target2.as_ref(), &args, format).await else {
        return Ok(ExitCode::FAILURE);
    };

    let begin = Instant::now();
    let window_start = begin + Duration::from_secs(args.warmup_secs);
    let window_end = window_start + Duration::from_secs(args.duration_secs);
    let hard_stop = window_end + GRACE;
    let shared = Arc::new(Shared::new(Clock(started), window_start, window_end));
    let done = CancellationToken::new();
    let plan = Plan {
        args: &args,
        format,
        payload,
        senders: 2 * pairs.len(),
        begin,
        stop: window_end,
        hard_stop,
        shared: Arc::clone(&shared),
        done: done.clone(),
    };
    let mut sender_tasks = Vec::with_capacity(plan.senders);
    let mut receiver_tasks = Vec::with_capacity(plan.senders);
    for (i, pair) in pairs.into_iter().enumerate() {
        plan.start(i, pair, &mut sender_tasks, &mut receiver_tasks)?;
    }

    tokio::time::sleep_until(window_start.into()).await;
    eprintln!("loadgen: measuring for {} s", args.duration_secs);
    tokio::time::sleep_until(window_end.into()).await;
    eprintln!("loadgen: window closed");

    // Senders stop at the window's end by themselves; one stuck in a write gives up at the
    // hard stop.
    let mut sinks = Vec::with_capacity(sender_tasks.len());
    for task in sender_tasks {
        match task.await {
            Ok(sink) => sinks.push(sink),
            Err(e) => shared.count(format!("sender task failed: {e}")),
        }
    }
    // Let the messages stamped in the window arrive: poll until all have, or the grace ends.
    while Instant::now() < hard_stop
        && shared.received.load(Ordering::Relaxed) < shared.sent.load(Ordering::Relaxed)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done.cancel();
    let mut hist = new_histogram()?;
    for task in receiver_tasks {
        match task.await {
            Ok(h) => hist
                .add(&h)
                .map_err(|e| anyhow!("merging histograms: {e:?}"))?,
            Err(e) => shared.count(format!("receiver task failed: {e}")),
        }
    }
    close_all(sinks).await;

    let sent = shared.sent.load(Ordering::Relaxed);
    let received = shared.received.load(Ordering::Relaxed);
    let errors = shared.errors();
    let report = Report {
        pairs: args.pairs,
        format: format.as_str(),
        payload: args.payload.as_str(),
        duration_secs: args.duration_secs,
        sent,
        received,
        msgs_per_sec: received as f64 / args.duration_secs as f64,
        latency_us: Latency {
            p50: hist.value_at_quantile(0.5),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        },
        errors,
        mode: if args.rate.is_some() {
            "open"
        } else {
            "closed"
        },
        window: args.rate.is_none().then_some(args.window),
        rate: args.rate,
        lost: sent.saturating_sub(received),
        stalls: shared.stalls.load(Ordering::Relaxed),
        closed: shared.closed.load(Ordering::Relaxed),
        max_lag_us: args
            .rate
            .map(|_| shared.max_lag_ns.load(Ordering::Relaxed) / 1000),
        flush_each: args.flush_each,
    };
    let line = serde_json::to_string(&report).context("encoding the report")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").context("writing the report")?;
    out.flush().context("writing the report")?;
    Ok(ExitCode::SUCCESS)
}

/// Opens every pair with bounded concurrency; `None` (after reporting on stderr) if any failed.
async fn open_pairs(
    target: &Target,
    target2: Option<&Target>,
    args: &RelayArgs,
    format: Format,
) -> Option<Vec<Pair>> {
    // Swarm names unique to this run: with Redis, an earlier run's members outlive it until
    // they expire.
    let run = format!("{:08x}", rand::random::<u32>());
    let results = tokio::time::timeout(
        SETUP_TIMEOUT,
        futures_util::stream::iter(0..args.pairs)
            .map(|i| {
                open_pair(
                    target,
                    target2.unwrap_or(target),
                    &run,
                    i,
                    args.source_addrs,
                    format,
                )
            })
            .buffer_unordered(args.concurrency)
            .collect::<Vec<_>>(),
    )
    .await;
    let Ok(results) = results else {
        eprintln!(
            "loadgen: setting up {} pairs took over {} s",
            args.pairs,
            SETUP_TIMEOUT.as_secs()
        );
        return None;
    };
    let mut pairs = Vec::with_capacity(args.pairs);
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for r in results {
        match r {
            Ok(p) => pairs.push(p),
            Err(e) => *failures.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    if failures.is_empty() {
        return Some(pairs);
    }
    eprintln!(
        "loadgen: {} of {} pairs failed to set up:",
        args.pairs - pairs.len(),
        args.pairs
    );
    for (why, n) in &failures {
        eprintln!("loadgen:   {n} x {why}");
    }
    None
}

/// One viewer's connection and id.
struct Viewer {
    ws: Ws,
    id: PeerId,
}

/// Two viewers alone in one swarm.
struct Pair {
    swarm: String,
    offerer: Viewer,
    answerer: Viewer,
}

/// Connects the answerer (to `target`), then the offerer (to `offerer_target`), to swarm
/// `pair-<run>-<i>` and checks the pairing.
async fn open_pair(
    target: &Target,
    offerer_target: &Target,
    run: &str,
    i: usize,
    sources: u8,
    format: Format,
) -> anyhow::Result<Pair> {
    let swarm = format!("pair-{run}-{i}");
    let config = WebSocketConfig::default();
    async fn open(
        target: &Target,
        n: usize,
        sources: u8,
        config: WebSocketConfig,
    ) -> anyhow::Result<Viewer> {
        let mut ws = conn::connect(target, conn::source_addr(n, sources), config).await?;
        let id = conn::welcome(&mut ws, STEP_TIMEOUT).await?;
        Ok(Viewer { ws, id })
    }
    let mut answerer = open(target, 2 * i, sources, config).await?;
    let peers = conn::join(&mut answerer.ws, &swarm, 1, format, STEP_TIMEOUT).await?;
    if !peers.is_empty() {
        bail!("swarm {swarm} already had viewers: is another load generator running?");
    }
    let mut offerer = open(offerer_target, 2 * i + 1, sources, config).await?;
    let peers = conn::join(&mut offerer.ws, &swarm, 1, format, STEP_TIMEOUT).await?;
    if peers != [answerer.id] {
        bail!("the second viewer of {swarm} got peers {peers:?}, not the first viewer");
    }
    Ok(Pair {
        swarm,
        offerer,
        answerer,
    })
}

/// Sends a close frame on every connection, together and bounded, so the tracker sees clean
/// closes rather than resets.
async fn close_all(sinks: Vec<Sink>) {
    let closing =
        futures_util::stream::iter(sinks).for_each_concurrent(None, |mut sink| async move {
            let _ = sink.close().await;
        });
    let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
}

/// What every pair's tasks share.
struct Plan<'a> {
    args: &'a RelayArgs,
    format: Format,
    payload: Arc<Payload>,
    /// Senders in all: two per pair.
    senders: usize,
    /// When sending starts (the warm-up's start).
    begin: Instant,
    /// When sending stops (the window's end).
    stop: Instant,
    /// When a write still blocked is abandoned.
    hard_stop: Instant,
    shared: Arc<Shared>,
    /// Stops the receivers.
    done: CancellationToken,
}

impl Plan<'_> {
    /// Spawns the sender and the receiver of both viewers of pair `i`.
    fn start(
        &self,
        i: usize,
        pair: Pair,
        sender_tasks: &mut Vec<JoinHandle<Sink>>,
        receiver_tasks: &mut Vec<JoinHandle<Histogram<u64>>>,
    ) -> anyhow::Result<()> {
        let swarm: Arc<str> = pair.swarm.into();
        let (offerer_id, answerer_id) = (pair.offerer.id, pair.answerer.id);
        let ends = [
            (pair.offerer, Role::Offerer, answerer_id),
            (pair.answerer, Role::Answerer, offerer_id),
        ];
        // Closed loop: the receiving end of each direction refills the sender's window.
        let windows = ends.each_ref().map(|_| match self.args.rate {
            None => Some(Arc::new(Semaphore::new(self.args.window))),
            Some(_) => None,
        });
        for (side, (viewer, role, to)) in ends.into_iter().enumerate() {
            let (sink, stream) = viewer.ws.split();
            let sender = Sender {
                sink,
                swarm: Arc::clone(&swarm),
                to,
                role,
                payload: Arc::clone(&self.payload),
                format: self.format,
                pacing: self.pacing(windows[side].as_ref(), 2 * i + side),
                shared: Arc::clone(&self.shared),
            };
            sender_tasks.push(tokio::spawn(sender.run(self.stop, self.hard_stop)));
            let receiver = Receiver {
                stream,
                peer: to,
                peer_window: windows[1 - side].clone(),
                own_window: windows[side].clone(),
                shared: Arc::clone(&self.shared),
                hist: new_histogram()?,
            };
            receiver_tasks.push(tokio::spawn(receiver.run(self.done.clone())));
        }
        Ok(())
    }

    /// How sender number `n` paces itself: its window, or its share of the rate.
    fn pacing(&self, window: Option<&Arc<Semaphore>>, n: usize) -> Pacing {
        if let Some(permits) = window {
            return Pacing::Window {
                permits: Arc::clone(permits),
                size: self.args.window,
                together: !self.args.flush_each,
            };
        }
        // Each sender has rate / senders messages/s; phases are spread evenly so the senders
        // don't all fire on the same tick.
        let per_sender = self.args.rate.unwrap_or(1) as f64 / self.senders as f64;
        let period = Duration::from_secs_f64(1.0 / per_sender);
        let phase = n as f64 / self.senders as f64;
        Pacing::Rate {
            period,
            first: self.begin + period.mul_f64(phase),
        }
    }
}
