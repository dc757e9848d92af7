//! Item 5, Redis trusted blindly: whoever can PUBLISH into Redis delivers signals to viewers,
//! and whoever can ZADD hands out ghost members. A batch published without the fleet key, a
//! genuine batch with one byte changed, the genuine batch published again `REPLAY_AFTER` later,
//! and a member added by hand must reach nobody.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use swarmtrack_protocol::{Format, InstanceId, PeerId, ServerMsg};
use testkit::native::{Client, join_until_paired, offer};
use testkit::resp::RespConnection;

use super::Checks;
use crate::fleet::Fleet;
use crate::net::viewer_from;
use crate::table::Row;
use crate::{FORGED_WAIT, REPLAY_AFTER, SETUP, Scale};

/// The fleet's `redis.key_prefix` (scripts/fleet keeps the default).
const PREFIX: &str = "st";
const SWARM: &str = "atk-trust";
/// The genuine offer's SDP: short, so the batch goes uncompressed and one byte of it can be
/// found and changed.
const GENUINE_SDP: &str = "genuine-offer-0001";

/// Words of the counters a refusal may be counted in.
const COUNTERS: &[&str] = &[
    "refused",
    "rejected",
    "invalid",
    "replay",
    "unverified",
    "dropped",
    "forged",
];

pub fn run(f: Arc<Fleet>, _: Scale) -> Checks {
    Box::pin(async move { Row::or_error(5, "Redis trusted blindly", trust(&f).await) })
}

