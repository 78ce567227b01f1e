//! Client sessions: retried writes apply once (Raft thesis §6.3).
//!
//! A client wraps a mutating command in [`Command::Deduped`](crate::Command::Deduped) with a [`ClientSeq`]: its id, a
//! sequence number per new request, and `acked_below`, its promise never to retry below that
//! seq. The session table — replicated state, persisted, snapshotted and hashed like the data —
//! keeps per client its `floor` (the largest `acked_below` seen), when it was last seen, and the
//! response of every applied seq at or above the floor. Applying `Deduped` goes:
//!
//! 1. The session clock (in [`Meta`], persisted) becomes `max(clock, now_ms)`, so a member with a
//!    slow wall clock cannot move it back; clients idle longer than
//!    [`KvConfig::client_idle_expiry_ms`] by it are forgotten, oldest first. This happens for
//!    every `Deduped` entry, refused ones included: it is the passing of time, not the request.
//! 2. A malformed `ClientSeq` is refused. An unknown client with `acked_below > 1` has had
//!    answers, so it had a record that expired: a retry can no longer be recognised, and it is
//!    refused rather than risk applying twice. A seq below the client's floor is refused.
//! 3. A seq with a kept response is a duplicate: the response is answered again exactly as first
//!    returned (errors included), nothing is applied, no events; floor and last-seen advance.
//! 4. Otherwise the request is new. It is refused when it would create a client beyond
//!    [`KvConfig::max_client_sessions`], when the client already holds
//!    [`KvConfig::max_unacknowledged_per_client`] responses at or above its new floor, or when
//!    the table could not take a response of [`KvConfig::max_stored_response_bytes`] within
//!    [`KvConfig::max_session_bytes`]. The size check is made *before* applying, against that
//!    worst case, because a response's size is known only after the command applied and a
//!    command must never apply without its record; a response that turns out larger is kept as
//!    [`StoredResponse::TooLarge`] (its duplicate gets [`KvError::DuplicateResponseNotRetained`]:
//!    applied once, answer lost). A refusal applies and records nothing for the request, so the
//!    client may retry it later and it applies then, still once. Otherwise the inner command
//!    applies as usual, its response (an error too: a retry must get the same answer) is
//!    stored, and responses below the new floor are dropped.
//!
//! Limitation (as in the thesis): a client whose record expired before any of its requests was
//! acknowledged (`acked_below` still 1) is indistinguishable from a new client, so its retry of
//! an applied request applies again. Clients should not stay idle past the expiry with requests
//! in flight.
//!
//! Memory: [`SessionStats::stored_bytes`] charges each client [`CLIENT_OVERHEAD_BYTES`] and
//! each response [`RESPONSE_OVERHEAD_BYTES`] plus its encoding. Rows reach the backend in the
//! entry's [`crate::backend::WriteBatch`]: one client row and at most one new response row per
//! entry, plus deletions of dropped responses and expired clients.

use std::collections::{BTreeMap, BTreeSet};

use crate::backend::{BackendError, ClientRecord, Meta, ResponseKey, SessionRows, StoredResponse};
use crate::command::CommandResponse;
use crate::config::KvConfig;
use crate::error::KvError;
use crate::response_codec::{decode_response, encode_response};
use crate::types::{ClientSeq, SessionStats};

/// Charged per client: its map nodes, record and idle-order entry.
pub const CLIENT_OVERHEAD_BYTES: u64 = 96;
/// Charged per stored response beyond its encoding: map node, key, length.
pub const RESPONSE_OVERHEAD_BYTES: u64 = 48;

/// Session rows one entry changed; `None` deletes. Maps, so that a client expired and created
/// again within one entry reaches the backend as its final state only.
#[derive(Debug, Default)]
pub(crate) struct SessionChanges {
    pub clients: BTreeMap<u64, Option<ClientRecord>>,
    pub responses: BTreeMap<ResponseKey, Option<StoredResponse>>,
}

impl SessionChanges {
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.responses.is_empty()
    }
}

