//! What the autoscaler shows: `/metrics` (its own Prometheus figures), `/status` (JSON: the
//! instances, their phases and signals, the last decisions and actions) and `/` (an HTML page
//! with an inline SVG chart of instance count, connections/sec and messages/sec over the last
//! hour, scale actions marked; no script, no front-end build).
//!
//! The reconcile loop writes a [`Board`] once per tick; handlers only read it. Every history
//! here is bounded.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::config::{Config, TargetsConfig};
use crate::policy::{Decision, Signals};
use crate::provider::Phase;

/// The chart spans this much time.
const CHART_SPAN: Duration = Duration::from_secs(3_600);
/// Most points kept (one per tick; an hour at a 1 s poll).
const MAX_POINTS: usize = 3_600;
/// Most decisions and actions kept for `/status`.
const MAX_EVENTS: usize = 100;

/// One instance as `/status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct InstanceStatus {
    /// Provider id.
    pub id: String,
    /// HAProxy server name.
    pub server: String,
    /// Viewer address.
    pub addr: String,
    /// Recorded phase.
    pub phase: Phase,
    /// Whether the process or machine runs.
    pub alive: bool,
    /// `false`: its tracker failed `unhealthy_polls` polls in a row (being replaced).
    pub healthy: bool,
    /// Polls in a row its tracker's `/metrics` failed.
    pub failed_polls: u32,
    /// HAProxy's `status` column, if the server exists.
    pub haproxy: Option<String>,
    /// HAProxy sessions now.
    pub sessions: u64,
    /// Its signals this tick.
    pub signals: Option<Signals>,
}

/// One scale action or lifecycle step.
#[derive(Clone, Debug, Serialize)]
pub struct Event {
    /// Unix time, seconds.
    pub at: f64,
    /// `launch`, `ready`, `drain`, `removed`, `gone`, `re-added`, ...
    pub kind: String,
    /// The instance.
    pub id: String,
    /// Why.
    pub detail: String,
}

/// One point of the chart.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Point {
    /// Unix time, seconds.
    pub at: f64,
    /// Instances counted as capacity.
    pub instances: usize,
    /// Fleet connections per second.
    pub conn_rate: f64,
    /// Fleet messages per second.
    pub msg_rate: f64,
    /// Open viewers.
    pub connections: f64,
    /// Open viewers predicted one horizon ahead.
    pub predicted_connections: f64,
}

/// Everything `/status` answers.
#[derive(Clone, Debug, Serialize)]
pub struct Snapshot {
    /// Fleet name.
    pub fleet: String,
    /// Whether actions are only logged.
    pub dry_run: bool,
    /// `scaling.min_instances`.
    pub min_instances: usize,
    /// `scaling.max_instances`.
    pub max_instances: usize,
    /// The per-instance targets.
    pub targets: TargetsConfig,
    /// Ticks done (successful or not).
    pub ticks: u64,
    /// Ticks that failed to observe.
    pub failed_ticks: u64,
    /// The last tick's error, if it failed.
    pub last_error: Option<String>,
    /// Instances as of the last tick.
    pub instances: Vec<InstanceStatus>,
    /// The last decisions, newest last.
    pub decisions: VecDeque<(f64, Decision)>,
    /// The last actions, newest last.
    pub events: VecDeque<Event>,
    /// Chart points, oldest first.
    pub points: VecDeque<Point>,
}

/// Unix time in seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The shared status, written by the loop and read by the handlers.
#[derive(Clone, Debug)]
pub struct Board(Arc<Mutex<Snapshot>>);

impl Board {
    /// An empty board for the fleet of `config`.
    pub fn new(config: &Config) -> Self {
        Self(Arc::new(Mutex::new(Snapshot {
            fleet: config.fleet.clone(),
            dry_run: config.dry_run,
            min_instances: config.scaling.min_instances,
            max_instances: config.scaling.max_instances,
            targets: config.targets.clone(),
            ticks: 0,
            failed_ticks: 0,
            last_error: None,
            instances: Vec::new(),
            decisions: VecDeque::new(),
            events: VecDeque::new(),
            points: VecDeque::new(),
        })))
    }

    /// Changes the snapshot under the lock (never across an `.await`).
    pub fn update<R>(&self, f: impl FnOnce(&mut Snapshot) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// A copy of the snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.update(|s| s.clone())
    }

