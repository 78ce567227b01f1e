//! Yizhi's Raft engine: a sans-IO implementation of the Raft paper (Ongaro & Ousterhout, 2014)
//! and thesis (Ongaro, 2014), driven through the [`yizhi_engine::Engine`] contract.
//!
//! What it has: elections with randomized timeouts, PreVote (§9.6), CheckQuorum (§6.2),
//! pipelined and batched replication with per-follower progress (probe / replicate / snapshot),
//! accelerated conflict backtracking, the current-term commit rule (§5.4.2), ReadIndex reads
//! (§6.4) and lease reads (§6.4.1), leadership transfer (§3.10), learners, membership changes through joint
//! configurations (thesis §4, `membership.rs`), snapshot install, and an early campaign when the transport reports the leader's connection closed.
//!
//! Layout: `raft.rs` holds the state and the single `step` entry point; `election.rs`,
//! `replication.rs` and `reads.rs` are the handlers; `log.rs` the log view; `progress.rs` and
//! `read_index.rs` the leader's bookkeeping; `node.rs` the `Ready`/`advance` contract; `codec.rs`
//! the byte encoding of [`Message`] ([`yizhi_engine::WireMessage`]).

mod codec;
mod config;
mod config_log;
mod election;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod raft;
mod read_index;
mod reads;
mod replication;

pub use codec::RAFT_WIRE_VERSION;
pub use config::{ConfigError, RaftConfig, ReadMode};
pub use config_log::MAX_UNCOMMITTED_CONFIGS;
pub use election::CONNECTION_LOST_CAMPAIGN_TICKS_MAX;
pub use membership::ConfChangeProposeError;
pub use message::{Message, MessageKind, RejectHint};
pub use progress::{Progress, ProgressState};
pub use raft::{MAX_OUTBOX_MSGS, RaftError, RaftNode};
pub use read_index::MAX_CONFIRM_ROUNDS;

#[cfg(feature = "testkit")]
pub mod testkit;
