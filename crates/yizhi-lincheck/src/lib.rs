//! A linearizability checker for client histories.
//!
//! The simulator records what every client invoked, when, and what (if anything) came back; this crate
//! decides whether some total order of those operations both respects real time and is a legal run of
//! a sequential [`Model`]. If none does, the system under test broke linearizability (Herlihy & Wing,
//! 1990).
//!
//! # Algorithm
//!
//! The search is Wing & Gong's (1993) with Lowe's memoization ("Testing for linearizability", 2017),
//! the design porcupine uses:
//!
//! 1. [`Model::partition`] splits the history into independent sub-histories (for a plain key-value
//!    store, one per key: [`kv::KvModel`]). Linearizability is local (Herlihy & Wing's locality
//!    theorem), so each is checked alone, and the search stays small. A model whose operations share
//!    state across keys cannot split: [`mvcc::MvccModel`] (etcd's API, where every write takes the
//!    next global revision) checks the whole history as one, and stays fast because the revisions
//!    it verifies pin most operations to one place (see [`mvcc`]).
//! 2. Each operation becomes a call event at `invoke_time` and a return event at `return_time`, kept in
//!    time order in a doubly-linked list.
//! 3. A depth-first search walks the list from its head. At a call it asks the model whether that
//!    operation can take effect next from the current state. If so, and the pair
//!    (set of linearized operations, resulting state) has not been seen before, the operation is
//!    linearized: its call and return leave the list, the pair is memoized, and the walk restarts at
//!    the head. If the step is impossible or the pair was already explored (it failed then, or the
//!    search would have finished), the walk moves on to the next event.
//! 4. Reaching a return event means that operation finished before anything could place it: the last
//!    linearized operation is undone (its events go back into the list, its state is restored) and
//!    the walk continues after its call. With nothing left to undo, the sub-history is not
//!    linearizable.
//! 5. The sub-history is linearizable once every operation with a known outcome is linearized.
//!
//! Every loop iteration is one step; a sub-history that needs more than `max_steps` is reported as
//! [`CheckResult::Undecided`], never as success. The memo gains at most one entry per step, so the
//! step budget also bounds memory.
//!
//! # Tie rule
//!
//! Operation A precedes B in real time only if `A.return_time < B.invoke_time`. When A returns at the
//! very tick B is invoked (`B.invoke_time == A.return_time`) the two count as concurrent and may be
//! linearized in either order: at equal times the call event is ordered before the return event.
//! Timestamps have finite resolution, so two events on the same tick cannot be proven ordered;
//! calling them concurrent can only accept more histories, never report a violation that did not
//! happen.
//!
//! # Unknown outcomes
//!
//! A client that timed out does not know whether its operation took effect, and it may still take
//! effect much later. Such an operation ([`Outcome::Unknown`]) has a return time of infinity: it may be
//! linearized at any point after its invocation, or never. It therefore has no return event, so it
//! can never force a backtrack, and the search does not wait for it: success needs only the
//! operations with a known outcome. When it is linearized, [`Model::step`] receives `output == None`
//! and must accept whatever the input does.
//!
//! A recorder that knows what the system answered an operation whose client gave up (the simulator
//! watched the state machine apply it) reports [`Outcome::Unacknowledged`]: no return event either,
//! but its output is checked. Pinning a timed-out write to the revision it was really given keeps
//! the search from trying it in every place its effect would fit.
//!
//! An unknown operation whose step leaves the state unchanged (a read, a CAS that would fail) is
//! never placed: with no return event it can stay pending forever, so placing it buys nothing, and
//! skipping it stops every timed-out read from doubling the work of a search that must fail.
//! Unknown operations that do change the state have no such shortcut: a violation in a sub-history
//! with dozens of them concurrent with it may take exponential time to prove, and then comes back
//! as [`CheckResult::Undecided`].

mod bitset;
mod events;
pub mod kv;
pub mod mvcc;
mod search;

use bitset::Bitset;
use search::Verdict;

/// A sequential specification of the system under test.
pub trait Model {
    type State: Clone + Eq + std::hash::Hash + std::fmt::Debug;
    type Input: Clone + std::fmt::Debug;
    type Output: Clone + std::fmt::Debug + PartialEq;

    fn init(&self) -> Self::State;

