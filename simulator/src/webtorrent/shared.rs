//! What the peers of one WebTorrent worker share ([`Ctx`]): the job, the run's tag, the
//! targets, the complete SDP (encoded once), the measurements, the ledger and the wind-down
//! tokens.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};

use super::ledger::Ledger;
use super::measure::{Count, SCHEMA};
use super::options::Spec;
use super::wire::Sdp;
use crate::harness::engine::Winding;
use crate::harness::plan::Job;
use crate::harness::stats::Stats;
use crate::native::payload::Browser;
use crate::target::Target;

/// What every peer shares.
pub struct Ctx {
    /// The job.
    pub job: Job<Spec>,
    /// The tag in every id: the run's (so two runs against one tracker don't mix) plus the
    /// worker's number (so each worker has its own torrents, peers and offers: a swarm lives
    /// in one worker, whose ledger sees both ends of every offer).
    pub tag: u8,
    /// Parsed target URLs.
    pub targets: Vec<Target>,
    /// Measurements.
    pub stats: Stats,
    /// Offers and answers in flight.
    pub ledger: Ledger,
    /// The wind-down: no new requests, offers in flight still answered; then peers close.
    pub winding: Winding,
    /// Connections opened so far (steps only add).
    pub opened: AtomicU32,
    /// Complete (non-trickle) SDP, as simple-peer sends it: Chrome's and Firefox's offer and
    /// answer.
    sdp: [Sdp; 4],
    zipf: Zipf<f64>,
}

impl Ctx {
    /// The shared state of a worker.
    ///
    /// # Errors
    /// A target or a distribution parameter the plan shouldn't have let through.
    pub fn new(job: Job<Spec>) -> anyhow::Result<Self> {
        let plan = &job.spec;
        let targets = plan
            .urls
            .iter()
            .map(|u| Target::parse(u, false))
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(!targets.is_empty(), "no target URL");
        let zipf = Zipf::new(f64::from(plan.torrents), plan.zipf)
            .map_err(|e| anyhow::anyhow!("zipf distribution: {e}"))?;
        let sdp = [
            Sdp::new(
                "offer",
                include_str!("../../../fixtures/chrome-datachannel-offer-complete.sdp"),
            )?,
            Sdp::new(
                "answer",
                include_str!("../../../fixtures/chrome-datachannel-answer-complete.sdp"),
            )?,
            Sdp::new(
                "offer",
                include_str!("../../../fixtures/firefox-datachannel-offer-complete.sdp"),
            )?,
            Sdp::new(
                "answer",
                include_str!("../../../fixtures/firefox-datachannel-answer-complete.sdp"),
            )?,
        ];
        Ok(Self {
            tag: (job.run_seed as u8).wrapping_add(job.worker),
            targets,
            stats: Stats::new(&SCHEMA),
            ledger: Ledger::new(plan.max_in_flight),
            winding: Winding::default(),
            opened: AtomicU32::new(0),
            sdp,
            zipf,
            job,
        })
    }

    /// The mode's settings.
    pub fn plan(&self) -> &Spec {
        &self.job.spec
    }

    /// The shortest time between two requests of a peer.
    pub fn interval(&self) -> Duration {
        if self.plan().request_rate > 0.0 {
            Duration::from_secs_f64(1.0 / self.plan().request_rate)
        } else {
            Duration::ZERO
        }
    }

    /// A torrent (its rank, from 1) drawn by popularity.
    pub fn torrent(&self, rng: &mut StdRng) -> u64 {
        self.zipf.sample(rng) as u64
    }

    /// The offer `browser` sends.
    pub fn offer_sdp(&self, browser: Browser) -> &Sdp {
        &self.sdp[if browser == Browser::Firefox { 2 } else { 0 }]
    }

    /// The answer `browser` sends.
    pub fn answer_sdp(&self, browser: Browser) -> &Sdp {
        &self.sdp[if browser == Browser::Firefox { 3 } else { 1 }]
    }

    /// Settles what was sent before `before`: counts what is lost or undeliverable.
    pub fn settle(&self, before: std::time::Instant) {
        let settled = self.ledger.sweep(before);
        self.stats.count(Count::OffersLost, settled.offers_lost);
        self.stats
            .count(Count::OffersUndeliverable, settled.offers_undeliverable);
        self.stats.count(Count::AnswersLost, settled.answers_lost);
    }
}
