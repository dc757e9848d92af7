//! How the native mode's measurements read: a step's figures, the verdict on it, the knee, the
//! accounting of every relayed message, the table, the progress line and the plot ([`Native`],
//! the mode as the harness sees it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use plotters::prelude::{BLUE, CYAN, GREEN, MAGENTA, RED};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::measure::{C, L, M};
use super::shared::{Ctx, Spec};
use crate::harness::engine::{self, Event};
use crate::harness::mode::{Mode, ReportOf};
use crate::harness::options::Bounds;
use crate::harness::plan::{Job, Phase};
use crate::harness::plot::{self, Panel};
use crate::harness::report::{Knee, Point, StepReport};
use crate::harness::stats::{Snapshot, Summary, ratio};

/// A step fell short of this share of its target arrival rate: it didn't hold.
const MIN_RATE_SHARE: f64 = 0.9;

/// A native step's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Step {
    /// Viewers asked to arrive per second.
    pub target_conn_rate: f64,
    /// Extra negotiations asked for per second.
    pub target_reneg_rate: f64,
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
    /// Frames sent.
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
}

impl Step {
    /// Errors received, all codes.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A native timeline point's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimePoint {
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

/// Where every relayed message went.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
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

/// The native run's accounting, in the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Where every relayed message went.
    pub accounting: Accounting,
}

/// The knee's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KneeFigures {
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

fn sent(s: &Snapshot) -> u64 {
    s.count(C::SentOffer) + s.count(C::SentAnswer) + s.count(C::SentCands)
}

fn delivered(s: &Snapshot) -> u64 {
    s.count(C::DeliveredOffer) + s.count(C::DeliveredAnswer) + s.count(C::DeliveredCands)
}

fn relay_hist(s: &Snapshot) -> hdrhistogram::Histogram<u64> {
    let mut h = s.hist(L::Offer);
    for l in [L::Answer, L::Cands] {
        let _ = h.add(s.hist(l));
    }
    h
}

/// The native mode.
pub struct Native;

impl Mode for Native {
    type Spec = Spec;
    type Step = Step;
    type Point = TimePoint;
    type Knee = KneeFigures;
    type Totals = Totals;

    const NAME: &'static str = "native";
    const WHOLE: bool = false;

    async fn work(
        job: Job<Spec>,
        stop: CancellationToken,
        events: mpsc::Sender<Event>,
    ) -> anyhow::Result<()> {
        let ctx = Arc::new(Ctx::new(job)?);
        engine::run(Arc::clone(&ctx), &ctx.job, stop, events).await
    }

    fn step(phase: Option<&Phase>, s: &Snapshot) -> Step {
        let secs = s.seconds();
        let sent = sent(s);
        let delivered = delivered(s);
        Step {
            target_conn_rate: phase.map_or(0.0, |p| p.target),
            target_reneg_rate: phase.map_or(0.0, |p| p.extra),
            conn_rate: s.count(C::Connects) as f64 / secs,
            msg_rate: sent as f64 / secs,
            delivered_rate: delivered as f64 / secs,
            viewers_peak: s.connected,
            connects: s.count(C::Connects),
            connect_failures: s.count(C::ConnectFailures),
            connect_failures_by: s.map(M::ConnectFailures),
            joins: s.count(C::Joins),
            sent,
            delivered,
            refused: s.count(C::Refused),
            lost: s.count(C::Lost),
            late: s.count(C::Late),
            misordered: s.count(C::Misordered),
            errors: s.map(M::Errors),
            closes: s.map(M::Closes),
            reconnects: s.count(C::Reconnects),
            frames_out: s.count(C::FramesOut),
            frames_in: s.count(C::FramesIn),
            bytes_out: s.count(C::BytesOut),
            bytes_in: s.count(C::BytesIn),
            connect: Summary::of(&s.hist(L::Connect)),
            join: Summary::of(&s.hist(L::Join)),
            relay: Summary::of(&relay_hist(s)),
            offer: Summary::of(&s.hist(L::Offer)),
            answer: Summary::of(&s.hist(L::Answer)),
            cands: Summary::of(&s.hist(L::Cands)),
            loss_ratio: ratio(s.count(C::Refused) + s.count(C::Lost), sent),
        }
    }

