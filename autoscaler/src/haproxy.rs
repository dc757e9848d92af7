//! HAProxy's runtime API over its unix socket: one command per connection, every step under a
//! timeout. Adds, enables, drains and removes the trackers' dynamic servers and reads
//! `show stat` (parsed by column name) and `show servers state`.
//!
//! HAProxy 2.6 facts this relies on (haproxy/README.md): a dynamic server inherits nothing from
//! `default-server`, so `add server` carries every parameter; it starts in maintenance with its
//! check off (`enable server` + `enable health`); `del server` refuses while sessions remain;
//! a reload forgets dynamic servers (the reconcile loop adds them again).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::timeout;

use crate::config::{HaproxyConfig, ServerParams};

/// Most bytes read from one reply (a `show stat` of a few hundred servers is far below).
const MAX_REPLY_BYTES: u64 = 4 << 20;

/// A runtime API failure.
#[derive(Debug, thiserror::Error)]
pub enum HaproxyError {
    /// Connecting, writing or reading the socket failed.
    #[error("haproxy runtime API {command:?}: {source}")]
    Io {
        /// The command.
        command: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No complete reply within the timeout.
    #[error("haproxy runtime API {command:?}: no reply within {timeout:?}")]
    Timeout {
        /// The command.
        command: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// HAProxy answered with something other than success.
    #[error("haproxy runtime API {command:?} refused: {reply}")]
    Refused {
        /// The command.
        command: String,
        /// HAProxy's answer, trimmed.
        reply: String,
    },
    /// A reply that doesn't parse (e.g. a missing column).
    #[error("haproxy runtime API {command:?}: unexpected reply: {why}")]
    Parse {
        /// The command.
        command: String,
        /// What is wrong.
        why: String,
    },
}

/// Administrative state asked with `set server ... state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminState {
    /// Takes new sessions.
    Ready,
    /// No new sessions; existing ones stay.
    Drain,
    /// Out of service (needed before `del server`).
    Maint,
}

impl AdminState {
    fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }
}

/// One server as `show stat` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStat {
    /// `svname`.
    pub name: String,
    /// `status`: `UP`, `DOWN`, `MAINT`, `DRAIN`, `no check`, `UP 1/3`, ...
    pub status: String,
    /// `scur`: sessions now.
    pub sessions: u64,
    /// `stot`: sessions since the server was added.
    pub total: u64,
    /// `wredis`: sessions this server refused with a retryable failure (e.g. a draining
    /// tracker's 503) that HAProxy sent to another server.
    pub redispatched: u64,
}

/// One server as `show servers state` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    /// `srv_name`.
    pub name: String,
    /// `srv_addr` and `srv_port`.
    pub addr: Option<SocketAddr>,
    /// `srv_op_state`: 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u8,
    /// `srv_admin_state` bit field: 0x01/0x02/0x04 maintenance, 0x08/0x10/0x20 drain.
    pub admin_state: u8,
}

impl ServerState {
    /// Whether the server is in maintenance (forced, inherited or from a resolver).
    pub fn in_maint(&self) -> bool {
        self.admin_state & 0x07 != 0
    }

    /// Whether the server is draining.
    pub fn draining(&self) -> bool {
        self.admin_state & 0x38 != 0
    }
}

/// A runtime API client for one backend.
#[derive(Clone, Debug)]
pub struct Haproxy {
    socket: PathBuf,
    backend: String,
    timeout: Duration,
    params: ServerParams,
}

impl Haproxy {
    /// A client for the socket and backend of `config`.
    pub fn new(config: &HaproxyConfig) -> Self {
        Self {
            socket: config.socket.clone(),
            backend: config.backend.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            params: config.server.clone(),
        }
    }

    /// The backend this client manages.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Runs one command and returns the raw reply.
    ///
    /// # Errors
    /// [`HaproxyError::Io`] or [`HaproxyError::Timeout`].
    pub async fn command(&self, command: &str) -> Result<String, HaproxyError> {
        let io = |source| HaproxyError::Io {
            command: command.to_string(),
            source,
        };
        let exchange = async {
            let mut stream = UnixStream::connect(&self.socket).await.map_err(io)?;
            stream
                .write_all(format!("{command}\n").as_bytes())
                .await
                .map_err(io)?;
            let mut reply = String::new();
            // Without `prompt`, HAProxy answers one command and closes the connection.
            (&mut stream)
                .take(MAX_REPLY_BYTES)
                .read_to_string(&mut reply)
                .await
                .map_err(io)?;
            Ok(reply)
        };
        timeout(self.timeout, exchange)
            .await
            .map_err(|_| HaproxyError::Timeout {
                command: command.to_string(),
                timeout: self.timeout,
            })?
    }

