//! `loadgen idle`: many joined, silent viewers, to measure the tracker's memory per connection.
//!
//! Opens the connections with bounded concurrency, each one receiving `welcome`, joining its
//! swarm and waiting for `peers`; prints `READY <n>` once all have joined, then holds them
//! (reading, so the tracker's pings are answered) until the hold time is up, stdin closes or a
//! SIGTERM/SIGINT arrives. A connection that fails to open or join, or that the tracker closes
//! during the hold, makes the run fail: the memory figure would not be for `n` connections.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracker::protocol::Format;

use crate::conn::{self, Target};

/// One process may hold at most this many connections: the file descriptor limit here is
/// 20,000, and the runtime, stdio and the odd file need some of it.
pub const MAX_CONNECTIONS: usize = 19_000;

/// How long one connection may take to connect, get `welcome` and get `peers`.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long opening and joining all connections may take.
const ALL_SETUP_TIMEOUT: Duration = Duration::from_secs(180);

/// How long closing all connections at the end may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `loadgen idle`.
#[derive(Args, Debug)]
pub struct IdleArgs {
    /// The tracker's native endpoint, e.g. ws://127.0.0.1:8000/v1/ws (loopback only).
    #[arg(long)]
    url: String,
    /// Connections to open (at most 19,000: the process file limit is 20,000).
    #[arg(long)]
    connections: usize,
    /// Viewers per swarm: connection i joins swarm `idle-<i / swarm-size>`.
    #[arg(long, default_value_t = 10)]
    swarm_size: usize,
    /// How long to hold the connections after `READY`, seconds.
    #[arg(long, default_value_t = 60)]
    hold_secs: u64,
    /// `want` in each join.
    #[arg(long, default_value_t = 5)]
    want: u32,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Spread connections over source addresses 127.0.0.1 ..= 127.0.0.N.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..))]
    source_addrs: u8,
    /// Don't end the hold when stdin closes (for runs with stdin on /dev/null).
    #[arg(long)]
    ignore_stdin: bool,
}

/// Runs `loadgen idle`.
///
/// # Errors
/// A bad URL; setup or hold failures are reported on stderr and give exit code 1.
pub async fn run(args: IdleArgs) -> anyhow::Result<ExitCode> {
    if args.connections > MAX_CONNECTIONS {
        eprintln!(
            "loadgen: --connections {} is over {MAX_CONNECTIONS}: the process file limit is \
             20,000 descriptors; run several load generators instead",
            args.connections
        );
        return Ok(ExitCode::from(2));
    }
    if args.connections == 0 || args.swarm_size == 0 || args.concurrency == 0 {
        eprintln!("loadgen: --connections, --swarm-size and --concurrency must be > 0");
        return Ok(ExitCode::from(2));
    }
    let target = Arc::new(Target::parse(&args.url, None)?);
    let stop = CancellationToken::new();
    watch_signals(stop.clone())?;
    if !args.ignore_stdin {
        watch_stdin(stop.clone());
    }

    // The tracker sends only welcome, peers and pings to an idle viewer: small buffers keep
    // this process at a few KiB per connection instead of tungstenite's 128 KiB default.
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let lost = Arc::new(AtomicU64::new(0));
    let tasks = TaskTracker::new();
    // Each connection reports its setup once; bounded by the number of connections.
    let (setup_tx, mut setup_rx) = mpsc::channel::<Result<(), String>>(args.connections);
    eprintln!(
        "loadgen: opening {} connections to {} ({} at a time, {} source addresses)",
        args.connections,
        target.addr(),
        args.concurrency,
        args.source_addrs
    );
    for i in 0..args.connections {
        let viewer = Viewer {
            target: Arc::clone(&target),
            source: conn::source_addr(i, args.source_addrs),
            swarm: format!("idle-{}", i / args.swarm_size),
            want: args.want,
            config: ws_config,
        };
        tasks.spawn(viewer.run(
            Arc::clone(&gate),
            setup_tx.clone(),
            stop.clone(),
            Arc::clone(&lost),
        ));
    }
    drop(setup_tx);
    tasks.close();

    let mut joined = 0usize;
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    let setup_deadline = tokio::time::sleep(ALL_SETUP_TIMEOUT);
    tokio::pin!(setup_deadline);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = &mut setup_deadline => {
                eprintln!(
                    "loadgen: opening the connections took over {} s",
                    ALL_SETUP_TIMEOUT.as_secs()
                );
                break;
            }
            r = setup_rx.recv() => match r {
                None => break,
                Some(Ok(())) => joined += 1,
                Some(Err(e)) => *failures.entry(e).or_default() += 1,
            },
        }
    }
    if joined < args.connections {
        stop.cancel();
        let failed: usize = failures.values().sum();
        let interrupted = args.connections - joined - failed;
        eprintln!(
            "loadgen: only {joined} of {} connections joined ({failed} failed, {interrupted} \
             interrupted or unfinished)",
            args.connections
        );
        for (why, n) in &failures {
            eprintln!("loadgen:   {n} x {why}");
        }
        close_all(&tasks).await;
        return Ok(ExitCode::FAILURE);
    }

    println!("READY {joined}");
    std::io::stdout().flush().context("writing READY")?;
    eprintln!(
        "loadgen: {joined} connections joined; holding for up to {} s",
        args.hold_secs
    );
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(Duration::from_secs(args.hold_secs)) => {}
    }
    stop.cancel();
    close_all(&tasks).await;
    let lost = lost.load(Ordering::Relaxed);
    if lost > 0 {
        eprintln!("loadgen: the tracker closed {lost} connections during the hold");
        return Ok(ExitCode::FAILURE);
    }
    eprintln!("loadgen: closed {joined} connections");
    Ok(ExitCode::SUCCESS)
}