/// A batch of the tracker's v1 Redis format (relay/codec) carrying one offer, uncompressed
/// and unsigned: flag byte `0x10`, then MessagePack `[[0, swarm, from, to, sid, sdp]]`.
fn forged_batch(from: PeerId, to: PeerId, sid: &str, sdp: &str) -> Vec<u8> {
    fn str8(out: &mut Vec<u8>, s: &str) {
        out.push(0xd9);
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    fn bin8(out: &mut Vec<u8>, b: &[u8]) {
        out.push(0xc4);
        out.push(b.len() as u8);
        out.extend_from_slice(b);
    }
    let mut out = vec![0x10, 0x91, 0x96, 0x00];
    str8(&mut out, SWARM);
    bin8(&mut out, from.as_bytes());
    bin8(&mut out, to.as_bytes());
    str8(&mut out, sid);
    str8(&mut out, sdp);
    out
}

/// The next offer `c` gets within [`FORGED_WAIT`], by sid and SDP.
async fn offer_within(c: &mut Client) -> Option<(String, String)> {
    let deadline = Instant::now() + FORGED_WAIT;
    loop {
        match tokio::time::timeout_at(deadline.into(), c.recv()).await {
            Ok(ServerMsg::Offer(s)) => return Some((s.sid.into_owned(), s.m.into_owned())),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

fn publish(f: &Fleet, channel: &str, payload: &[u8]) -> anyhow::Result<()> {
    f.redis()?
        .call(&[b"PUBLISH".as_slice(), channel.as_bytes(), payload])
        .context("PUBLISH")?;
    Ok(())
}

async fn trust(f: &Fleet) -> anyhow::Result<Vec<Row>> {
    let m0 = f.metrics_all().await?;
    let mut a = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
    a.join(SWARM, 1).await;
    let mut b = viewer_from(SETUP, f.trackers[1], Format::MsgPack).await?;
    join_until_paired(&mut b, SWARM, a.peer).await;
    let channel = format!("{PREFIX}:relay:{{{}}}", a.instance);

    // Listen on A's channel as any Redis client can, and catch B's genuine batch to A.
    let mut sub = RespConnection::connect(f.redis_port)?;
    sub.call(&["SUBSCRIBE", channel.as_str()])?;
    b.send(&offer(SWARM, a.peer, "genuine", GENUINE_SDP)).await;
    let got = offer_within(&mut a).await;
    if got.as_ref().map(|(sid, _)| sid.as_str()) != Some("genuine") {
        bail!("the genuine offer across instances did not arrive: {got:?}");
    }
    let genuine_at = Instant::now();
    let message = tokio::task::spawn_blocking(move || sub.read_bulks()).await??;
    let genuine = match message.as_slice() {
        [kind, _, payload] if kind == b"message" => payload.clone(),
        other => bail!("expected a message on {channel}, got {} parts", other.len()),
    };

    // 1. Forged: no key, any `from`.
    let from = PeerId::new(b.instance, 4242, 1);
    publish(
        f,
        &channel,
        &forged_batch(from, a.peer, "forged", "forged-offer"),
    )?;
    let forged = offer_within(&mut a).await;

    // 2. Altered: the genuine batch with one byte of the SDP changed (the last byte when the
    // SDP can't be found, e.g. inside a compressed or sealed payload).
    let mut altered = genuine.clone();
    let at = altered
        .windows(GENUINE_SDP.len())
        .position(|w| w == GENUINE_SDP.as_bytes())
        .map_or(altered.len() - 1, |p| p + GENUINE_SDP.len() - 1);
    altered[at] ^= 0x03;
    publish(f, &channel, &altered)?;
    let altered_got = offer_within(&mut a).await;

    // 3. Replayed: the genuine batch again, REPLAY_AFTER after it was first delivered.
    tokio::time::sleep_until((genuine_at + REPLAY_AFTER).into()).await;
    publish(f, &channel, &genuine)?;
    let replayed = offer_within(&mut a).await;

    // 4. A ghost member: a peer of an instance that doesn't exist, added to the swarm by hand.
    let ghost = PeerId::new(InstanceId(0x0bad_beef), 7, 7);
    let until_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() + 60_000;
    let ghost_swarm = "atk-trust-ghost";
    f.redis()?.call(&[
        "ZADD",
        &format!("{PREFIX}:swarm:{{{ghost_swarm}}}"),
        &until_ms.to_string(),
        &ghost.to_string(),
    ])?;
    let mut c = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
    let handed = c.join(ghost_swarm, 16).await;
    let ghost_handed = handed.contains(&ghost);

    let m1 = f.metrics_all().await?;
    let counted = m0.grown(&m1, COUNTERS, 4);
    a.close().await;
    b.close().await;
    c.close().await;
    let shown = |o: &Option<(String, String)>| match o {
        Some((sid, m)) => format!("delivered (sid {sid}, sdp {m:?})"),
        None => format!("not delivered within {FORGED_WAIT:?}"),
    };
    let bound = "refused (never delivered) and counted";
    Ok(vec![
        Row::check(
            5,
            "batch published without the fleet key",
            bound,
            format!("{}; {counted}", shown(&forged)),
            forged.is_none(),
        ),
        Row::check(
            5,
            "genuine batch with one byte changed",
            bound,
            format!("{}; byte {at} of {}", shown(&altered_got), genuine.len()),
            altered_got.is_none(),
        ),
        Row::check(
            5,
            "genuine batch replayed",
            format!("refused when republished {REPLAY_AFTER:?} later"),
            shown(&replayed),
            replayed.is_none(),
        ),
        Row::check(
            5,
            "ghost member ZADDed without the key",
            "never handed out",
            if ghost_handed {
                format!("handed out in a join of {} peers", handed.len())
            } else {
                format!("not handed out ({} peers)", handed.len())
            },
            !ghost_handed,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_batch_is_one_offer_of_the_v1_format() {
        let from = PeerId::new(InstanceId(1), 2, 3);
        let to = PeerId::new(InstanceId(4), 5, 6);
        let b = forged_batch(from, to, "sid", "sdp");
        assert_eq!(&b[..4], &[0x10, 0x91, 0x96, 0x00]);
        assert_eq!(b.len(), 4 + 2 + SWARM.len() + 2 * 18 + 2 + 3 + 2 + 3);
    }
}
