//! A member's request path, without IO.
//!
//! What happens to a client's write between the API handler and the reply is decided here, as
//! pure code that both the server (`yizhi-server`, threads and sockets) and the simulator
//! (`yizhi-sim`, one thread, one seed) run, so that the simulator finds the request path's bugs
//! too (issue 13: a write applied twice, an acknowledgement carrying another write's result):
//!
//! - [`proposal`]: what a log entry says about who proposed it. A proposal's identity is
//!   `(origin member, boot id, request id)`; the boot id is drawn afresh at every start of a
//!   member, so an entry proposed by an earlier incarnation and re-applied after a restart never
//!   answers a request of the new one.
//! - [`waiters`]: the clients waiting for their entries, answered only by the entry they proposed
//!   (checked by identity and asserted by the command's fingerprint).
//! - [`routing`]: where a proposal goes — into the local engine, forwarded to the leader, or
//!   refused — and the rule that no proposal enters a log after its client's deadline.
//! - [`reads`]: read barriers — the index a linearizable read waits for, asked of the engine or
//!   of the leader, with ids that never match an answer meant for an earlier boot.
//! - [`members`]: who the members are — etcd's 64-bit member ids, peer URLs, learners — and the
//!   small engine node id each votes under; the checks a membership change must pass.
//! - [`failure`]: the ways a request fails, with etcd's texts, and which of them leave a write's
//!   outcome unknown.

pub mod failure;
pub mod members;
pub mod proposal;
pub mod reads;
pub mod routing;
pub mod waiters;

pub use failure::{ProposeFailure, StatusCode};
pub use members::{Member, MemberChange, MemberError, MemberId, MemberTable, cluster_id, member_id};
pub use proposal::{ProposalId, decode_proposal, encode_proposal, peek_proposal_id};
pub use reads::{Confirmed, ReadBarriers, ReadLimits, ReadResponse, ReadStart, first_id_of_boot};
pub use routing::{Deadline, Origin, Route, place_proposal};
pub use waiters::Waiters;
