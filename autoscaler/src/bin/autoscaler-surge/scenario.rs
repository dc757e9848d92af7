//! The flash crowd, run for real: simulator processes through the front end on a schedule (a
//! baseline of viewers, then the arrival rate climbing step by step to `factor` times it, a
//! plateau, the end of the event), and the autoscaler's `/status` sampled every second until
//! the fleet is back to its minimum.
//!
//! The climb is made of processes, one per step, each adding `base_rate` arrivals a second
//! until the plateau ends, when they all wind down (their viewers leave, as at the end of a
//! live event). The baseline process runs throughout, so the scale-in moves real viewers; it
//! is stopped (SIGINT: it winds down and writes its report) once the fleet is back to its
//! minimum.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;

/// The load and where it goes.
#[derive(Clone, Debug, clap::Args)]
pub struct Scenario {
    /// Viewer URL of the front end (HAProxy), e.g. ws://127.0.0.1:7500/v1/ws.
    #[arg(long)]
    pub front: String,
    /// The autoscaler's status listener, e.g. 127.0.0.1:7504.
    #[arg(long)]
    pub status: SocketAddr,
    /// The simulator binary.
    #[arg(long)]
    pub simulator: PathBuf,
    /// Folder for the simulators' reports and logs, and this run's report and chart.
    #[arg(long)]
    pub out: PathBuf,
    /// New viewers per second before and after the surge.
    #[arg(long, default_value_t = 4.0)]
    pub base_rate: f64,
    /// The arrival rate at the top of the climb, as a multiple of the base rate.
    #[arg(long, default_value_t = 10)]
    pub factor: u32,
    /// Seconds of the base rate before the climb.
    #[arg(long, default_value_t = 90.0)]
    pub baseline_secs: f64,
    /// Seconds the climb takes (in `factor - 1` equal steps).
    #[arg(long, default_value_t = 120.0)]
    pub climb_secs: f64,
    /// Seconds at the top before the event ends.
    #[arg(long, default_value_t = 150.0)]
    pub plateau_secs: f64,
    /// Shortest watch time of a viewer, seconds.
    #[arg(long, default_value_t = 60.0)]
    pub watch_min_secs: f64,
    /// Longest watch time, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub watch_max_secs: f64,
    /// Videos in the simulators' catalogues.
    #[arg(long, default_value_t = 50)]
    pub videos: u32,
    /// Each tracker's `limits.max_connections` (the hard capacity, for the report).
    #[arg(long, default_value_t = 1500)]
    pub max_connections: u32,
    /// Longest wait for the fleet to be back at its minimum after the event, seconds.
    #[arg(long, default_value_t = 900.0)]
    pub settle_timeout_secs: f64,
}

impl Scenario {
    /// When the climb starts, seconds from the start.
    pub fn climb_start(&self) -> f64 {
        self.baseline_secs
    }

    /// When the event ends (the climb's processes stop), seconds from the start.
    pub fn surge_end(&self) -> f64 {
        self.baseline_secs + self.climb_secs + self.plateau_secs
    }

    /// The climb's steps: when each starts, seconds from the start.
    pub fn steps(&self) -> Vec<f64> {
        let n = self.factor.saturating_sub(1).max(1);
        (0..n)
            .map(|k| self.baseline_secs + self.climb_secs * f64::from(k) / f64::from(n))
            .collect()
    }

    /// The arrival rate asked for at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        let steps = self.steps().iter().filter(|&&s| s <= t).count() as f64;
        let surge = if t < self.surge_end() { steps } else { 0.0 };
        self.base_rate * (1.0 + surge)
    }
}

