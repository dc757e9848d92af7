//! The WebTorrent report: per step, over time and in total; step verdicts and the knee; the
//! table people read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::options::{Plan, Step};
use super::ramp;
use super::stats::{Count, Counts, Latency, Snapshot};
use crate::stats::Summary;

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

/// One step (or the whole run).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepReport {
    /// Step number, from 0 (the total has the number of steps).
    pub index: usize,
    /// Connections asked for.
    pub target_connections: u32,
    /// Length, seconds.
    pub seconds: f64,
    /// Most connections open at once.
    pub connections_peak: u64,
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
    /// Every counter.
    pub counts: Counts,
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
    /// CPU the simulator used, in cores.
    pub sim_cpu_cores: f64,
    /// In a ramp: `held`, or why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

/// `a / b`, 0 when `b` is 0.
pub(super) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl StepReport {
    /// Summarises `s`, measured over step `index`.
    pub fn new(index: usize, step: Option<&Step>, s: &Snapshot) -> Self {
        let c = &s.counts;
        let g = |k| c.get(k);
        let secs = (s.wall_ms as f64 / 1000.0).max(1e-3);
        let per_s = |n: u64| n as f64 / secs;
        let requests = g(Count::Announces) + g(Count::Scrapes);
        let deliverable = g(Count::OffersSent)
            - g(Count::OffersUndeliverable).min(g(Count::OffersSent))
            + g(Count::AnswersSent);
        Self {
            index,
            target_connections: step.map_or(0, |s| s.connections),
            seconds: secs,
            connections_peak: s.connections,
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
            announce: Summary::of(s.hists.get(Latency::Announce)),
            offer: Summary::of(s.hists.get(Latency::Offer)),
            answer: Summary::of(s.hists.get(Latency::Answer)),
            connect: Summary::of(s.hists.get(Latency::Connect)),
            counts: *c,
            failures: s.failures.clone(),
            closes: s.closes.clone(),
            connect_failures: s.connect_failures.clone(),
            loss_ratio: ratio(g(Count::OffersLost) + g(Count::AnswersLost), deliverable),
            failure_ratio: ratio(g(Count::Failures), g(Count::FramesOut)),
            timeout_ratio: ratio(g(Count::RequestTimeouts), requests),
            sim_cpu_cores: s.cpu_ms as f64 / 1000.0 / secs,
            verdict: None,
        }
    }

    /// One line for stderr as the step ends.
    pub fn line(&self) -> String {
        format!(
            "step {}: {} connections, {:.0} announces/s, {:.0} relayed/s, p99 announce {:.2} offer {:.2} answer {:.2} ms, loss {:.2} %, failures {:.2} %{}",
            self.index,
            self.target_connections,
            self.announces_per_s,
            self.relayed_per_s,
            self.announce.p99_ms,
            self.offer.p99_ms,
            self.answer.p99_ms,
            self.loss_ratio * 100.0,
            self.failure_ratio * 100.0,
            self.verdict
                .as_deref()
                .map_or(String::new(), |v| format!(": {v}"))
        )
    }
}

/// One point of the timeline (about a second).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Point {
    /// Seconds since the start.
    pub t_s: f64,
    /// The step.
    pub step: usize,
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

impl Point {
    /// A timeline point from one tick.
    pub fn new(t_s: f64, step: usize, s: &Snapshot) -> Self {
        let secs = (s.wall_ms as f64 / 1000.0).max(1e-3);
        let c = &s.counts;
        let p99 = |l| Summary::of(s.hists.get(l)).p99_ms;
        Self {
            t_s,
            step,
            requests_per_s: (c.get(Count::Announces) + c.get(Count::Scrapes)) as f64 / secs,
            relayed_per_s: (c.get(Count::OffersReceived) + c.get(Count::AnswersReceived)) as f64
                / secs,
            connections: s.connections,
            announce_p99_ms: p99(Latency::Announce),
            offer_p99_ms: p99(Latency::Offer),
            answer_p99_ms: p99(Latency::Answer),
            failures: c.get(Count::Failures),
        }
    }
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

/// The knee of a ramp: the last step that held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Knee {
    /// The step.
    pub step: usize,
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

/// A whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `webtorrent run` or `webtorrent ramp`.
    pub mode: String,
    /// The plan.
    pub settings: serde_json::Value,
    /// Per step (one without --ramp).
    pub steps: Vec<StepReport>,
    /// The whole run, wind-down included.
    pub total: StepReport,
    /// About once a second.
    pub timeline: Vec<Point>,
    /// Where the offers went.
    pub offers: Accounting,
    /// Where the answers went.
    pub answers: Accounting,
    /// Counters that should be 0 and aren't: tracker bugs (or simulator ones).
    pub anomalies: BTreeMap<String, u64>,
    /// In a ramp: the last step that held; `None` when even the first failed.
    pub knee: Option<Knee>,
    /// In a ramp: why it stopped.
    pub outcome: Option<String>,
    /// Problems of the simulator itself.
    pub problems: Vec<String>,
}

