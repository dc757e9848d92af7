//! Plain HTTP/1.1 requests to the servers under test (`/metrics`, `/readyz`, `/admin/drain`,
//! the autoscaler's `/status`), one connection each, through hyper's client (already in the
//! workspace: axum's server side and the autoscaler's client), and reading one sample out of
//! Prometheus text.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http_body_util::BodyExt;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::wait::DEADLINE;

/// One request with an empty body on a new connection; returns the status and the body.
///
/// # Errors
/// Connecting, the exchange or reading the body failed, or took longer than `timeout`.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        // Drives the connection until the response is read; it ends with the request.
        let driver = tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = sender
            .send_request(request.body(String::new()).context("request")?)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.context("body")?;
        driver.abort();
        anyhow::Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} http://{addr}{path}: no answer within {timeout:?}"))?
}

/// One request with an empty body; returns the status and the body.
///
/// # Panics
/// When the request fails or takes longer than [`DEADLINE`].
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    try_request(addr, method, path, headers, DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// [`try_request`] for code without an async runtime (it runs one for the call). Never call it
/// from async code.
///
/// # Errors
/// As [`try_request`].
pub fn request_blocking(
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("a runtime for one request")?
        .block_on(try_request(addr, method, path, &[], timeout))
}

/// One sample's value out of Prometheus text (0 when absent), e.g.
/// `tracker_errors_sent_total{code="too_large"}`; labels must be given in the exporter's order.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_found_by_its_whole_series() {
        let text = "# TYPE a counter\na 3\na_total 4\nb{x=\"1\",y=\"2\"} 5.5\n";
        assert_eq!(metric_value(text, "a"), 3.0);
        assert_eq!(metric_value(text, "a_total"), 4.0);
        assert_eq!(metric_value(text, r#"b{x="1",y="2"}"#), 5.5);
        assert_eq!(metric_value(text, r#"b{y="2",x="1"}"#), 0.0);
        assert_eq!(metric_value(text, "missing"), 0.0);
    }
}
