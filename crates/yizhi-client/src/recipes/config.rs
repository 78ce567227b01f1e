//! A config watcher: every change under a prefix, in order, from a given revision.
//!
//! **Protocol.** Either read the prefix at revision R (the snapshot) and watch from R + 1, or
//! watch from a revision the caller remembers (say, the last one it applied, plus one). The
//! underlying [`crate::Watcher`] resumes a broken stream on the next endpoint from the last
//! delivered revision + 1, so a member restart or a network failure loses and repeats nothing.
//!
//! **Guarantees.** Changes arrive once each, in revision order (the changes of one transaction
//! share a revision and arrive in the order the server lists them); the watcher checks this and
//! reports a violation as an error. If the history still owed was compacted, the watcher reports
//! [`Error::Compacted`] and ends: the caller must reload a snapshot, as changes were missed.

use std::collections::{BTreeMap, VecDeque};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::kv::GetOptions;
use crate::watch::{EventType, WatchOptions, Watcher};

/// The most keys a snapshot loads (a bound on one read).
pub const MAX_CONFIG_KEYS: i64 = 10_000;

/// One change: a new value, or `None` for a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigChange {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub revision: i64,
}

/// Keys and values under the prefix at `revision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigSnapshot {
    pub values: BTreeMap<Vec<u8>, Vec<u8>>,
    pub revision: i64,
}

#[derive(Debug)]
pub struct ConfigWatcher {
    watcher: Watcher,
    pending: VecDeque<ConfigChange>,
    /// The revision of the last change delivered. Invariant: deliveries never go below it.
    last_revision: i64,
}

impl ConfigWatcher {
    /// The current values, and a watcher for every change after them.
    pub async fn snapshot(
        client: &Client,
        prefix: impl AsRef<[u8]>,
    ) -> Result<(ConfigSnapshot, ConfigWatcher)> {
        let prefix = prefix.as_ref();
        let response = client
            .get(prefix, GetOptions::new().prefix().limit(MAX_CONFIG_KEYS))
            .await?;
        if response.more {
            return Err(Error::InvalidArgument(format!(
                "more than {MAX_CONFIG_KEYS} keys under {}",
                String::from_utf8_lossy(prefix)
            )));
        }
        let revision = crate::kv::header_revision(response.header.as_ref(), "range")?;
        let values = response.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        let watcher = ConfigWatcher::from_revision(client, prefix, revision + 1).await?;
        Ok((ConfigSnapshot { values, revision }, watcher))
    }

    /// Every change under `prefix` from `start_revision` (≥ 1) on.
    pub async fn from_revision(
        client: &Client,
        prefix: impl AsRef<[u8]>,
        start_revision: i64,
    ) -> Result<ConfigWatcher> {
        if start_revision < 1 {
            return Err(Error::InvalidArgument(format!("start revision {start_revision}")));
        }
        let watcher = client
            .watch(
                prefix.as_ref(),
                WatchOptions::new().prefix().start_revision(start_revision),
            )
            .await?;
        Ok(ConfigWatcher {
            watcher,
            pending: VecDeque::new(),
            last_revision: start_revision - 1,
        })
    }

    /// The revision of the last change delivered (start revision − 1 before the first).
    pub fn last_revision(&self) -> i64 {
        self.last_revision
    }

    /// How many times the underlying watch resumed on a new stream.
    pub fn resumes(&self) -> u64 {
        self.watcher.resumes()
    }

    /// The next change; an error ends the watcher.
    pub async fn next(&mut self) -> Result<ConfigChange> {
        while self.pending.is_empty() {
            let batch = self
                .watcher
                .next()
                .await
                .ok_or_else(|| Error::Stopped("config watch ended".into()))??;
            for event in batch.events {
                let Some(kv) = event.kv else {
                    return Err(Error::UnexpectedResponse("watch event without a key".into()));
                };
                let value = (event.r#type == EventType::Put as i32).then_some(kv.value);
                self.pending.push_back(ConfigChange {
                    key: kv.key,
                    value,
                    revision: kv.mod_revision,
                });
            }
        }
        let change = self.pending.pop_front().expect("loop ends with a pending change");
        if change.revision < self.last_revision {
            return Err(Error::UnexpectedResponse(format!(
                "change at revision {} after revision {}",
                change.revision, self.last_revision
            )));
        }
        self.last_revision = change.revision;
        Ok(change)
    }
}
