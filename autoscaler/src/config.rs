//! The autoscaler's configuration: defaults < TOML file < `AUTOSCALER__SECTION__KEY` env.
//!
//! [`Config::validate`] refuses a bad config at start, naming the field and the reason, so the
//! daemon never runs on a config it would only fail on at the first scale action. Secrets (the
//! trackers' admin token, AWS credentials) never live here: the token comes from
//! `TRACKER_ADMIN_TOKEN`, AWS credentials from the standard chain.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// A config the autoscaler refuses.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment could not be parsed into a [`Config`].
    #[error("config: {0}")]
    Parse(#[source] Box<figment::Error>),
    /// A field has a value outside its range.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field, e.g. `scaling.max_instances`.
        field: &'static str,
        /// Why the value is refused.
        reason: String,
    },
}

/// Which provider starts and stops instances.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Tracker processes on this machine (demo, tests).
    #[default]
    Local,
    /// EC2 instances (needs the `ec2` cargo feature).
    Ec2,
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Name of the fleet: the `swarmtrack:fleet` tag of its instances and the prefix of the
    /// HAProxy server names (letters, digits, `-`; 1-32 characters).
    pub fleet: String,
    /// Time between two ticks (observe, decide, act), in ms (100..=600,000).
    pub poll_interval_ms: u64,
    /// Log decisions without acting (no launch, no drain, no HAProxy change).
    pub dry_run: bool,
    /// Address of the status page, `/status` and `/metrics`.
    pub status_listen: SocketAddr,
    /// Per-instance targets.
    pub targets: TargetsConfig,
    /// How and when the fleet changes size.
    pub scaling: ScalingConfig,
    /// HAProxy's runtime API.
    pub haproxy: HaproxyConfig,
    /// How the autoscaler reaches each tracker.
    pub tracker: TrackerConfig,
    /// Which provider: `local` or `ec2`.
    pub provider: ProviderKind,
    /// The `local` provider.
    pub local: LocalConfig,
    /// The `ec2` provider.
    pub ec2: Ec2Config,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            fleet: "swarmtrack".to_string(),
            poll_interval_ms: 5_000,
            dry_run: false,
            status_listen: SocketAddr::from(([127, 0, 0, 1], 9400)),
            targets: TargetsConfig::default(),
            scaling: ScalingConfig::default(),
            haproxy: HaproxyConfig::default(),
            tracker: TrackerConfig::default(),
            provider: ProviderKind::default(),
            local: LocalConfig::default(),
            ec2: Ec2Config::default(),
        }
    }
}

/// What one instance should carry. A target of 0 disables that signal. Only real viewers
/// count: a connection that never joins, a frame refused as invalid or over the rate, a viewer
/// moved by a drain moves no signal.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetsConfig {
    /// New viewers per second per instance: connections whose first join (or announce)
    /// succeeded, not moved by a drain (`tracker_viewers_joined_total{origin="new"}`). Also the
    /// rate at which one instance takes viewers moved by a drain, which sizes the drain's
    /// reconnect window.
    pub conn_rate: f64,
    /// Relayed signals per second per instance: delivered, or refused for a real reason (not
    /// rate-limited) (`tracker_messages_relayed_total` + `tracker_messages_dropped_total`).
    pub msg_rate: f64,
    /// Open viewers per instance: connections that have joined (`tracker_viewers`).
    pub connections: f64,
}

impl Default for TargetsConfig {
    fn default() -> Self {
        // About half of one tracker's measured knee (docs/BENCHMARKS.md), so a step of load
        // finds headroom while the next instance boots.
        Self {
            conn_rate: 500.0,
            msg_rate: 20_000.0,
            connections: 10_000.0,
        }
    }
}