    fn judge(step: &StepReport<Step>, b: &Bounds) -> Vec<String> {
        let s = &step.m;
        let mut why = Vec::new();
        if s.relay.count > 0 && s.relay.p99_ms > b.max_p99_ms {
            why.push(format!(
                "relay p99 {:.1} ms > {:.1} ms",
                s.relay.p99_ms, b.max_p99_ms
            ));
        }
        if s.join.count > 0 && s.join.p99_ms > b.max_p99_ms {
            why.push(format!(
                "join p99 {:.1} ms > {:.1} ms",
                s.join.p99_ms, b.max_p99_ms
            ));
        }
        if s.loss_ratio > b.max_loss {
            why.push(format!(
                "{:.2} % of messages refused or lost ({} refused, {} lost of {})",
                s.loss_ratio * 100.0,
                s.refused,
                s.lost,
                s.sent
            ));
        }
        let errors = s.errors_total();
        if s.frames_out > 0 && errors as f64 / s.frames_out as f64 > b.max_loss {
            why.push(format!("{errors} errors {:?}", s.errors));
        }
        let attempts = s.connects + s.connect_failures;
        if attempts > 0 && s.connect_failures as f64 / attempts as f64 > b.max_loss {
            why.push(format!(
                "{} of {attempts} connection attempts failed {:?}",
                s.connect_failures, s.connect_failures_by
            ));
        }
        // Arrivals are Poisson: over a short step at a low rate, a count 10 % short is chance,
        // so the bound is also at least three standard deviations below the expected count.
        let expected = s.target_conn_rate * step.seconds;
        let floor = (expected * MIN_RATE_SHARE).min(expected - 3.0 * expected.sqrt());
        if s.target_conn_rate > 0.0 && (s.connects as f64) < floor {
            why.push(format!(
                "opened {:.0} connections/s of {:.0} asked",
                s.conn_rate, s.target_conn_rate
            ));
        }
        // What the tracker said is the first clue to why; name it even when under the bound.
        if !why.is_empty() && errors > 0 && !why.iter().any(|w| w.contains(" errors ")) {
            why.push(format!("errors {:?}", s.errors));
        }
        why
    }

    fn knee(step: &StepReport<Step>) -> KneeFigures {
        let s = &step.m;
        KneeFigures {
            conn_rate: s.conn_rate,
            msg_rate: s.msg_rate,
            relay_p99_ms: s.relay.p99_ms,
            join_p99_ms: s.join.p99_ms,
            viewers: s.viewers_peak,
        }
    }

    fn point(s: &Snapshot) -> TimePoint {
        let secs = s.seconds();
        let relay = Summary::of(&relay_hist(s));
        TimePoint {
            conn_rate: s.count(C::Connects) as f64 / secs,
            msg_rate: sent(s) as f64 / secs,
            delivered_rate: delivered(s) as f64 / secs,
            viewers: s.connected,
            join_p99_ms: Summary::of(&s.hist(L::Join)).p99_ms,
            relay_p50_ms: relay.p50_ms,
            relay_p99_ms: relay.p99_ms,
            errors: s.map(M::Errors).values().sum(),
        }
    }

    fn totals(total: &Snapshot) -> (Totals, Vec<String>) {
        let (sent, delivered) = (sent(total), delivered(total));
        let (refused, lost) = (total.count(C::Refused), total.count(C::Lost));
        let accounting = Accounting {
            sent,
            delivered,
            refused,
            lost,
            late: total.count(C::Late),
            balanced: sent == delivered + refused + lost,
        };
        (Totals { accounting }, Vec::new())
    }

    fn header() -> String {
        format!(
            "{:>4} {:>9} {:>9} {:>9} {:>8} {:>9} {:>9} {:>9} {:>7} {:>7}",
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
        )
    }

    fn row(name: &str, s: &StepReport<Step>) -> String {
        let m = &s.m;
        format!(
            "{name:>4} {:>9.0} {:>9.1} {:>9.0} {:>8} {:>7.2}ms {:>7.2}ms {:>7.2}ms {:>7.2} {:>7}",
            m.target_conn_rate,
            m.conn_rate,
            m.msg_rate,
            m.viewers_peak,
            m.join.p99_ms,
            m.relay.p50_ms,
            m.relay.p99_ms,
            m.loss_ratio * 100.0,
            m.errors_total(),
        )
    }

    fn summary(r: &ReportOf<Self>) -> String {
        let mut out = String::new();
        let a = &r.totals.accounting;
        let _ = writeln!(
            out,
            "messages: {} sent = {} delivered + {} refused + {} lost ({} of them late){}",
            a.sent,
            a.delivered,
            a.refused,
            a.lost,
            a.late,
            if a.balanced { "" } else { "  [UNBALANCED]" }
        );
        let t = &r.total.m;
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
        out.push_str("(conn/s* = target arrival rate)\n");
        out
    }

    fn knee_line(k: &Knee<KneeFigures>) -> String {
        let m = &k.m;
        format!(
            "{:.0} connections/s, {:.0} messages/s, p99 relay {:.2} ms, p99 join {:.2} ms, {} viewers{}",
            m.conn_rate,
            m.msg_rate,
            m.relay_p99_ms,
            m.join_p99_ms,
            m.viewers,
            k.tracker_cpu_cores
                .map_or(String::new(), |t| format!(", tracker {t:.2} cores"))
        )
    }

    fn progress(p: &Point<TimePoint>) -> String {
        let m = &p.m;
        format!(
            "{:.0} conn/s | {:.0} msg/s sent, {:.0} delivered | {} viewers | join p99 {:.1} ms | relay p50 {:.1} p99 {:.1} ms | {} errors | sim {:.2} cores{}",
            m.conn_rate,
            m.msg_rate,
            m.delivered_rate,
            m.viewers,
            m.join_p99_ms,
            m.relay_p50_ms,
            m.relay_p99_ms,
            m.errors,
            p.sim_cpu_cores,
            p.tracker_cpu_cores
                .map_or(String::new(), |t| format!(", tracker {t:.2}"))
        )
    }