#[derive(Debug)]
struct ClientSession {
    record: ClientRecord,
    /// Invariant: every key >= record.floor.
    responses: BTreeMap<u64, StoredResponse>,
}

#[derive(Debug, Default)]
pub(crate) struct SessionTable {
    clients: BTreeMap<u64, ClientSession>,
    /// Invariant: exactly `(last_seen_ms, client_id)` of every client, so expiry takes the
    /// oldest first, deterministically.
    idle_order: BTreeSet<(u64, u64)>,
    /// Invariant: the number of responses over all clients.
    stored_responses: usize,
    /// Invariant: the sum of `client_cost` and `response_cost` over the table.
    stored_bytes: u64,
    /// Member-local counters, not replicated state.
    duplicates_answered: u64,
    expired_clients: u64,
}

fn response_cost(response: &StoredResponse) -> u64 {
    RESPONSE_OVERHEAD_BYTES
        + match response {
            StoredResponse::Kept(bytes) => bytes.len() as u64,
            StoredResponse::TooLarge => 0,
        }
}

fn client_cost(client: &ClientSession) -> u64 {
    CLIENT_OVERHEAD_BYTES + client.responses.values().map(response_cost).sum::<u64>()
}

/// Every replica must be able to store at least one response, or no deduplicated command
/// could ever apply.
pub(crate) fn check_session_config(config: &KvConfig) {
    assert!(config.max_client_sessions >= 1, "{config:?}");
    assert!(config.max_unacknowledged_per_client >= 1, "{config:?}");
    let one_response = CLIENT_OVERHEAD_BYTES + RESPONSE_OVERHEAD_BYTES + config.max_stored_response_bytes;
    assert!(
        config.max_session_bytes >= one_response,
        "max_session_bytes cannot hold one response: {config:?}"
    );
}

/// Structure a checksum cannot vouch for; shared by snapshot decoding and backend loading.
pub(crate) fn check_session_rows(rows: &SessionRows, clock_ms: u64) -> Result<(), String> {
    for pair in rows.clients.windows(2) {
        if pair[0].0 >= pair[1].0 {
            return Err(format!("session clients out of order at {:#x}", pair[1].0));
        }
    }
    for (id, client) in &rows.clients {
        if *id == 0 || client.floor == 0 || client.last_seen_ms > clock_ms {
            return Err(format!(
                "session client {id:#x} {client:?} (session clock {clock_ms})"
            ));
        }
    }
    for pair in rows.responses.windows(2) {
        if pair[0].0 >= pair[1].0 {
            return Err(format!("session responses out of order at {:?}", pair[1].0));
        }
    }
    let floors: BTreeMap<u64, u64> = rows.clients.iter().map(|(id, c)| (*id, c.floor)).collect();
    for ((id, seq), _) in &rows.responses {
        match floors.get(id) {
            Some(floor) if seq >= floor => {}
            Some(floor) => return Err(format!("response {id:#x}/{seq} below floor {floor}")),
            None => return Err(format!("response {id:#x}/{seq} of no client")),
        }
    }
    Ok(())
}

impl SessionTable {
    pub fn load(rows: SessionRows, meta: &Meta) -> Result<Self, BackendError> {
        check_session_rows(&rows, meta.session_clock_ms)
            .map_err(|detail| BackendError::Corrupt(format!("session table: {detail}")))?;
        let mut table = SessionTable::default();
        for (id, record) in rows.clients {
            table.idle_order.insert((record.last_seen_ms, id));
            table.clients.insert(
                id,
                ClientSession {
                    record,
                    responses: BTreeMap::new(),
                },
            );
        }
        for ((id, seq), response) in rows.responses {
            let client = table.clients.get_mut(&id).expect("checked above");
            client.responses.insert(seq, response);
        }
        table.stored_responses = table.clients.values().map(|c| c.responses.len()).sum();
        table.stored_bytes = table.clients.values().map(client_cost).sum();
        Ok(table)
    }