/// How and when the fleet changes size.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalingConfig {
    /// Fewest instances (1..=max_instances).
    pub min_instances: usize,
    /// Most instances, draining ones not counted (1..=1000).
    pub max_instances: usize,
    /// Tolerance band around 1.0 of the load/capacity ratio inside which nothing changes
    /// (0.0..1.0; 0.1 = 10 %).
    pub tolerance: f64,
    /// Scale in only to the highest recommendation seen over this many seconds.
    pub scale_in_window_secs: u64,
    /// Most instances launched by one tick (>= 1).
    pub max_surge: usize,
    /// Seconds after an instance becomes ready during which no scale-in starts.
    pub warmup_secs: u64,
    /// Seconds from a launch to a tracker in HAProxy, until the autoscaler has measured it
    /// (the longest of the last launches then counts). The look-ahead spans this, a poll and
    /// HAProxy's rise checks (0..=3600).
    pub boot_estimate_secs: u64,
    /// Seconds of fleet history the growth rates are fitted over (0 turns the look-ahead off;
    /// else 5..=600).
    pub trend_window_secs: u64,
    /// Consecutive polls a serving tracker's `/metrics` may fail before its instance no longer
    /// counts as capacity and is replaced: a new one is launched first, then this one
    /// terminated (>= 1).
    pub unhealthy_polls: u32,
    /// Longest window, in seconds, over which a drained instance's viewers reconnect. The
    /// window is sized so each remaining instance takes them at `targets.conn_rate` (less its
    /// own arrivals); keep this below the trackers' `drain.deadline_secs` less their
    /// `drain.close_grace_ms` (1..drain_deadline_secs).
    pub max_reconnect_window_secs: u64,
    /// Longest wait, in seconds, for a draining instance to lose its viewers before it is
    /// removed anyway. Keep it above the tracker's `drain.deadline_secs`.
    pub drain_deadline_secs: u64,
    /// Longest wait, in seconds, for a launched instance to answer `/readyz`; then it is
    /// terminated and the next tick launches another.
    pub launch_timeout_secs: u64,
}

impl Default for ScalingConfig {
    fn default() -> Self {
        Self {
            min_instances: 1,
            max_instances: 10,
            tolerance: 0.1,
            scale_in_window_secs: 300,
            max_surge: 4,
            warmup_secs: 30,
            boot_estimate_secs: 90,
            trend_window_secs: 30,
            unhealthy_polls: 3,
            max_reconnect_window_secs: 20,
            drain_deadline_secs: 60,
            launch_timeout_secs: 300,
        }
    }
}

/// HAProxy's runtime API and the parameters of the servers the autoscaler adds.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HaproxyConfig {
    /// The runtime API's unix socket (`stats socket ... level admin`).
    pub socket: PathBuf,
    /// The backend of the trackers.
    pub backend: String,
    /// Timeout of one runtime API command, in ms (connect, write and read).
    pub timeout_ms: u64,
    /// Parameters of each added server: a dynamic server inherits nothing from
    /// `default-server`, so these repeat haproxy.cfg's (haproxy/README.md).
    pub server: ServerParams,
}

impl Default for HaproxyConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from("/run/haproxy/admin.sock"),
            backend: "trackers".to_string(),
            timeout_ms: 2_000,
            server: ServerParams::default(),
        }
    }
}

/// The `add server` parameters (haproxy/haproxy.cfg.tmpl's `default-server` line).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerParams {
    /// `inter`: health check interval, ms.
    pub check_inter_ms: u64,
    /// `fastinter`: interval while the server changes state, ms.
    pub check_fastinter_ms: u64,
    /// `fall`: failed checks before DOWN.
    pub check_fall: u32,
    /// `rise`: passed checks before UP.
    pub check_rise: u32,
    /// `slowstart`: ramp of weight and maxconn after coming up, ms (0: none).
    pub slowstart_ms: u64,
    /// `maxconn`: per-server connection cap.
    pub maxconn: u32,
}

impl Default for ServerParams {
    fn default() -> Self {
        Self {
            check_inter_ms: 2_000,
            check_fastinter_ms: 500,
            check_fall: 2,
            check_rise: 3,
            slowstart_ms: 60_000,
            maxconn: 17_500,
        }
    }
}

/// How the autoscaler reaches each tracker's admin listener.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Viewer port of EC2 trackers (the local provider picks free ports).
    pub port: u16,
    /// Admin port (`/metrics`, `/admin/drain`) of EC2 trackers.
    pub admin_port: u16,
    /// Timeout of one HTTP request to a tracker, in ms.
    pub http_timeout_ms: u64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            port: 8000,
            admin_port: 8001,
            http_timeout_ms: 2_000,
        }
    }
}

/// The `local` provider: tracker processes on this machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// The tracker binary.
    pub tracker_bin: PathBuf,
    /// Folder of one state file per instance (and its log): what a restarted autoscaler
    /// rebuilds its view from.
    pub state_dir: PathBuf,
    /// Extra arguments for each tracker (e.g. `["--redis-url", "redis://127.0.0.1:6379"]`).
    pub args: Vec<String>,
    /// Extra environment for each tracker (e.g. `TRACKER__DRAIN__DEADLINE_SECS`).
    pub env: BTreeMap<String, String>,
    /// Seconds a launched instance "boots" before its tracker starts (0..=3600): with 60, the
    /// policy meets an EC2-like lag on one machine.
    pub boot_delay_secs: u64,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            tracker_bin: PathBuf::from("target/release/tracker"),
            state_dir: PathBuf::from("target/autoscaler"),
            args: Vec::new(),
            env: BTreeMap::new(),
            boot_delay_secs: 0,
        }
    }
}

