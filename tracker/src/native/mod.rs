//! Native protocol v1 (`GET /v1/ws`): welcome, join/leave, signals relayed by peer id, batches
//! both ways and `reconnect` on drain. docs/ARCHITECTURE.md section 3 is the contract.
//!
//! The rules are functions over a [`Conn`]: what a message does to the connection's swarms,
//! which signal it makes, and which replies it earns. A signal carries its sender's frame and
//! where its fields are in it ([`crate::signal`]); nothing is decoded beyond what the rules
//! check.

mod write;

use std::borrow::Cow;
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tracing::debug;

use crate::metrics::{DropReason, ReceivedKind};
use crate::relay::SendError;
use crate::session::{Conn, Ending, Protocol};
use crate::signal::{CandList, NativeBody, NativePayload, Payload, Signal, SignalKind, Span, Text};
use crate::swarm::{JoinError, JoinRequest};
use crate::viewer::Viewer;
use crate::ws::Message;
use swarmtrack_protocol::{
    CandsIn, Decoded, ErrorCode, Format, Incoming, RawList, ServerMsg, SignalIn, WelcomeLimits,
    decode_json, decode_msgpack,
};

/// A native client's own state.
pub struct Native {
    /// The format replies go out in: the client's last frame's, or `?format=` until then.
    format: Format,
    /// A viewer from its first join.
    viewer: Viewer,
}

impl Native {
    /// A client that gets `welcome` (and replies until it sends a frame) in `format`.
    pub fn new(format: Format, viewer: Viewer) -> Self {
        Self { format, viewer }
    }
}

impl Protocol for Native {
    fn start(&mut self, cx: &mut Conn<'_>) {
        let limits = &cx.config().limits;
        let welcome = ServerMsg::Welcome {
            peer: cx.id,
            instance: cx.instance().id,
            limits: WelcomeLimits {
                want: limits.max_want,
                max_message: u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX),
                rate: limits.messages_per_sec,
                burst: limits.burst,
            },
        };
        write::replies(cx.out(), self.format, vec![welcome]);
    }

    /// A frame's messages from a join on, the join waiting for the directory.
    type Pending = Resume;

    fn on_message(&mut self, cx: &mut Conn<'_>, msg: Message) -> Result<Option<Resume>, Ending> {
        self.format = format_of(&msg);
        let mut replies = Vec::new();
        match on_frame(cx, &msg, 0, &mut replies).map(JoinAt::into_owned) {
            None => {
                self.answer(cx, replies);
                Ok(None)
            }
            // A frame's replies go out together, in one `batch` for a batch.
            Some(join) => Ok(Some(Resume { msg, join, replies })),
        }
    }

    async fn resume(&mut self, cx: &mut Conn<'_>, pending: Resume) -> Result<(), Ending> {
        let Resume {
            msg,
            mut join,
            mut replies,
        } = pending;
        loop {
            replies.extend(join_swarm(cx, &join.swarm, join.want).await);
            // The rest of a batch: decoded again, a cost only frames with a join pay.
            match on_frame(cx, &msg, join.at + 1, &mut replies).map(JoinAt::into_owned) {
                Some(next) => join = next,
                None => break,
            }
        }
        self.answer(cx, replies);
        Ok(())
    }

    fn on_signals(&mut self, cx: &mut Conn<'_>, signals: &mut Vec<Signal>) {
        // Signals this viewer sent that were refused after they left this instance: the same
        // error a refusal here gets.
        let refused: Vec<ServerMsg<'static>> = signals
            .iter()
            .filter_map(|s| match &s.payload {
                Payload::Refused(r) => Some(send_error(r.error, s.kind, &r.sid)),
                _ => None,
            })
            .collect();
        reply(cx, self.format, refused);
        write::signals(cx.out(), self.format, signals);
        let metrics = cx.metrics();
        for s in signals.drain(..) {
            if !matches!(s.payload, Payload::Refused(_)) {
                metrics.relay_seconds(s.received_at.elapsed().as_secs_f64());
            }
        }
    }

    fn on_drain(&mut self, cx: &mut Conn<'_>) -> Duration {
        let drain = &cx.config().drain;
        let window = cx
            .instance()
            .lifecycle
            .reconnect_window_ms(drain.reconnect_window_ms);
        let after_ms = rand::rng().random_range(0..=window);
        write::replies(
            cx.out(),
            self.format,
            vec![ServerMsg::Reconnect { after_ms }],
        );
        Duration::from_millis(after_ms + drain.close_grace_ms)
    }
}

impl Native {
    /// Counts and writes the replies to (part of) a frame.
    fn answer(&mut self, cx: &mut Conn<'_>, replies: Vec<ServerMsg<'static>>) {
        if !cx.swarms.is_empty() {
            // In a swarm after this frame: it joined.
            self.viewer.joined(cx.metrics());
        }
        reply(cx, self.format, replies);
    }
}

/// Writes replies, counting the errors among them.
fn reply(cx: &mut Conn<'_>, format: Format, replies: Vec<ServerMsg<'static>>) {
    for r in &replies {
        if let ServerMsg::Error { code, .. } = r {
            cx.metrics().error_sent(*code);
        }
    }
    write::replies(cx.out(), format, replies);
}

