//! Clients waiting for their proposals, answered only by the entry they proposed.
//!
//! A waiter is found by the identity its entry carries: this member's id, this boot's id and the
//! request id. Anything weaker (request ids alone, or a log position) can hand one request's
//! answer to another — the restarted-member anomaly of issue 13. When the identity matches, the
//! entry's command must be the waiter's own: asserted by a fingerprint of the command bytes.
//!
//! Every waiter has a deadline on the member's clock (milliseconds; the server uses the wall
//! clock, the simulator a simulated one); the runtime calls [`Waiters::take_expired`] as time
//! passes and answers those clients "request timed out": their outcome is unknown.

use std::collections::{BTreeSet, HashMap};

use yizhi_engine::NodeId;

use crate::failure::ProposeFailure;
use crate::proposal::{ProposalId, fingerprint};
use crate::routing::Deadline;

#[derive(Debug)]
struct Waiter<R> {
    reply: R,
    command_fingerprint: u64,
    deadline: Deadline,
}

/// Bounded: beyond `max_waiting` a new request is refused ("too many requests").
#[derive(Debug)]
pub struct Waiters<R> {
    origin: NodeId,
    boot_id: u64,
    /// Invariant: greater than every request id handed out in this boot.
    next_request_id: u64,
    max_waiting: usize,
    waiting: HashMap<u64, Waiter<R>>,
    /// Invariant: exactly the (deadline, request id) of every entry of `waiting`.
    by_deadline: BTreeSet<(u64, u64)>,
}

