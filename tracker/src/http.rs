//! HTTP surface: the WebSocket upgrade, health, metrics and admin endpoints.
//!
//! Handlers check, call the domain module and map the result. `/metrics` and `/admin/*` go on
//! the admin listener (loopback by default); only a caller of `run` without one (tests) gets
//! them on the main listener. An upgrade is answered here and the socket is then handed, as a
//! plain TCP stream, to a session on the worker thread that accepted it, with the connection
//! slot it took when it was accepted ([`SlotHandle`]).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tracing::{debug, info, warn};

use crate::activity::Watched;
use crate::instance::Instance;
use crate::lifecycle::ConnectionGuard;
use crate::metrics::{Origin, RefuseReason};
use crate::native::Native;
use crate::session::{Protocol, Session};
use crate::viewer::Viewer;
use crate::webtorrent::WebTorrent;
use crate::worker::Worker;
use crate::ws::{WsConn, WsLimits, handshake};
use swarmtrack_protocol::Format;

/// The slot of the connection a request came on, put in each request's extensions by the
/// server: an upgrade takes it for the session.
#[derive(Clone)]
pub struct SlotHandle(Arc<Mutex<Option<ConnectionGuard>>>);

impl SlotHandle {
    /// A handle on `guard`.
    pub fn new(guard: ConnectionGuard) -> Self {
        Self(Arc::new(Mutex::new(Some(guard))))
    }

    /// Takes the slot if it is one of `max_connections` (a reserve slot stays).
    fn take_admitted(&self) -> Option<ConnectionGuard> {
        let mut slot = self.0.lock().ok()?;
        if slot.as_ref().is_some_and(ConnectionGuard::is_admitted) {
            slot.take()
        } else {
            None
        }
    }

    /// True when the connection holds one of `max_connections`.
    fn is_admitted(&self) -> bool {
        self.0
            .lock()
            .ok()
            .is_some_and(|s| s.as_ref().is_some_and(ConnectionGuard::is_admitted))
    }
}

/// The main listener's routes; with `with_admin`, also `/metrics` and `/admin/*`.
pub fn router(instance: Arc<Instance>, with_admin: bool) -> Router {
    let r = Router::new()
        .route("/v1/ws", any(ws_upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    // WebTorrent clients use whatever path their tracker URL has; these two are the
    // conventional ones.
    let r = if instance.config.webtorrent.enabled {
        r.route("/announce", any(webtorrent_upgrade))
            .route("/", any(webtorrent_upgrade))
    } else {
        r
    };
    let r = if with_admin { add_admin(r) } else { r };
    r.with_state(instance)
}

/// The admin listener's routes.
pub fn admin_router(instance: Arc<Instance>) -> Router {
    add_admin(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz)),
    )
    .with_state(instance)
}

fn add_admin(r: Router<Arc<Instance>>) -> Router<Arc<Instance>> {
    r.route("/metrics", get(metrics))
        .route("/admin/drain", post(drain))
}

/// Query parameters of `/v1/ws`; others (such as HAProxy's `swarm` routing key) are ignored.
#[derive(Deserialize)]
struct WsParams {
    /// `json` (default) or `msgpack`: the format of `welcome`, until the client sends a frame.
    format: Option<String>,
    /// `1`: the client is back because a draining instance told it to `reconnect` (counted
    /// apart, so an autoscaler doesn't take moved viewers for new ones); `0` or absent: not.
    reconnect: Option<String>,
}

async fn ws_upgrade(
    State(instance): State<Arc<Instance>>,
    Query(params): Query<WsParams>,
    req: Request,
) -> Response {
    let format = match params.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("msgpack") => Format::MsgPack,
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "format must be json or msgpack\n").into_response();
        }
    };
    let origin = match params.reconnect.as_deref() {
        None | Some("0") => Origin::New,
        Some("1") => Origin::Reconnect,
        Some(_) => return (StatusCode::BAD_REQUEST, "reconnect must be 0 or 1\n").into_response(),
    };
    upgrade(&instance, req, Native::new(format, Viewer::new(origin)))
}

/// `GET /announce` and `GET /`: the WebTorrent tracker protocol.
async fn webtorrent_upgrade(State(instance): State<Arc<Instance>>, req: Request) -> Response {
    // The protocol has no `reconnect`: every WebTorrent viewer counts as new.
    upgrade(&instance, req, WebTorrent::new(Viewer::new(Origin::New)))
}