/// A frame's format: text frames are JSON, binary ones MessagePack.
fn format_of(msg: &Message) -> Format {
    match msg {
        Message::Text(_) => Format::Json,
        Message::Binary(_) => Format::MsgPack,
    }
}

/// A join met in a frame: the messages before it are handled, it and those after it wait.
pub struct JoinAt<S> {
    /// Its place in the frame: 0 for a frame of one message, its index in a `batch`.
    at: usize,
    swarm: S,
    want: u32,
}

impl JoinAt<Cow<'_, str>> {
    fn into_owned(self) -> JoinAt<String> {
        JoinAt {
            at: self.at,
            swarm: self.swarm.into_owned(),
            want: self.want,
        }
    }
}

/// A frame whose join waits: [`Native`]'s [`Protocol::Pending`].
pub struct Resume {
    msg: Message,
    join: JoinAt<String>,
    /// To the messages before the join.
    replies: Vec<ServerMsg<'static>>,
}

/// Handles one frame from its message `from` on (0: the whole frame; the rate and the size
/// are checked then): each message in turn, until a join, which is returned to be awaited.
fn on_frame<'m>(
    cx: &mut Conn<'_>,
    msg: &'m Message,
    from: usize,
    replies: &mut Vec<ServerMsg<'static>>,
) -> Option<JoinAt<Cow<'m, str>>> {
    let frame = msg.bytes();
    let format = format_of(msg);
    let metrics = cx.metrics();
    if from == 0 {
        metrics.bytes_received(frame.len() as u64);
        if !cx.take_token() {
            metrics.received(ReceivedKind::Invalid, format);
            rate_limited(cx, None, replies);
            return None;
        }
    }
    let limits = &cx.config().limits;
    if frame.len() > limits.max_message_bytes {
        metrics.received(ReceivedKind::Invalid, format);
        replies.push(error_msg(
            ErrorCode::TooLarge,
            format!(
                "message of {} bytes is over the limit of {}",
                frame.len(),
                limits.max_message_bytes
            ),
            None,
        ));
        return None;
    }
    let decoded = match msg.text() {
        // No string in it is checked again.
        Some(text) => decode_json(text, &limits.decode_limits()),
        None if format == Format::Json => return None,
        None => decode_msgpack(frame, &limits.decode_limits()),
    };
    match decoded {
        Err(e) => {
            metrics.received(ReceivedKind::Invalid, format);
            debug!(error = %e, "refused message");
            replies.push(error_msg(e.code(), e.to_string(), e.reference()));
            None
        }
        // A frame of one message resumes after its join with nothing left.
        Ok(Decoded::One(_)) if from > 0 => None,
        Ok(Decoded::One(msg)) => on_incoming(cx, frame, format, msg, replies)
            .map(|(swarm, want)| JoinAt { at: 0, swarm, want }),
        Ok(Decoded::Batch(msgs)) => {
            // The batch frame took the first token; each further message takes its own.
            for (i, msg) in msgs.into_iter().enumerate().skip(from) {
                if i > 0 && !cx.take_token() {
                    metrics.received(ReceivedKind::Invalid, format);
                    rate_limited(cx, Some("batch"), replies);
                    continue;
                }
                match msg {
                    Ok(msg) => {
                        if let Some((swarm, want)) = on_incoming(cx, frame, format, msg, replies) {
                            return Some(JoinAt { at: i, swarm, want });
                        }
                    }
                    Err(e) => {
                        metrics.received(ReceivedKind::Invalid, format);
                        replies.push(error_msg(e.code(), e.to_string(), e.reference()));
                    }
                }
            }
            None
        }
    }
}

fn rate_limited(
    cx: &mut Conn<'_>,
    reference: Option<&'static str>,
    replies: &mut Vec<ServerMsg<'static>>,
) {
    if cx.rate_refused() {
        replies.push(error_msg(
            ErrorCode::RateLimited,
            "over the message rate; messages were dropped".to_string(),
            reference,
        ));
    }
}

/// One message of a frame, handled now; but a join, which waits for the directory: returned
/// for [`Protocol::resume`].
fn on_incoming<'a>(
    cx: &mut Conn<'_>,
    frame: &Bytes,
    format: Format,
    msg: Incoming<'a>,
    replies: &mut Vec<ServerMsg<'static>>,
) -> Option<(Cow<'a, str>, u32)> {
    let metrics = cx.metrics();
    match msg {
        Incoming::Join { swarm, want } => {
            metrics.received(ReceivedKind::Join, format);
            return Some((swarm, want));
        }
        Incoming::Leave { swarm } => {
            metrics.received(ReceivedKind::Leave, format);
            let instance = cx.instance();
            let _ = instance.membership.leave(cx.swarms, cx.id, &swarm, metrics);
        }
        Incoming::Offer(s) => {
            metrics.received(ReceivedKind::Offer, format);
            replies.extend(signal(cx, frame, SignalKind::Offer, s));
        }
        Incoming::Answer(s) => {
            metrics.received(ReceivedKind::Answer, format);
            replies.extend(signal(cx, frame, SignalKind::Answer, s));
        }
        Incoming::Cands(c) => {
            metrics.received(ReceivedKind::Cands, format);
            replies.extend(cands(cx, frame, c));
        }
        Incoming::Ping => {
            metrics.received(ReceivedKind::Ping, format);
            replies.push(ServerMsg::Pong);
        }
    }
    None
}

