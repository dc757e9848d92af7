//! Waiting with a deadline: the only way tests here synchronise. Each helper polls a condition
//! (or awaits a future) and fails the test with what it was waiting for once the deadline
//! passes; the short pause between polls is never what makes a test pass.

use std::future::Future;
use std::thread;
use std::time::{Duration, Instant};

/// How long one expected event (a message, a reply, a metric reaching a value) may take.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How long a process may take to come up or go away, a Redis Cluster to form or a fleet to
/// settle: `redis-cli --cluster create` alone polls once a second, and the machine running the
/// tests may be busy.
pub const LONG_DEADLINE: Duration = Duration::from_secs(30);

/// Pause between two polls of a blocking condition.
pub const POLL: Duration = Duration::from_millis(10);

/// Awaits `fut`, or fails the test after [`DEADLINE`].
///
/// # Panics
/// When the deadline passes.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    within_for(what, DEADLINE, fut).await
}

/// Awaits `fut`, or fails the test after `deadline`.
///
/// # Panics
/// When the deadline passes.
pub async fn within_for<T>(what: &str, deadline: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(deadline, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what} ({deadline:?})"),
    }
}

/// Polls `check` until it returns `Some`, or fails the test after [`DEADLINE`].
///
/// # Panics
/// When the deadline passes.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Deadline::new(what);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        deadline.tick_every(Duration::from_millis(10)).await;
    }
}

/// A deadline for async polling loops that need `&mut` access (which [`eventually`] can't
/// lend): `let d = Deadline::new("x"); loop { if done { break } d.tick().await }`.
pub struct Deadline {
    what: String,
    until: tokio::time::Instant,
}

impl Deadline {
    /// Starts the clock ([`DEADLINE`]).
    pub fn new(what: &str) -> Self {
        Self::after(what, DEADLINE)
    }

    /// Starts the clock with another bound.
    pub fn after(what: &str, deadline: Duration) -> Self {
        Self {
            what: what.to_string(),
            until: tokio::time::Instant::now() + deadline,
        }
    }

    /// Whether the deadline has passed.
    pub fn passed(&self) -> bool {
        tokio::time::Instant::now() > self.until
    }

    /// Fails the test past the deadline, else waits a little before the next poll.
    ///
    /// # Panics
    /// When the deadline has passed.
    pub async fn tick(&self) {
        self.tick_every(Duration::from_millis(20)).await;
    }

    async fn tick_every(&self, pause: Duration) {
        if self.passed() {
            panic!("timed out waiting for {}", self.what);
        }
        tokio::time::sleep(pause).await;
    }
}

/// Polls `check` on this thread until it returns `Some`, or fails the test after `deadline`.
/// For tests and helpers without an async runtime; never call it on a runtime's thread while
/// the condition depends on that runtime.
///
/// # Panics
/// When the deadline passes.
pub fn eventually_blocking<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    poll_blocking(deadline, &mut check)
        .unwrap_or_else(|| panic!("timed out waiting for {what} ({deadline:?})"))
}

/// Polls `check` on this thread until it returns `Some`; `None` once `deadline` has passed.
pub fn poll_blocking<T>(deadline: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > until {
            return None;
        }
        thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocking_polls_until_the_condition_holds() {
        let mut calls = 0;
        let got = eventually_blocking("the third call", DEADLINE, || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, 3);
    }

    #[test]
    fn blocking_gives_up_at_the_deadline() {
        let started = Instant::now();
        assert_eq!(
            poll_blocking(Duration::from_millis(50), || None::<()>),
            None
        );
        assert!(started.elapsed() >= Duration::from_millis(50));
        let failed = std::panic::catch_unwind(|| {
            eventually_blocking("nothing", Duration::from_millis(20), || None::<()>)
        });
        let message = failed.expect_err("no panic");
        let text = message.downcast_ref::<String>().expect("a message");
        assert!(text.contains("timed out waiting for nothing"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn async_waits_name_what_they_waited_for() {
        assert_eq!(within("a ready future", async { 7 }).await, 7);
        let mut n = 0;
        let got = eventually("n to reach 5", || {
            n += 1;
            let v = n;
            async move { (v >= 5).then_some(v) }
        })
        .await;
        assert_eq!(got, 5);
        let never = tokio::spawn(within(
            "a future that never ends",
            std::future::pending::<()>(),
        ));
        let err = never.await.expect_err("no panic");
        let text = err.into_panic();
        let text = text.downcast_ref::<String>().expect("a message");
        assert!(text.contains("a future that never ends"), "{text}");
    }
}