    /// Runs a command whose success is an empty reply or one containing `ok`.
    async fn expect(&self, command: &str, ok: &[&str]) -> Result<(), HaproxyError> {
        let reply = self.command(command).await?;
        let reply = reply.trim();
        if reply.is_empty() || ok.iter().any(|o| reply.contains(o)) {
            Ok(())
        } else {
            Err(HaproxyError::Refused {
                command: command.to_string(),
                reply: reply.to_string(),
            })
        }
    }

    /// The `add server` command for `name` at `addr`, with every parameter.
    pub fn add_server_command(&self, name: &str, addr: SocketAddr) -> String {
        let p = &self.params;
        let mut cmd = format!(
            "add server {}/{name} {addr} check inter {}ms fastinter {}ms fall {} rise {} maxconn {}",
            self.backend,
            p.check_inter_ms,
            p.check_fastinter_ms,
            p.check_fall,
            p.check_rise,
            p.maxconn
        );
        if p.slowstart_ms > 0 {
            cmd.push_str(&format!(" slowstart {}ms", p.slowstart_ms));
        }
        cmd
    }

    /// Adds server `name` at `addr` (in maintenance, as HAProxy adds it).
    ///
    /// # Errors
    /// A refusal (e.g. the name exists, or the backend's algorithm isn't dynamic) or I/O.
    pub async fn add_server(&self, name: &str, addr: SocketAddr) -> Result<(), HaproxyError> {
        let cmd = self.add_server_command(name, addr);
        let reply = self.command(&cmd).await?;
        if reply.contains("New server registered") {
            Ok(())
        } else {
            Err(HaproxyError::Refused {
                command: cmd,
                reply: reply.trim().to_string(),
            })
        }
    }

    /// `enable server` then `enable health`: out of maintenance, checks on.
    ///
    /// # Errors
    /// A refusal or I/O.
    pub async fn enable(&self, name: &str) -> Result<(), HaproxyError> {
        let b = &self.backend;
        self.expect(&format!("enable server {b}/{name}"), &[])
            .await?;
        self.expect(&format!("enable health {b}/{name}"), &[]).await
    }

    /// `set server ... state`.
    ///
    /// # Errors
    /// A refusal or I/O.
    pub async fn set_state(&self, name: &str, state: AdminState) -> Result<(), HaproxyError> {
        self.expect(
            &format!(
                "set server {}/{name} state {}",
                self.backend,
                state.as_str()
            ),
            &[],
        )
        .await
    }

    /// `del server` (the server must be in maintenance with no session left).
    ///
    /// # Errors
    /// A refusal (sessions remain, not in maintenance) or I/O.
    pub async fn del_server(&self, name: &str) -> Result<(), HaproxyError> {
        self.expect(
            &format!("del server {}/{name}", self.backend),
            &["Server deleted"],
        )
        .await
    }

    /// The backend's servers from `show stat`.
    ///
    /// # Errors
    /// I/O, or a reply without the expected columns.
    pub async fn show_stat(&self) -> Result<Vec<ServerStat>, HaproxyError> {
        // 4 = servers only; -1 = every server id.
        let cmd = format!("show stat {} 4 -1", self.backend);
        let reply = self.command(&cmd).await?;
        parse_show_stat(&reply, &self.backend)
            .map_err(|why| HaproxyError::Parse { command: cmd, why })
    }

    /// The backend's servers from `show servers state`.
    ///
    /// # Errors
    /// I/O, or a reply without the expected columns.
    pub async fn show_servers_state(&self) -> Result<Vec<ServerState>, HaproxyError> {
        let cmd = format!("show servers state {}", self.backend);
        let reply = self.command(&cmd).await?;
        parse_servers_state(&reply).map_err(|why| HaproxyError::Parse { command: cmd, why })
    }
}

/// The positions of `names` among a reply's header columns, and the highest of them (a line
/// must have more fields than that).
fn columns<const N: usize>(
    header: &[&str],
    names: [&str; N],
) -> Result<([usize; N], usize), String> {
    let mut positions = [0; N];
    for (slot, name) in positions.iter_mut().zip(names) {
        *slot = header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no {name} column"))?;
    }
    Ok((positions, positions.iter().copied().max().unwrap_or(0)))
}

