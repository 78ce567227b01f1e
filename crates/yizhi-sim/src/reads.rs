//! The promises of the relaxed read levels, checked as each read returns (linearizable reads are
//! judged by `yizhi-lincheck` at the end; they are held to the first two promises here as well):
//!
//! - **Sessions are monotonic**: one client's reads from one node process (a connection; a
//!   restarted node is a new one) never return a lower revision than an earlier read did.
//! - **The state existed**: a read at revision R returns exactly what the replicated log held at
//!   R. A reference replica applies every committed entry once, in log order, and never compacts,
//!   so it can answer any revision.
//! - **Bounded staleness**: a read with bound B returns a revision at least that of every write
//!   acknowledged to a client before `invoke − B·tick_interval_ms/TICK_INTERVAL_MS` (B on the
//!   serving node's skewed clock, in true time; the node config says exactly how skewed).

use std::collections::BTreeMap;

use yizhi_engine::{Entry, EntryPayload, LogIndex, NodeId};
use yizhi_kv::{Command, CommandResponse, RangeRequest, RangeResponse, decode_command};

use crate::client::ReadLevel;
use crate::clock::TICK_INTERVAL_MS;
use crate::invariants::Violation;
use crate::kv::{self, Store};

/// One read answer, with what the checks need to know about it.
#[derive(Clone, Copy, Debug)]
pub struct ServedRead<'a> {
    pub client_id: u64,
    pub node: NodeId,
    /// The serving node's process lifetime (bumped at every crash).
    pub incarnation: u64,
    pub node_tick_interval_ms: u64,
    pub level: ReadLevel,
    pub invoke_ms: u64,
    pub request: &'a RangeRequest,
    pub response: &'a RangeResponse,
}

/// The highest revision acknowledged to any client up to some instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AckMark {
    at_ms: u64,
    /// Invariant: non-decreasing along `ReadChecker::acks`.
    max_revision: i64,
    /// When the write with `max_revision` was acknowledged.
    max_acked_at_ms: u64,
}

#[derive(Debug)]
pub struct ReadChecker {
    reference: Store,
    /// Invariant: the reference applied exactly the committed entries up to here.
    reference_applied: LogIndex,
    /// One mark per simulated millisecond that saw an acknowledgement, in time order: bounded by
    /// the run's length.
    acks: Vec<AckMark>,
    /// Per (client, node): the serving incarnation and the highest revision read in it.
    sessions: BTreeMap<(u64, NodeId), (u64, i64)>,
    /// Reads checked, by level: linearizable, serializable, bounded.
    pub checked_by_level: [u64; 3],
}

impl Default for ReadChecker {
    fn default() -> Self {
        ReadChecker {
            reference: kv::empty_store(),
            reference_applied: 0,
            acks: Vec::new(),
            sessions: BTreeMap::new(),
            checked_by_level: [0; 3],
        }
    }
}

impl ReadChecker {
    /// A node applied `entry`. The first node to apply an index always does so right after the
    /// first to apply the one before (a node applies `i + 1` only once `i` is applied there, or
    /// in the snapshot it restored, which some node applied first), so the reference sees every
    /// entry once and in order.
    ///
    /// # Panics
    ///
    /// If an index is skipped (the reasoning above is broken) or an entry does not decode.
    pub fn observe_applied(&mut self, entry: &Entry) {
        if entry.index <= self.reference_applied {
            return;
        }
        assert_eq!(
            entry.index,
            self.reference_applied + 1,
            "the reference replica would skip an entry"
        );
        self.reference_applied = entry.index;
        let EntryPayload::Normal(data) = &entry.payload else {
            return;
        };
        let (_, command_bytes) =
            yizhi_member::decode_proposal(data).unwrap_or_else(|e| panic!("entry {}: {e}", entry.index));
        let command = decode_command(&command_bytes)
            .unwrap_or_else(|e| panic!("entry {} does not decode: {e}", entry.index));
        // The reference keeps every revision readable; compaction changes no visible state.
        if matches!(command, Command::Compact(_)) {
            return;
        }
        self.reference
            .apply(&command, entry.index)
            .expect("the in-memory backend cannot fail");
    }

    /// A client received the acknowledgement of a write that the state machine answered with
    /// `response`, at `now_ms`.
    pub fn observe_ack(&mut self, now_ms: u64, response: &CommandResponse) {
        let Some(revision) = revision_of(response) else {
            return;
        };
        let last = self.acks.last().copied();
        assert!(
            last.is_none_or(|m| m.at_ms <= now_ms),
            "acknowledgements out of time order"
        );
        let (max_revision, max_acked_at_ms) = match last {
            Some(m) if m.max_revision >= revision => (m.max_revision, m.max_acked_at_ms),
            _ => (revision, now_ms),
        };
        let mark = AckMark {
            at_ms: now_ms,
            max_revision,
            max_acked_at_ms,
        };
        match self.acks.last_mut() {
            Some(m) if m.at_ms == now_ms => *m = mark,
            _ => self.acks.push(mark),
        }
    }

