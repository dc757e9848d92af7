//! What the viewers of one process share ([`Ctx`]): the plan, the targets, the captures and
//! their encoded forms, the measurements, the ledger, the registry the renegotiation pacer
//! picks viewers from, and the wind-down tokens.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use indexmap::IndexMap;
use rand::Rng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::ledger::Ledger;
use super::measure::SCHEMA;
use super::payload::{Browser, Payloads, Side};
use super::wire::Encoded;
use crate::harness::engine::Winding;
use crate::harness::plan::Job;
use crate::harness::stats::Stats;
use crate::target::Target;

/// The native mode's settings, as every worker gets them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    /// Target URLs, as given.
    pub urls: Vec<String>,
    /// Videos in the catalogue.
    pub videos: u32,
    /// Zipf exponent.
    pub zipf: f64,
    /// Peers asked for at join.
    pub want: u32,
    /// Watch time bounds, ms.
    pub watch_ms: (u64, u64),
    /// Share of Firefox viewers.
    pub firefox_share: f64,
    /// Minified SDP.
    pub minified: bool,
    /// MessagePack frames.
    pub msgpack: bool,
    /// Source addresses per worker.
    pub sources: u8,
    /// Candidate coalescing window, ms.
    pub cand_window_ms: u64,
}

/// A request from the pacer to a viewer.
#[derive(Debug)]
pub enum Command {
    /// Ask for one more peer and offer to it.
    Renegotiate,
}

/// The connected viewers the pacer can ask for renegotiations.
#[derive(Default)]
pub struct Registry {
    viewers: Mutex<IndexMap<u64, mpsc::Sender<Command>>>,
    next: AtomicU64,
}

/// Removes a viewer from the registry when dropped.
pub struct Registered<'a> {
    registry: &'a Registry,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Ok(mut v) = self.registry.viewers.lock() {
            v.swap_remove(&self.id);
        }
    }
}

impl Registry {
    /// Adds a connected viewer's command queue.
    pub fn register(&self, tx: mpsc::Sender<Command>) -> Registered<'_> {
        let id = self.next.fetch_add(1, Relaxed);
        if let Ok(mut v) = self.viewers.lock() {
            v.insert(id, tx);
        }
        Registered { registry: self, id }
    }

    /// Asks a random viewer to renegotiate; false when none could take it.
    pub fn renegotiate(&self, rng: &mut StdRng) -> bool {
        let Ok(v) = self.viewers.lock() else {
            return false;
        };
        if v.is_empty() {
            return false;
        }
        let i = rng.random_range(0..v.len());
        v.get_index(i)
            .is_some_and(|(_, tx)| tx.try_send(Command::Renegotiate).is_ok())
    }
}

/// What every viewer of a process shares.
pub struct Ctx {
    /// The plan.
    pub job: Job<Spec>,
    /// Parsed target URLs.
    pub targets: Vec<Target>,
    /// The captures to send.
    pub payloads: Payloads,
    /// Each browser's offerer and answerer side, JSON-encoded once (Chrome, Firefox).
    encoded: [[Encoded; 2]; 2],
    /// Measurements.
    pub stats: Stats,
    /// Outstanding relayed messages.
    pub ledger: Ledger,
    /// Viewers that can take a renegotiation.
    pub registry: Registry,
    /// Some step asks for renegotiations: viewers register and listen for them (otherwise
    /// each would poll its command queue on every wake-up for nothing: 2.4 % of the
    /// simulator's CPU in perf).
    pub renegotiating: bool,
    /// The wind-down: viewers start no new negotiation, then leave.
    pub winding: Winding,
    /// Viewers with a message due or a join unanswered.
    pub busy: AtomicI64,
    zipf: Zipf<f64>,
    next_nego: AtomicU64,
    /// The next viewer's number.
    pub next_viewer: AtomicU64,
}

impl Ctx {
    /// Builds the shared state of a process from its job.
    ///
    /// # Errors
    /// A target or a distribution parameter the plan shouldn't have let through.
    pub fn new(job: Job<Spec>) -> anyhow::Result<Self> {
        let spec = &job.spec;
        let targets = spec
            .urls
            .iter()
            .map(|u| Target::parse(u, spec.msgpack))
            .collect::<Result<Vec<_>, _>>()?;
        anyhow::ensure!(!targets.is_empty(), "no target URL");
        let payloads = Payloads::load(Duration::from_millis(spec.cand_window_ms), spec.minified)?;
        let enc = |b| -> anyhow::Result<[Encoded; 2]> {
            let s = payloads.script(b);
            Ok([Encoded::new(&s.offerer)?, Encoded::new(&s.answerer)?])
        };
        let encoded = [enc(Browser::Chrome)?, enc(Browser::Firefox)?];
        let zipf = Zipf::new(f64::from(spec.videos), spec.zipf)
            .map_err(|e| anyhow::anyhow!("zipf distribution: {e}"))?;
        Ok(Self {
            targets,
            payloads,
            encoded,
            stats: Stats::new(&SCHEMA),
            ledger: Ledger::default(),
            registry: Registry::default(),
            renegotiating: job.phases.iter().any(|p| p.extra > 0.0),
            winding: Winding::default(),
            busy: AtomicI64::new(0),
            zipf,
            next_nego: AtomicU64::new(1),
            next_viewer: AtomicU64::new(0),
            job,
        })
    }

    /// The mode's settings.
    pub fn spec(&self) -> &Spec {
        &self.job.spec
    }

    /// A swarm id drawn by popularity. Each worker process has its own copy of the catalogue
    /// (`w<N>` in the id), so a swarm's viewers all live in one process and every message is
    /// accounted for in one ledger; the seed's tag keeps runs apart.
    pub fn swarm_for(&self, rng: &mut StdRng) -> String {
        let rank = self.zipf.sample(rng) as u64;
        format!(
            "sim{:04x}-w{}-v{rank}",
            self.job.seed & 0xffff,
            self.job.worker
        )
    }

    /// A new negotiation number.
    pub fn new_nego(&self) -> u64 {
        self.next_nego.fetch_add(1, Relaxed)
    }

    /// What `browser` sends on one side, with its encoded form.
    pub fn side(&self, browser: Browser, offerer: bool) -> (&Side, &Encoded) {
        let script = self.payloads.script(browser);
        let b = usize::from(browser == Browser::Firefox);
        if offerer {
            (&script.offerer, &self.encoded[b][0])
        } else {
            (&script.answerer, &self.encoded[b][1])
        }
    }
}