    /// The table as rows in key order (snapshots).
    pub fn rows(&self) -> SessionRows {
        let mut rows = SessionRows::default();
        for (id, client) in &self.clients {
            rows.clients.push((*id, client.record));
            rows.responses.extend(
                client
                    .responses
                    .iter()
                    .map(|(seq, response)| ((*id, *seq), response.clone())),
            );
        }
        rows
    }
}

impl StoredResponse {
    fn of(response: &Result<CommandResponse, KvError>, max_bytes: u64) -> StoredResponse {
        let encoded = encode_response(response);
        if encoded.len() as u64 > max_bytes {
            StoredResponse::TooLarge
        } else {
            StoredResponse::Kept(encoded.into())
        }
    }

    fn answer(&self, seq: u64) -> Result<CommandResponse, KvError> {
        match self {
            StoredResponse::TooLarge => Err(KvError::DuplicateResponseNotRetained { seq }),
            // Kept bytes were encoded here or checked when loaded (`decode_stored`).
            StoredResponse::Kept(bytes) => decode_response(bytes)
                .unwrap_or_else(|e| panic!("a kept response of seq {seq} does not decode: {e}")),
        }
    }
}

/// Steps 1 to 4 of the module documentation, as the table's own bookkeeping: the caller moves the
/// session clock and applies the inner command; every row the table changes is written to
/// `changes`, the entry's batch.
impl SessionTable {
    pub fn stats(&self) -> SessionStats {
        SessionStats {
            clients: self.clients.len(),
            stored_responses: self.stored_responses,
            stored_bytes: self.stored_bytes,
            duplicates_answered: self.duplicates_answered,
            expired_clients: self.expired_clients,
        }
    }

    /// Steps 1 to 4 before the command applies: expiry at `clock_ms`, then a refusal, the answer
    /// to a duplicate, or `None` for a new request that may apply.
    #[allow(clippy::type_complexity)]
    pub fn admit(
        &mut self,
        request: &ClientSeq,
        clock_ms: u64,
        config: &KvConfig,
        changes: &mut SessionChanges,
    ) -> Result<Option<Result<CommandResponse, KvError>>, KvError> {
        self.expire_idle_clients(clock_ms, config.client_idle_expiry_ms, changes);
        if request.client_id == 0 || request.seq == 0 || request.acked_below > request.seq {
            return Err(KvError::InvalidClientSeq);
        }
        if let Some(answer) = self.duplicate_answer(request, clock_ms, changes)? {
            return Ok(Some(answer));
        }
        self.check_room(request, config)?;
        Ok(None)
    }

    /// Step 4 after the command applied: keeps its response (an error too).
    pub fn record(
        &mut self,
        request: &ClientSeq,
        clock_ms: u64,
        response: &Result<CommandResponse, KvError>,
        config: &KvConfig,
        changes: &mut SessionChanges,
    ) {
        let stored = StoredResponse::of(response, config.max_stored_response_bytes);
        self.remember(request, clock_ms, Some(stored), changes);
    }

    fn expire_idle_clients(&mut self, clock_ms: u64, idle_expiry_ms: u64, changes: &mut SessionChanges) {
        while let Some(&(last_seen_ms, id)) = self.idle_order.first() {
            assert!(
                last_seen_ms <= clock_ms,
                "client {id:#x} seen at {last_seen_ms} > {clock_ms}"
            );
            if clock_ms - last_seen_ms <= idle_expiry_ms {
                break;
            }
            self.forget_client(id, changes);
            self.expired_clients += 1;
        }
    }

    fn forget_client(&mut self, id: u64, changes: &mut SessionChanges) {
        let client = self.clients.remove(&id).expect("listed in idle order");
        assert!(self.idle_order.remove(&(client.record.last_seen_ms, id)));
        self.stored_bytes -= client_cost(&client);
        self.stored_responses -= client.responses.len();
        changes.clients.insert(id, None);
        for seq in client.responses.keys() {
            changes.responses.insert((id, *seq), None);
        }
    }

