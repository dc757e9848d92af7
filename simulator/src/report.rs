//! The report: per step, over time and in total; as JSON, and as a table for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::options::Phase;
use crate::stats::{Snapshot, Summary};

/// Measurements of one step (or of the whole run), in the units people read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step number, from 0 (the total has the number of steps).
    pub index: usize,
    /// Viewers asked to arrive per second.
    pub target_conn_rate: f64,
    /// Extra negotiations asked for per second.
    pub target_reneg_rate: f64,
    /// Length, seconds.
    pub seconds: f64,
    /// Connections opened per second.
    pub conn_rate: f64,
    /// Relayed messages sent per second.
    pub msg_rate: f64,
    /// Relayed messages delivered per second.
    pub delivered_rate: f64,
    /// Most viewers connected at once.
    pub viewers_peak: u64,
    /// Connections opened.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Failed attempts by cause.
    pub connect_failures_by: BTreeMap<String, u64>,
    /// `join`s sent.
    pub joins: u64,
    /// Relayed messages sent.
    pub sent: u64,
    /// Relayed messages delivered.
    pub delivered: u64,
    /// Relayed messages refused by the tracker with an error naming them.
    pub refused: u64,
    /// Relayed messages neither delivered nor refused within the lost-after bound.
    pub lost: u64,
    /// Messages that arrived after being counted lost.
    pub late: u64,
    /// Messages whose kind didn't match their position (should be 0).
    pub misordered: u64,
    /// `error` messages by code.
    pub errors: BTreeMap<String, u64>,
    /// Closes by the tracker, by code.
    pub closes: BTreeMap<String, u64>,
    /// `reconnect`s followed.
    pub reconnects: u64,
    /// Frames and payload bytes each way.
    pub frames_out: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Connect + upgrade + welcome.
    pub connect: Summary,
    /// join -> peers.
    pub join: Summary,
    /// Relay latency, all kinds.
    pub relay: Summary,
    /// Relay latency of offers.
    pub offer: Summary,
    /// Relay latency of answers.
    pub answer: Summary,
    /// Relay latency of candidates.
    pub cands: Summary,
    /// Share of sent messages refused or lost.
    pub loss_ratio: f64,
    /// CPU the simulator used, in cores.
    pub sim_cpu_cores: f64,
    /// How far the simulator's arrival schedule fell behind at worst, ms.
    pub sim_lag_ms: u64,
    /// For ramp steps: `held`, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl StepReport {
    /// Summarises `s` measured over step `index` of load `phase`.
    pub fn new(index: usize, phase: Option<&Phase>, s: &Snapshot) -> Self {
        let c = &s.counters;
        let secs = (s.wall_ms as f64 / 1000.0).max(1e-3);
        let l = &s.latencies;
        Self {
            index,
            target_conn_rate: phase.map_or(0.0, |p| p.conn_rate),
            target_reneg_rate: phase.map_or(0.0, |p| p.reneg_rate),
            seconds: secs,
            conn_rate: c.connects as f64 / secs,
            msg_rate: c.sent() as f64 / secs,
            delivered_rate: c.delivered() as f64 / secs,
            viewers_peak: s.viewers,
            connects: c.connects,
            connect_failures: c.connect_failures,
            connect_failures_by: s.connect_failures.clone(),
            joins: c.joins,
            sent: c.sent(),
            delivered: c.delivered(),
            refused: c.refused,
            lost: c.lost,
            late: c.late,
            misordered: c.misordered,
            errors: s.errors.clone(),
            closes: s.closes.clone(),
            reconnects: c.reconnects,
            frames_out: c.frames_out,
            frames_in: c.frames_in,
            bytes_out: c.bytes_out,
            bytes_in: c.bytes_in,
            connect: Summary::of(&l.connect.to_hist()),
            join: Summary::of(&l.join.to_hist()),
            relay: Summary::of(&l.relay()),
            offer: Summary::of(&l.offer.to_hist()),
            answer: Summary::of(&l.answer.to_hist()),
            cands: Summary::of(&l.cands.to_hist()),
            loss_ratio: ratio(c.refused + c.lost, c.sent()),
            sim_cpu_cores: s.cpu_ms as f64 / 1000.0 / secs,
            sim_lag_ms: s.lag_ms,
            verdict: None,
        }
    }

    /// Errors received, all codes.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// One point of the timeline (about a second).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the start.
    pub t_s: f64,
    /// The step it belongs to.
    pub step: usize,
    /// Connections opened per second.
    pub conn_rate: f64,
    /// Messages sent per second.
    pub msg_rate: f64,
    /// Messages delivered per second.
    pub delivered_rate: f64,
    /// Viewers connected.
    pub viewers: u64,
    /// p99 join latency, ms.
    pub join_p99_ms: f64,
    /// Median relay latency, ms.
    pub relay_p50_ms: f64,
    /// p99 relay latency, ms.
    pub relay_p99_ms: f64,
    /// Errors received.
    pub errors: u64,
}

impl Point {
    /// A timeline point from one tick.
    pub fn new(t_s: f64, step: usize, s: &Snapshot) -> Self {
        let r = StepReport::new(step, None, s);
        Self {
            t_s,
            step,
            conn_rate: r.conn_rate,
            msg_rate: r.msg_rate,
            delivered_rate: r.delivered_rate,
            viewers: r.viewers_peak,
            join_p99_ms: r.join.p99_ms,
            relay_p50_ms: r.relay.p50_ms,
            relay_p99_ms: r.relay.p99_ms,
            errors: r.errors_total(),
        }
    }
}