/// Parses a `show stat` CSV reply: the header line (`# pxname,svname,...`) names the columns,
/// so a new HAProxy version adding columns changes nothing.
pub fn parse_show_stat(csv: &str, backend: &str) -> Result<Vec<ServerStat>, String> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or_else(|| format!("no CSV header: {:?}", csv.lines().next().unwrap_or("")))?
        .split(',')
        .collect();
    let ([px, sv, status, scur, stot, wredis], width) = columns(
        &header,
        ["pxname", "svname", "status", "scur", "stot", "wredis"],
    )?;
    let mut servers = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() <= width {
            return Err(format!("short line: {line:?}"));
        }
        if f[px] != backend || f[sv] == "FRONTEND" || f[sv] == "BACKEND" {
            continue;
        }
        servers.push(ServerStat {
            name: f[sv].to_string(),
            status: f[status].to_string(),
            sessions: f[scur].parse().unwrap_or(0),
            total: f[stot].parse().unwrap_or(0),
            redispatched: f[wredis].parse().unwrap_or(0),
        });
    }
    Ok(servers)
}

/// Parses a `show servers state` reply: a version line (`1`), a `# be_id be_name ...` header,
/// then one space-separated line per server.
pub fn parse_servers_state(reply: &str) -> Result<Vec<ServerState>, String> {
    let mut lines = reply.lines().filter(|l| !l.trim().is_empty());
    match lines.next().map(str::trim) {
        Some("1") => {}
        other => return Err(format!("unknown format version {other:?}")),
    }
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("# "))
        .ok_or("no header line")?
        .split_whitespace()
        .collect();
    let ([name, addr, port, op, admin], width) = columns(
        &header,
        [
            "srv_name",
            "srv_addr",
            "srv_port",
            "srv_op_state",
            "srv_admin_state",
        ],
    )?;
    let mut servers = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() <= width {
            return Err(format!("short line: {line:?}"));
        }
        servers.push(ServerState {
            name: f[name].to_string(),
            addr: format!("{}:{}", f[addr], f[port]).parse().ok(),
            op_state: f[op]
                .parse()
                .map_err(|_| format!("bad srv_op_state in {line:?}"))?,
            admin_state: f[admin]
                .parse()
                .map_err(|_| format!("bad srv_admin_state in {line:?}"))?,
        });
    }
    Ok(servers)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn add_server_carries_every_parameter() {
        let h = Haproxy::new(&HaproxyConfig::default());
        assert_eq!(
            h.add_server_command("sw-l1", "10.0.0.14:8000".parse().unwrap()),
            "add server trackers/sw-l1 10.0.0.14:8000 check inter 2000ms fastinter 500ms \
             fall 2 rise 3 maxconn 17500 slowstart 60000ms"
        );
    }

    #[test]
    fn show_stat_by_column_name() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,wredis,status\n\
                   trackers,t1,0,0,3,5,200,12,1,UP\n\
                   trackers,t2,0,0,0,1,200,1,0,DRAIN\n\
                   trackers,BACKEND,0,0,3,5,200,13,1,UP\n\
                   other,x,0,0,9,9,9,9,0,UP\n\n";
        let s = parse_show_stat(csv, "trackers").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].sessions, 3);
        assert_eq!(s[0].total, 12);
        assert_eq!(s[0].redispatched, 1);
        assert_eq!(s[1].status, "DRAIN");
        assert!(parse_show_stat("Unknown command\n", "trackers").is_err());
        assert!(parse_show_stat("# pxname,svname\n", "trackers").is_err());
    }

    #[test]
    fn servers_state_by_column_name() {
        let reply = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state \
                     srv_admin_state srv_uweight srv_iweight srv_time_since_last_change \
                     srv_check_status srv_check_result srv_check_health srv_check_state \
                     srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port\n\
                     3 trackers 1 t1 127.0.0.1 2 0 1 1 10 6 3 4 6 0 0 0 - 7411\n\
                     3 trackers 2 sw-l2 127.0.0.1 0 1 1 1 10 6 3 4 6 0 0 0 - 7412\n\
                     3 trackers 3 sw-l3 127.0.0.1 2 8 1 1 10 6 3 4 6 0 0 0 - 7413\n";
        let s = parse_servers_state(reply).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].addr, Some("127.0.0.1:7411".parse().unwrap()));
        assert!(s[1].in_maint() && !s[1].draining());
        assert!(s[2].draining() && !s[2].in_maint());
        assert!(parse_servers_state("No such backend.\n").is_err());
    }
}
