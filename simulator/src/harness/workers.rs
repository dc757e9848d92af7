//! The processes that carry a run's load, and the one protocol between them and the parent.
//!
//! A run is one or more workers, each a single-threaded engine with its share of every step:
//! in this process (one worker, nothing remote), in child processes (`simulator worker`, over
//! its stdin and stdout: the descriptor limit caps one process at ~19,000 connections), or on
//! other hosts (`simulator worker --listen ADDR` there, reached over TCP with `--worker-at`).
//! All speak the same JSON lines: the parent sends one [`Assignment`]; the worker sends its
//! [`Event`]s. Closing the parent's side of the stream stops the worker (it winds down and
//! sends `done`), so a parent that dies takes its workers with it.
//!
//! Bounds: lines are at most [`MAX_LINE`] bytes, a remote worker is connected within
//! [`CONNECT_TIMEOUT`], a worker that sends nothing for the silence bound (its ticks come every
//! second) is given up, and events reach the parent over a bounded channel. A worker that dies
//! or goes silent becomes a problem in the report, named by its number and address.

use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use super::engine::Event;

/// Longest line either side sends (a snapshot with full histograms is tens of KB).
pub const MAX_LINE: usize = 16 << 20;
/// How long connecting to a remote worker may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events in flight from the workers to the parent.
pub const EVENT_QUEUE: usize = 256;

/// What the parent asks a worker to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Assignment {
    /// The mode (`native` or `webtorrent`).
    pub mode: String,
    /// The mode's job for this worker.
    pub job: serde_json::Value,
}

/// A message from a worker, tagged in the parent with the worker's number.
#[derive(Debug)]
pub enum FromWorker {
    /// An event of its engine.
    Event(Box<Event>),
    /// It ended without finishing, and why.
    Failed(String),
}

/// Where the parent's workers report: `(worker, message)`.
pub type Reports = mpsc::Sender<(usize, FromWorker)>;

/// Runs a worker's engine in this process: `work` with its events forwarded to `tx`.
pub fn local<F>(w: usize, work: impl FnOnce(mpsc::Sender<Event>) -> F, tx: Reports)
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (etx, mut erx) = mpsc::channel(EVENT_QUEUE);
    let engine = tokio::spawn(work(etx));
    tokio::spawn(async move {
        let mut done = false;
        while let Some(e) = erx.recv().await {
            done |= matches!(e, Event::Done { .. });
            if tx.send((w, FromWorker::Event(Box::new(e)))).await.is_err() {
                return;
            }
        }
        let failure = match engine.await {
            Ok(Ok(())) if done => None,
            Ok(Ok(())) => Some(format!("worker {w} ended before finishing")),
            Ok(Err(e)) => Some(format!("worker {w} failed: {e:#}")),
            Err(e) => Some(format!("worker {w} panicked: {e}")),
        };
        if let Some(f) = failure {
            let _ = tx.send((w, FromWorker::Failed(f))).await;
        }
    });
}

/// Starts worker `w` as a child process (`simulator worker`) and hands it `assignment`.
///
/// # Errors
/// When the process can't be started.
pub fn child(
    w: usize,
    assignment: &Assignment,
    silence: Duration,
    stop: CancellationToken,
    tx: Reports,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the simulator's own executable")?;
    let mut process = tokio::process::Command::new(&exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting worker {w}"))?;
    let stdin = process.stdin.take().context("worker stdin")?;
    let stdout = process.stdout.take().context("worker stdout")?;
    let line = serde_json::to_string(assignment)?;
    let name = format!("worker {w} (process {})", process.id().unwrap_or(0));
    tokio::spawn(async move {
        let done = talk(&name, w, stdout, stdin, line, silence, stop, &tx).await;
        let status = process.wait().await;
        if !done {
            let why = format!("{name} ended ({status:?}) before finishing");
            let _ = tx.send((w, FromWorker::Failed(why))).await;
        }
    });
    Ok(())
}

/// Connects worker `w` at `addr` (`simulator worker --listen`) and hands it `assignment`.
pub fn remote(
    w: usize,
    addr: SocketAddr,
    assignment: &Assignment,
    silence: Duration,
    stop: CancellationToken,
    tx: Reports,
) {
    let name = format!("worker {w} at {addr}");
    let line = serde_json::to_string(assignment);
    tokio::spawn(async move {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                let _ = tx
                    .send((w, FromWorker::Failed(format!("{name}: {e}"))))
                    .await;
                return;
            }
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let why = format!("{name}: can't connect: {e}");
                let _ = tx.send((w, FromWorker::Failed(why))).await;
                return;
            }
            Err(_) => {
                let why = format!("{name}: no connection within {CONNECT_TIMEOUT:?}");
                let _ = tx.send((w, FromWorker::Failed(why))).await;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        if !talk(&name, w, read, write, line, silence, stop, &tx).await {
            let why = format!("{name} closed the connection before finishing (it died?)");
            let _ = tx.send((w, FromWorker::Failed(why))).await;
        }
    });
}