/// The `ec2` provider.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Ec2Config {
    /// AWS region; empty: from the standard chain (`AWS_REGION`, profile, IMDS).
    pub region: String,
    /// Endpoint override (tests: moto's server); empty: AWS.
    pub endpoint_url: String,
    /// AMI with the tracker installed.
    pub ami: String,
    /// Instance type, e.g. `c7g.large`.
    pub instance_type: String,
    /// Subnet of the trackers (private; HAProxy reaches them by private IP).
    pub subnet_id: String,
    /// Security groups of the trackers.
    pub security_group_ids: Vec<String>,
    /// IAM instance profile name; empty: none.
    pub instance_profile: String,
    /// User data template (a file); `@FLEET@`, `@PORT@`, `@ADMIN_PORT@` are replaced. It must
    /// start the tracker; the admin token reaches it from there (e.g. SSM), never from here.
    pub user_data_template: PathBuf,
    /// File where each launch is remembered with its client token until `DescribeInstances`
    /// lists it (EC2's listings lag): a restart in between counts it instead of launching
    /// again. On the control host's disk, one per autoscaler.
    pub launch_journal: PathBuf,
}

impl Default for Ec2Config {
    fn default() -> Self {
        Self {
            region: String::new(),
            endpoint_url: String::new(),
            ami: String::new(),
            instance_type: String::new(),
            subnet_id: String::new(),
            security_group_ids: Vec::new(),
            instance_profile: String::new(),
            user_data_template: PathBuf::new(),
            launch_journal: PathBuf::from("/var/lib/swarmtrack-autoscaler/ec2-launches.json"),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (if any), then `AUTOSCALER__SECTION__KEY` variables, and
    /// validates the result.
    ///
    /// # Errors
    /// A file that doesn't parse, an unknown field, or a value [`validate`](Self::validate)
    /// refuses.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("AUTOSCALER__").split("__"))
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Time between ticks.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// Checks every range the daemon relies on.
    ///
    /// # Errors
    /// The first field out of range, with the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.fleet.is_empty()
            || self.fleet.len() > 32
            || !self
                .fleet
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return bad("fleet", "1-32 letters, digits or '-'");
        }
        if !(100..=600_000).contains(&self.poll_interval_ms) {
            return bad("poll_interval_ms", "must be 100..=600000");
        }
        let t = &self.targets;
        for (field, v) in [
            ("targets.conn_rate", t.conn_rate),
            ("targets.msg_rate", t.msg_rate),
            ("targets.connections", t.connections),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(field, "must be a number >= 0 (0 disables the signal)");
            }
        }
        if t.conn_rate == 0.0 && t.msg_rate == 0.0 && t.connections == 0.0 {
            return bad("targets", "at least one target must be above 0");
        }
        let s = &self.scaling;
        if !(1..=1000).contains(&s.max_instances) {
            return bad("scaling.max_instances", "must be 1..=1000");
        }
        if s.min_instances < 1 || s.min_instances > s.max_instances {
            return bad("scaling.min_instances", "must be 1..=max_instances");
        }
        if !(0.0..1.0).contains(&s.tolerance) {
            return bad("scaling.tolerance", "must be in 0.0..1.0");
        }
        if s.max_surge < 1 {
            return bad("scaling.max_surge", "must be >= 1");
        }
        if s.drain_deadline_secs < 1 {
            return bad("scaling.drain_deadline_secs", "must be >= 1");
        }
        if s.launch_timeout_secs < 1 {
            return bad("scaling.launch_timeout_secs", "must be >= 1");
        }
        if s.boot_estimate_secs > 3600 {
            return bad("scaling.boot_estimate_secs", "must be 0..=3600");
        }
        if s.trend_window_secs != 0 && !(5..=600).contains(&s.trend_window_secs) {
            return bad("scaling.trend_window_secs", "must be 0 (off) or 5..=600");
        }
        if s.unhealthy_polls < 1 {
            return bad("scaling.unhealthy_polls", "must be >= 1");
        }
        if s.max_reconnect_window_secs < 1 || s.max_reconnect_window_secs >= s.drain_deadline_secs {
            return bad(
                "scaling.max_reconnect_window_secs",
                "must be 1..drain_deadline_secs",
            );
        }
        let h = &self.haproxy;
        // sun_path holds 108 bytes with the terminating NUL.
        if h.socket.as_os_str().is_empty() || h.socket.as_os_str().len() > 107 {
            return bad("haproxy.socket", "must be a path of 1-107 bytes");
        }
        if h.backend.is_empty() || h.backend.contains(char::is_whitespace) {
            return bad("haproxy.backend", "must be a backend name without spaces");
        }
        if !(10..=60_000).contains(&h.timeout_ms) {
            return bad("haproxy.timeout_ms", "must be 10..=60000");
        }
        let p = &h.server;
        if p.check_inter_ms == 0 || p.check_fastinter_ms == 0 {
            return bad(
                "haproxy.server.check_inter_ms",
                "check intervals must be > 0",
            );
        }
        if p.check_fall == 0 || p.check_rise == 0 || p.maxconn == 0 {
            return bad(
                "haproxy.server",
                "check_fall, check_rise and maxconn must be > 0",
            );
        }
        if !(10..=60_000).contains(&self.tracker.http_timeout_ms) {
            return bad("tracker.http_timeout_ms", "must be 10..=60000");
        }
        match self.provider {
            ProviderKind::Local => {
                if self.local.tracker_bin.as_os_str().is_empty() {
                    return bad("local.tracker_bin", "must name the tracker binary");
                }
                if self.local.state_dir.as_os_str().is_empty() {
                    return bad("local.state_dir", "must name a folder");
                }
                if self.local.boot_delay_secs > 3600 {
                    return bad("local.boot_delay_secs", "must be 0..=3600");
                }
            }
            ProviderKind::Ec2 => {
                if !cfg!(feature = "ec2") {
                    return bad("provider", "this build has no ec2 feature");
                }
                let e = &self.ec2;
                for (field, v) in [
                    ("ec2.ami", &e.ami),
                    ("ec2.instance_type", &e.instance_type),
                    ("ec2.subnet_id", &e.subnet_id),
                ] {
                    if v.is_empty() {
                        return bad(field, "required with provider = \"ec2\"");
                    }
                }
                if e.user_data_template.as_os_str().is_empty() {
                    return bad("ec2.user_data_template", "required with provider = \"ec2\"");
                }
                if e.launch_journal.as_os_str().is_empty() {
                    return bad("ec2.launch_journal", "required with provider = \"ec2\"");
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn example_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
        for name in [
            "autoscaler.example.toml",
            "autoscaler.ec2.example.toml",
            "autoscaler.surge.toml",
        ] {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            let config: Config = Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(&text))
                .extract()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            if cfg!(feature = "ec2") || config.provider == ProviderKind::Local {
                config.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    #[test]
    fn bad_values_name_the_field() {
        type Change = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "scaling.min_instances",
                Box::new(|c| c.scaling.min_instances = 0),
            ),
            (
                "scaling.min_instances",
                Box::new(|c| c.scaling.min_instances = c.scaling.max_instances + 1),
            ),
            ("scaling.tolerance", Box::new(|c| c.scaling.tolerance = 1.5)),
            ("scaling.max_surge", Box::new(|c| c.scaling.max_surge = 0)),
            ("targets.msg_rate", Box::new(|c| c.targets.msg_rate = -1.0)),
            ("poll_interval_ms", Box::new(|c| c.poll_interval_ms = 1)),
            (
                "scaling.trend_window_secs",
                Box::new(|c| c.scaling.trend_window_secs = 2),
            ),
            (
                "scaling.unhealthy_polls",
                Box::new(|c| c.scaling.unhealthy_polls = 0),
            ),
            (
                "scaling.max_reconnect_window_secs",
                Box::new(|c| c.scaling.max_reconnect_window_secs = c.scaling.drain_deadline_secs),
            ),
            (
                "local.boot_delay_secs",
                Box::new(|c| c.local.boot_delay_secs = 7200),
            ),
            ("fleet", Box::new(|c| c.fleet = "bad name".into())),
        ];
        for (field, change) in cases {
            let mut config = Config::default();
            change(&mut config);
            match config.validate() {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_field_is_refused() {
        let err = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[scaling]\nmax_instance = 3\n"))
            .extract::<Config>()
            .unwrap_err();
        assert!(err.to_string().contains("max_instance"), "{err}");
    }
}
