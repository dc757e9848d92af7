//! How the WebTorrent mode's measurements read: a step's figures, the verdict on it, the knee,
//! where every offer and answer went, the table, the progress line and the plot
//! ([`Webtorrent`], the mode as the harness sees it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use plotters::prelude::{BLUE, CYAN, GREEN, MAGENTA, RED};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::measure::{Count, Latency, Reasons};
use super::options::Spec;
use super::shared::Ctx;
use crate::harness::engine::{self, Event};
use crate::harness::mode::{Mode, ReportOf};
use crate::harness::options::Bounds;
use crate::harness::plan::{Job, Phase};
use crate::harness::plot::{self, Panel};
use crate::harness::report::{Knee, Point, StepReport};
use crate::harness::stats::{Snapshot, Summary, ratio};

/// A step reached less than this share of the requests its connections were paced for. Not
/// 0.9 as for native arrivals: each new connection starts at a random point of its first
/// interval (up to a whole interval lost), which costs a short step up to ~15 %.
const MIN_RATE_SHARE: f64 = 0.75;

/// Counters that show a tracker bug whenever they aren't 0.
const ANOMALIES: &[Count] = &[
    Count::Duplicates,
    Count::DuplicateTargets,
    Count::SelfOffers,
    Count::Misrouted,
    Count::UnexpectedResponses,
    Count::Unmatched,
    Count::BadFrames,
];

/// Responses received per second, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Responses {
    /// Announce responses.
    pub announce: f64,
    /// Offers relayed to this simulator's peers.
    pub offer: f64,
    /// Answers relayed back.
    pub answer: f64,
    /// Scrape responses.
    pub scrape: f64,
    /// `failure reason`s.
    pub failure: f64,
}

/// A WebTorrent step's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Step {
    /// Connections asked for.
    pub target_connections: u32,
    /// Most connections open at once.
    pub connections_peak: u64,
    /// Requests per second the connections were paced for (0: unpaced).
    pub paced_per_s: f64,
    /// Requests (announces and scrapes) sent per second.
    pub requests_per_s: f64,
    /// Announces sent per second.
    pub announces_per_s: f64,
    /// Offers and answers received per second: what the tracker relayed.
    pub relayed_per_s: f64,
    /// Responses received per second, by kind.
    pub responses_per_s: Responses,
    /// Announce sent to its response.
    pub announce: Summary,
    /// Offer sent to received by its target.
    pub offer: Summary,
    /// Answer sent to received by the offerer.
    pub answer: Summary,
    /// TCP connect + upgrade.
    pub connect: Summary,
    /// Every counter, by name.
    pub counts: BTreeMap<&'static str, u64>,
    /// `failure reason`s by reason.
    pub failures: BTreeMap<String, u64>,
    /// Closes by the tracker (1012 excepted: those are `reconnects`), by code.
    pub closes: BTreeMap<String, u64>,
    /// Failed connection attempts by cause.
    pub connect_failures: BTreeMap<String, u64>,
    /// Lost offers and answers, of those the tracker could deliver.
    pub loss_ratio: f64,
    /// `failure reason`s, of frames sent.
    pub failure_ratio: f64,
    /// Requests without a response (refused or dropped), of requests.
    pub timeout_ratio: f64,
}

impl Step {
    /// Counter `c`.
    pub fn get(&self, c: Count) -> u64 {
        self.counts.get(c.name()).copied().unwrap_or(0)
    }
}

/// A WebTorrent timeline point's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TimePoint {
    /// Requests sent per second.
    pub requests_per_s: f64,
    /// Offers and answers received per second.
    pub relayed_per_s: f64,
    /// Connections open.
    pub connections: u64,
    /// p99 announce latency, ms.
    pub announce_p99_ms: f64,
    /// p99 offer relay latency, ms.
    pub offer_p99_ms: f64,
    /// p99 answer relay latency, ms.
    pub answer_p99_ms: f64,
    /// Failures received.
    pub failures: u64,
}

