//! The autoscaler's own metrics (`/metrics` on the status listener).

use metrics::{Counter, Gauge};

/// The autoscaler's own metrics; handles made once.
#[derive(Clone)]
pub struct LoopMetrics {
    pub(super) ticks: Counter,
    pub(super) tick_failures: Counter,
    pub(super) launches: Counter,
    pub(super) launch_failures: Counter,
    pub(super) drains: Counter,
    pub(super) removals: Counter,
    pub(super) replacements: Counter,
    pub(super) readds: Counter,
    pub(super) step_errors: Counter,
    pub(super) scrape_errors: Counter,
    pub(super) capacity: Gauge,
    pub(super) recommendation: Gauge,
    pub(super) draining: Gauge,
    pub(super) unhealthy: Gauge,
    pub(super) conn_rate: Gauge,
    pub(super) msg_rate: Gauge,
    pub(super) connections: Gauge,
    pub(super) predicted_conn_rate: Gauge,
    pub(super) predicted_connections: Gauge,
    pub(super) horizon: Gauge,
    pub(super) headroom: Gauge,
}

impl LoopMetrics {
    /// Registers every series with the current (local) recorder.
    pub fn register() -> Self {
        Self {
            ticks: metrics::counter!("autoscaler_ticks_total"),
            tick_failures: metrics::counter!("autoscaler_tick_failures_total"),
            launches: metrics::counter!("autoscaler_launches_total"),
            launch_failures: metrics::counter!("autoscaler_launch_failures_total"),
            drains: metrics::counter!("autoscaler_drains_total"),
            removals: metrics::counter!("autoscaler_removals_total"),
            replacements: metrics::counter!("autoscaler_replacements_total"),
            readds: metrics::counter!("autoscaler_servers_readded_total"),
            step_errors: metrics::counter!("autoscaler_step_errors_total"),
            scrape_errors: metrics::counter!("autoscaler_scrape_errors_total"),
            capacity: metrics::gauge!("autoscaler_instances"),
            recommendation: metrics::gauge!("autoscaler_recommended_instances"),
            draining: metrics::gauge!("autoscaler_draining_instances"),
            unhealthy: metrics::gauge!("autoscaler_unhealthy_instances"),
            conn_rate: metrics::gauge!("autoscaler_fleet_conn_rate"),
            msg_rate: metrics::gauge!("autoscaler_fleet_msg_rate"),
            connections: metrics::gauge!("autoscaler_fleet_connections"),
            predicted_conn_rate: metrics::gauge!("autoscaler_predicted_conn_rate"),
            predicted_connections: metrics::gauge!("autoscaler_predicted_connections"),
            horizon: metrics::gauge!("autoscaler_horizon_seconds"),
            headroom: metrics::gauge!("autoscaler_headroom"),
        }
    }
}