    /// Checks one read answer against every promise of its level.
    pub fn check(&mut self, read: &ServedRead<'_>) -> Result<(), Violation> {
        let level_index = match read.level {
            ReadLevel::Linearizable => 0,
            ReadLevel::Serializable => 1,
            ReadLevel::Bounded { .. } => 2,
        };
        self.checked_by_level[level_index] += 1;
        self.check_session(read)?;
        self.check_state_existed(read)?;
        if let ReadLevel::Bounded { max_staleness_ms } = read.level {
            self.check_bounded(read, max_staleness_ms)?;
        }
        Ok(())
    }

    fn check_session(&mut self, read: &ServedRead<'_>) -> Result<(), Violation> {
        let revision = read.response.revision;
        let session = self
            .sessions
            .entry((read.client_id, read.node))
            .or_insert((read.incarnation, revision));
        if session.0 != read.incarnation {
            *session = (read.incarnation, revision);
        }
        if revision < session.1 {
            return Err(Violation::ReadWentBackwards {
                client_id: read.client_id,
                node: read.node,
                previous_revision: session.1,
                revision,
            });
        }
        session.1 = revision;
        Ok(())
    }

    fn check_state_existed(&self, read: &ServedRead<'_>) -> Result<(), Violation> {
        let revision = read.response.revision;
        let never_existed = |detail: String| Violation::ReadStateNeverExisted {
            client_id: read.client_id,
            node: read.node,
            revision,
            detail,
        };
        let reference_revision = self.reference.current_revision();
        if revision > reference_revision {
            let detail = format!("no replica had applied that revision (reference at {reference_revision})");
            return Err(never_existed(detail));
        }
        let at = RangeRequest {
            revision,
            ..read.request.clone()
        };
        let expected = self
            .reference
            .range(&at)
            .map_err(|e| never_existed(format!("the reference refused {at:?}: {e}")))?;
        if expected.kvs != read.response.kvs || expected.count != read.response.count {
            let detail = format!(
                "read {:?} (count {}), the log held {:?} (count {})",
                read.response.kvs, read.response.count, expected.kvs, expected.count
            );
            return Err(never_existed(detail));
        }
        Ok(())
    }

    /// Every write acknowledged at or before `invoke − B·T/TICK_INTERVAL_MS` (T the serving
    /// node's tick interval) must be visible; both sides are scaled by `TICK_INTERVAL_MS` to stay
    /// in exact integers.
    fn check_bounded(&self, read: &ServedRead<'_>, max_staleness_ms: u64) -> Result<(), Violation> {
        let bound_scaled = max_staleness_ms * read.node_tick_interval_ms;
        let invoke_scaled = read.invoke_ms * TICK_INTERVAL_MS;
        let covered = self
            .acks
            .partition_point(|m| m.at_ms * TICK_INTERVAL_MS + bound_scaled <= invoke_scaled);
        let Some(mark) = covered.checked_sub(1).map(|i| self.acks[i]) else {
            return Ok(());
        };
        if read.response.revision >= mark.max_revision {
            return Ok(());
        }
        Err(Violation::BoundedReadTooStale {
            client_id: read.client_id,
            node: read.node,
            max_staleness_ms,
            invoke_ms: read.invoke_ms,
            revision: read.response.revision,
            acked_revision: mark.max_revision,
            acked_at_ms: mark.max_acked_at_ms,
        })
    }
}

