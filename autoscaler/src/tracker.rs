//! A tracker's admin API as the autoscaler uses it: `GET /readyz`, `GET /metrics` and
//! `POST /admin/drain` (bearer token), over plain HTTP/1.1 on a private address, one connection
//! per request, each request bounded by a timeout.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Largest `/metrics` body read (a tracker's is about 20 kB).
const MAX_BODY_BYTES: usize = 1 << 20;

/// A failed request to a tracker.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// Connect, send or receive failed.
    #[error("{url}: {why}")]
    Http {
        /// `http://ADDR/PATH`
        url: String,
        /// The cause.
        why: String,
    },
    /// No answer within the timeout.
    #[error("{url}: no answer within {timeout:?}")]
    Timeout {
        /// `http://ADDR/PATH`
        url: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// An answer with an unexpected status.
    #[error("{url}: status {status}")]
    Status {
        /// `http://ADDR/PATH`
        url: String,
        /// The status.
        status: u16,
    },
}

/// The counters and gauges the policy's signals come from, summed over labels. Only what real
/// viewers do counts: not connections that never join, nor frames refused as invalid or over
/// the rate, nor viewers a drain moved here.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrackerFigures {
    /// `tracker_viewers_joined_total{origin="new"}`: arrivals.
    pub joined_new: f64,
    /// `tracker_viewers_joined_total{origin="reconnect"}`: viewers moved here by a drain.
    pub joined_moved: f64,
    /// `tracker_messages_relayed_total` (every kind and path) plus
    /// `tracker_messages_dropped_total` for a viewer's reasons (target gone, not in the swarm,
    /// not keeping up), not `rate_limited` nor `sender_not_in_swarm` (a connection that never
    /// joined: junk): signals handled.
    pub signals: f64,
    /// `tracker_viewers`: open connections that have joined.
    pub viewers: f64,
    /// `tracker_connections`: every connection slot held, viewers or not.
    pub connections: f64,
    /// `tracker_draining`.
    pub draining: bool,
}

/// A client for trackers' admin listeners.
#[derive(Clone, Debug)]
pub struct TrackerClient {
    timeout: Duration,
    token: Option<String>,
}

impl TrackerClient {
    /// Requests bounded by `timeout`; `token` authorises `/admin/drain`.
    pub fn new(timeout: Duration, token: Option<String>) -> Self {
        Self { timeout, token }
    }

    async fn request(
        &self,
        method: Method,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(StatusCode, Bytes), TrackerError> {
        let url = format!("http://{addr}{path}");
        let http = |why: String| TrackerError::Http {
            url: url.clone(),
            why,
        };
        let exchange = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| http(e.to_string()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| http(e.to_string()))?;
            // The connection task ends with the exchange: dropped with this future on timeout.
            let driver = async move {
                let _ = conn.await;
            };
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, addr.to_string());
            if let Some(token) = &self.token {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| http(e.to_string()))?;
            let send = async {
                let resp = sender
                    .send_request(req)
                    .await
                    .map_err(|e| http(e.to_string()))?;
                let status = resp.status();
                let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
                    .collect()
                    .await
                    .map_err(|e| http(e.to_string()))?
                    .to_bytes();
                Ok((status, body))
            };
            tokio::select! {
                r = send => r,
                () = driver => Err(http("connection closed".to_string())),
            }
        };
        timeout(self.timeout, exchange)
            .await
            .map_err(|_| TrackerError::Timeout {
                url: url.clone(),
                timeout: self.timeout,
            })?
    }

    /// Whether `/readyz` answers 200.
    ///
    /// # Errors
    /// The tracker can't be reached.
    pub async fn ready(&self, admin: SocketAddr) -> Result<bool, TrackerError> {
        let (status, _) = self.request(Method::GET, admin, "/readyz").await?;
        Ok(status == StatusCode::OK)
    }

    /// Reads and parses `/metrics`.
    ///
    /// # Errors
    /// The tracker can't be reached or answers other than 200.
    pub async fn figures(&self, admin: SocketAddr) -> Result<TrackerFigures, TrackerError> {
        let (status, body) = self.request(Method::GET, admin, "/metrics").await?;
        if status != StatusCode::OK {
            return Err(TrackerError::Status {
                url: format!("http://{admin}/metrics"),
                status: status.as_u16(),
            });
        }
        Ok(parse_figures(&String::from_utf8_lossy(&body)))
    }

    /// `POST /admin/drain?reconnect_window_ms=N`: the tracker tells its viewers to
    /// `reconnect` spread over `window` and exits when empty or at its deadline. Idempotent
    /// (a drain already started keeps its window).
    ///
    /// # Errors
    /// The tracker can't be reached or refuses (401/403: token).
    pub async fn drain(&self, admin: SocketAddr, window: Duration) -> Result<(), TrackerError> {
        let path = format!("/admin/drain?reconnect_window_ms={}", window.as_millis());
        let (status, _) = self.request(Method::POST, admin, &path).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(TrackerError::Status {
                url: format!("http://{admin}/admin/drain"),
                status: status.as_u16(),
            })
        }
    }
}

/// Sums the samples of the families the signals need from Prometheus text.
pub fn parse_figures(text: &str) -> TrackerFigures {
    let mut f = TrackerFigures::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        match name.trim() {
            "tracker_viewers_joined_total" if labels.contains(r#"origin="reconnect""#) => {
                f.joined_moved += value;
            }
            "tracker_viewers_joined_total" => f.joined_new += value,
            "tracker_messages_relayed_total" => f.signals += value,
            // Refused by the rate limit, or from a connection in no swarm: a flood, not work
            // done for viewers.
            "tracker_messages_dropped_total"
                if !labels.contains(r#"reason="rate_limited""#)
                    && !labels.contains(r#"reason="sender_not_in_swarm""#) =>
            {
                f.signals += value;
            }
            "tracker_viewers" => f.viewers += value,
            "tracker_connections" => f.connections += value,
            "tracker_draining" => f.draining = value > 0.0,
            _ => {}
        }
    }
    f
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn counts_real_viewers_only() {
        let text = r#"# TYPE tracker_connections gauge
tracker_connections 70
tracker_viewers 7
tracker_connections_opened_total 4000
tracker_viewers_joined_total{origin="new"} 40
tracker_viewers_joined_total{origin="reconnect"} 12
tracker_messages_received_total{kind="invalid",format="json"} 100000
tracker_messages_relayed_total{kind="offer",path="local"} 90
tracker_messages_relayed_total{kind="cands",path="remote"} 9
tracker_messages_dropped_total{reason="unknown_peer"} 1
tracker_messages_dropped_total{reason="rate_limited"} 50000
tracker_messages_dropped_total{reason="sender_not_in_swarm"} 7000
tracker_draining 1
garbage
"#;
        let f = parse_figures(text);
        assert_eq!(f.connections, 70.0);
        assert_eq!(f.viewers, 7.0);
        assert_eq!((f.joined_new, f.joined_moved), (40.0, 12.0));
        assert_eq!(f.signals, 100.0);
        assert!(f.draining);
    }
}
