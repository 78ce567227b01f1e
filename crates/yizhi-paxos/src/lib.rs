//! Yizhi's Multi-Paxos engine: a sans-IO implementation of the multi-decree protocol of Lamport's
//! "Paxos Made Simple" (§3) in the shape of van Renesse & Altinbuken's "Paxos Made Moderately
//! Complex", driven through the same [`yizhi_engine::Engine`] contract as the Raft engine.
//!
//! Mapping onto the engine's types:
//! - A ballot is `(round, node id)`, encoded as `round << 16 | node id` ([`Ballot`]).
//! - `HardState.term` is the acceptor's promised ballot; `HardState.vote` is unused (`None`);
//!   `HardState.commit` is the chosen prefix (a hint for restarts).
//! - A log entry is a slot: `Entry.index` the slot, `Entry.term` the ballot the acceptor accepted
//!   it in, `Entry.payload` the value. So a chosen value can carry different terms on different
//!   nodes (it may be re-proposed in a later ballot); the payload identifies it.
//!
//! What it has: one phase 1 for all slots from the first unchosen one; adoption of the
//! highest-ballot accepted value per slot and no-ops in the holes; pipelined, batched phase 2 runs
//! bounded by `max_inflight_msgs` and `max_msg_bytes`; the chosen prefix carried in accepts and
//! heartbeats; randomized election timeouts and Nacks that carry the higher promise; snapshot
//! catch-up; quorum-confirmed reads (`reads.rs` argues their safety); leadership transfer by
//! TimeoutNow; an early phase 1 when the transport reports the leader's connection closed. What
//! it lacks: membership changes (the voter set is fixed) and lease reads.
//!
//! Layout: `paxos.rs` holds the state and the `step` router; `acceptor.rs` and `proposer.rs` are
//! the two roles' handlers; `reads.rs` the read rounds; `log.rs` the slot log and its write rule;
//! `node.rs` the `Ready`/`advance` contract; `codec.rs` the byte encoding of [`Message`]
//! ([`yizhi_engine::WireMessage`]).

mod acceptor;
mod ballot;
mod codec;
mod config;
mod log;
mod message;
mod node;
mod paxos;
mod proposer;
mod reads;
mod roles;

pub use ballot::{Ballot, NODE_ID_BITS, NODE_ID_LIMIT};
pub use codec::PAXOS_WIRE_VERSION;
pub use config::{ConfigError, PaxosConfig};
pub use message::Message;
pub use paxos::{CONNECTION_LOST_CAMPAIGN_TICKS_MAX, MAX_OUTBOX_MSGS, PaxosError, PaxosNode};

#[cfg(feature = "testkit")]
pub mod testkit;