/// Where the offers or the answers of the run went.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Accounting {
    /// Sent.
    pub sent: u64,
    /// Received by their target.
    pub received: u64,
    /// Offers the swarm had no other peer for (0 for answers).
    pub undeliverable: u64,
    /// Neither received nor undeliverable within the lost-after bound.
    pub lost: u64,
    /// Sent while the ledger was full.
    pub untracked: u64,
    /// `sent == received + undeliverable + lost + untracked`.
    pub balanced: bool,
}

impl Accounting {
    fn new(sent: u64, received: u64, undeliverable: u64, lost: u64, untracked: u64) -> Self {
        Self {
            sent,
            received,
            undeliverable,
            lost,
            untracked,
            balanced: sent == received + undeliverable + lost + untracked,
        }
    }
}

/// The WebTorrent run's accounting, in the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Where the offers went.
    pub offers: Accounting,
    /// Where the answers went.
    pub answers: Accounting,
    /// Counters that should be 0 and aren't: tracker bugs (or simulator ones).
    pub anomalies: BTreeMap<String, u64>,
}

/// The knee's figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KneeFigures {
    /// Its connections.
    pub connections: u32,
    /// Announces per second.
    pub announces_per_s: f64,
    /// Offers and answers relayed per second.
    pub relayed_per_s: f64,
    /// p99 announce round trip, ms.
    pub announce_p99_ms: f64,
    /// p99 offer relay, ms.
    pub offer_p99_ms: f64,
    /// p99 answer relay, ms.
    pub answer_p99_ms: f64,
}

/// The WebTorrent mode.
pub struct Webtorrent;

impl Mode for Webtorrent {
    type Spec = Spec;
    type Step = Step;
    type Point = TimePoint;
    type Knee = KneeFigures;
    type Totals = Totals;

    const NAME: &'static str = "webtorrent";
    const WHOLE: bool = true;

    async fn work(
        job: Job<Spec>,
        stop: CancellationToken,
        events: mpsc::Sender<Event>,
    ) -> anyhow::Result<()> {
        let ctx = Arc::new(Ctx::new(job)?);
        engine::run(Arc::clone(&ctx), &ctx.job, stop, events).await
    }

