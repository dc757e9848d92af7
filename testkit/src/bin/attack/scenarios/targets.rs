//! Item 4, invented targets: signals to peers of instances that don't exist must be refused to
//! their sender before anything is queued or published.

use std::sync::Arc;
use std::time::Duration;

use swarmtrack_protocol::{Format, InstanceId, PeerId, ServerMsg};
use testkit::native::offer;

use super::Checks;
use crate::fleet::{Fleet, calls_of};
use crate::net::viewer_from;
use crate::table::Row;
use crate::{INVENTED_PUBLISHES_MAX, INVENTED_REFUSED_MIN, SETUP, Scale};

/// Offers each socket sends at once (under its rate limit's burst of 200, with room for the
/// join and the closing ping).
const PER_SOCKET: usize = 150;

pub fn run(f: Arc<Fleet>, s: Scale) -> Checks {
    Box::pin(async move { Row::or_error(4, "invented targets", invent(&f, s).await) })
}

// The bound is a named threshold (0 today) that the comparison must keep following.
#[allow(clippy::absurd_extreme_comparisons)]
async fn invent(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    let m0 = f.metrics_all().await?;
    let calls0 = f.redis_calls()?;
    let (mut sent, mut refused) = (0, 0);
    for k in 0..s.inventors {
        let mut c = viewer_from(SETUP, f.trackers[0], Format::MsgPack).await?;
        let swarm = format!("atk-invent-{k}");
        c.join(&swarm, 1).await;
        for n in 0..PER_SOCKET {
            // Half to one made-up instance, half to a fresh one each time.
            let instance = if n % 2 == 0 {
                InstanceId(0x0bad_0000 + k as u32)
            } else {
                InstanceId(rand::random())
            };
            let to = PeerId::new(instance, n as u32, rand::random());
            c.send(&offer(&swarm, to, &format!("i{n}"), "v=0")).await;
            sent += 1;
        }
        refused += c
            .sync()
            .await
            .iter()
            .filter(|m| matches!(m, ServerMsg::Error { .. }))
            .count();
        c.close().await;
    }
    // Whatever was queued has been published by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let publishes = calls_of(&calls0, &f.redis_calls()?, "publish");
    let m1 = f.metrics_all().await?;
    let share = refused as f64 / sent as f64;
    Ok(vec![Row::check(
        4,
        "signals to invented instances",
        "every one refused to its sender before it is queued; no Redis publish",
        format!(
            "{refused}/{sent} refused, {publishes} PUBLISH to Redis; {}",
            m0.grown(&m1, &["dropped", "refused"], 3)
        ),
        share >= INVENTED_REFUSED_MIN && publishes <= INVENTED_PUBLISHES_MAX,
    )])
}