/// Checks the handshake and admits the client, answers 101, and starts its session once the
/// connection is upgraded.
fn upgrade<P: Protocol>(instance: &Arc<Instance>, mut req: Request, proto: P) -> Response {
    let accept = match handshake::accept(req.method(), req.headers()) {
        Ok(accept) => accept,
        Err(e) => return (e.status(), format!("{e}\n")).into_response(),
    };
    let Some(worker) = Worker::current() else {
        // Only worker threads serve the main listener.
        return (StatusCode::SERVICE_UNAVAILABLE, "not a worker thread\n").into_response();
    };
    let lifecycle = &instance.lifecycle;
    let metrics = &worker.metrics;
    if !origin_allowed(&instance.config.limits.allowed_origins, req.headers()) {
        metrics.refused(RefuseReason::Origin);
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    if lifecycle.is_draining() {
        metrics.refused(RefuseReason::Draining);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: connect to another instance\n",
        )
            .into_response();
    }
    // The slot taken at accept; a reserve slot (past max_connections) may not be upgraded.
    let taken = req
        .extensions()
        .get::<SlotHandle>()
        .and_then(SlotHandle::take_admitted);
    let Some(mut guard) = taken else {
        metrics.refused(RefuseReason::Full);
        return (StatusCode::SERVICE_UNAVAILABLE, "at max connections\n").into_response();
    };
    guard.upgrade();
    // Held from now on so the tracker knows a session is coming even before the upgrade ends.
    let tracked = lifecycle.sessions.token();
    let on_upgrade = hyper::upgrade::on(&mut req);
    let limits = WsLimits {
        max_message: instance.config.limits.max_frame_bytes,
        max_unsent: instance.config.websocket.max_unsent_bytes,
    };
    tokio::task::spawn_local(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let parts = match upgraded.downcast::<TokioIo<Watched>>() {
            Ok(parts) => parts,
            Err(_) => {
                warn!("an upgraded connection is not a TCP stream; closed");
                return;
            }
        };
        let ws = WsConn::new(parts.io.into_inner().into_inner(), parts.read_buf, limits);
        Session::new(worker, ws, proto, guard, tracked).run().await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    if allowed.is_empty() {
        return true;
    }
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(instance): State<Arc<Instance>>, req: Request) -> Response {
    let l = &instance.lifecycle;
    // On the main listener the check's own connection holds a slot: one of max_connections
    // means a viewer could have had it (ready), the reserve means full.
    let full = match req.extensions().get::<SlotHandle>() {
        Some(slot) => !slot.is_admitted(),
        None => !l.is_ready(),
    };
    if l.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if full {
        (StatusCode::SERVICE_UNAVAILABLE, "at max connections\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(instance): State<Arc<Instance>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        instance.metrics.render(),
    )
        .into_response()
}

/// Query parameters of `POST /admin/drain`.
#[derive(Deserialize)]
struct DrainParams {
    /// Spread this drain's reconnects over this many ms instead of `drain.reconnect_window_ms`
    /// (an autoscaler sizes it to what the other instances can take); at most the drain
    /// deadline less `close_grace_ms`, so every viewer is told in time.
    reconnect_window_ms: Option<u64>,
}

async fn drain(
    State(instance): State<Arc<Instance>>,
    Query(params): Query<DrainParams>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = &instance.config.admin_token else {
        return (
            StatusCode::FORBIDDEN,
            "admin API disabled: set TRACKER_ADMIN_TOKEN\n",
        )
            .into_response();
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // RFC 7235: the scheme is case-insensitive.
        .and_then(|(scheme, token)| {
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
    if !presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.expose().as_bytes())) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "missing or wrong bearer token\n",
        )
            .into_response();
    }
    let drain = &instance.config.drain;
    let longest = drain
        .deadline_secs
        .saturating_mul(1000)
        .saturating_sub(drain.close_grace_ms);
    let window_ms = params
        .reconnect_window_ms
        .map_or(drain.reconnect_window_ms, |w| w.min(longest));
    info!(
        connections = instance.lifecycle.connections(),
        reconnect_window_ms = window_ms,
        "drain requested over the admin API"
    );
    instance.lifecycle.start_drain_within(window_ms);
    (StatusCode::ACCEPTED, "draining\n").into_response()
}

/// Compares without an early exit, so the time taken doesn't reveal the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn origins() {
        let mut h = HeaderMap::new();
        assert!(origin_allowed(&[], &h));
        let allowed = vec!["https://player.example".to_string()];
        assert!(!origin_allowed(&allowed, &h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_allowed(&allowed, &h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://player.example"),
        );
        assert!(origin_allowed(&allowed, &h));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
