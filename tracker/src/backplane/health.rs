//! Is a Redis link still there? Which errors mean a connection is gone, and health PINGs on a
//! connection of their own, counted so that only `redis.health_failures` failures in a row
//! declare a link down.

use std::time::Duration;

use super::{Conn, Inner};

/// Whether an error means the connection is gone. A response timeout doesn't: the connection
/// stays usable (a late answer is discarded), and a slow moment must not count as an outage,
/// which would make every instance re-register its members (more load).
pub(super) fn is_broken(e: &redis::RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error())
}

/// Counts health PINGs that failed in a row; the link is declared down at `limit`.
#[derive(Debug)]
pub(super) struct Health {
    failures: u32,
    limit: u32,
}

impl Health {
    pub(super) fn new(limit: u32) -> Self {
        Self {
            failures: 0,
            limit: limit.max(1),
        }
    }

    /// Records one check; true when the link is now to be declared down (the count then
    /// starts again).
    pub(super) fn record(&mut self, ok: bool) -> bool {
        if ok {
            self.failures = 0;
            return false;
        }
        self.failures += 1;
        if self.failures >= self.limit {
            self.failures = 0;
            return true;
        }
        false
    }
}

/// One health PING on the checker's connection (made first if there is none), within the
/// command timeout; a failed connection is dropped so the next check makes a new one.
pub(super) async fn health_ping(inner: &Inner, checker: &mut Option<Conn>) -> bool {
    let timeout = Duration::from_millis(inner.config.command_timeout_ms);
    if checker.is_none() {
        *checker = inner.connect_commands().await.ok();
    }
    let Some(conn) = checker.as_mut() else {
        return false;
    };
    let ping = redis::cmd("PING");
    match tokio::time::timeout(timeout, ping.query_async::<String>(conn)).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            if is_broken(&e) {
                *checker = None;
            }
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_is_down_only_after_the_configured_failures_in_a_row() {
        let mut h = Health::new(3);
        assert!(!h.record(false));
        assert!(!h.record(false));
        assert!(!h.record(true), "a success starts the count again");
        assert!(!h.record(false));
        assert!(!h.record(false));
        assert!(h.record(false));
        assert!(!h.record(false), "counting starts again after a verdict");
        let mut once = Health::new(1);
        assert!(once.record(false));
        assert!(!once.record(true));
    }
}