/// Where every relayed message went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Accounting {
    /// Sent.
    pub sent: u64,
    /// Delivered.
    pub delivered: u64,
    /// Refused by the tracker with an error naming them.
    pub refused: u64,
    /// Neither: dropped by the tracker or a broken connection, or too late.
    pub lost: u64,
    /// Of the lost, arrived after the lost-after bound.
    pub late: u64,
    /// `sent == delivered + refused + lost`.
    pub balanced: bool,
}

/// The knee of a ramp: the last step that held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knee {
    /// The step.
    pub step: usize,
    /// Connections per second it opened.
    pub conn_rate: f64,
    /// Messages per second it sent.
    pub msg_rate: f64,
    /// Its p99 relay latency, ms.
    pub relay_p99_ms: f64,
    /// Its p99 join latency, ms.
    pub join_p99_ms: f64,
    /// Viewers connected at its peak.
    pub viewers: u64,
}

/// A whole run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// `run` or `ramp`.
    pub mode: String,
    /// Target URLs.
    pub urls: Vec<String>,
    /// Worker processes.
    pub workers: u8,
    /// The settings of the run (the spec of worker 0, rates for the whole run).
    pub settings: serde_json::Value,
    /// Per step (one for `run`).
    pub steps: Vec<StepReport>,
    /// The whole run, wind-down included.
    pub total: StepReport,
    /// About once a second.
    pub timeline: Vec<Point>,
    /// Where every relayed message went.
    pub accounting: Accounting,
    /// For ramps: the last step that held; `None` when even the first failed.
    pub knee: Option<Knee>,
    /// For ramps: why the ramp stopped.
    pub outcome: Option<String>,
    /// Problems of the simulator itself (a worker that failed, a run cut short).
    pub problems: Vec<String>,
}

impl Report {
    /// The table people read at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>4} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>7} {:>7}  verdict",
            "step",
            "conn/s*",
            "conn/s",
            "msg/s",
            "viewers",
            "join p99",
            "relay p50",
            "relay p99",
            "loss %",
            "errors"
        );
        for s in self.steps.iter().chain(std::iter::once(&self.total)) {
            let name = if std::ptr::eq(s, &self.total) {
                "all".to_string()
            } else {
                s.index.to_string()
            };
            let _ = writeln!(
                out,
                "{name:>4} {:>9.0} {:>9.1} {:>9.0} {:>8} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2} {:>7}  {}",
                s.target_conn_rate,
                s.conn_rate,
                s.msg_rate,
                s.viewers_peak,
                s.join.p99_ms,
                s.relay.p50_ms,
                s.relay.p99_ms,
                s.loss_ratio * 100.0,
                s.errors_total(),
                s.verdict.as_deref().unwrap_or("")
            );
        }
        let a = &self.accounting;
        let _ = writeln!(
            out,
            "\nmessages: {} sent = {} delivered + {} refused + {} lost ({} of them late){}",
            a.sent,
            a.delivered,
            a.refused,
            a.lost,
            a.late,
            if a.balanced { "" } else { "  [UNBALANCED]" }
        );
        let t = &self.total;
        let _ = writeln!(
            out,
            "connections: {} opened, {} attempts failed {:?}; {} reconnects followed; closes by tracker {:?}",
            t.connects, t.connect_failures, t.connect_failures_by, t.reconnects, t.closes
        );
        let _ = writeln!(
            out,
            "bytes: {} out, {} in; errors {:?}",
            t.bytes_out, t.bytes_in, t.errors
        );
        let _ = writeln!(
            out,
            "latency (ms) p50/p99/p99.9: join {:.2}/{:.2}/{:.2}  offer {:.2}/{:.2}/{:.2}  answer {:.2}/{:.2}/{:.2}  cands {:.2}/{:.2}/{:.2}",
            t.join.p50_ms,
            t.join.p99_ms,
            t.join.p999_ms,
            t.offer.p50_ms,
            t.offer.p99_ms,
            t.offer.p999_ms,
            t.answer.p50_ms,
            t.answer.p99_ms,
            t.answer.p999_ms,
            t.cands.p50_ms,
            t.cands.p99_ms,
            t.cands.p999_ms,
        );
        if self.mode == "ramp" {
            match &self.knee {
                Some(k) => {
                    let _ = writeln!(
                        out,
                        "knee: step {} — {:.0} connections/s, {:.0} messages/s, p99 relay {:.2} ms, p99 join {:.2} ms, {} viewers",
                        k.step, k.conn_rate, k.msg_rate, k.relay_p99_ms, k.join_p99_ms, k.viewers
                    );
                }
                None => {
                    let _ = writeln!(out, "knee: none (the first step already failed)");
                }
            }
            if let Some(o) = &self.outcome {
                let _ = writeln!(out, "ramp ended: {o}");
            }
        }
        for p in &self.problems {
            let _ = writeln!(out, "problem: {p}");
        }
        out.push_str("(conn/s* = target arrival rate)\n");
        out
    }
}
