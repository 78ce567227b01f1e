//! The depth-first search for one sub-history (Wing & Gong 1993, with Lowe's 2017 memoization).

use std::collections::HashSet;

use crate::bitset::Bitset;
use crate::events::{Event, EventList};
use crate::{Model, Operation};

/// How many operation indices an explanation lists before it elides the rest: a failing history can
/// hold thousands of operations, and the interesting ones are the last few placed.
const MAX_EXPLAINED_OPS: usize = 32;

pub(crate) enum Verdict {
    Linearizable,
    NotLinearizable { explanation: String },
    Undecided { steps: u64 },
}

/// One linearized operation, with what is needed to take it back.
struct Frame<S> {
    op: usize,
    state_before: S,
}

/// The deepest dead end met so far: the best evidence for a report.
struct DeadEnd<S> {
    prefix: Vec<usize>,
    state: S,
    blocked_op: usize,
    pending_ops: Vec<usize>,
}

struct Search<'a, M: Model> {
    model: &'a M,
    /// Index into the original history of each sub-history operation.
    original_index: &'a [usize],
    ops: Vec<&'a Operation<M::Input, M::Output>>,
    events: EventList,
    state: M::State,
    // Invariant: linearized holds exactly the ops in stack, and stack.len() <= ops.len().
    linearized: Bitset,
    stack: Vec<Frame<M::State>>,
    /// (linearized ops, state) pairs already explored. One insert per step at most, so its size is
    /// bounded by the step budget.
    memo: HashSet<(Bitset, M::State)>,
    /// Operations with a known outcome that are not yet linearized; the search succeeds at zero.
    known_remaining: usize,
    deepest_dead_end: Option<DeadEnd<M::State>>,
}

/// Checks the sub-history made of `history[i]` for each `i` in `original_index`.
pub(crate) fn check_partition<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    original_index: &[usize],
    max_steps: u64,
) -> Verdict {
    let ops: Vec<_> = original_index.iter().map(|&index| &history[index]).collect();
    let known_remaining = ops.iter().filter(|op| op.outcome.returned()).count();
    let mut search = Search {
        model,
        original_index,
        events: EventList::new(&ops),
        state: model.init(),
        linearized: Bitset::new(ops.len()),
        stack: Vec::with_capacity(ops.len()),
        memo: HashSet::new(),
        known_remaining,
        deepest_dead_end: None,
        ops,
    };
    search.run(max_steps)
}