    fn step_line(s: &StepReport<Step>) -> String {
        let m = &s.m;
        format!(
            "step {}: {:.0} conn/s, {:.0} msg/s, relay p99 {:.2} ms, join p99 {:.2} ms, loss {:.2} %{}: {}",
            s.index,
            m.conn_rate,
            m.msg_rate,
            m.relay.p99_ms,
            m.join.p99_ms,
            m.loss_ratio * 100.0,
            s.tracker_cpu_cores
                .map_or(String::new(), |t| format!(", tracker {t:.2} cores")),
            s.verdict.as_deref().unwrap_or("done")
        )
    }

    fn panels() -> Vec<Panel<'static, Point<TimePoint>>> {
        vec![
            Panel {
                title: "relayed messages per second",
                unit: "msg/s",
                series: vec![
                    ("sent", BLUE, |p: &Point<TimePoint>| p.m.msg_rate),
                    ("delivered", GREEN, |p| p.m.delivered_rate),
                ],
            },
            Panel {
                title: "connections per second, and viewers / 100",
                unit: "per s",
                series: vec![
                    ("connections/s", MAGENTA, |p: &Point<TimePoint>| {
                        p.m.conn_rate
                    }),
                    ("viewers / 100", CYAN, |p| p.m.viewers as f64 / 100.0),
                ],
            },
            Panel {
                title: "latency",
                unit: "ms",
                series: vec![
                    ("relay p50", GREEN, |p: &Point<TimePoint>| p.m.relay_p50_ms),
                    ("relay p99", RED, |p| p.m.relay_p99_ms),
                    ("join p99", BLUE, |p| p.m.join_p99_ms),
                ],
            },
            plot::cpu_panel(),
        ]
    }

    fn title(r: &ReportOf<Self>) -> String {
        match &r.knee {
            Some(k) => format!(
                "swarmtrack simulator {}: knee at step {} ({:.0} conn/s, {:.0} msg/s, relay p99 {:.1} ms)",
                r.mode, k.step, k.m.conn_rate, k.m.msg_rate, k.m.relay_p99_ms
            ),
            None => format!("swarmtrack simulator {}", r.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::stats::Stats;
    use crate::native::measure::SCHEMA;

    const B: Bounds = Bounds {
        max_p99_ms: 50.0,
        max_loss: 0.01,
    };

    fn step(relay_p99: f64, lost: u64) -> StepReport<Step> {
        StepReport {
            seconds: 10.0,
            m: Step {
                target_conn_rate: 100.0,
                conn_rate: 100.0,
                sent: 1000,
                lost,
                loss_ratio: lost as f64 / 1000.0,
                frames_out: 1100,
                connects: 1000,
                relay: Summary {
                    count: 1000,
                    p99_ms: relay_p99,
                    ..Summary::default()
                },
                ..Step::default()
            },
            ..StepReport::default()
        }
    }

    #[test]
    fn verdicts() {
        assert!(Native::judge(&step(5.0, 0), &B).is_empty());
        assert!(Native::judge(&step(80.0, 0), &B)[0].contains("relay p99"));
        assert!(Native::judge(&step(5.0, 50), &B)[0].contains("lost"));
        let mut slow = step(5.0, 0);
        slow.m.conn_rate = 50.0;
        slow.m.connects = 500;
        assert!(Native::judge(&slow, &B)[0].contains("opened 50"));
        let mut errs = step(5.0, 0);
        errs.m.errors.insert("rate_limited".into(), 100);
        assert!(Native::judge(&errs, &B)[0].contains("rate_limited"));
    }

    #[test]
    fn a_snapshot_reads_as_a_step_and_balances() {
        let s = Stats::new(&SCHEMA);
        s.count(C::SentOffer, 3);
        s.count(C::SentCands, 2);
        s.count(C::DeliveredOffer, 3);
        s.count(C::DeliveredCands, 1);
        s.count(C::Refused, 1);
        s.count(C::Connects, 4);
        s.latency(L::Offer, std::time::Duration::from_millis(2));
        s.latency(L::Cands, std::time::Duration::from_millis(4));
        s.bump(M::Errors, "unknown_peer");
        let snap = s.take(std::time::Duration::from_secs(2), 100);
        let phase = Phase {
            target: 2.0,
            extra: 0.0,
            duration_ms: 2000,
        };
        let st = Native::step(Some(&phase), &snap);
        assert_eq!((st.sent, st.delivered, st.refused), (5, 4, 1));
        assert_eq!(st.relay.count, 2);
        assert_eq!(st.conn_rate, 2.0);
        assert_eq!(st.errors_total(), 1);
        let (t, _) = Native::totals(&snap);
        assert!(t.accounting.balanced, "5 sent = 4 delivered + 1 refused");
        let p = Native::point(&snap);
        assert_eq!(p.errors, 1);
        assert_eq!(p.msg_rate, 2.5);
    }
}
