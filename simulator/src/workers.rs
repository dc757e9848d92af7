//! Several simulator processes for one run: the descriptor limit caps one process at about
//! 19,000 connections, so larger runs split their viewers over worker processes.
//!
//! The parent starts `simulator worker` once per worker, writes its [`Spec`] as one JSON line
//! on the worker's stdin, and reads its [`Event`]s as JSON lines from its stdout. Closing the
//! worker's stdin stops it (it then winds down and sends `done`), so a parent that dies takes
//! its workers with it.

use std::process::Stdio;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::controller::FromWorker;
use crate::engine::{self, Event};
use crate::options::Spec;

/// Starts one worker process per spec; their events arrive on `tx`, tagged with the worker.
///
/// # Errors
/// When a process can't be started.
pub fn spawn(
    specs: Vec<Spec>,
    stop: CancellationToken,
    tx: mpsc::UnboundedSender<(usize, FromWorker)>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the simulator's own executable")?;
    for (w, spec) in specs.into_iter().enumerate() {
        let mut child = tokio::process::Command::new(&exe)
            .arg("worker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting worker {w}"))?;
        let mut stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let mut line = serde_json::to_vec(&spec)?;
        line.push(b'\n');
        let tx = tx.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            if let Err(e) = stdin.write_all(&line).await {
                let _ = tx.send((w, FromWorker::Failed(format!("worker {w}: {e}"))));
                return;
            }
            let mut stdin = Some(stdin);
            let mut lines = BufReader::new(stdout).lines();
            let mut done = false;
            loop {
                tokio::select! {
                    line = lines.next_line() => match line {
                        Ok(Some(l)) => match serde_json::from_str::<Event>(&l) {
                            Ok(ev) => {
                                done |= matches!(ev, Event::Done { .. });
                                let _ = tx.send((w, FromWorker::Event(Box::new(ev))));
                            }
                            Err(e) => {
                                let _ = tx.send((w, FromWorker::Failed(format!("worker {w} sent {l:?}: {e}"))));
                            }
                        },
                        Ok(None) | Err(_) => break,
                    },
                    () = stop.cancelled(), if stdin.is_some() => {
                        // EOF on its stdin tells the worker to wind down.
                        stdin = None;
                    }
                }
            }
            let status = child.wait().await;
            if !done {
                let _ = tx.send((
                    w,
                    FromWorker::Failed(format!("worker {w} ended ({status:?}) before finishing")),
                ));
            }
        });
    }
    Ok(())
}

/// The worker side: reads its spec from stdin, runs it, writes events to stdout.
///
/// # Errors
/// A missing or malformed spec, or a closed stdout.
pub async fn worker_main() -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin()).lines();
    let line = input
        .next_line()
        .await?
        .context("expected the worker's spec on stdin")?;
    let spec: Spec = serde_json::from_str(&line).context("malformed worker spec")?;
    let stop = CancellationToken::new();
    {
        let stop = stop.clone();
        tokio::spawn(async move {
            while let Ok(Some(_)) = input.next_line().await {}
            stop.cancel();
        });
    }
    // Ctrl-C reaches the whole process group; the parent decides (it closes our stdin), so a
    // worker must not die of it and lose its figures.
    tokio::spawn(async {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
        }
    });
    let (tx, mut rx) = mpsc::unbounded_channel();
    let engine = tokio::spawn(engine::run(spec, stop, tx));
    let mut out = tokio::io::stdout();
    while let Some(ev) = rx.recv().await {
        let mut line = serde_json::to_vec(&ev)?;
        line.push(b'\n');
        out.write_all(&line).await?;
        out.flush().await?;
    }
    engine.await.context("engine task")??;
    Ok(())
}