    /// Appends an event.
    pub fn event(&self, kind: &str, id: &str, detail: impl Into<String>) {
        let event = Event {
            at: unix_now(),
            kind: kind.to_string(),
            id: id.to_string(),
            detail: detail.into(),
        };
        self.update(|s| {
            s.events.push_back(event);
            while s.events.len() > MAX_EVENTS {
                s.events.pop_front();
            }
        });
    }

    /// Records a tick's decision and chart point.
    pub fn tick(&self, decision: Decision, instances: Vec<InstanceStatus>) {
        let now = unix_now();
        self.update(|s| {
            s.ticks += 1;
            s.last_error = None;
            s.instances = instances;
            s.points.push_back(Point {
                at: now,
                instances: decision.capacity,
                conn_rate: decision.load.conn_rate,
                msg_rate: decision.load.msg_rate,
                connections: decision.load.connections,
                predicted_connections: decision.predicted.connections,
            });
            while s.points.len() > MAX_POINTS
                || s.points
                    .front()
                    .is_some_and(|p| now - p.at > CHART_SPAN.as_secs_f64())
            {
                s.points.pop_front();
            }
            s.decisions.push_back((now, decision));
            while s.decisions.len() > MAX_EVENTS {
                s.decisions.pop_front();
            }
        });
    }

    /// Records a failed tick.
    pub fn failed(&self, error: String) {
        self.update(|s| {
            s.ticks += 1;
            s.failed_ticks += 1;
            s.last_error = Some(error);
        });
    }
}

#[derive(Clone)]
struct AppState {
    board: Board,
    metrics: PrometheusHandle,
}

/// The router of the status listener.
pub fn router(board: Board, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status", get(status))
        .route("/metrics", get(prometheus))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(AppState { board, metrics })
}

// serde_json directly: axum's `json` feature would rebuild axum for the whole workspace.
async fn status(State(app): State<AppState>) -> impl IntoResponse {
    let body = serde_json::to_string(&app.board.snapshot()).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "status not serialisable");
        "{}".to_string()
    });
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn prometheus(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

async fn page(State(app): State<AppState>) -> Html<String> {
    Html(render_page(&app.board.snapshot()))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The status page: a chart and two tables, refreshed by the browser every 5 s.
pub fn render_page(s: &Snapshot) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
         <title>autoscaler: {fleet}</title><style>body{{font:14px sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px}}\
         .k span{{margin-right:1.5em}}</style></head><body>\
         <h1>autoscaler: fleet {fleet}{dry}</h1><p>{ticks} ticks, {failed} failed{err}</p>",
        fleet = escape(&s.fleet),
        dry = if s.dry_run { " (dry run)" } else { "" },
        ticks = s.ticks,
        failed = s.failed_ticks,
        err = s
            .last_error
            .as_ref()
            .map(|e| format!("; last error: {}", escape(e)))
            .unwrap_or_default(),
    );
    html.push_str(&chart(s));
    html.push_str(
        "<h2>Instances</h2><table><tr><th>id</th><th>server</th><th>address</th><th>phase</th>\
         <th>alive</th><th>healthy</th><th>haproxy</th><th>sessions</th><th>new viewers/s</th>\
         <th>moved/s</th><th>signals/s</th><th>viewers</th></tr>",
    );
    for i in &s.instances {
        let sig = |f: fn(&Signals) -> f64| {
            i.signals
                .as_ref()
                .map_or("-".to_string(), |x| format!("{:.1}", f(x)))
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&i.id),
            escape(&i.server),
            escape(&i.addr),
            i.phase.as_str(),
            i.alive,
            if i.healthy {
                "yes".to_string()
            } else {
                format!("no ({} failed polls)", i.failed_polls)
            },
            escape(i.haproxy.as_deref().unwrap_or("-")),
            i.sessions,
            sig(|x| x.conn_rate),
            sig(|x| x.moved_rate),
            sig(|x| x.msg_rate),
            sig(|x| x.connections),
        );
    }
    html.push_str("</table><h2>Actions</h2><table><tr><th>time (UTC)</th><th>action</th><th>instance</th><th>detail</th></tr>");
    for e in s.events.iter().rev() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            clock(e.at),
            escape(&e.kind),
            escape(&e.id),
            escape(&e.detail)
        );
    }
    html.push_str("</table></body></html>");
    html
}

