//! One pair's setup, and one viewer's closed loop.
//!
//! Setup, swarmtrack: each viewer connects, reads `welcome` (its peer id), and joins the
//! pair's swarm, the second after the first, so each is in the swarm before its partner sends
//! (the tracker checks that the target is in the signal's swarm). Bare relay: each viewer
//! registers an id of the same form (its first frame) and sends one frame to itself; when that
//! comes back the relay has its registration, so no message of the run is lost to a race.
//!
//! The loop: `in_flight` messages out, then one out for each one in; everything already
//! readable is read before one flush, as a browser's event loop would batch its writes.

use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{FutureExt, SinkExt, StreamExt};
use swarmtrack_protocol::{ClientMsg, Format, InstanceId, PeerId, ServerMsg};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::Tally;
use super::frames::{self, Received, Server, Template};
use crate::native::payload::Script;
use crate::native::wire;
use crate::target::{self, Target, Ws};

/// Time allowed for a connection, its handshake and a setup reply.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Loopback source addresses the connections are spread over.
const SOURCES: u8 = 8;

/// A viewer set up: its socket and what it sends its partner.
pub struct Viewer {
    ws: Ws,
    /// Its messages, sent in turn.
    pub cycle: Vec<Template>,
}

/// Sets up pair `pair`: two connected viewers, each knowing the other, with the messages of
/// one side of `script` each.
///
/// # Errors
/// A connection, handshake or setup reply that failed or didn't come in time.
pub async fn pair(
    target: &Target,
    server: Server,
    format: Format,
    pair: usize,
    script: &Script,
) -> anyhow::Result<[Viewer; 2]> {
    let swarm = format!("pair-{pair}");
    let (a, b) = (2 * pair as u64, 2 * pair as u64 + 1);
    let setup = async {
        let ((ws_a, id_a), (ws_b, id_b)) = match server {
            Server::Swarmtrack => (
                join(target, a, format, &swarm).await?,
                join(target, b, format, &swarm).await?,
            ),
            Server::Bare => (register(target, a).await?, register(target, b).await?),
        };
        let offerer = frames::cycle(server, format, &script.offerer, true, &swarm, id_b)
            .map_err(anyhow::Error::msg)?;
        let answerer = frames::cycle(server, format, &script.answerer, false, &swarm, id_a)
            .map_err(anyhow::Error::msg)?;
        Ok([
            Viewer {
                ws: ws_a,
                cycle: offerer,
            },
            Viewer {
                ws: ws_b,
                cycle: answerer,
            },
        ])
    };
    tokio::time::timeout(2 * SETUP_TIMEOUT, setup)
        .await
        .with_context(|| format!("pair {pair}: setup timed out"))?
}

async fn open(target: &Target, n: u64, url: &str) -> anyhow::Result<Ws> {
    target::connect(
        target,
        url,
        target::source_addr(0, n, SOURCES),
        SETUP_TIMEOUT,
    )
    .await
    .with_context(|| format!("viewer {n}: connecting to {url}"))
}

/// A swarmtrack viewer: connected, welcomed, in `swarm`.
async fn join(
    target: &Target,
    n: u64,
    format: Format,
    swarm: &str,
) -> anyhow::Result<(Ws, PeerId)> {
    let mut ws = open(target, n, &target.url_for(swarm)).await?;
    let ServerMsg::Welcome { peer, .. } = next_reply(&mut ws).await? else {
        bail!("viewer {n}: the first message wasn't welcome");
    };
    let join = ClientMsg::Join {
        swarm: swarm.into(),
        want: 1,
    };
    ws.send(wire::control(format, &join).map_err(anyhow::Error::msg)?)
        .await?;
    match next_reply(&mut ws).await? {
        ServerMsg::Peers { .. } => Ok((ws, peer)),
        other => bail!("viewer {n}: join got {other:?}"),
    }
}

