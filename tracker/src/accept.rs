//! A worker's accept loop and the HTTP it serves before the upgrade: every accepted
//! connection takes a slot ([`Lifecycle::try_accept`]: one of `limits.max_connections`, else
//! the reserve, else it is closed at once), is served by hyper's HTTP/1 with a header and an
//! idle timeout, and carries its slot in every request ([`SlotHandle`]) so an upgrade hands it
//! to the session. Out of descriptors the loop keeps the queue moving with a reserve
//! descriptor, and counts it.

use std::rc::Rc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::activity::Watched;
use crate::http::SlotHandle;
#[cfg(doc)]
use crate::lifecycle::Lifecycle;
use crate::metrics::{AcceptError, RefuseReason};
use crate::worker::Worker;

/// `EMFILE` and `ENFILE` on Linux: out of descriptors, for the process or the system.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A failed accept is logged at most this often per worker (it is always counted).
const ACCEPT_WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Accepts connections until `stop`: each takes a slot ([`Lifecycle::try_accept`]) or is
/// closed at once. Out of descriptors, the reserve descriptor is given up to accept the
/// waiting connection and close it, so the queue keeps moving instead of every client waiting
/// in it (and the loop spinning on the same error); the reserve is taken again after.
pub async fn run(
    worker: &Rc<Worker>,
    listener: std::net::TcpListener,
    router: axum::Router,
    stop: CancellationToken,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| TcpListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "a worker's listener failed");
            return;
        }
    };
    let instance = &worker.instance;
    let metrics = &worker.metrics;
    let timeouts = HttpTimeouts {
        header: Duration::from_secs(instance.config.server.http_header_timeout_secs),
        idle: Duration::from_secs(instance.config.server.http_idle_timeout_secs),
    };
    let mut reserve = reserve_descriptor();
    let mut last_warn: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _)) => match instance.lifecycle.try_accept(metrics) {
                Some(slot) => {
                    tokio::task::spawn_local(serve_http(
                        stream,
                        SlotHandle::new(slot),
                        router.clone(),
                        timeouts,
                        stop.clone(),
                    ));
                }
                None => {
                    // Past max_connections and the reserve: closed without a word.
                    metrics.refused(RefuseReason::Full);
                    drop(stream);
                }
            },
            Err(e) => {
                let out_of_descriptors = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
                let kind = if out_of_descriptors {
                    AcceptError::Descriptors
                } else {
                    AcceptError::Other
                };
                metrics.accept_error(kind);
                if last_warn.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_INTERVAL) {
                    last_warn = Some(std::time::Instant::now());
                    warn!(error = %e, "accept failed (counted in tracker_accept_errors_total)");
                }
                if out_of_descriptors && reserve.take().is_some() {
                    // The reserve's descriptor is free now: take the waiting connection with
                    // it and close it, then hold the reserve again.
                    if let Ok((stream, _)) = listener.accept().await {
                        drop(stream);
                    }
                    reserve = reserve_descriptor();
                } else {
                    // No reserve (or another error): back off a little rather than spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if reserve.is_none() {
                        reserve = reserve_descriptor();
                    }
                }
            }
        }
    }
}

/// A descriptor held in reserve for the accept loop to give up when it runs out.
fn reserve_descriptor() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// The bounds of a connection before its upgrade.
#[derive(Clone, Copy)]
struct HttpTimeouts {
    /// To send a whole request head, from when the server starts waiting for it.
    header: Duration,
    /// With no byte moving either way.
    idle: Duration,
}

/// Serves HTTP on one accepted connection until it ends, is upgraded, idles past its timeout
/// or the server stops. `slot` is its connection slot, handed to the session on an upgrade.
async fn serve_http(
    stream: TcpStream,
    slot: SlotHandle,
    router: axum::Router,
    timeouts: HttpTimeouts,
    stop: CancellationToken,
) {
    // Signals are small frames that must leave at once: without TCP_NODELAY, Nagle's
    // algorithm holds a frame written while the previous one is unacknowledged until the
    // viewer's delayed ACK (40 ms on Linux). The simulator found this: answers took 40 ms.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(error = %e, "TCP_NODELAY on an accepted connection");
    }
    let (stream, activity) = Watched::new(stream);
    // Every request carries the connection's slot, so an upgrade can take it.
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(slot.clone());
        let mut router = router.clone();
        async move { tower_service::Service::call(&mut router, req).await }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    let idle = tokio::time::sleep(timeouts.idle);
    tokio::pin!(idle);
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                break conn.await;
            }
            () = idle.as_mut() => {
                let quiet = activity.quiet_for();
                if quiet >= timeouts.idle {
                    debug!(secs = quiet.as_secs(), "http connection idle: closed");
                    return;
                }
                idle.as_mut().reset(tokio::time::Instant::now() + timeouts.idle - quiet);
            }
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "http connection ended with an error");
    }
}