    fn step(phase: Option<&Phase>, s: &Snapshot) -> Step {
        let g = |k: Count| s.count(k);
        let secs = s.seconds();
        let per_s = |n: u64| n as f64 / secs;
        let requests = g(Count::Announces) + g(Count::Scrapes);
        let deliverable = g(Count::OffersSent)
            - g(Count::OffersUndeliverable).min(g(Count::OffersSent))
            + g(Count::AnswersSent);
        Step {
            target_connections: phase.map_or(0, |p| p.target.round() as u32),
            connections_peak: s.connected,
            paced_per_s: phase.map_or(0.0, |p| p.extra),
            requests_per_s: per_s(requests),
            announces_per_s: per_s(g(Count::Announces)),
            relayed_per_s: per_s(g(Count::OffersReceived) + g(Count::AnswersReceived)),
            responses_per_s: Responses {
                announce: per_s(g(Count::AnnounceResponses)),
                offer: per_s(g(Count::OffersReceived)),
                answer: per_s(g(Count::AnswersReceived)),
                scrape: per_s(g(Count::ScrapeResponses)),
                failure: per_s(g(Count::Failures)),
            },
            announce: Summary::of(&s.hist(Latency::Announce)),
            offer: Summary::of(&s.hist(Latency::Offer)),
            answer: Summary::of(&s.hist(Latency::Answer)),
            connect: Summary::of(&s.hist(Latency::Connect)),
            counts: Count::NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| (*n, s.count(i)))
                .collect(),
            failures: s.map(Reasons::Failures),
            closes: s.map(Reasons::Closes),
            connect_failures: s.map(Reasons::ConnectFailures),
            loss_ratio: ratio(g(Count::OffersLost) + g(Count::AnswersLost), deliverable),
            failure_ratio: ratio(g(Count::Failures), g(Count::FramesOut)),
            timeout_ratio: ratio(g(Count::RequestTimeouts), requests),
        }
    }

    fn judge(step: &StepReport<Step>, b: &Bounds) -> Vec<String> {
        let s = &step.m;
        let mut why = Vec::new();
        for (name, l) in [
            ("announce", &s.announce),
            ("offer", &s.offer),
            ("answer", &s.answer),
        ] {
            if l.count > 0 && l.p99_ms > b.max_p99_ms {
                why.push(format!(
                    "{name} p99 {:.1} ms > {:.1} ms",
                    l.p99_ms, b.max_p99_ms
                ));
            }
        }
        if s.loss_ratio > b.max_loss {
            why.push(format!(
                "{:.2} % of offers and answers lost",
                s.loss_ratio * 100.0
            ));
        }
        if s.failure_ratio > b.max_loss {
            why.push(format!(
                "{} failures ({:.2} % of frames sent) {:?}",
                s.get(Count::Failures),
                s.failure_ratio * 100.0,
                s.failures
            ));
        }
        if s.timeout_ratio > b.max_loss {
            why.push(format!(
                "{:.2} % of requests got no response",
                s.timeout_ratio * 100.0
            ));
        }
        let attempts = s.get(Count::Connects) + s.get(Count::ConnectFailures);
        if ratio(s.get(Count::ConnectFailures), attempts) > b.max_loss {
            why.push(format!(
                "{} of {attempts} connection attempts failed {:?}",
                s.get(Count::ConnectFailures),
                s.connect_failures
            ));
        }
        // Paced peers: a closed loop that can't keep its pace means responses come too late.
        let paced = s.paced_per_s;
        if paced > 0.0 && s.requests_per_s < paced * MIN_RATE_SHARE {
            why.push(format!(
                "sent {:.0} requests/s of {paced:.0} paced",
                s.requests_per_s
            ));
        }
        why
    }

    fn knee(step: &StepReport<Step>) -> KneeFigures {
        let s = &step.m;
        KneeFigures {
            connections: s.target_connections,
            announces_per_s: s.announces_per_s,
            relayed_per_s: s.relayed_per_s,
            announce_p99_ms: s.announce.p99_ms,
            offer_p99_ms: s.offer.p99_ms,
            answer_p99_ms: s.answer.p99_ms,
        }
    }

    fn point(s: &Snapshot) -> TimePoint {
        let secs = s.seconds();
        let p99 = |l| Summary::of(&s.hist(l)).p99_ms;
        TimePoint {
            requests_per_s: (s.count(Count::Announces) + s.count(Count::Scrapes)) as f64 / secs,
            relayed_per_s: (s.count(Count::OffersReceived) + s.count(Count::AnswersReceived))
                as f64
                / secs,
            connections: s.connected,
            announce_p99_ms: p99(Latency::Announce),
            offer_p99_ms: p99(Latency::Offer),
            answer_p99_ms: p99(Latency::Answer),
            failures: s.count(Count::Failures),
        }
    }

    fn totals(total: &Snapshot) -> (Totals, Vec<String>) {
        let c = |k: Count| total.count(k);
        let totals = Totals {
            offers: Accounting::new(
                c(Count::OffersSent),
                c(Count::OffersReceived),
                c(Count::OffersUndeliverable),
                c(Count::OffersLost),
                c(Count::OffersUntracked),
            ),
            answers: Accounting::new(
                c(Count::AnswersSent),
                c(Count::AnswersReceived),
                0,
                c(Count::AnswersLost),
                c(Count::AnswersUntracked),
            ),
            anomalies: ANOMALIES
                .iter()
                .filter(|k| c(**k) > 0)
                .map(|k| (k.name().to_string(), c(*k)))
                .collect(),
        };
        (totals, Vec::new())
    }

    fn header() -> String {
        format!(
            "{:>4} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7}",
            "step",
            "conns",
            "req/s",
            "ann/s",
            "relayed/s",
            "ann p99",
            "offer p99",
            "answer p99",
            "loss %",
            "fail %"
        )
    }

    fn row(name: &str, s: &StepReport<Step>) -> String {
        let m = &s.m;
        format!(
            "{name:>4} {:>7} {:>8.0} {:>8.0} {:>9.0} {:>7.2}ms {:>7.2}ms {:>8.2}ms {:>7.2} {:>7.2}",
            m.connections_peak,
            m.requests_per_s,
            m.announces_per_s,
            m.relayed_per_s,
            m.announce.p99_ms,
            m.offer.p99_ms,
            m.answer.p99_ms,
            m.loss_ratio * 100.0,
            m.failure_ratio * 100.0,
        )
    }

    fn summary(r: &ReportOf<Self>) -> String {
        let mut out = String::new();
        for (name, a) in [("offers", &r.totals.offers), ("answers", &r.totals.answers)] {
            let _ = writeln!(
                out,
                "{name}: {} sent = {} received + {} undeliverable (swarm too small) + {} lost + {} untracked{}",
                a.sent,
                a.received,
                a.undeliverable,
                a.lost,
                a.untracked,
                if a.balanced { "" } else { "  [UNBALANCED]" }
            );
        }
        let t = &r.total.m;
        let c = |k| t.get(k);
        let rs = &t.responses_per_s;
        let _ = writeln!(
            out,
            "responses/s: {:.0} announce, {:.0} offer, {:.0} answer, {:.0} scrape, {:.0} failure; {} late, {} request timeouts, {} offers left unanswered",
            rs.announce,
            rs.offer,
            rs.answer,
            rs.scrape,
            rs.failure,
            c(Count::Late),
            c(Count::RequestTimeouts),
            c(Count::OffersIgnored)
        );
        let _ = writeln!(out, "failures: {:?}", t.failures);
        let _ = writeln!(
            out,
            "connections: {} opened, {} attempts failed {:?}; {} reconnects after 1012; other closes {:?}",
            c(Count::Connects),
            c(Count::ConnectFailures),
            t.connect_failures,
            c(Count::Reconnects),
            t.closes
        );
        let _ = writeln!(
            out,
            "bytes: {} out in {} frames, {} in in {} frames",
            c(Count::BytesOut),
            c(Count::FramesOut),
            c(Count::BytesIn),
            c(Count::FramesIn)
        );
        let _ = writeln!(
            out,
            "latency (ms) p50/p99/p99.9: announce {:.2}/{:.2}/{:.2}  offer {:.2}/{:.2}/{:.2}  answer {:.2}/{:.2}/{:.2}",
            t.announce.p50_ms,
            t.announce.p99_ms,
            t.announce.p999_ms,
            t.offer.p50_ms,
            t.offer.p99_ms,
            t.offer.p999_ms,
            t.answer.p50_ms,
            t.answer.p99_ms,
            t.answer.p999_ms,
        );
        if !r.totals.anomalies.is_empty() {
            let _ = writeln!(out, "ANOMALIES (should be 0): {:?}", r.totals.anomalies);
        }
        out
    }

    fn knee_line(k: &Knee<KneeFigures>) -> String {
        let m = &k.m;
        format!(
            "{} connections, {:.0} announces/s, {:.0} offers+answers relayed/s, p99 announce {:.2} ms, offer {:.2} ms, answer {:.2} ms{}",
            m.connections,
            m.announces_per_s,
            m.relayed_per_s,
            m.announce_p99_ms,
            m.offer_p99_ms,
            m.answer_p99_ms,
            k.tracker_cpu_cores
                .map_or(String::new(), |t| format!(", tracker {t:.2} cores"))
        )
    }

    fn progress(p: &Point<TimePoint>) -> String {
        let m = &p.m;
        format!(
            "{} connections | {:.0} requests/s | {:.0} relayed/s | p99 announce {:.1} offer {:.1} answer {:.1} ms | {} failures | sim {:.2} cores{}",
            m.connections,
            m.requests_per_s,
            m.relayed_per_s,
            m.announce_p99_ms,
            m.offer_p99_ms,
            m.answer_p99_ms,
            m.failures,
            p.sim_cpu_cores,
            p.tracker_cpu_cores
                .map_or(String::new(), |t| format!(", tracker {t:.2}"))
        )
    }

    fn step_line(s: &StepReport<Step>) -> String {
        let m = &s.m;
        format!(
            "step {}: {} connections, {:.0} announces/s, {:.0} relayed/s, p99 announce {:.2} offer {:.2} answer {:.2} ms, loss {:.2} %, failures {:.2} %{}{}",
            s.index,
            m.target_connections,
            m.announces_per_s,
            m.relayed_per_s,
            m.announce.p99_ms,
            m.offer.p99_ms,
            m.answer.p99_ms,
            m.loss_ratio * 100.0,
            m.failure_ratio * 100.0,
            s.tracker_cpu_cores
                .map_or(String::new(), |t| format!(", tracker {t:.2} cores")),
            s.verdict
                .as_deref()
                .map_or(String::new(), |v| format!(": {v}"))
        )
    }

    fn panels() -> Vec<Panel<'static, Point<TimePoint>>> {
        vec![
            Panel {
                title: "requests sent, and offers + answers relayed, per second",
                unit: "per s",
                series: vec![
                    ("requests/s", BLUE, |p: &Point<TimePoint>| {
                        p.m.requests_per_s
                    }),
                    ("relayed/s", GREEN, |p| p.m.relayed_per_s),
                ],
            },
            Panel {
                title: "connections open",
                unit: "connections",
                series: vec![("connections", MAGENTA, |p: &Point<TimePoint>| {
                    p.m.connections as f64
                })],
            },
            Panel {
                title: "p99 latency",
                unit: "ms",
                series: vec![
                    ("announce p99", BLUE, |p: &Point<TimePoint>| {
                        p.m.announce_p99_ms
                    }),
                    ("offer p99", RED, |p| p.m.offer_p99_ms),
                    ("answer p99", CYAN, |p| p.m.answer_p99_ms),
                ],
            },
            plot::cpu_panel(),
        ]
    }

    fn title(r: &ReportOf<Self>) -> String {
        match &r.knee {
            Some(k) => format!(
                "swarmtrack simulator {}: knee at step {} ({} connections, {:.0} announces/s, {:.0} relayed/s)",
                r.mode, k.step, k.m.connections, k.m.announces_per_s, k.m.relayed_per_s
            ),
            None => format!("swarmtrack simulator {}", r.mode),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::stats::Stats;
    use crate::webtorrent::measure::SCHEMA;

    const B: Bounds = Bounds {
        max_p99_ms: 50.0,
        max_loss: 0.01,
    };

    fn step(p99: f64) -> StepReport<Step> {
        let summary = Summary {
            count: 100,
            p99_ms: p99,
            ..Summary::default()
        };
        StepReport {
            m: Step {
                target_connections: 100,
                paced_per_s: 200.0,
                requests_per_s: 200.0,
                announce: summary,
                offer: summary,
                answer: summary,
                ..Step::default()
            },
            ..StepReport::default()
        }
    }

    #[test]
    fn verdicts_name_every_bound_crossed() {
        assert!(Webtorrent::judge(&step(5.0), &B).is_empty());
        let why = Webtorrent::judge(&step(80.0), &B).join("; ");
        assert!(
            why.contains("announce p99") && why.contains("answer p99"),
            "{why}"
        );
        let mut slow = step(5.0);
        slow.m.requests_per_s = 100.0;
        slow.m.loss_ratio = 0.05;
        let why = Webtorrent::judge(&slow, &B).join("; ");
        assert!(
            why.contains("100 requests/s of 200") && why.contains("lost"),
            "{why}"
        );
    }

    #[test]
    fn accounts_balance_and_anomalies_show() {
        let s = Stats::new(&SCHEMA);
        s.count(Count::OffersSent, 10);
        s.count(Count::OffersReceived, 6);
        s.count(Count::OffersUndeliverable, 3);
        s.count(Count::OffersLost, 1);
        s.count(Count::AnswersSent, 6);
        s.count(Count::AnswersReceived, 6);
        s.count(Count::Misrouted, 2);
        let snap = s.take(std::time::Duration::from_secs(1), 0);
        let (t, _) = Webtorrent::totals(&snap);
        assert!(t.offers.balanced && t.answers.balanced);
        assert_eq!(t.anomalies["misrouted"], 2);
        let st = Webtorrent::step(None, &snap);
        assert_eq!(st.get(Count::OffersSent), 10);
        assert_eq!(st.relayed_per_s, 12.0);
        assert!((st.loss_ratio - 1.0 / 13.0).abs() < 1e-9);
    }
}