/// One simulator process of the run.
#[derive(Debug)]
pub struct SimRun {
    /// `baseline` or `step-K`.
    pub name: String,
    /// When it started, seconds from the start.
    pub started: f64,
    /// Its JSON report (`None`: it wrote none).
    pub report: Option<Value>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Outcome {
    /// Unix time of the start, seconds.
    pub t0: f64,
    /// Every simulator process.
    pub sims: Vec<SimRun>,
    /// `/status` about every second: (seconds from the start, the snapshot).
    pub samples: Vec<(f64, Value)>,
    /// Every decision seen: (unix time, decision), oldest first.
    pub decisions: Vec<(f64, Value)>,
    /// The autoscaler's events at the end.
    pub events: Vec<Value>,
    /// Seconds from the start when the fleet was back at its minimum (`None`: not in time).
    pub back_to_min: Option<f64>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `GET /status` (blocking, bounded).
pub fn status(addr: SocketAddr) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /status HTTP/1.0\r\nHost: surge\r\n\r\n").ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// A running simulator.
struct Sim {
    name: String,
    started: f64,
    child: Child,
    json: PathBuf,
}

fn spawn(sc: &Scenario, name: &str, duration_secs: f64, started: f64) -> anyhow::Result<Sim> {
    let json = sc.out.join(format!("{name}.json"));
    let log = std::fs::File::create(sc.out.join(format!("{name}.log")))
        .with_context(|| format!("create {name}.log"))?;
    let child = Command::new(&sc.simulator)
        .args(["run", "--url", &sc.front, "--quiet"])
        .args(["--videos", &sc.videos.to_string()])
        .args(["--rate", &sc.base_rate.to_string()])
        .args([
            "--duration",
            &format!("{}ms", (duration_secs * 1000.0) as u64),
        ])
        .args([
            "--watch-min",
            &format!("{}ms", (sc.watch_min_secs * 1000.0) as u64),
        ])
        .args([
            "--watch-max",
            &format!("{}ms", (sc.watch_max_secs * 1000.0) as u64),
        ])
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("log")?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", sc.simulator.display()))?;
    Ok(Sim {
        name: name.to_string(),
        started,
        child,
        json,
    })
}

/// Whether the fleet is at its minimum: that many instances, all serving and UP.
fn at_minimum(s: &Value) -> bool {
    let min = s["min_instances"].as_u64().unwrap_or(1) as usize;
    let Some(instances) = s["instances"].as_array() else {
        return false;
    };
    instances.len() == min
        && instances
            .iter()
            .all(|i| i["phase"] == "serving" && i["haproxy"] == "UP")
}

/// Keeps every decision of `s` not seen yet.
fn collect_decisions(s: &Value, into: &mut Vec<(f64, Value)>) {
    let last = into.last().map_or(f64::MIN, |d| d.0);
    for d in s["decisions"].as_array().into_iter().flatten() {
        if let Some(at) = d[0].as_f64()
            && at > last
        {
            into.push((at, d[1].clone()));
        }
    }
}

/// Runs the scenario: waits for the fleet at its minimum, then the load, sampling `/status`.
///
/// # Errors
/// The autoscaler doesn't answer, or a simulator can't start.
pub fn run(sc: &Scenario) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&sc.out).with_context(|| format!("create {}", sc.out.display()))?;
    let ready_by = Instant::now() + Duration::from_secs(600);
    loop {
        if status(sc.status).is_some_and(|s| at_minimum(&s)) {
            break;
        }
        if Instant::now() > ready_by {
            bail!(
                "the fleet never reached its minimum, all serving (status {})",
                sc.status
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let start = Instant::now();
    let t0 = unix_now();
    let secs = || start.elapsed().as_secs_f64();
    let mut sims = vec![spawn(sc, "baseline", 86_400.0, 0.0)?];
    let mut pending: Vec<(usize, f64)> = sc.steps().into_iter().enumerate().collect();
    pending.reverse();
    let mut samples = Vec::new();
    let mut decisions = Vec::new();
    let mut back_to_min = None;
    let mut next_sample = 0.0;
    loop {
        let t = secs();
        while let Some(&(k, at)) = pending.last() {
            if at > t {
                break;
            }
            pending.pop();
            sims.push(spawn(sc, &format!("step-{k}"), sc.surge_end() - at, at)?);
        }
        if t >= next_sample {
            next_sample += 1.0;
            if let Some(s) = status(sc.status) {
                collect_decisions(&s, &mut decisions);
                let done = t > sc.surge_end() + 10.0 && at_minimum(&s);
                samples.push((t, s));
                if done {
                    back_to_min = Some(t);
                    break;
                }
            }
        }
        if t > sc.surge_end() + sc.settle_timeout_secs {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The baseline viewers leave: Ctrl-C makes the simulator wind down and write its report.
    let _ = Command::new("kill")
        .args(["-INT", &sims[0].child.id().to_string()])
        .status();
    let events = status(sc.status)
        .and_then(|s| s["events"].as_array().cloned())
        .unwrap_or_default();
    let mut out = Vec::new();
    for mut sim in sims {
        let deadline = Instant::now() + Duration::from_secs(120);
        while matches!(sim.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = sim.child.kill();
        let _ = sim.child.wait();
        out.push(SimRun {
            name: sim.name,
            started: sim.started,
            report: read_json(&sim.json),
        });
    }
    Ok(Outcome {
        t0,
        sims: out,
        samples,
        decisions,
        events,
        back_to_min,
    })
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        Scenario {
            front: String::new(),
            status: "127.0.0.1:1"
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 1))),
            simulator: PathBuf::new(),
            out: PathBuf::new(),
            base_rate: 4.0,
            factor: 10,
            baseline_secs: 90.0,
            climb_secs: 120.0,
            plateau_secs: 150.0,
            watch_min_secs: 60.0,
            watch_max_secs: 120.0,
            videos: 50,
            max_connections: 1500,
            settle_timeout_secs: 600.0,
        }
    }

    #[test]
    fn the_rate_climbs_tenfold_in_the_climb_and_drops_at_the_end() {
        let sc = scenario();
        assert_eq!(sc.steps().len(), 9);
        assert_eq!(sc.rate_at(10.0), 4.0);
        assert_eq!(sc.rate_at(90.0), 8.0);
        assert_eq!(sc.rate_at(209.0), 40.0);
        assert_eq!(sc.rate_at(359.0), 40.0);
        assert_eq!(sc.rate_at(361.0), 4.0);
        assert!(sc.steps().iter().all(|&s| (90.0..210.0).contains(&s)));
    }
}