impl Report {
    /// An empty report of `plan`.
    pub fn new(plan: &Plan) -> Self {
        Self {
            mode: if plan.ramp {
                "webtorrent ramp"
            } else {
                "webtorrent run"
            }
            .into(),
            settings: serde_json::to_value(plan).unwrap_or_default(),
            ..Self::default()
        }
    }

    /// Fills in the totals, the accounting, the anomalies and the knee.
    pub fn finish(&mut self, plan: &Plan, total: &Snapshot) {
        self.total = StepReport::new(self.steps.len(), None, total);
        let c = |k| total.counts.get(k);
        self.offers = Accounting::new(
            c(Count::OffersSent),
            c(Count::OffersReceived),
            c(Count::OffersUndeliverable),
            c(Count::OffersLost),
            c(Count::OffersUntracked),
        );
        self.answers = Accounting::new(
            c(Count::AnswersSent),
            c(Count::AnswersReceived),
            0,
            c(Count::AnswersLost),
            c(Count::AnswersUntracked),
        );
        self.anomalies = ANOMALIES
            .iter()
            .filter(|k| c(**k) > 0)
            .map(|k| (k.name().to_string(), c(*k)))
            .collect();
        if !plan.ramp {
            return;
        }
        self.knee = ramp::knee(&self.steps);
        self.outcome = Some(
            match self
                .steps
                .iter()
                .find(|s| s.verdict.as_deref() != Some("held"))
            {
                Some(s) => format!(
                    "step {} failed: {}",
                    s.index,
                    s.verdict.as_deref().unwrap_or("stopped")
                ),
                None if self.steps.len() == plan.steps.len() => {
                    "every step held: raise --max-steps or --connection-step to find the knee"
                        .into()
                }
                None => "stopped before the last step".into(),
            },
        );
    }

    /// The table people read at the end of a run.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>4} {:>7} {:>8} {:>8} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7}  verdict",
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
        );
        for s in self.steps.iter().chain(std::iter::once(&self.total)) {
            let name = if std::ptr::eq(s, &self.total) {
                "all".to_string()
            } else {
                s.index.to_string()
            };
            let _ = writeln!(
                out,
                "{name:>4} {:>7} {:>8.0} {:>8.0} {:>9.0} {:>7.2}ms {:>7.2}ms {:>8.2}ms {:>7.2} {:>7.2}  {}",
                s.connections_peak,
                s.requests_per_s,
                s.announces_per_s,
                s.relayed_per_s,
                s.announce.p99_ms,
                s.offer.p99_ms,
                s.answer.p99_ms,
                s.loss_ratio * 100.0,
                s.failure_ratio * 100.0,
                s.verdict.as_deref().unwrap_or("")
            );
        }
        for (name, a) in [("offers", &self.offers), ("answers", &self.answers)] {
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
        let t = &self.total;
        let c = |k| t.counts.get(k);
        let r = &t.responses_per_s;
        let _ = writeln!(
            out,
            "responses/s: {:.0} announce, {:.0} offer, {:.0} answer, {:.0} scrape, {:.0} failure; {} late, {} request timeouts, {} offers left unanswered",
            r.announce,
            r.offer,
            r.answer,
            r.scrape,
            r.failure,
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
        if !self.anomalies.is_empty() {
            let _ = writeln!(out, "ANOMALIES (should be 0): {:?}", self.anomalies);
        }
        if self.mode.ends_with("ramp") {
            match &self.knee {
                Some(k) => {
                    let _ = writeln!(
                        out,
                        "knee: step {} — {} connections, {:.0} announces/s, {:.0} offers+answers relayed/s, p99 announce {:.2} ms, offer {:.2} ms, answer {:.2} ms",
                        k.step,
                        k.connections,
                        k.announces_per_s,
                        k.relayed_per_s,
                        k.announce_p99_ms,
                        k.offer_p99_ms,
                        k.answer_p99_ms
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
        out
    }
}