/// The next server message, in either format.
async fn next_reply(ws: &mut Ws) -> anyhow::Result<ServerMsg<'static>> {
    loop {
        let frame = tokio::time::timeout(SETUP_TIMEOUT, ws.next())
            .await
            .context("no reply in time")?
            .context("connection closed")??;
        let msg: ServerMsg<'_> = match &frame {
            Message::Text(t) => serde_json::from_str(t.as_str())?,
            Message::Binary(b) => rmp_serde::from_slice(b)?,
            _ => continue,
        };
        return Ok(msg.into_owned());
    }
}

/// A bare-relay viewer: connected, registered under an id of swarmtrack's form.
async fn register(target: &Target, n: u64) -> anyhow::Result<(Ws, PeerId)> {
    let mut ws = open(target, n, target.url()).await?;
    let id = PeerId::new(InstanceId(0), n as u32, rand::random());
    ws.send(Message::Text(id.to_string().into())).await?;
    ws.send(frames::bare_echo(id)).await?;
    loop {
        let frame = tokio::time::timeout(SETUP_TIMEOUT, ws.next())
            .await
            .with_context(|| format!("viewer {n}: the relay didn't echo"))?
            .context("connection closed")??;
        if Received::read(&frame).is_some_and(|r| r.t == "echo") {
            return Ok((ws, id));
        }
    }
}

/// One viewer's closed loop, from `go` until `stop`.
pub async fn relay(
    mut viewer: Viewer,
    in_flight: usize,
    go: CancellationToken,
    stop: CancellationToken,
    tally: Rc<Tally>,
) {
    go.cancelled().await;
    let mut next = 0;
    for _ in 0..in_flight {
        let frame = next_frame(&viewer.cycle, &mut next, &tally);
        if viewer.ws.feed(frame).await.is_err() {
            tally.fault("send_failed");
            return;
        }
    }
    loop {
        if viewer.ws.flush().await.is_err() {
            tally.fault("send_failed");
            return;
        }
        let frame = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            frame = viewer.ws.next() => frame,
        };
        let mut frame = Some(frame);
        // This frame, then every one already readable, before the one flush above.
        while let Some(got) = frame {
            let replies = match got {
                Some(Ok(f)) => read(&f, &tally),
                Some(Err(_)) | None => {
                    tally.fault("connection_lost");
                    return;
                }
            };
            for _ in 0..replies {
                let frame = next_frame(&viewer.cycle, &mut next, &tally);
                if viewer.ws.feed(frame).await.is_err() {
                    tally.fault("send_failed");
                    return;
                }
            }
            frame = viewer.ws.next().now_or_never();
        }
    }
    let _ = viewer.ws.close(None).await;
}

/// The next message of `cycle`, stamped now.
fn next_frame(cycle: &[Template], next: &mut usize, tally: &Tally) -> Message {
    let frame = cycle[*next % cycle.len()].frame(tally.now_us());
    *next = (*next + 1) % cycle.len();
    frame
}

/// Counts what `frame` holds; returns how many messages to send back: one per relayed message,
/// and one per refused message (an `error`), so the messages in flight stay as many.
fn read(frame: &Message, tally: &Tally) -> usize {
    if !matches!(frame, Message::Text(_) | Message::Binary(_)) {
        return 0;
    }
    let Some(got) = Received::read(frame) else {
        tally.fault("unreadable_frame");
        return 0;
    };
    match got.msgs {
        Some(msgs) => msgs.iter().map(|m| one(m, tally)).sum(),
        None => one(&got, tally),
    }
}

fn one(msg: &Received<'_>, tally: &Tally) -> usize {
    match msg.t.as_ref() {
        "offer" | "answer" | "cands" => {
            tally.relayed(msg.sent_us());
            1
        }
        "error" => {
            tally.fault(&format!("error_{}", msg.code.as_deref().unwrap_or("?")));
            1
        }
        other => {
            tally.fault(&format!("unexpected_{other}"));
            0
        }
    }
}