/// `join`: the swarm's peers, or why not.
async fn join_swarm(cx: &mut Conn<'_>, swarm: &str, want: u32) -> Option<ServerMsg<'static>> {
    let started = cx.now;
    let instance = cx.instance();
    let metrics = cx.metrics();
    let request = JoinRequest {
        key: swarm,
        want,
        max_swarms: instance.config.limits.max_swarms_per_connection,
        wt: None,
        register_now: false,
    };
    match instance
        .membership
        .join(cx.swarms, cx.id, request, metrics)
        .await
    {
        Ok(joined) => {
            metrics.join_seconds(started.elapsed().as_secs_f64());
            Some(ServerMsg::Peers {
                swarm: Cow::Owned(joined.key.to_string()),
                peers: joined.peers,
            })
        }
        Err(JoinError::SwarmLimit | JoinError::PeerIdTaken) => Some(error_msg(
            ErrorCode::SwarmLimit,
            format!("already in {} swarms, the most allowed", cx.swarms.len()),
            Some("join"),
        )),
    }
}

/// An offer or answer: relayed, or refused with the reason.
fn signal(
    cx: &mut Conn<'_>,
    frame: &Bytes,
    kind: SignalKind,
    s: SignalIn<'_>,
) -> Option<ServerMsg<'static>> {
    let body = NativeBody::Sdp(Text::of(frame, s.m));
    let payload = NativePayload {
        frame: frame.clone(),
        swarm: Text::of(frame, s.swarm_raw),
        sid: Text::of(frame, s.sid_raw),
        body,
    };
    relay(cx, kind, &s.swarm, s.to, &s.sid, payload)
}

/// Candidates: relayed, or refused with the reason.
fn cands(cx: &mut Conn<'_>, frame: &Bytes, c: CandsIn<'_>) -> Option<ServerMsg<'static>> {
    let list = match &c.c {
        RawList::Json(token) => CandList::Json(Span::of(frame, token.as_bytes())),
        RawList::Plain(items) => CandList::Plain(
            items
                .iter()
                .map(|s| Span::of(frame, s.as_bytes()))
                .collect(),
        ),
    };
    let body = NativeBody::Cands {
        list,
        count: u32::try_from(c.count).unwrap_or(u32::MAX),
        end: c.end,
    };
    let payload = NativePayload {
        frame: frame.clone(),
        swarm: Text::of(frame, c.swarm_raw),
        sid: Text::of(frame, c.sid_raw),
        body,
    };
    relay(cx, SignalKind::Cands, &c.swarm, c.to, &c.sid, payload)
}

fn relay(
    cx: &mut Conn<'_>,
    kind: SignalKind,
    swarm: &str,
    to: swarmtrack_protocol::PeerId,
    sid: &str,
    payload: NativePayload,
) -> Option<ServerMsg<'static>> {
    let metrics = cx.metrics();
    let Some(member) = cx.swarms.get(swarm) else {
        metrics.dropped(DropReason::SenderNotInSwarm, 1);
        return Some(signal_error(
            ErrorCode::NotInSwarm,
            "join the swarm before signaling in it",
            kind,
            sid,
        ));
    };
    let signal = Signal {
        kind,
        swarm: member.id,
        from: cx.id,
        to,
        received_at: cx.now,
        payload: Payload::Native(payload),
    };
    match cx.instance().relay.send(signal, metrics) {
        Ok(()) => None,
        Err(e) => Some(send_error(e, kind, sid)),
    }
}

/// The `error` a refused signal's sender gets, here or from another instance.
fn send_error(e: SendError, kind: SignalKind, sid: &str) -> ServerMsg<'static> {
    match e {
        SendError::UnknownPeer | SendError::UnexpectedAnswer => signal_error(
            ErrorCode::UnknownPeer,
            "target peer is gone or not in that swarm",
            kind,
            sid,
        ),
        SendError::Overloaded => signal_error(
            ErrorCode::Overloaded,
            "target peer is not keeping up; the message was dropped",
            kind,
            sid,
        ),
    }
}

fn error_msg(code: ErrorCode, msg: String, reference: Option<&'static str>) -> ServerMsg<'static> {
    ServerMsg::Error {
        code,
        msg: Cow::Owned(msg),
        reference: reference.map(Cow::Borrowed),
        sid: None,
    }
}

/// The refusal of one signal, naming its negotiation so the sender can abandon it.
fn signal_error(
    code: ErrorCode,
    msg: &'static str,
    kind: SignalKind,
    sid: &str,
) -> ServerMsg<'static> {
    ServerMsg::Error {
        code,
        msg: Cow::Borrowed(msg),
        reference: Some(Cow::Borrowed(kind.as_str())),
        sid: Some(Cow::Owned(sid.to_string())),
    }
}