impl<M: Model> Search<'_, M> {
    fn run(&mut self, max_steps: u64) -> Verdict {
        let mut steps = 0u64;
        let mut cursor = self.events.first();
        while self.known_remaining > 0 {
            if steps >= max_steps {
                return Verdict::Undecided { steps };
            }
            steps += 1;
            cursor = match self.events.event(cursor) {
                Event::Call { op } => self.try_linearize(cursor, op),
                Event::Return { op } => match self.backtrack(op) {
                    Some(next_cursor) => next_cursor,
                    None => {
                        return Verdict::NotLinearizable {
                            explanation: self.explain(),
                        };
                    }
                },
                // A known op's return stays in the list until it is linearized, and the cursor never
                // passes a return, so the end is reached only once every known op is placed.
                Event::End => panic!("reached the end with {} known ops unplaced", self.known_remaining),
            };
        }
        assert_eq!(
            self.linearized.count(),
            self.stack.len(),
            "bitset and stack disagree"
        );
        Verdict::Linearizable
    }

    /// Tries `op` as the next linearization point; returns where the scan continues.
    fn try_linearize(&mut self, cursor: usize, op: usize) -> usize {
        assert!(
            !self.linearized.contains(op),
            "op {op} is linearized but still in the list"
        );
        let operation = self.ops[op];
        let output = operation.outcome.output();
        let Some(next_state) = self.model.step(&self.state, &operation.input, output) else {
            return self.events.next(cursor);
        };
        if !self.is_known(op) && next_state == self.state {
            // An unknown-outcome op that changes nothing here (a read, a failed CAS) is never worth
            // placing now: leaving it pending keeps every option open, and the search does not need
            // it. Without this, each such op doubles the states a doomed search must visit.
            return self.events.next(cursor);
        }
        self.linearized.insert(op);
        if !self.memo.insert((self.linearized.clone(), next_state.clone())) {
            // Lowe's memoization: this set of ops has already led to this state, and failed.
            self.linearized.remove(op);
            return self.events.next(cursor);
        }
        let state_before = std::mem::replace(&mut self.state, next_state);
        self.stack.push(Frame { op, state_before });
        self.events.lift(op);
        if self.is_known(op) {
            self.known_remaining -= 1;
        }
        assert!(
            self.stack.len() <= self.ops.len(),
            "stack deeper than the history"
        );
        self.events.first()
    }

    /// `blocked_op` returned before it could be placed: undo the last linearization and try the op
    /// after it instead. None when there is nothing left to undo.
    fn backtrack(&mut self, blocked_op: usize) -> Option<usize> {
        assert!(
            !self.linearized.contains(blocked_op),
            "linearized op {blocked_op} still in the list"
        );
        self.note_dead_end(blocked_op);
        let Frame { op, state_before } = self.stack.pop()?;
        self.events.unlift(op);
        self.linearized.remove(op);
        self.state = state_before;
        if self.is_known(op) {
            self.known_remaining += 1;
        }
        assert!(
            self.known_remaining <= self.ops.len(),
            "{} known ops remain",
            self.known_remaining
        );
        Some(self.events.next(self.events.call_node(op)))
    }

    fn is_known(&self, op: usize) -> bool {
        self.ops[op].outcome.returned()
    }

    /// Remembers this dead end if it got further than any before it.
    fn note_dead_end(&mut self, blocked_op: usize) {
        let depth = self.stack.len();
        if self
            .deepest_dead_end
            .as_ref()
            .is_some_and(|dead_end| dead_end.prefix.len() >= depth)
        {
            return;
        }
        // Every call between the head and the blocked return was pending and could not go next.
        let blocked_return = self.events.return_node(blocked_op);
        assert!(
            blocked_return.is_some(),
            "op {blocked_op} with unknown outcome blocked the search"
        );
        let mut pending_ops = Vec::new();
        let mut node = self.events.first();
        while Some(node) != blocked_return {
            if let Event::Call { op } = self.events.event(node) {
                pending_ops.push(op);
            }
            node = self.events.next(node);
        }
        self.deepest_dead_end = Some(DeadEnd {
            prefix: self.stack.iter().map(|frame| frame.op).collect(),
            state: self.state.clone(),
            blocked_op,
            pending_ops,
        });
    }

    fn explain(&self) -> String {
        let Some(dead_end) = &self.deepest_dead_end else {
            panic!("the search failed without reaching a dead end");
        };
        let blocked = self.ops[dead_end.blocked_op];
        format!(
            "the longest linearizable prefix has {} op(s) [{}] and leaves the state at {:?}; \
             op {} (client {}, {:?} invoked at {}, outcome {:?}) returned before it could be placed; \
             pending ops that could not go next: [{}]",
            dead_end.prefix.len(),
            self.list_ops(&dead_end.prefix),
            dead_end.state,
            self.original_index[dead_end.blocked_op],
            blocked.client_id,
            blocked.input,
            blocked.invoke_time,
            blocked.outcome,
            self.list_ops(&dead_end.pending_ops),
        )
    }

    /// The original-history indices of `ops`, eliding all but the last `MAX_EXPLAINED_OPS`.
    fn list_ops(&self, ops: &[usize]) -> String {
        let skipped = ops.len().saturating_sub(MAX_EXPLAINED_OPS);
        let shown = ops[skipped..]
            .iter()
            .map(|&op| self.original_index[op].to_string());
        let shown: Vec<String> = shown.collect();
        if skipped == 0 {
            shown.join(", ")
        } else {
            format!("... {skipped} more, {}", shown.join(", "))
        }
    }
}