impl<R> Waiters<R> {
    pub fn new(origin: NodeId, boot_id: u64, max_waiting: usize) -> Self {
        assert!(max_waiting >= 1, "a waiter table without room");
        assert_ne!(boot_id, 0, "boot id 0 is reserved for entries without one");
        Waiters {
            origin,
            boot_id,
            next_request_id: 1,
            max_waiting,
            waiting: HashMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }

    pub fn boot_id(&self) -> u64 {
        self.boot_id
    }

    /// Registers a client waiting for `command`; its entry must carry the returned identity.
    /// `abandoned` tells waiters whose client has gone (their slots are reclaimed when full).
    pub fn register(
        &mut self,
        command: &[u8],
        deadline: Deadline,
        reply: R,
        abandoned: impl Fn(&R) -> bool,
    ) -> Result<ProposalId, ProposeFailure> {
        if self.waiting.len() >= self.max_waiting {
            let gone: Vec<u64> = self
                .waiting
                .iter()
                .filter(|(_, waiter)| abandoned(&waiter.reply))
                .map(|(&id, _)| id)
                .collect();
            for request_id in gone {
                self.remove(request_id);
            }
            if self.waiting.len() >= self.max_waiting {
                return Err(ProposeFailure::TooManyRequests);
            }
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let waiter = Waiter {
            reply,
            command_fingerprint: fingerprint(command),
            deadline,
        };
        assert!(
            self.waiting.insert(request_id, waiter).is_none(),
            "request id {request_id} reused"
        );
        assert!(self.by_deadline.insert((deadline.at_ms, request_id)));
        Ok(ProposalId {
            origin: self.origin,
            boot_id: self.boot_id,
            request_id,
        })
    }

    fn remove(&mut self, request_id: u64) -> Option<Waiter<R>> {
        let waiter = self.waiting.remove(&request_id)?;
        let indexed = self.by_deadline.remove(&(waiter.deadline.at_ms, request_id));
        assert!(indexed, "waiter {request_id} missing from the deadline index");
        Some(waiter)
    }

    fn is_mine(&self, id: &ProposalId) -> bool {
        id.origin == self.origin && id.boot_id == self.boot_id && id.request_id != 0
    }

    /// The waiter an applied entry answers: only the one whose proposal this entry is.
    ///
    /// # Panics
    ///
    /// If the entry carries this boot's identity of a waiter but another command: two proposals
    /// with one identity, which would hand one client another's answer.
    pub fn take_applied(&mut self, id: &ProposalId, command: &[u8]) -> Option<R> {
        if !self.is_mine(id) {
            return None;
        }
        assert!(
            id.request_id < self.next_request_id,
            "applied entry {id:?} names a request this boot has not issued (next {})",
            self.next_request_id
        );
        let waiter = self.remove(id.request_id)?;
        assert_eq!(
            waiter.command_fingerprint,
            fingerprint(command),
            "entry {id:?} answers a waiter that proposed another command"
        );
        Some(waiter.reply)
    }

    /// The waiter of a proposal that failed before it reached a log (refused here, or by the
    /// leader it was forwarded to). A failure reported for another boot's proposal answers nobody.
    pub fn take_failed(&mut self, id: &ProposalId) -> Option<R> {
        if !self.is_mine(id) {
            return None;
        }
        self.remove(id.request_id).map(|waiter| waiter.reply)
    }

    /// The waiters whose deadline is at or before `now_ms`, oldest first.
    pub fn take_expired(&mut self, now_ms: u64) -> Vec<(ProposalId, R)> {
        let mut expired = Vec::new();
        while let Some(&(at_ms, request_id)) = self.by_deadline.first() {
            if at_ms > now_ms {
                break;
            }
            let waiter = self.remove(request_id).expect("indexed waiters exist");
            let id = ProposalId {
                origin: self.origin,
                boot_id: self.boot_id,
                request_id,
            };
            expired.push((id, waiter.reply));
        }
        expired
    }

    /// Every waiter (on shutdown, or when the member's process state is lost).
    pub fn drain(&mut self) -> Vec<R> {
        self.by_deadline.clear();
        self.waiting.drain().map(|(_, waiter)| waiter.reply).collect()
    }

    /// The waiting clients' replies, in no particular order.
    pub fn replies(&self) -> impl Iterator<Item = &R> {
        self.waiting.values().map(|waiter| &waiter.reply)
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Deadline {
        Deadline { at_ms: ms }
    }

    #[test]
    fn a_waiter_is_answered_only_by_its_own_boot_and_request() {
        let mut waiters = Waiters::new(1, 77, 8);
        let id = waiters.register(b"put", at(100), "a", |_| false).expect("room");
        let earlier_boot = ProposalId { boot_id: 76, ..id };
        let other_member = ProposalId { origin: 2, ..id };
        assert_eq!(waiters.take_applied(&earlier_boot, b"put"), None);
        assert_eq!(waiters.take_applied(&other_member, b"put"), None);
        assert_eq!(waiters.take_failed(&earlier_boot), None);
        assert_eq!(waiters.take_applied(&id, b"put"), Some("a"));
        assert_eq!(waiters.take_applied(&id, b"put"), None, "answered once");
    }

    #[test]
    #[should_panic(expected = "proposed another command")]
    fn an_entry_with_a_waiters_identity_but_another_command_is_impossible() {
        let mut waiters = Waiters::new(1, 77, 8);
        let id = waiters.register(b"put a", at(100), (), |_| false).expect("room");
        waiters.take_applied(&id, b"put b");
    }

    #[test]
    fn deadlines_expire_in_order_and_only_once() {
        let mut waiters = Waiters::new(1, 5, 8);
        let late = waiters.register(b"x", at(300), "late", |_| false).expect("room");
        let early = waiters.register(b"y", at(100), "early", |_| false).expect("room");
        assert!(waiters.take_expired(99).is_empty());
        assert_eq!(waiters.take_expired(300), vec![(early, "early"), (late, "late")]);
        assert!(waiters.is_empty());
        assert_eq!(waiters.take_failed(&early), None);
    }

    #[test]
    fn the_table_is_bounded_and_reclaims_abandoned_slots() {
        let mut waiters = Waiters::new(1, 5, 2);
        let a = waiters.register(b"a", at(10), "gone", |_| false).expect("room");
        waiters.register(b"b", at(10), "live", |_| false).expect("room");
        let full = waiters.register(b"c", at(10), "new", |r| *r == "never");
        assert_eq!(full, Err(ProposeFailure::TooManyRequests));
        let c = waiters
            .register(b"c", at(10), "new", |r| *r == "gone")
            .expect("reclaimed");
        assert_ne!(
            a.request_id, c.request_id,
            "request ids are never reused in a boot"
        );
        assert_eq!(waiters.len(), 2);
        assert_eq!(waiters.drain().len(), 2);
        assert!(waiters.take_expired(u64::MAX).is_empty());
    }
}
