//! Yizhi's deterministic cluster simulator (in the style of TigerBeetle's VOPR and FoundationDB's
//! simulation testing).
//!
//! # The model
//!
//! - **One seed decides everything.** [`config::SimConfig::from_seed`] draws the cluster size (1, 3,
//!   5 or 7), per-node tick rates (10 ms ± 10%), fsync latencies and compaction intervals, per-link
//!   delay/loss/duplication rates, the clients and their workload, and the fault-phase length. The
//!   run forks one [`yizhi_engine::SeededRng`] stream each for the network, faults, clients, disks
//!   and engines. Time is simulated milliseconds; one event queue is ordered by (time, sequence
//!   number); nothing iterates a hash map.
//! - **Network** ([`network`]): one directed link per pair, random per-message delay (so messages
//!   reorder), loss, duplication, tail spikes, clogs, and partitions of several shapes that the
//!   fault schedule ([`faults`]) re-decides every few hundred ms.
//! - **Disk** ([`disk`]): the durable image plus a queue of unsynced writes. A `Ready` is written
//!   to the engine's storage at once and queued on the disk; if it must sync, its messages,
//!   applies and `advance()` wait for an fsync that takes simulated time. A crash keeps the durable
//!   image and an ordered prefix of the unsynced writes, each write whole: an append is atomic, as
//!   the WAL writes it as one batch that recovery keeps entirely or cuts entirely. Half the crashes
//!   strike at the node's next fsync request, so that unsynced writes are in flight when the
//!   power goes.
//! - **Nodes** ([`node`]): crash and restart from the disk (state machine from the durable
//!   snapshot), pause (their events wait), apply committed entries to the server's own MVCC state
//!   machine (`yizhi_kv::MvccStore`, fed the `encode_command` bytes from the log; [`kv`]), compact
//!   periodically (snapshots are `MvccStore::snapshot`) so lagging followers need
//!   InstallSnapshot, and answer clients.
//! - **Clients** ([`client`]): one operation in flight each over etcd's API on a few keys (put,
//!   get, delete, a compare-and-swap txn, a prefix range, and the occasional compaction), timeouts,
//!   retries as new operations with fresh values; the history, revisions included, is judged by
//!   `yizhi-lincheck`'s MVCC model at the end. A timed-out write that no replica ever applied is
//!   left out of the judged history (nobody can have observed it); one that was applied carries
//!   the state machine's answer, unseen by its client, which pins it to its revision (as etcd's
//!   robustness tests patch such writes from the WAL); one whose bytes another operation also
//!   sent (under Multi-Paxos, two deletes of a key) stays of unknown outcome.
//! - **Read levels** ([`reads`]): as the server, a read is linearizable (a read barrier: ReadIndex,
//!   lease or Paxos quorum read), serializable (the node's applied state at once, from any node,
//!   even a cut-off one) or bounded-staleness with a bound `B` of 50–2000 ms (at once if a read
//!   barrier started at most `B` ago on the node's own skewed clock has completed there, else after
//!   a barrier, whose completion refreshes that start). The seed sets the mix; linearizable reads
//!   go into the judged history, the others do not. Every read answer is checked as it returns:
//!   a client's reads from one node process never go back in revision; the answer equals what a
//!   never-compacting reference replica (fed each committed entry once, in log order) holds at the
//!   answer's revision; and a bounded read's revision covers every write acknowledged to any
//!   client at or before `invoke − B·tick_interval_ms/10` of the serving node (its clock skew,
//!   exactly).
//! - **Exactly-once counter** ([`counter`]): every seed runs a counter client that increments a
//!   reserved key (`counter`, outside the workload's keys) by `Put`, each increment wrapped in
//!   `Command::Deduped` (fixed client id, `seq` = increment number, `acked_below` = `seq`,
//!   `now_ms` = sim time) and retried as the very same bytes, to any node, after a timeout, a
//!   refusal or a lost slot, until acknowledged. A replica never counts more than were issued;
//!   after the heal the counter finishes its in-flight increment and every up replica that applied
//!   everything must hold the key at `version` = acknowledged increments, exactly. The increments
//!   are in the judged history too (one `Put` per increment, from its first attempt to its
//!   acknowledgement), since they move the revision every other answer reports.
//! - **Invariants** ([`invariants`]): checked after every event; the run stops at the first one
//!   broken. Replicas at the same applied index must have the same `MvccStore::state_hash`. After the fault phase the network heals, a majority is up, and a leader plus a probe
//!   write must get through within bounds (liveness).
//! - **Self-test**: [`node::Mutation`] plants a deliberate runtime bug (send before fsync, ack
//!   before commit, reads without ReadIndex, a disk that forgets votes or promises, bounded reads
//!   that ignore their bound, serializable reads from an older state or under a later revision,
//!   nodes that strip the `Deduped` wrapper);
//!   the tests require that some seed catches each one.
//! - **Throughput** ([`throughput`], `yizhi-sim throughput`): a fixed, fair scenario instead of a
//!   seed's draw, to compare the engines under message loss (issue 6): no faults but the same
//!   loss and delays on every link, the engines' defaults, closed-loop put clients, and a window
//!   that opens when a leader first exists. It counts committed entries and acknowledged writes
//!   per simulated second and write latencies, with every check above still on; the numbers
//!   replay exactly. Results and what they show: `crates/yizhi-sim/README.md`.
//! - **Determinism**: every event is folded into an FNV-1a trace hash;
//!   [`run::check_determinism`] runs a seed twice and compares.

mod checks;
pub mod client;
mod client_events;
mod clients;
pub mod clock;
pub mod config;
pub mod counter;
pub mod disk;
pub mod engines;
pub mod faults;
pub mod invariants;
pub mod kv;
pub mod network;
pub mod node;
mod phases;
pub mod reads;
pub mod report;
mod routing;
pub mod run;
pub mod sim;
pub mod throughput;
pub mod trace;

pub use engines::{EngineFactory, EngineStart, PaxosFactory, RaftFactory};
pub use report::{RunOptions, RunReport, WindowStats};
pub use run::{check_determinism, run_seed, run_throughput, shrink};
pub use throughput::ThroughputScenario;
