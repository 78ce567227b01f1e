//! The call/return events of one sub-history in time order, as a doubly-linked list over a `Vec`.
//!
//! Linearizing an operation unlinks its call and return ("lift"); backtracking relinks them
//! ("unlift"). Relinking works because a removed node keeps its old neighbours, and the search undoes
//! lifts in exactly the reverse order it made them (Knuth's dancing links; porcupine does the same).

use crate::{Operation, Outcome};

/// Index of the sentinel before the first event; its `prev` is never read.
const HEAD: usize = 0;
/// Index of the sentinel after the last event; its `next` is never read.
const TAIL: usize = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Call {
        op: usize,
    },
    Return {
        op: usize,
    },
    /// The end of the list: every remaining event has been passed.
    End,
}

#[derive(Clone, Debug)]
struct Node {
    event: Event,
    prev: usize,
    next: usize,
}

#[derive(Debug)]
pub(crate) struct EventList {
    // Invariant: nodes[HEAD] and nodes[TAIL] are sentinels; for every linked node n,
    // nodes[nodes[n].prev].next == n and nodes[nodes[n].next].prev == n.
    nodes: Vec<Node>,
    call_node: Vec<usize>,
    /// None for an operation whose outcome is unknown: its return is at infinity, after every
    /// known event, and the search finishes before reaching it, so it is never materialized.
    return_node: Vec<Option<usize>>,
}

/// Sort key for one event. At equal times a call sorts before a return, so an operation invoked at
/// the very instant another returns counts as concurrent with it (see the crate docs' tie rule).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct EventKey {
    time: u64,
    is_return: bool,
    op: usize,
}

impl EventList {
    /// Builds the list for `ops` (a sub-history; event `op` numbers index into it).
    ///
    /// Panics if an operation returns before it was invoked: the history's recorder is broken.
    pub(crate) fn new<I, O>(ops: &[&Operation<I, O>]) -> Self {
        let mut keys = Vec::with_capacity(2 * ops.len());
        for (op, operation) in ops.iter().enumerate() {
            keys.push(EventKey {
                time: operation.invoke_time,
                is_return: false,
                op,
            });
            if let Outcome::Returned { return_time, .. } = operation.outcome {
                assert!(
                    return_time >= operation.invoke_time,
                    "operation from client {} returned at {return_time} before its invocation at {}",
                    operation.client_id,
                    operation.invoke_time
                );
                keys.push(EventKey {
                    time: return_time,
                    is_return: true,
                    op,
                });
            }
        }
        keys.sort_unstable();
        Self::link(ops.len(), &keys)
    }

    fn link(op_count: usize, keys: &[EventKey]) -> Self {
        let sentinel = |prev, next| Node {
            event: Event::End,
            prev,
            next,
        };
        let mut nodes = vec![sentinel(HEAD, TAIL), sentinel(HEAD, TAIL)];
        let mut call_node = vec![usize::MAX; op_count];
        let mut return_node = vec![None; op_count];
        for key in keys {
            let index = nodes.len();
            let event = if key.is_return {
                return_node[key.op] = Some(index);
                Event::Return { op: key.op }
            } else {
                call_node[key.op] = index;
                Event::Call { op: key.op }
            };
            let prev = nodes[TAIL].prev;
            nodes.push(Node {
                event,
                prev,
                next: TAIL,
            });
            nodes[prev].next = index;
            nodes[TAIL].prev = index;
        }
        assert!(
            call_node.iter().all(|&node| node < nodes.len()),
            "an operation has no call event"
        );
        EventList {
            nodes,
            call_node,
            return_node,
        }
    }

    pub(crate) fn first(&self) -> usize {
        self.nodes[HEAD].next
    }

    pub(crate) fn next(&self, node: usize) -> usize {
        assert!(node != TAIL, "nothing follows the end of the event list");
        self.nodes[node].next
    }

    pub(crate) fn event(&self, node: usize) -> Event {
        self.nodes[node].event
    }

    pub(crate) fn call_node(&self, op: usize) -> usize {
        self.call_node[op]
    }

    pub(crate) fn return_node(&self, op: usize) -> Option<usize> {
        self.return_node[op]
    }

    /// Removes `op`'s events from the list: it has been linearized.
    pub(crate) fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if let Some(node) = self.return_node[op] {
            self.unlink(node);
        }
    }

    /// Puts back the events of the most recently lifted operation, `op`.
    pub(crate) fn unlift(&mut self, op: usize) {
        // Reverse of lift's order, or the saved neighbours would be stale.
        if let Some(node) = self.return_node[op] {
            self.relink(node);
        }
        self.relink(self.call_node[op]);
    }

    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        assert!(node != HEAD && node != TAIL, "cannot unlink sentinel {node}");
        assert!(
            self.nodes[prev].next == node && self.nodes[next].prev == node,
            "node {node} is not linked between {prev} and {next}"
        );
        self.nodes[prev].next = next;
        self.nodes[next].prev = prev;
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        assert!(
            self.nodes[prev].next == next && self.nodes[next].prev == prev,
            "cannot relink node {node}: {prev} and {next} are no longer adjacent"
        );
        self.nodes[prev].next = node;
        self.nodes[next].prev = node;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn returned(invoke_time: u64, return_time: u64) -> Operation<(), ()> {
        Operation {
            client_id: 0,
            input: (),
            invoke_time,
            outcome: Outcome::Returned {
                output: (),
                return_time,
            },
        }
    }

    fn walk(list: &EventList) -> Vec<Event> {
        let mut events = Vec::new();
        let mut node = list.first();
        while list.event(node) != Event::End {
            events.push(list.event(node));
            node = list.next(node);
        }
        events
    }

    #[test]
    fn calls_sort_before_returns_at_the_same_time() {
        let a = returned(0, 5);
        let b = returned(5, 9);
        let list = EventList::new(&[&a, &b]);
        let expected = [
            Event::Call { op: 0 },
            Event::Call { op: 1 },
            Event::Return { op: 0 },
            Event::Return { op: 1 },
        ];
        assert_eq!(walk(&list), expected);
    }

    #[test]
    fn unknown_outcomes_have_no_return_event() {
        let a = Operation {
            client_id: 0,
            input: (),
            invoke_time: 3,
            outcome: Outcome::<()>::Unknown,
        };
        let b = returned(1, 2);
        let list = EventList::new(&[&a, &b]);
        assert_eq!(list.return_node(0), None);
        assert_eq!(
            walk(&list),
            [
                Event::Call { op: 1 },
                Event::Return { op: 1 },
                Event::Call { op: 0 }
            ]
        );
    }

    #[test]
    fn unlift_in_reverse_order_restores_the_list() {
        let ops = [returned(0, 4), returned(1, 2), returned(3, 6)];
        let refs: Vec<_> = ops.iter().collect();
        let mut list = EventList::new(&refs);
        let before = walk(&list);
        list.lift(1);
        list.lift(0);
        assert_eq!(walk(&list), [Event::Call { op: 2 }, Event::Return { op: 2 }]);
        list.unlift(0);
        list.unlift(1);
        assert_eq!(walk(&list), before);
    }

    #[test]
    #[should_panic(expected = "returned at 1 before its invocation at 2")]
    fn a_return_before_the_call_is_rejected() {
        EventList::new(&[&returned(2, 1)]);
    }
}
