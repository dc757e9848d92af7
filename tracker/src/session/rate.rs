//! A token bucket for one connection's message rate.
//!
//! Hand-written rather than `governor`: it lives inside one session task (no atomics needed),
//! is 40 bytes per connection, and uses tokio's clock so tests can pause time.

use tokio::time::Instant;

/// Refills `rate` tokens per second up to `burst`; each message takes one.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    burst: f64,
    rate: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            rate: f64::from(rate),
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes a token if one is left.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Gives back a token taken for a message that turned out to cost the sender nothing of
    /// its own (a WebTorrent answer to an offer it was sent).
    pub fn refund(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }
}

/// How often a client is told it is rate limited, at most; further refusals are only counted.
const RATE_ERROR_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A connection's token bucket, and when it was last told it is over the rate.
#[derive(Debug)]
pub struct Limiter {
    bucket: TokenBucket,
    last_error: Option<Instant>,
}

impl Limiter {
    /// A limiter with a full bucket.
    pub fn new(bucket: TokenBucket) -> Self {
        Self {
            bucket,
            last_error: None,
        }
    }

    /// Takes a token if one is left.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.bucket.try_take(now)
    }

    /// Gives a token back.
    pub fn refund(&mut self) {
        self.bucket.refund();
    }

    /// A message was refused for the rate: whether to tell the client. Refusals are answered
    /// at most once a second, so a flood can't turn the tracker into a reflector.
    pub fn tell_refusal(&mut self, now: Instant) -> bool {
        let tell = self
            .last_error
            .is_none_or(|t| now.saturating_duration_since(t) >= RATE_ERROR_INTERVAL);
        if tell {
            self.last_error = Some(now);
        }
        tell
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10, 5);
        let now = Instant::now();
        assert_eq!((0..8).filter(|_| b.try_take(now)).count(), 5);
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!((0..8).filter(|_| b.try_take(Instant::now())).count(), 3);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!((0..8).filter(|_| b.try_take(Instant::now())).count(), 5);
        b.refund();
        b.refund();
        assert_eq!((0..8).filter(|_| b.try_take(Instant::now())).count(), 2);
        for _ in 0..10 {
            b.refund();
        }
        assert_eq!(
            (0..8).filter(|_| b.try_take(Instant::now())).count(),
            5,
            "at most burst"
        );
    }
}