/// Waits for the connection tasks to send their close frames, bounded.
async fn close_all(tasks: &TaskTracker) {
    if tokio::time::timeout(CLOSE_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        eprintln!(
            "loadgen: {} connections did not close within {} s",
            tasks.len(),
            CLOSE_TIMEOUT.as_secs()
        );
    }
}

/// One idle viewer.
struct Viewer {
    target: Arc<Target>,
    source: std::net::IpAddr,
    swarm: String,
    want: u32,
    config: WebSocketConfig,
}

impl Viewer {
    /// Connects and joins (holding a `gate` permit meanwhile), reports the outcome on
    /// `setup_tx`, then reads until `stop`; counts in `lost` a close by the tracker.
    async fn run(
        self,
        gate: Arc<Semaphore>,
        setup_tx: mpsc::Sender<Result<(), String>>,
        stop: CancellationToken,
        lost: Arc<AtomicU64>,
    ) {
        let setup = async {
            let _permit = gate.acquire().await.context("setup gate closed")?;
            tokio::time::timeout(SETUP_TIMEOUT, self.open())
                .await
                .map_err(|_| anyhow::anyhow!("no welcome and peers within {SETUP_TIMEOUT:?}"))?
        };
        let mut ws = tokio::select! {
            () = stop.cancelled() => return,
            r = setup => match r {
                Ok(ws) => ws,
                Err(e) => {
                    let _ = setup_tx.send(Err(format!("{e:#}"))).await;
                    return;
                }
            },
        };
        if setup_tx.send(Ok(())).await.is_err() {
            return;
        }
        drop(setup_tx);
        loop {
            tokio::select! {
                () = stop.cancelled() => {
                    // A clean close, so the tracker counts a client close rather than an error.
                    let _ = tokio::time::timeout(Duration::from_secs(5), ws.close(None)).await;
                    return;
                }
                // Reading is also what answers the tracker's pings (tungstenite queues the pong
                // and flushes it on the next read).
                frame = ws.next() => match frame {
                    Some(Ok(Message::Close(_)) | Err(_)) | None => {
                        lost.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    async fn open(&self) -> anyhow::Result<conn::Ws> {
        let mut ws = conn::connect(&self.target, self.source, self.config).await?;
        conn::welcome(&mut ws, SETUP_TIMEOUT).await?;
        conn::join(&mut ws, &self.swarm, self.want, Format::Json, SETUP_TIMEOUT).await?;
        Ok(ws)
    }
}

/// Cancels `stop` on SIGTERM or SIGINT.
fn watch_signals(stop: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if !stop.is_cancelled() {
            eprintln!("loadgen: {name}: stopping");
        }
        stop.cancel();
    });
    Ok(())
}

/// Cancels `stop` when stdin reaches end of file, so a parent that holds our stdin open can
/// end the hold by closing it (and we don't outlive a parent that died).
fn watch_stdin(stop: CancellationToken) {
    // A plain thread: tokio's stdin also blocks a thread, and this one needs no runtime.
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !stop.is_cancelled() {
            eprintln!("loadgen: stdin closed: stopping (--ignore-stdin to hold anyway)");
        }
        stop.cancel();
    });
}