    /// Steps 2 and 3: a refusal, the answer to a duplicate, or `None` for a new request.
    #[allow(clippy::type_complexity)]
    fn duplicate_answer(
        &mut self,
        request: &ClientSeq,
        clock_ms: u64,
        changes: &mut SessionChanges,
    ) -> Result<Option<Result<CommandResponse, KvError>>, KvError> {
        let Some(client) = self.clients.get(&request.client_id) else {
            if request.acked_below > 1 {
                return Err(KvError::ClientSessionExpired {
                    client_id: request.client_id,
                });
            }
            return Ok(None);
        };
        if request.seq < client.record.floor {
            return Err(KvError::SequenceAcknowledged {
                seq: request.seq,
                floor: client.record.floor,
            });
        }
        let Some(stored) = client.responses.get(&request.seq) else {
            return Ok(None);
        };
        let answer = stored.answer(request.seq);
        self.remember(request, clock_ms, None, changes);
        self.duplicates_answered += 1;
        Ok(Some(answer))
    }

    /// Step 4's limits, judged as if the request's floor had already dropped what it releases.
    fn check_room(&self, request: &ClientSeq, config: &KvConfig) -> Result<(), KvError> {
        let (kept, released_bytes, new_client_bytes) = match self.clients.get(&request.client_id) {
            None => {
                if self.clients.len() >= config.max_client_sessions {
                    return Err(KvError::TooManyClientSessions);
                }
                (0, 0, CLIENT_OVERHEAD_BYTES)
            }
            Some(client) => {
                let floor = client.record.floor.max(request.acked_below);
                let kept = client.responses.range(floor..).count();
                let released: u64 = client
                    .responses
                    .range(..floor)
                    .map(|(_, r)| response_cost(r))
                    .sum();
                (kept, released, 0)
            }
        };
        if kept >= config.max_unacknowledged_per_client {
            return Err(KvError::TooManyUnacknowledged {
                client_id: request.client_id,
            });
        }
        let after = self.stored_bytes - released_bytes
            + new_client_bytes
            + RESPONSE_OVERHEAD_BYTES
            + config.max_stored_response_bytes;
        if after > config.max_session_bytes {
            return Err(KvError::SessionMemoryFull);
        }
        Ok(())
    }

    /// Raises the client's floor and last-seen (creating it if new), drops responses below the
    /// floor, and stores `response` at the request's seq.
    fn remember(
        &mut self,
        request: &ClientSeq,
        clock_ms: u64,
        response: Option<StoredResponse>,
        changes: &mut SessionChanges,
    ) {
        let id = request.client_id;
        let client = self.clients.entry(id).or_insert_with(|| {
            self.stored_bytes += CLIENT_OVERHEAD_BYTES;
            ClientSession {
                record: ClientRecord {
                    floor: 1,
                    last_seen_ms: clock_ms,
                },
                responses: BTreeMap::new(),
            }
        });
        self.idle_order.remove(&(client.record.last_seen_ms, id));
        client.record.last_seen_ms = clock_ms;
        self.idle_order.insert((clock_ms, id));
        client.record.floor = client.record.floor.max(request.acked_below);
        assert!(
            request.seq >= client.record.floor,
            "seq {} below floor {}",
            request.seq,
            client.record.floor
        );
        let kept = client.responses.split_off(&client.record.floor);
        let released = std::mem::replace(&mut client.responses, kept);
        for (seq, response) in released {
            self.stored_bytes -= response_cost(&response);
            self.stored_responses -= 1;
            changes.responses.insert((id, seq), None);
        }
        if let Some(response) = response {
            self.stored_bytes += response_cost(&response);
            self.stored_responses += 1;
            changes
                .responses
                .insert((id, request.seq), Some(response.clone()));
            let previous = client.responses.insert(request.seq, response);
            assert!(previous.is_none(), "seq {} of {id:#x} stored twice", request.seq);
        }
        changes.clients.insert(id, Some(client.record));
    }
}