/// The parent's side of one worker's stream: sends the assignment, forwards events, closes
/// its side on `stop`. True when the worker finished (sent `done`).
#[allow(clippy::too_many_arguments)]
async fn talk(
    name: &str,
    w: usize,
    read: impl AsyncRead + Unpin,
    mut write: impl AsyncWrite + Unpin,
    mut line: String,
    silence: Duration,
    stop: CancellationToken,
    tx: &Reports,
) -> bool {
    line.push('\n');
    if let Err(e) = write.write_all(line.as_bytes()).await {
        let _ = tx
            .send((
                w,
                FromWorker::Failed(format!("{name} broke off before finishing (it died?): {e}")),
            ))
            .await;
        return true;
    }
    let _ = write.flush().await;
    let mut write = Some(write);
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    loop {
        let next = tokio::select! {
            l = tokio::time::timeout(silence, lines.next()) => l,
            () = stop.cancelled(), if write.is_some() => {
                // End of our side tells the worker to wind down.
                if let Some(mut w) = write.take() {
                    let _ = w.shutdown().await;
                }
                continue;
            }
        };
        let l = match next {
            Ok(Some(Ok(l))) => l,
            Ok(Some(Err(e))) => {
                let _ = tx
                    .send((
                        w,
                        FromWorker::Failed(format!(
                            "{name} broke off before finishing (it died?): {e}"
                        )),
                    ))
                    .await;
                return true;
            }
            Ok(None) => return false,
            Err(_) => {
                let why = format!("{name} sent nothing for {silence:?}; gave up on it");
                let _ = tx.send((w, FromWorker::Failed(why))).await;
                return true;
            }
        };
        match serde_json::from_str::<Event>(&l) {
            Ok(ev) => {
                let done = matches!(ev, Event::Done { .. });
                if tx.send((w, FromWorker::Event(Box::new(ev)))).await.is_err() || done {
                    return true;
                }
            }
            Err(e) => {
                let why = format!(
                    "{name} sent {:?}: {e}",
                    l.chars().take(200).collect::<String>()
                );
                let _ = tx.send((w, FromWorker::Failed(why))).await;
                return true;
            }
        }
    }
}

/// The worker's side: reads its assignment, runs it with `run`, writes its events; EOF from
/// the parent stops it.
///
/// # Errors
/// A missing or malformed assignment, a failed engine, or a closed stream.
pub async fn serve<F>(
    read: impl AsyncRead + Unpin + Send + 'static,
    mut write: impl AsyncWrite + Unpin,
    run: impl FnOnce(Assignment, CancellationToken, mpsc::Sender<Event>) -> F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
    let line = lines
        .next()
        .await
        .context("expected the worker's assignment")?
        .context("reading the assignment")?;
    let assignment: Assignment = serde_json::from_str(&line).context("malformed assignment")?;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = lines.next().await {}
            stop.cancel();
        });
    }
    let (tx, mut rx) = mpsc::channel(EVENT_QUEUE);
    let engine = tokio::spawn(run(assignment, stop, tx));
    while let Some(ev) = rx.recv().await {
        let mut line = serde_json::to_vec(&ev)?;
        line.push(b'\n');
        write.write_all(&line).await?;
        write.flush().await?;
    }
    engine.await.context("engine task")??;
    Ok(())
}

/// A worker for remote parents: accepts one parent on `listener` and serves its run.
///
/// # Errors
/// See [`serve`].
pub async fn serve_tcp<F>(
    listener: TcpListener,
    run: impl FnOnce(Assignment, CancellationToken, mpsc::Sender<Event>) -> F,
) -> anyhow::Result<()>
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (stream, peer) = listener.accept().await.context("accepting the parent")?;
    eprintln!("worker: run from {peer}");
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    serve(read, write, run).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader};

    use super::*;
    use crate::harness::stats::Snapshot;

    /// A worker's run that reports one tick, then `done` once told to stop.
    async fn tick_then_done(
        a: Assignment,
        stop: CancellationToken,
        tx: mpsc::Sender<Event>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(a.mode == "test", "unexpected mode {}", a.mode);
        let tick = Event::Tick {
            seq: 0,
            phase: 0,
            t_s: 1.0,
            snapshot: Snapshot::default(),
        };
        tx.send(tick).await?;
        stop.cancelled().await;
        tx.send(Event::Done {
            tail: Snapshot::default(),
        })
        .await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_worker_serves_its_assignment_and_stops_at_the_parents_eof() {
        let (parent, worker) = tokio::io::duplex(1 << 16);
        let (worker_read, worker_write) = tokio::io::split(worker);
        let served = tokio::spawn(serve(worker_read, worker_write, tick_then_done));
        let (parent_read, mut parent_write) = tokio::io::split(parent);
        let line = serde_json::to_string(&Assignment {
            mode: "test".into(),
            job: serde_json::Value::Null,
        })
        .unwrap();
        parent_write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
        let mut lines = BufReader::new(parent_read).lines();
        let first: Event =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(matches!(first, Event::Tick { seq: 0, .. }));
        // The parent's end of the stream: the worker winds down and says so.
        parent_write.shutdown().await.unwrap();
        drop(parent_write);
        let last: Event = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(matches!(last, Event::Done { .. }));
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_malformed_assignment_is_an_error() {
        let (mut parent, worker) = tokio::io::duplex(1 << 10);
        let (r, w) = tokio::io::split(worker);
        parent.write_all(b"not json\n").await.unwrap();
        let err = serve(r, w, tick_then_done).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("malformed assignment"),
            "{err:#}"
        );
    }
}
