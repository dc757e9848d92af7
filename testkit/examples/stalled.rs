//! `scripts/bench stalled`: stalled receivers flooded with worst-case signals against a running
//! tracker; prints one JSON line (testkit::flood).
//!
//! Usage: stalled --url ws://HOST:PORT/v1/ws --metrics HOST:PORT --pid PID [--receivers 200]
//! [--senders 4] [--per-receiver 100] [--worst sdp|padded] [--max-message 16384]

use testkit::flood::{Flood, Worst, stalled_receivers};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let num = |name: &str, default: usize| -> anyhow::Result<usize> {
        arg(name).map_or(Ok(default), |v| {
            v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
        })
    };
    let url = arg("--url").ok_or_else(|| anyhow::anyhow!("--url is required"))?;
    let metrics = arg("--metrics")
        .ok_or_else(|| anyhow::anyhow!("--metrics is required"))?
        .parse()?;
    let pid: u32 = arg("--pid")
        .ok_or_else(|| anyhow::anyhow!("--pid is required"))?
        .parse()?;
    let worst = match arg("--worst").as_deref() {
        None | Some("sdp") => Worst::Sdp,
        Some("padded") => Worst::Padded,
        Some(other) => anyhow::bail!("--worst {other}: sdp or padded"),
    };
    let flood = Flood {
        receivers: num("--receivers", 200)?,
        senders: num("--senders", 4)?,
        per_receiver: num("--per-receiver", 100)?,
        max_message_bytes: num("--max-message", 16384)?,
        worst,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let r = runtime.block_on(stalled_receivers(&url, metrics, pid, flood));
    println!(
        "{{\"worst\":\"{:?}\",\"receivers\":{},\"rss_before\":{},\"rss_idle\":{},\"rss_flooded\":{},\
         \"per_receiver_bytes\":{},\"sent\":{},\"relayed\":{},\"dropped\":{},\"dropped_bytes\":{},\
         \"closed_slow\":{}}}",
        worst,
        flood.receivers,
        r.rss_before,
        r.rss_idle,
        r.rss_flooded,
        r.per_receiver(flood.receivers),
        r.sent,
        r.relayed,
        r.dropped,
        r.dropped_bytes,
        r.closed_slow
    );
    Ok(())
}
