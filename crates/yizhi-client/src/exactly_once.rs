//! Exactly-once writes: the request metadata a yizhi server deduplicates by.
//!
//! Each [`Client`](crate::Client) picks a random client id. Every write that is not safe to repeat
//! (a Put, a DeleteRange, a Txn not marked retry-safe) gets the next sequence number, and every
//! attempt of that write carries the same three values:
//!
//! | metadata             | value (decimal)                                                   |
//! |----------------------|-------------------------------------------------------------------|
//! | `yizhi-client-id`    | the client's id (non-zero)                                         |
//! | `yizhi-seq`          | this write's sequence number (from 1, one per write, not per attempt) |
//! | `yizhi-acked-below`  | the lowest sequence number still in flight: the client will never retry anything below it, so the server may forget those answers |
//!
//! A yizhi server applies a given (client id, sequence) at most once and answers a repeat with the
//! stored response; it says so with `yizhi-exactly-once: 1` in the response metadata. Once a
//! client has seen that, it retries a write whose attempt failed ambiguously (a timeout, a broken
//! connection) instead of giving up with [`Error::Ambiguous`](crate::Error::Ambiguous). Against
//! etcd, which ignores the metadata and never confirms it, writes keep etcd's rule: retried only
//! when they provably never left.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tonic::metadata::MetadataMap;

pub const CLIENT_ID_KEY: &str = "yizhi-client-id";
pub const SEQ_KEY: &str = "yizhi-seq";
pub const ACKED_BELOW_KEY: &str = "yizhi-acked-below";
/// Response metadata: the server deduplicated by the request's client id and sequence.
pub const CONFIRMED_KEY: &str = "yizhi-exactly-once";

/// Writes of one client in flight at once; a yizhi server keeps at most 256 unacknowledged answers
/// per client, so a client above that would be refused anyway. Beyond it, writes wait.
pub const MAX_IN_FLIGHT_WRITES: usize = 256;

/// Hands out sequence numbers and tracks which are still in flight.
#[derive(Debug)]
pub(crate) struct Sequencer {
    client_id: u64,
    next_seq: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
    slots: tokio::sync::Semaphore,
    /// Whether some server answered with [`CONFIRMED_KEY`].
    confirmed: AtomicBool,
}

/// One write's place in the sequence; finishing it (drop) lets the floor move past it.
#[derive(Debug)]
pub(crate) struct SeqTicket<'a> {
    sequencer: &'a Sequencer,
    pub seq: u64,
    _slot: tokio::sync::SemaphorePermit<'a>,
}

impl Sequencer {
    pub fn new() -> Sequencer {
        Sequencer::with_id(random_client_id())
    }

    pub fn with_id(client_id: u64) -> Sequencer {
        assert_ne!(client_id, 0, "client id 0 means none");
        Sequencer {
            client_id,
            next_seq: AtomicU64::new(1),
            in_flight: Mutex::new(BTreeSet::new()),
            slots: tokio::sync::Semaphore::new(MAX_IN_FLIGHT_WRITES),
            confirmed: AtomicBool::new(false),
        }
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    pub async fn begin(&self) -> SeqTicket<'_> {
        let slot = self.slots.acquire().await.expect("the semaphore is never closed");
        let mut in_flight = self.in_flight.lock().expect("in-flight lock");
        // Taken under the lock so that the floor never passes a number not yet in the set.
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        in_flight.insert(seq);
        SeqTicket {
            sequencer: self,
            seq,
            _slot: slot,
        }
    }

    /// The metadata of one attempt of `ticket`'s write.
    pub fn metadata(&self, ticket: &SeqTicket<'_>, into: &mut MetadataMap) {
        let floor = {
            let in_flight = self.in_flight.lock().expect("in-flight lock");
            *in_flight.first().expect("the ticket's own number is in flight")
        };
        assert!(floor <= ticket.seq);
        for (key, value) in [
            (CLIENT_ID_KEY, self.client_id),
            (SEQ_KEY, ticket.seq),
            (ACKED_BELOW_KEY, floor),
        ] {
            into.insert(key, value.to_string().parse().expect("decimal is ASCII"));
        }
    }

    pub fn is_confirmed(&self) -> bool {
        self.confirmed.load(Ordering::Relaxed)
    }

    pub fn observe_response(&self, metadata: &MetadataMap) {
        if metadata.get(CONFIRMED_KEY).is_some_and(|v| v == "1") {
            self.confirmed.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for SeqTicket<'_> {
    fn drop(&mut self) {
        let removed = self
            .sequencer
            .in_flight
            .lock()
            .expect("in-flight lock")
            .remove(&self.seq);
        assert!(removed, "sequence {} finished twice", self.seq);
    }
}

/// A non-zero id unlikely to collide with another client's: std's randomly keyed hasher over the
/// time and process id (no RNG dependency; ids need to be unique, not secret).
fn random_client_id() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(metadata: &MetadataMap) -> (String, String, String) {
        let get = |k| metadata.get(k).expect(k).to_str().expect("ascii").to_string();
        (get(CLIENT_ID_KEY), get(SEQ_KEY), get(ACKED_BELOW_KEY))
    }

    #[tokio::test]
    async fn the_floor_is_the_lowest_write_still_in_flight() {
        let sequencer = Sequencer::with_id(7);
        let first = sequencer.begin().await;
        let second = sequencer.begin().await;
        let mut metadata = MetadataMap::new();
        sequencer.metadata(&second, &mut metadata);
        assert_eq!(values(&metadata), ("7".into(), "2".into(), "1".into()));
        drop(first);
        sequencer.metadata(&second, &mut metadata);
        assert_eq!(values(&metadata), ("7".into(), "2".into(), "2".into()));
        drop(second);
        let third = sequencer.begin().await;
        sequencer.metadata(&third, &mut metadata);
        assert_eq!(values(&metadata), ("7".into(), "3".into(), "3".into()));
    }

    #[test]
    fn only_a_server_that_says_so_is_trusted_to_deduplicate() {
        let sequencer = Sequencer::with_id(1);
        let mut metadata = MetadataMap::new();
        sequencer.observe_response(&metadata);
        assert!(!sequencer.is_confirmed());
        metadata.insert(CONFIRMED_KEY, "1".parse().expect("ascii"));
        sequencer.observe_response(&metadata);
        assert!(sequencer.is_confirmed());
    }

    #[test]
    fn client_ids_are_non_zero_and_differ() {
        let a = random_client_id();
        let b = random_client_id();
        assert!(a != 0 && b != 0 && a != b);
    }
}
