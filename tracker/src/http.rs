//! HTTP surface: the WebSocket upgrade, health, metrics and admin endpoints.
//!
//! Handlers check, call the domain module and map the result. `/metrics` and `/admin/*` go on
//! the admin listener when one is configured, else on the main one.

use axum::Router;
use axum::extract::ws::{OnFailedUpgrade, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tracing::{debug, info};

use serde::Deserialize;

use crate::metrics::{Origin, RefuseReason};
use crate::protocol::Format;
use crate::session::{Native, Session};
use crate::shutdown::ConnectionGuard;
use crate::state::AppState;
use crate::webtorrent::WebTorrent;
use tokio_util::task::task_tracker::TaskTrackerToken;

/// The main listener's routes; with `with_admin`, also `/metrics` and `/admin/*`.
pub fn router(state: AppState, with_admin: bool) -> Router {
    let r = Router::new()
        .route("/v1/ws", any(ws_upgrade))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    // WebTorrent clients use whatever path their tracker URL has; these two are the
    // conventional ones.
    let r = if state.config().webtorrent.enabled {
        r.route("/announce", any(webtorrent_upgrade))
            .route("/", any(webtorrent_upgrade))
    } else {
        r
    };
    let r = if with_admin { add_admin(r) } else { r };
    r.with_state(state)
}

/// The admin listener's routes.
pub fn admin_router(state: AppState) -> Router {
    add_admin(
        Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz)),
    )
    .with_state(state)
}

fn add_admin(r: Router<AppState>) -> Router<AppState> {
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
    State(state): State<AppState>,
    Query(params): Query<WsParams>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
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
    let (guard, token) = match admit(&state, &headers, origin) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    configure(&state, ws)
        // A plain closure returning the session's future, not an async block around it: the
        // task lives as long as the connection, and each async layer adds its captures to it.
        .on_upgrade(move |socket| {
            Session::new(state, socket, Native::new(format), guard, token).run()
        })
}

/// `GET /announce` and `GET /`: the WebTorrent tracker protocol.
async fn webtorrent_upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // The protocol has no `reconnect`: every WebTorrent viewer counts as new.
    let (guard, token) = match admit(&state, &headers, Origin::New) {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal.into_response(),
    };
    configure(&state, ws).on_upgrade(move |socket| {
        Session::new(state, socket, WebTorrent::default(), guard, token).run()
    })
}

/// Admission, the same for every protocol: allowed origin, not draining, a free slot.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    origin: Origin,
) -> Result<(ConnectionGuard, TaskTrackerToken), (StatusCode, &'static str)> {
    let lifecycle = state.lifecycle();
    let metrics = state.metrics();
    if !origin_allowed(&state.config().limits.allowed_origins, headers) {
        metrics.refused(RefuseReason::Origin);
        return Err((StatusCode::FORBIDDEN, "origin not allowed\n"));
    }
    if lifecycle.is_draining() {
        metrics.refused(RefuseReason::Draining);
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "draining: connect to another instance\n",
        ));
    }
    let Some(guard) = lifecycle.try_admit(origin) else {
        metrics.refused(RefuseReason::Full);
        return Err((StatusCode::SERVICE_UNAVAILABLE, "at max connections\n"));
    };
    // Held from now on so the tracker knows a session is coming even before the upgrade ends.
    Ok((guard, lifecycle.sessions.token()))
}

/// The upgrade with this instance's buffer and size limits.
fn configure(state: &AppState, ws: WebSocketUpgrade) -> WebSocketUpgrade<impl OnFailedUpgrade> {
    let c = state.config();
    ws.read_buffer_size(c.websocket.read_buffer_bytes)
        .write_buffer_size(0)
        .max_message_size(c.limits.max_frame_bytes)
        .max_frame_size(c.limits.max_frame_bytes)
        .on_failed_upgrade(|e| debug!(error = %e, "websocket upgrade failed"))
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

async fn readyz(State(state): State<AppState>) -> Response {
    let l = state.lifecycle();
    if l.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !l.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "at max connections\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
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
    State(state): State<AppState>,
    Query(params): Query<DrainParams>,
    headers: HeaderMap,
) -> Response {
    let Some(token) = &state.config().admin_token else {
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
    let drain = &state.config().drain;
    let window_ms = params
        .reconnect_window_ms
        .map_or(drain.reconnect_window_ms, |w| {
            w.min(
                drain
                    .deadline_secs
                    .saturating_mul(1000)
                    .saturating_sub(drain.close_grace_ms),
            )
        });
    info!(
        connections = state.lifecycle().connections(),
        reconnect_window_ms = window_ms,
        "drain requested over the admin API"
    );
    state.lifecycle().start_drain_within(window_ms);
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
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
