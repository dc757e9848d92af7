//! Item 8, silent drops: the simulator at a fixed rate round-robin over both trackers on one
//! Redis; every signal must be delivered or refused (with an error naming it), none lost.

use std::sync::Arc;

use anyhow::Context;

use super::Checks;
use crate::fleet::Fleet;
use crate::table::Row;
use crate::{LOST_MAX, Scale};

pub fn run(f: Arc<Fleet>, s: Scale) -> Checks {
    Box::pin(async move { Row::or_error(8, "silent drops", simulate(&f, s).await) })
}

// The bound is a named threshold (0 today) that the comparison must keep following.
#[allow(clippy::absurd_extreme_comparisons)]
async fn simulate(f: &Fleet, s: Scale) -> anyhow::Result<Vec<Row>> {
    let m0 = f.metrics_all().await?;
    let dir = tempfile::tempdir()?;
    let json = dir.path().join("report.json");
    let urls: Vec<String> = f
        .trackers
        .iter()
        .map(|a| format!("ws://{a}/v1/ws"))
        .collect();
    let rate = s.sim_rate.to_string();
    let duration = format!("{}s", s.sim_for.as_secs());
    let mut args = vec![
        "run",
        "--rate",
        &rate,
        "--duration",
        &duration,
        "--watch-min",
        "5s",
        "--watch-max",
        "20s",
        "--videos",
        "50",
    ];
    for u in &urls {
        args.extend(["--url", u.as_str()]);
    }
    let json_arg = json.display().to_string();
    args.extend(["--json", &json_arg]);
    // The simulator exits non-zero on a run with problems (losses among them); the report
    // says what happened either way.
    let out = tokio::process::Command::new(&f.simulator)
        .args(&args)
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("running {}", f.simulator.display()))?;
    let text = std::fs::read_to_string(&json).with_context(|| {
        format!(
            "no report from the simulator: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let r: serde_json::Value = serde_json::from_str(&text)?;
    let n = |k: &str| {
        r.pointer(&format!("/accounting/{k}"))
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    let m1 = f.metrics_all().await?;
    let drops = m0.delta(&m1, "tracker_messages_dropped_total", &[])
        + m0.delta(&m1, "tracker_remote_dropped_total", &[])
        + m0.delta(&m1, "tracker_remote_inbound_dropped_total", &[]);
    let why = if n("sent") == 0 {
        let err = String::from_utf8_lossy(&out.stderr);
        format!(
            " (the simulator: {})",
            err.lines().rev().take(3).collect::<Vec<_>>().join(" / ")
        )
    } else {
        String::new()
    };
    Ok(vec![Row::check(
        8,
        "simulator round robin over two trackers",
        format!(
            "{LOST_MAX} lost: sent = delivered + refused ({} arrivals/s for {duration})",
            s.sim_rate
        ),
        format!(
            "{} sent = {} delivered + {} refused + {} lost; tracker drop counters +{drops}{why}",
            n("sent"),
            n("delivered"),
            n("refused"),
            n("lost")
        ),
        n("sent") > 0 && n("lost") <= LOST_MAX,
    )])
}
