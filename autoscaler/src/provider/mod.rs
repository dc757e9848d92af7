//! Where tracker instances come from: the [`Provider`] trait and its two implementations,
//! [`local`] (tracker processes on this machine) and `ec2` (feature `ec2`).
//!
//! A provider is the autoscaler's memory: each instance carries its fleet and its [`Phase`]
//! (EC2 tags, or the local state files), so a restarted autoscaler rebuilds its view from
//! [`Provider::list`] and HAProxy alone, and counts an instance launched just before a crash as
//! capacity instead of launching it again.

use std::future::Future;
use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

#[cfg(feature = "ec2")]
pub mod ec2;
pub mod local;

/// Where an instance is in its life, as recorded with the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Launched, not yet in HAProxy.
    Launching,
    /// In HAProxy, taking viewers.
    Serving,
    /// Being drained: no new viewers; removed when empty or at the drain deadline.
    Draining,
}

impl Phase {
    /// The tag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Launching => "launching",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
        }
    }

    /// The phase of a tag value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "launching" => Some(Phase::Launching),
            "serving" => Some(Phase::Serving),
            "draining" => Some(Phase::Draining),
            _ => None,
        }
    }
}

/// One tracker instance of the fleet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Instance {
    /// Provider id (`i-0abc...`, or `l<port>` locally).
    pub id: String,
    /// Where HAProxy sends viewers.
    pub addr: SocketAddr,
    /// The tracker's admin listener (`/readyz`, `/metrics`, `/admin/drain`).
    pub admin: SocketAddr,
    /// Recorded phase.
    pub phase: Phase,
    /// When it was launched.
    pub launched_at: SystemTime,
    /// When its phase last changed (drain deadlines count from here).
    pub phase_since: SystemTime,
    /// Whether the machine or process is still there (`false`: it died or was terminated
    /// outside the autoscaler; the reconcile loop cleans it up).
    pub alive: bool,
}

/// Prefix of the HAProxy server names the autoscaler owns; other servers of the backend
/// (static ones from haproxy.cfg) are left alone.
pub const SERVER_PREFIX: &str = "as-";

impl Instance {
    /// The HAProxy server name of this instance.
    pub fn server_name(&self) -> String {
        format!("{SERVER_PREFIX}{}", self.id)
    }
}

/// A provider failure.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// A local file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The cloud API answered with an error (throttling included).
    #[error("{what}: {why}")]
    Api {
        /// The call.
        what: String,
        /// The error chain.
        why: String,
    },
    /// An instance the provider doesn't know.
    #[error("no instance {0}")]
    Unknown(String),
}

/// Starts, lists, tags and stops the fleet's instances. Every method is safe to retry.
pub trait Provider: Send + Sync + 'static {
    /// The fleet's instances that are not terminated, with their recorded phase.
    fn list(&self) -> impl Future<Output = Result<Vec<Instance>, ProviderError>> + Send;

    /// Launches one instance in phase [`Phase::Launching`]. A retry with the same
    /// `client_token` returns the instance of the first call instead of launching another.
    fn launch(
        &self,
        client_token: &str,
    ) -> impl Future<Output = Result<Instance, ProviderError>> + Send;

    /// Records a new phase for instance `id`.
    fn set_phase(
        &self,
        id: &str,
        phase: Phase,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Terminates instance `id` (done when it is already gone).
    fn terminate(&self, id: &str) -> impl Future<Output = Result<(), ProviderError>> + Send;
}