/// The revision a write's response reports (the store's revision after it).
pub fn revision_of(response: &CommandResponse) -> Option<i64> {
    match response {
        CommandResponse::Put(r) => Some(r.revision),
        CommandResponse::DeleteRange(r) => Some(r.revision),
        CommandResponse::Txn(r) => Some(r.revision),
        CommandResponse::Compact(r) => Some(r.revision),
        CommandResponse::Range(r) => Some(r.revision),
        CommandResponse::LeaseGrant(_)
        | CommandResponse::LeaseRevoke(_)
        | CommandResponse::LeaseKeepAlive(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use yizhi_kv::{KeyValue, PutRequest, encode_command};

    use super::*;

    fn put_entry(index: LogIndex, key: &str, value: &str) -> Entry {
        let command = Command::Put(PutRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            ..PutRequest::default()
        });
        Entry {
            index,
            term: 1,
            payload: EntryPayload::Normal(yizhi_member::encode_proposal(
                &yizhi_member::ProposalId {
                    origin: 1,
                    boot_id: 1,
                    request_id: index,
                },
                &encode_command(&command),
            )),
        }
    }

    fn get(key: &str) -> RangeRequest {
        RangeRequest {
            key: Bytes::copy_from_slice(key.as_bytes()),
            ..RangeRequest::default()
        }
    }

    fn kv(key: &str, value: &str, revision: i64, version: i64) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: 2,
            mod_revision: revision,
            version,
            lease: 0,
        }
    }

    fn answer(revision: i64, kvs: Vec<KeyValue>) -> RangeResponse {
        RangeResponse {
            revision,
            count: kvs.len() as i64,
            kvs,
            more: false,
        }
    }

    fn served<'a>(
        level: ReadLevel,
        invoke_ms: u64,
        request: &'a RangeRequest,
        response: &'a RangeResponse,
    ) -> ServedRead<'a> {
        ServedRead {
            client_id: 1,
            node: 2,
            incarnation: 0,
            node_tick_interval_ms: 11,
            level,
            invoke_ms,
            request,
            response,
        }
    }

    /// The log: k=a at revision 2, k=b at revision 3 (entries 1 and 2; a no-op at 3).
    fn checker() -> ReadChecker {
        let mut c = ReadChecker::default();
        c.observe_applied(&put_entry(1, "k", "a"));
        c.observe_applied(&put_entry(2, "k", "b"));
        c.observe_applied(&put_entry(1, "k", "a"));
        c.observe_applied(&Entry {
            index: 3,
            term: 1,
            payload: EntryPayload::Noop,
        });
        c
    }

    #[test]
    fn a_read_must_show_what_the_log_held_at_its_revision() {
        let mut c = checker();
        let request = get("k");
        let old = answer(2, vec![kv("k", "a", 2, 1)]);
        assert_eq!(
            c.check(&served(ReadLevel::Serializable, 0, &request, &old)),
            Ok(())
        );
        let misdated = answer(3, vec![kv("k", "a", 2, 1)]);
        let err = c.check(&served(ReadLevel::Serializable, 0, &request, &misdated));
        assert!(
            matches!(err, Err(Violation::ReadStateNeverExisted { revision: 3, .. })),
            "{err:?}"
        );
        let future = answer(4, vec![kv("k", "b", 3, 2)]);
        let err = c.check(&served(ReadLevel::Serializable, 0, &request, &future));
        assert!(
            matches!(err, Err(Violation::ReadStateNeverExisted { revision: 4, .. })),
            "{err:?}"
        );
    }

    #[test]
    fn a_session_never_goes_back_but_a_restarted_node_starts_a_new_one() {
        let mut c = checker();
        let request = get("k");
        let (new, old) = (
            answer(3, vec![kv("k", "b", 3, 2)]),
            answer(2, vec![kv("k", "a", 2, 1)]),
        );
        c.check(&served(ReadLevel::Serializable, 0, &request, &new))
            .unwrap();
        let err = c.check(&served(ReadLevel::Serializable, 0, &request, &old));
        assert_eq!(
            err,
            Err(Violation::ReadWentBackwards {
                client_id: 1,
                node: 2,
                previous_revision: 3,
                revision: 2
            })
        );
        let restarted = ServedRead {
            incarnation: 1,
            ..served(ReadLevel::Serializable, 0, &request, &old)
        };
        assert_eq!(c.check(&restarted), Ok(()));
        let other_node = ServedRead {
            node: 3,
            ..served(ReadLevel::Serializable, 0, &request, &old)
        };
        assert_eq!(c.check(&other_node), Ok(()));
    }

    /// Bound 100 ms on a node ticking every 11 ms: 110 true ms. A write acknowledged at 890 must
    /// be seen by a read invoked at 1000; one acknowledged at 891 need not be.
    #[test]
    fn a_bounded_read_must_see_writes_acknowledged_longer_than_its_skewed_bound_ago() {
        let mut c = checker();
        let put = |revision| {
            CommandResponse::Put(yizhi_kv::PutResponse {
                revision,
                prev_kv: None,
            })
        };
        c.observe_ack(500, &put(2));
        c.observe_ack(891, &put(3));
        let request = get("k");
        let old = answer(2, vec![kv("k", "a", 2, 1)]);
        let bounded = ReadLevel::Bounded {
            max_staleness_ms: 100,
        };
        assert_eq!(c.check(&served(bounded, 1_000, &request, &old)), Ok(()));
        let mut c = checker();
        c.observe_ack(500, &put(2));
        c.observe_ack(890, &put(3));
        let err = c.check(&served(bounded, 1_000, &request, &old));
        assert!(
            matches!(
                err,
                Err(Violation::BoundedReadTooStale {
                    acked_revision: 3,
                    acked_at_ms: 890,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(
            c.check(&served(ReadLevel::Serializable, 1_000, &request, &old)),
            Ok(())
        );
    }
}
