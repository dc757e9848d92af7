//! The fleet under attack, as `scripts/fleet up` left it: its addresses (from `$FLEET_DIR/env`),
//! its processes (`$FLEET_DIR/pids`), and what the scenarios read from it: each tracker's RSS,
//! its /metrics, Redis's command counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use testkit::resp::{Reply, RespConnection};

/// How long one /metrics scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// A running local fleet.
pub struct Fleet {
    /// HAProxy's front end (viewers connect here).
    pub front: SocketAddr,
    /// The trackers' public listeners, t1 first.
    pub trackers: Vec<SocketAddr>,
    /// Their admin listeners (/metrics).
    pub admins: Vec<SocketAddr>,
    /// Their pids.
    pub pids: Vec<u32>,
    /// Redis's port on 127.0.0.1.
    pub redis_port: u16,
    /// `maxconn` of HAProxy's global section: the front end's whole pool.
    pub front_maxconn: u64,
    /// The simulator binary.
    pub simulator: PathBuf,
    /// The tracker binary.
    pub tracker_bin: PathBuf,
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or(rest);
    host.parse().with_context(|| format!("no address in {url}"))
}

impl Fleet {
    /// Reads the fleet `scripts/fleet up` described in `env`.
    ///
    /// # Errors
    /// A missing file or key, or a tracker that isn't running.
    pub fn load(env: &Path, simulator: PathBuf, tracker_bin: PathBuf) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(env).with_context(|| format!("reading {}", env.display()))?;
        let mut vars = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((k, v)) = line.split_once('=') {
                vars.insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
        let var = |k: &str| {
            vars.get(k)
                .cloned()
                .with_context(|| format!("{} has no {k}", env.display()))
        };
        let dir = PathBuf::from(var("FLEET_DIR")?);
        let list = |k: &str| -> anyhow::Result<Vec<SocketAddr>> {
            var(k)?.split_whitespace().map(addr_of).collect()
        };
        let trackers = list("TRACKER_URLS")?;
        let admins = list("TRACKER_ADMIN_URLS")?;
        let redis_port = addr_of(&var("REDIS_URL")?)?.port();
        let pids_text = std::fs::read_to_string(dir.join("pids")).context("the fleet's pids")?;
        let pids = (1..=trackers.len())
            .map(|i| {
                pids_text
                    .lines()
                    .find_map(|l| {
                        let (name, pid) = l.split_once(' ')?;
                        (name == format!("t{i}")).then(|| pid.trim().parse().ok())?
                    })
                    .with_context(|| format!("no pid for tracker t{i}"))
            })
            .collect::<anyhow::Result<Vec<u32>>>()?;
        let cfg = std::fs::read_to_string(dir.join("haproxy.cfg")).context("haproxy.cfg")?;
        let front_maxconn = cfg
            .lines()
            .find_map(|l| l.trim().strip_prefix("maxconn ")?.trim().parse().ok())
            .context("no maxconn in haproxy.cfg")?;
        if trackers.len() < 2 {
            bail!(
                "the attack needs two trackers; the fleet has {}",
                trackers.len()
            );
        }
        Ok(Self {
            front: addr_of(&var("FRONT_URL")?)?,
            trackers,
            admins,
            pids,
            redis_port,
            front_maxconn,
            simulator,
            tracker_bin,
        })
    }

    /// Tracker `i`'s (0-based) resident set, bytes.
    ///
    /// # Errors
    /// The process is gone.
    pub fn rss(&self, i: usize) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pids[i]))
            .with_context(|| format!("tracker t{} is not running", i + 1))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .context("no VmRSS")
    }

    /// Tracker `i`'s /metrics.
    ///
    /// # Errors
    /// The scrape failed.
    pub async fn metrics(&self, i: usize) -> anyhow::Result<Metrics> {
        let (status, body) =
            testkit::http::try_request(self.admins[i], "GET", "/metrics", &[], SCRAPE_TIMEOUT)
                .await?;
        if status != 200 {
            bail!("/metrics of t{}: HTTP {status}", i + 1);
        }
        Ok(Metrics::parse(&body))
    }

    /// Every tracker's /metrics, summed series by series.
    ///
    /// # Errors
    /// A scrape failed.
    pub async fn metrics_all(&self) -> anyhow::Result<Metrics> {
        let mut all = Metrics::default();
        for i in 0..self.trackers.len() {
            all.add(&self.metrics(i).await?);
        }
        Ok(all)
    }

    /// A connection to the fleet's Redis.
    ///
    /// # Errors
    /// Redis is not there.
    pub fn redis(&self) -> anyhow::Result<RespConnection> {
        RespConnection::connect(self.redis_port).context("connecting to the fleet's Redis")
    }

    /// Redis commands executed so far, by command (`INFO commandstats`), `info` itself left
    /// out.
    ///
    /// # Errors
    /// Redis is not there.
    pub fn redis_calls(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let reply = self.redis()?.call(&["INFO", "commandstats"])?;
        let Reply::Bulk(text) = reply else {
            bail!("INFO commandstats: {reply:?}");
        };
        Ok(text
            .lines()
            .filter_map(|l| {
                let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
                (name != "info").then(|| Some((name.to_string(), calls.parse().ok()?)))?
            })
            .collect())
    }
}

/// Redis commands between two `redis_calls`, in all.
pub fn calls_between(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> u64 {
    after
        .iter()
        .map(|(k, v)| v.saturating_sub(before.get(k).copied().unwrap_or(0)))
        .sum()
}

/// Redis commands of one name between two `redis_calls`.
pub fn calls_of(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, cmd: &str) -> u64 {
    let get = |m: &BTreeMap<String, u64>| m.get(cmd).copied().unwrap_or(0);
    get(after).saturating_sub(get(before))
}

/// Prometheus samples by series (`name{labels}`).
#[derive(Debug, Clone, Default)]
pub struct Metrics(BTreeMap<String, f64>);

impl Metrics {
    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_string(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    fn add(&mut self, other: &Metrics) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    /// The sum of the series of family `name` whose labels contain every one of `labels`
    /// (e.g. `reason="rate_limited"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| {
                let family = k.split('{').next().unwrap_or(k);
                family == name && labels.iter().all(|l| k.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// `after - self` of [`Metrics::sum`].
    pub fn delta(&self, after: &Metrics, name: &str, labels: &[&str]) -> f64 {
        after.sum(name, labels) - self.sum(name, labels)
    }

    /// The counters that grew between `self` and `after` whose series mention one of `words`
    /// (a drop, refusal or rejection a fix may name however it likes), largest first, at most
    /// `n`, as `series +delta`.
    pub fn grown(&self, after: &Metrics, words: &[&str], n: usize) -> String {
        let mut grown: Vec<(String, f64)> = after
            .0
            .iter()
            .filter(|(k, _)| k.ends_with('}') || !k.contains('{'))
            .filter(|(k, _)| !k.contains("_bucket") && words.iter().any(|w| k.contains(w)))
            .filter_map(|(k, v)| {
                let d = v - self.0.get(k).copied().unwrap_or(0.0);
                (d > 0.0).then(|| (k.clone(), d))
            })
            .collect();
        grown.sort_by(|a, b| b.1.total_cmp(&a.1));
        if grown.is_empty() {
            return "no drop/refusal counter moved".into();
        }
        grown
            .iter()
            .take(n)
            .map(|(k, d)| format!("{k} +{d}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
