//! `AppState`: the handles every part of one tracker shares, built once in `run`.

use std::sync::Arc;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::InstanceId;
use crate::relay::remote::RemoteRelay;
use crate::relay::{PeerTable, Relay};
use crate::shutdown::Lifecycle;
use crate::swarm::{Directory, Membership, SwarmIndex};
use crate::webtorrent::WebTorrentSwarms;

/// Cheap to clone: one `Arc`.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    instance: InstanceId,
    peers: Arc<PeerTable>,
    membership: Membership,
    relay: Relay,
    metrics: Arc<Metrics>,
    lifecycle: Arc<Lifecycle>,
    webtorrent: WebTorrentSwarms,
}

impl AppState {
    /// Builds the state of one tracker instance from its parts; `remote` and `directory` are
    /// the Redis side, present when Redis is configured.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        instance: InstanceId,
        lifecycle: Arc<Lifecycle>,
        metrics: Arc<Metrics>,
        peers: Arc<PeerTable>,
        index: Arc<SwarmIndex>,
        remote: Option<RemoteRelay>,
        directory: Option<Directory>,
    ) -> Self {
        let membership =
            Membership::new(index, Arc::clone(&peers), directory, Arc::clone(&metrics));
        let relay = Relay::new(instance, Arc::clone(&peers), remote, Arc::clone(&metrics));
        let webtorrent = WebTorrentSwarms::new(config.swarm.shards);
        Self {
            inner: Arc::new(Inner {
                config,
                instance,
                peers,
                membership,
                relay,
                metrics,
                lifecycle,
                webtorrent,
            }),
        }
    }

    /// The configuration this instance runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// This instance's id.
    pub fn instance(&self) -> InstanceId {
        self.inner.instance
    }

    /// This instance's viewers.
    pub fn peers(&self) -> &Arc<PeerTable> {
        &self.inner.peers
    }

    /// Swarm membership and pairing.
    pub fn membership(&self) -> &Membership {
        &self.inner.membership
    }

    /// Signal routing.
    pub fn relay(&self) -> &Relay {
        &self.inner.relay
    }

    /// Metric handles.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// This instance's WebTorrent peers: peer ids, seeders, completions.
    pub fn webtorrent(&self) -> &WebTorrentSwarms {
        &self.inner.webtorrent
    }

    /// Drain and shutdown state.
    pub fn lifecycle(&self) -> &Arc<Lifecycle> {
        &self.inner.lifecycle
    }
}
