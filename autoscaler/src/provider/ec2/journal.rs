//! Launches EC2 has accepted but `DescribeInstances` doesn't list yet.
//!
//! EC2's listings are eventually consistent: an instance RunInstances just returned can be
//! missing from `DescribeInstances` for seconds. An autoscaler that only trusts the listing
//! would launch again on its next tick, or after a restart. So every launch is written here
//! with its client token before RunInstances is called, and with the instance's id and address
//! once it answers; the provider lists such an instance itself until EC2 does (or until
//! `ttl`), and a launch whose answer was lost (a crash mid-call) is asked again with the same
//! token, which EC2 answers with the first call's instance.
//!
//! One JSON file, replaced atomically (a temporary file renamed over it), so a crash leaves
//! the old journal or the new one. Bounded: entries expire, and at most [`MAX_ENTRIES`] are
//! kept.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::provider::ProviderError;

/// Most launches remembered (a tick launches at most `max_surge`).
pub const MAX_ENTRIES: usize = 1_000;

/// One launch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The RunInstances client token.
    pub token: String,
    /// The instance, once RunInstances answered.
    pub id: Option<String>,
    /// Its private address, if RunInstances gave one.
    pub private_ip: Option<IpAddr>,
    /// When the launch was asked for, unix seconds.
    pub at_secs: u64,
}

impl Entry {
    /// When the launch was asked for.
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.at_secs)
    }
}

/// The journal file and its contents.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    // A tokio mutex, held across the file write, so two changes land on disk in their order.
    entries: tokio::sync::Mutex<Vec<Entry>>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ProviderError {
    move |source| ProviderError::Io { what, source }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Journal {
    /// Opens the journal at `path` (its folder is created; a missing file is an empty journal).
    ///
    /// # Errors
    /// The folder can't be created, or the file can't be read or isn't a journal: the
    /// autoscaler must not start without knowing its pending launches.
    pub fn open(path: &Path) -> Result<Self, ProviderError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io(format!("create {}", dir.display())))?;
        }
        let entries = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ProviderError::Api {
                what: format!("read launch journal {}", path.display()),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(format!("read {}", path.display()))(e)),
        };
        Ok(Self {
            path: path.to_path_buf(),
            entries: tokio::sync::Mutex::new(entries),
        })
    }

    async fn save(&self, entries: &[Entry]) -> Result<(), ProviderError> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(entries).map_err(|e| ProviderError::Api {
            what: "encode launch journal".into(),
            why: e.to_string(),
        })?;
        tokio::fs::write(&tmp, text)
            .await
            .map_err(io(format!("write {}", tmp.display())))?;
        tokio::fs::rename(&tmp, &self.path)
            .await
            .map_err(io(format!("rename {}", self.path.display())))
    }

    /// Records that a launch with `token` is about to be asked for (kept if already there).
    ///
    /// # Errors
    /// The file can't be written: the launch must not go ahead unrecorded.
    pub async fn intend(&self, token: &str) -> Result<(), ProviderError> {
        let mut entries = self.entries.lock().await;
        if entries.iter().any(|e| e.token == token) {
            return Ok(());
        }
        entries.push(Entry {
            token: token.to_string(),
            id: None,
            private_ip: None,
            at_secs: unix_now(),
        });
        while entries.len() > MAX_ENTRIES {
            entries.remove(0);
        }
        self.save(&entries).await
    }

    /// Records the instance a launch made.
    ///
    /// # Errors
    /// The file can't be written.
    pub async fn launched(
        &self,
        token: &str,
        id: &str,
        private_ip: Option<IpAddr>,
    ) -> Result<(), ProviderError> {
        let mut entries = self.entries.lock().await;
        match entries.iter_mut().find(|e| e.token == token) {
            Some(e) => {
                e.id = Some(id.to_string());
                e.private_ip = private_ip;
            }
            None => entries.push(Entry {
                token: token.to_string(),
                id: Some(id.to_string()),
                private_ip,
                at_secs: unix_now(),
            }),
        }
        self.save(&entries).await
    }

    /// The launches remembered now.
    pub async fn entries(&self) -> Vec<Entry> {
        self.entries.lock().await.clone()
    }

    /// Forgets the launches `done` says are over (listed by EC2, terminated) and those older
    /// than `ttl` (EC2 never listed them: failed launches).
    ///
    /// # Errors
    /// The file can't be written.
    pub async fn forget(
        &self,
        done: impl Fn(&Entry) -> bool,
        ttl: Duration,
    ) -> Result<(), ProviderError> {
        let mut entries = self.entries.lock().await;
        let now = SystemTime::now();
        let before = entries.len();
        entries.retain(|e| {
            let young = now.duration_since(e.at()).unwrap_or_default() < ttl;
            young && !done(e)
        });
        if entries.len() == before {
            return Ok(());
        }
        tracing::debug!(forgotten = before - entries.len(), "launch journal");
        self.save(&entries).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "swarmtrack-journal-{name}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        dir.join("sub").join("launches.json")
    }

    #[tokio::test]
    async fn survives_a_restart_and_forgets_what_ec2_lists() {
        let path = temp("restart");
        let j = Journal::open(&path).unwrap();
        j.intend("t1").await.unwrap();
        j.intend("t1").await.unwrap();
        j.intend("t2").await.unwrap();
        j.launched("t1", "i-1", Some("10.0.0.5".parse().unwrap()))
            .await
            .unwrap();
        // A restart: the same file, the same launches.
        let again = Journal::open(&path).unwrap();
        let entries = again.entries().await;
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].id.as_deref(), Some("i-1"));
        assert_eq!(entries[1].id, None);
        again
            .forget(|e| e.id.as_deref() == Some("i-1"), Duration::from_secs(600))
            .await
            .unwrap();
        assert_eq!(Journal::open(&path).unwrap().entries().await.len(), 1);
        // Too old: forgotten whatever EC2 says.
        again.forget(|_| false, Duration::ZERO).await.unwrap();
        assert!(Journal::open(&path).unwrap().entries().await.is_empty());
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_damaged_journal_stops_the_start() {
        let path = temp("damaged");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{ not json").unwrap();
        let err = Journal::open(&path).unwrap_err();
        assert!(err.to_string().contains("launch journal"), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }
}
