//! [`Instance`]: the parts of one tracker that every worker thread and task shares, built once
//! in [`crate::server::run`].

use std::sync::Arc;

use crate::config::Config;
use crate::connections::Connections;
use crate::lifecycle::Lifecycle;
use crate::metrics::Metrics;
use crate::relay::Relay;
use crate::swarm::Membership;
use swarmtrack_protocol::InstanceId;

/// One tracker instance's shared parts.
pub struct Instance {
    /// The configuration it runs with.
    pub config: Config,
    /// Its id, the first part of its viewers' peer ids.
    pub id: InstanceId,
    /// Its viewers' connections: outboxes and the delivery checks.
    pub connections: Arc<Connections>,
    /// Swarm membership and pairing.
    pub membership: Membership,
    /// Signal routing, here or to other instances.
    pub relay: Relay,
    /// Drain and shutdown.
    pub lifecycle: Arc<Lifecycle>,
    /// Metrics; worker threads write their own shards.
    pub metrics: Arc<Metrics>,
}

#[cfg(test)]
impl Instance {
    /// An instance without Redis, for unit tests of what sits on top of it.
    pub fn for_tests(config: Config) -> Arc<Self> {
        use crate::connections::{AwaitLimits, OutboxLimits};
        use crate::swarm::SwarmIndex;
        let metrics = Arc::new(Metrics::new());
        let id = InstanceId(0x1234_5678);
        let connections = Arc::new(Connections::new(
            id,
            config.swarm.shards,
            OutboxLimits {
                signals: config.websocket.outbox_capacity,
                bytes: config.websocket.outbox_bytes,
            },
            AwaitLimits {
                ttl_secs: u32::try_from(config.webtorrent.offer_ttl_secs).unwrap_or(u32::MAX),
                max: config.webtorrent.max_awaited_peers,
            },
        ));
        let index = Arc::new(SwarmIndex::new(config.swarm.shards));
        Arc::new(Self {
            membership: Membership::new(index, Arc::clone(&connections), None),
            relay: Relay::new(Arc::clone(&connections), None),
            lifecycle: Arc::new(Lifecycle::new(
                (
                    config.limits.max_connections,
                    config.server.reserve_connections,
                ),
                Arc::clone(&metrics),
                Arc::clone(&connections),
            )),
            connections,
            metrics,
            id,
            config,
        })
    }
}