    /// The state after applying `input`, or None if `output` is impossible from `state`.
    /// `output == None` means the outcome is unknown (the client timed out): accept whatever `input` does.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// Split the history into independent sub-histories (e.g. one per key); default: one partition with every op.
    ///
    /// Each index may appear in at most one partition; an operation left out of every partition is not
    /// checked.
    fn partition(&self, history: &[Operation<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }
}

/// What a client learned about its operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<O> {
    Returned {
        output: O,
        return_time: u64,
    },
    /// The client gave up waiting: the operation may or may not have taken effect, at any time after
    /// its invocation.
    Unknown,
    /// The client gave up waiting, but the recorder knows what the system answered (a simulator that
    /// saw the state machine apply the operation, or a log that records it): the operation took
    /// effect at some time after its invocation, with `output`. Like [`Outcome::Unknown`] it has no
    /// return event; unlike it, [`Model::step`] receives the output and checks it.
    Unacknowledged {
        output: O,
    },
}

impl<O> Outcome<O> {
    /// The output to check, if anyone knows it.
    pub fn output(&self) -> Option<&O> {
        match self {
            Outcome::Returned { output, .. } | Outcome::Unacknowledged { output } => Some(output),
            Outcome::Unknown => None,
        }
    }

    /// Whether the client saw the operation return (so it has a return event and must be placed).
    pub fn returned(&self) -> bool {
        matches!(self, Outcome::Returned { .. })
    }
}

/// One client operation as the history recorded it.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation<I, O> {
    pub client_id: u64,
    pub input: I,
    pub invoke_time: u64,
    pub outcome: Outcome<O>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Linearizable,
    /// `partition` is the index of the failing sub-history; `explanation` names the operations (by index into the
    /// original history) of the longest linearizable prefix found and the operation(s) that could not be placed.
    NotLinearizable {
        partition: usize,
        explanation: String,
    },
    /// The search exceeded `max_steps` in some partition: undecided (never reported as success).
    Undecided {
        partition: usize,
        steps: u64,
    },
}

/// Decides whether `history` is linearizable with respect to `model`, spending at most `max_steps`
/// search steps on each partition.
///
/// A violation found in any partition is reported even when an earlier partition ran out of steps:
/// a definite violation is worth more than "undecided". Otherwise the first undecided partition is
/// reported.
///
/// # Example
///
/// ```
/// use yizhi_lincheck::kv::{KvInput, KvModel, KvOutput};
/// use yizhi_lincheck::{CheckResult, Operation, Outcome, check_operations};
///
/// let put = KvInput::Put { key: "x".into(), value: "1".into() };
/// let get = KvInput::Get { key: "x".into() };
/// let history = [
///     Operation { client_id: 1, input: put, invoke_time: 0, outcome: Outcome::Unknown },
///     Operation {
///         client_id: 2,
///         input: get,
///         invoke_time: 5,
///         outcome: Outcome::Returned { output: KvOutput::Value(Some("1".into())), return_time: 6 },
///     },
/// ];
/// // The timed-out put took effect before the read.
/// assert_eq!(check_operations(&KvModel, &history, 10_000), CheckResult::Linearizable);
/// ```
///
/// # Panics
///
/// If an operation's `return_time` is before its `invoke_time`, or if `partition` returns an index out
/// of range or the same index twice: both mean the caller's bookkeeping is broken.
pub fn check_operations<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    max_steps: u64,
) -> CheckResult {
    let partitions = model.partition(history);
    assert_partitions_are_disjoint(&partitions, history.len());
    let mut first_undecided = None;
    for (partition, original_index) in partitions.iter().enumerate() {
        match search::check_partition(model, history, original_index, max_steps) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { explanation } => {
                return CheckResult::NotLinearizable {
                    partition,
                    explanation,
                };
            }
            Verdict::Undecided { steps } => {
                first_undecided.get_or_insert(CheckResult::Undecided { partition, steps });
            }
        }
    }
    first_undecided.unwrap_or(CheckResult::Linearizable)
}

fn assert_partitions_are_disjoint(partitions: &[Vec<usize>], history_len: usize) {
    let mut seen = Bitset::new(history_len);
    for (partition, indices) in partitions.iter().enumerate() {
        for &index in indices {
            assert!(
                index < history_len,
                "partition {partition} names op {index} of {history_len}"
            );
            assert!(
                !seen.contains(index),
                "op {index} appears twice (again in partition {partition})"
            );
            seen.insert(index);
        }
    }
}
