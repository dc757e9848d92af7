//! [`Viewer`]: a connection as a viewer, which is what an autoscaler scales on. A connection is
//! a viewer from its first successful join (native) or announce (WebTorrent) until it ends:
//! counted once in `tracker_viewers_joined_total{origin}` and held in `tracker_viewers`.
//! [`Origin`] says why it came: a viewer moved here by a drain (`/v1/ws?reconnect=1`) is no
//! new arrival. A socket that never joins is never a viewer.
//!
//! Every connection's protocol state holds one, so it is two bytes: no handle to a metrics
//! shard. Its counts go to the shard of the worker thread its session runs on, which is also
//! the thread that drops it (sessions never leave their worker).

use crate::metrics::{Origin, Shard};
use crate::worker::Worker;

/// A connection's place among the viewers.
#[derive(Debug)]
pub struct Viewer {
    origin: Origin,
    joined: bool,
}

impl Viewer {
    /// A connection of `origin`, not yet a viewer.
    pub fn new(origin: Origin) -> Self {
        Self {
            origin,
            joined: false,
        }
    }

    /// Its join or announce succeeded: from now on it is a viewer, counted in `metrics` (the
    /// shard of this thread). Later calls change nothing.
    pub fn joined(&mut self, metrics: &Shard) {
        if !self.joined {
            self.joined = true;
            metrics.viewer_joined(self.origin);
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        if self.joined
            && let Some(worker) = Worker::current()
        {
            worker.metrics.viewer_left();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::instance::Instance;

    #[test]
    fn a_viewer_counts_once_from_its_first_join_until_it_goes() {
        let worker = Worker::enter(Instance::for_tests(Config::default()));
        let metrics = &worker.instance.metrics;
        let value = |series: &str| {
            metrics
                .render()
                .lines()
                .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let mut moved = Viewer::new(Origin::Reconnect);
        let idle = Viewer::new(Origin::New);
        moved.joined(&worker.metrics);
        moved.joined(&worker.metrics);
        assert_eq!(value("tracker_viewers"), 1.0);
        assert_eq!(
            value(r#"tracker_viewers_joined_total{origin="reconnect"}"#),
            1.0
        );
        assert_eq!(value(r#"tracker_viewers_joined_total{origin="new"}"#), 0.0);
        drop(moved);
        drop(idle);
        assert_eq!(value("tracker_viewers"), 0.0);
        assert_eq!(std::mem::size_of::<Viewer>(), 2);
    }
}