/// `HH:MM:SS` of a unix time, UTC.
fn clock(at: f64) -> String {
    let secs = at as u64 % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The chart: instances (left axis) and conn/s, msg/s (each scaled to its own maximum, given
/// in the key), over the last hour; a vertical line per scale action.
fn chart(s: &Snapshot) -> String {
    const W: f64 = 900.0;
    const H: f64 = 260.0;
    const PAD: f64 = 40.0;
    let now = unix_now();
    // The last hour, or less while the autoscaler has run less: a fresh run fills the chart.
    let t0 = s
        .points
        .front()
        .map_or(now - 60.0, |p| p.at)
        .max(now - CHART_SPAN.as_secs_f64())
        .min(now - 60.0);
    let span = now - t0;
    let x = |at: f64| PAD + (at - t0).max(0.0) / span * (W - 2.0 * PAD);
    let max_inst = s
        .points
        .iter()
        .map(|p| p.instances)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_conn = s.points.iter().map(|p| p.conn_rate).fold(1.0, f64::max);
    let max_msg = s.points.iter().map(|p| p.msg_rate).fold(1.0, f64::max);
    let y = |v: f64, max: f64| H - PAD - v / max * (H - 2.0 * PAD);
    let line = |f: &dyn Fn(&Point) -> f64, max: f64| {
        s.points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.at), y(f(p), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut svg = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{W}' height='{H}' viewBox='0 0 {W} {H}'>\
         <rect x='{PAD}' y='{PAD}' width='{w}' height='{h}' fill='none' stroke='#ccc'/>",
        w = W - 2.0 * PAD,
        h = H - 2.0 * PAD
    );
    for e in s.events.iter().filter(|e| e.at >= t0) {
        let colour = match e.kind.as_str() {
            "launch" => "#2a2",
            "drain" => "#d60",
            _ => continue,
        };
        let _ = write!(
            svg,
            "<line x1='{x:.1}' x2='{x:.1}' y1='{PAD}' y2='{y2}' stroke='{colour}' \
             stroke-dasharray='4 3'><title>{kind} {id}</title></line>",
            x = x(e.at),
            y2 = H - PAD,
            kind = escape(&e.kind),
            id = escape(&e.id)
        );
    }
    let _ = write!(
        svg,
        "<polyline fill='none' stroke='#000' stroke-width='2' points='{}'/>\
         <polyline fill='none' stroke='#27c' points='{}'/>\
         <polyline fill='none' stroke='#c2a' points='{}'/>\
         <text x='4' y='{PAD}'>{max_inst:.0}</text><text x='4' y='{yb}'>0</text>\
         <text x='{PAD}' y='{yt}'>-{ago:.0} min</text><text x='{xr}' y='{yt}'>now</text></svg>",
        line(&|p| p.instances as f64, max_inst),
        line(&|p| p.conn_rate, max_conn),
        line(&|p| p.msg_rate, max_msg),
        yb = H - PAD,
        yt = H - 10.0,
        xr = W - PAD - 20.0,
        ago = (span / 60.0).ceil(),
    );
    let _ = write!(
        svg,
        "<p class=k><span style='color:#000'>&#9644; instances (max {max_inst:.0})</span>\
         <span style='color:#27c'>&#9644; conn/s (max {max_conn:.1})</span>\
         <span style='color:#c2a'>&#9644; msg/s (max {max_msg:.1})</span>\
         <span style='color:#2a2'>&#9482; launch</span><span style='color:#d60'>&#9482; drain</span></p>"
    );
    svg
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::policy::Action;

    #[test]
    fn page_has_chart_and_escapes() {
        let config = Config {
            fleet: "f<1>".into(),
            ..Config::default()
        };
        let board = Board::new(&config);
        let load = Signals {
            conn_rate: 10.0,
            msg_rate: 100.0,
            connections: 5.0,
            moved_rate: 0.0,
        };
        let decision = Decision {
            capacity: 2,
            recommendation: 2,
            stabilized: 2,
            load,
            predicted: load,
            growth: crate::policy::Growth::default(),
            horizon_secs: 95.0,
            headroom: 0.5,
            unhealthy: 0,
            missing_metrics: false,
            action: Action::Hold,
            reason: "within target",
        };
        board.tick(decision.clone(), Vec::new());
        board.tick(decision, Vec::new());
        board.event("launch", "l1", "load above target");
        let html = render_page(&board.snapshot());
        assert!(html.contains("<svg"));
        assert!(html.contains("<polyline"));
        assert!(html.contains("launch l1"));
        assert!(html.contains("f&lt;1&gt;"));
    }
}
