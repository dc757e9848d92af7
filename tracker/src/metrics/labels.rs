//! The label values of the tracker's metrics. Each enum is also the type its module uses for
//! the cause (why a connection closed, why a signal was dropped, ...), so a new cause can't
//! be added without its label.

/// Declares a label enum: variants, their label text, and `ALL` in discriminant order.
macro_rules! label_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in discriminant order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// How many values there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The label text.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }
    };
}

label_enum! {
    /// Why a connection ended.
    CloseReason {
        /// The viewer closed it or the socket failed.
        Client => "client",
        /// No frame within the idle timeout.
        Idle => "idle",
        /// Writes stalled: a slow consumer.
        Slow => "slow",
        /// A frame too big to read.
        TooBig => "too_big",
        /// A WebSocket protocol violation (bad frame, invalid UTF-8 in text).
        Protocol => "protocol",
        /// Closed by drain or shutdown.
        Drain => "drain",
        /// In no swarm for `limits.join_timeout_secs`: never joined (native) or announced
        /// (WebTorrent), or left every swarm and stayed.
        NoJoin => "no_join",
    }
}

label_enum! {
    /// Why a viewer connected: on its own, or told to by a draining instance (it asked for
    /// `/v1/ws?reconnect=1`); an autoscaler counts arrivals without the viewers a drain moves.
    Origin {
        /// A new viewer (or one back after an error).
        New => "new",
        /// A viewer moved here by another instance's drain.
        Reconnect => "reconnect",
    }
}

label_enum! {
    /// Why an upgrade was refused.
    RefuseReason {
        /// At `max_connections`.
        Full => "full",
        /// The instance is draining.
        Draining => "draining",
        /// `Origin` not allowed.
        Origin => "origin",
    }
}

label_enum! {
    /// Why accepting a connection failed.
    AcceptError {
        /// Out of file descriptors (EMFILE, ENFILE): the waiting connection was taken with the
        /// reserve descriptor and closed, so the listener's queue keeps moving.
        Descriptors => "descriptors",
        /// Anything else (out of memory, a connection reset before it was accepted).
        Other => "other",
    }
}

label_enum! {
    /// Why a signal was not delivered, or a message not processed.
    DropReason {
        /// The target's outbox was full.
        QueueFull => "queue_full",
        /// The target is gone.
        UnknownPeer => "unknown_peer",
        /// The target is not in that swarm (the sender gets `unknown_peer`).
        TargetNotInSwarm => "target_not_in_swarm",
        /// The sender is not in that swarm (the sender gets `not_in_swarm`).
        SenderNotInSwarm => "sender_not_in_swarm",
        /// The sender was over its message rate.
        RateLimited => "rate_limited",
        /// A WebTorrent answer to an offer its target never sent to the answerer, or one that
        /// expired.
        UnexpectedAnswer => "unexpected_answer",
        /// A WebTorrent offer not sent because its offerer already awaits answers from as many
        /// peers as allowed (`webtorrent.max_awaited_peers`).
        TooManyPendingOffers => "too_many_pending_offers",
        /// Queued for a viewer that disconnected before it was written.
        TargetClosed => "target_closed",
    }
}

label_enum! {
    /// Why a signal for or from another instance was dropped.
    RemoteDrop {
        /// Redis was down when the signal was to be sent.
        RedisDown => "redis_down",
        /// The outbound queue to the batcher was full.
        OutboundFull => "outbound_full",
        /// The publish failed.
        PublishFailed => "publish_failed",
        /// A received batch didn't decode.
        BadBatch => "bad_batch",
        /// Published, but no instance was subscribed to that channel (the target instance is
        /// gone or resubscribing).
        NoSubscriber => "no_subscriber",
        /// Waited longer than `redis.max_signal_age_ms` behind earlier publishes to its
        /// instance.
        Stale => "stale",
        /// Received, but the inbound queue was full (counted in the signals the batch held).
        InboundFull => "inbound_full",
        /// The refusal of a signal could not be returned to its sender: the sender left, or
        /// the queue back to its instance was full or Redis down.
        RefusalUndelivered => "refusal_undelivered",
    }
}

label_enum! {
    /// Why a membership write (a register or a removal in Redis) was dropped.
    MembershipDrop {
        /// The writer's queue was full.
        QueueFull => "queue_full",
        /// Redis was down, or the write failed or timed out.
        Failed => "failed",
    }
}

label_enum! {
    /// Why a member read from the fleet's directory in Redis was not handed out.
    DirectorySkip {
        /// No tag, or not a peer id: not written by a tracker.
        Unsigned => "unsigned",
        /// A tag that doesn't verify under the fleet key (forged, or moved from another swarm).
        BadSignature => "bad_signature",
        /// Its instance's heartbeat has lapsed (dead, or its subscription down).
        DeadInstance => "dead_instance",
    }
}

label_enum! {
    /// Why a batch received from Redis was refused before it was decoded (see `batch_seal`).
    BatchRefusal {
        /// Not a signed envelope: published without the fleet key.
        Unsigned => "unsigned",
        /// Its tag doesn't verify under the current or the previous fleet key: forged, changed
        /// on the way, or meant for another instance's channel.
        BadTag => "bad_tag",
        /// Its sender's sequence number was already seen: published again.
        Replay => "replay",
        /// Its signed time is further from ours than `redis.replay_window_ms`.
        Stale => "stale",
    }
}

label_enum! {
    /// What a received message was.
    ReceivedKind {
        /// `join`
        Join => "join",
        /// `leave`
        Leave => "leave",
        /// `offer`
        Offer => "offer",
        /// `answer`
        Answer => "answer",
        /// `cands`
        Cands => "cands",
        /// `ping`
        Ping => "ping",
        /// Refused before its type was known: undecodable, too large, or over the rate.
        Invalid => "invalid",
        /// WebTorrent `announce` (without an answer; one carrying an answer counts as `answer`).
        Announce => "announce",
        /// WebTorrent `scrape`.
        Scrape => "scrape",
    }
}

label_enum! {
    /// Why a WebTorrent request got a `failure reason`.
    FailureKind {
        /// Not JSON, not an object, a missing or mistyped field, an unknown action or event.
        Invalid => "invalid",
        /// An id that isn't 20 characters of at most U+00FF.
        BadId => "bad_id",
        /// More offers (or scraped hashes) than allowed.
        TooMany => "too_many",
        /// The peer id is someone else's in that swarm, or this connection uses another one
        /// there.
        PeerIdConflict => "peer_id_conflict",
        /// An answer to an offer this connection wasn't sent, or that expired.
        UnknownOffer => "unknown_offer",
        /// The offerer is gone.
        PeerGone => "peer_gone",
        /// The connection is in as many swarms as allowed.
        SwarmLimit => "swarm_limit",
        /// A frame over `webtorrent.max_message_bytes`.
        TooLarge => "too_large",
        /// Over the connection's message rate.
        RateLimited => "rate_limited",
    }
}

label_enum! {
    /// The three kinds of signal (defined with the labels so the metrics need nothing of the
    /// relay; [`crate::signal`] uses it).
    SignalKind {
        /// SDP offer.
        Offer => "offer",
        /// SDP answer.
        Answer => "answer",
        /// Trickled ICE candidates.
        Cands => "cands",
    }
}

label_enum! {
    /// Where a relayed signal came from.
    RelayPath {
        /// From a viewer of this instance.
        Local => "local",
        /// From another instance, through Redis.
        Remote => "remote",
    }
}
