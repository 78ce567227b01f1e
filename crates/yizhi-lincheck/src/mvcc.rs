//! A model of etcd v3's MVCC key-value API with revisions: put, get, delete, a compare-and-swap
//! txn and a range, each answering with the store's revision (etcd's response header).
//!
//! # The state
//!
//! The revision counter and, per live key, its value, `create_revision`, `mod_revision` and
//! `version` (etcd's `mvccpb.KeyValue` without the lease). As in etcd (and in the model of etcd's
//! robustness tests), every request that changes something moves the revision up by exactly one;
//! a request that changes nothing (a read, a failed compare, a delete that matched no key) leaves
//! it where it is. Every output carries the revision, so the checker verifies not only values but
//! where each write falls in the single global order of revisions.
//!
//! # Why one partition
//!
//! Revisions are global: a put to `a` and a put to `b` each take "the next" revision, so checking
//! keys apart would accept two writes that both claim revision 7. [`MvccModel`] therefore keeps
//! [`Model::partition`]'s default, one sub-history with every operation. This is cheap on the
//! simulator's histories because the revisions do most of the search's work: a write that
//! returned revision `r` can only be linearized when the counter stands at `r - 1`, and a read
//! that returned revision `r` only while it stands at `r`, so a wrong guess fails on the next
//! known operation instead of deep down the search. An unknown-outcome write that changed
//! something is likewise pinned by the known writes around it: placed anywhere but its own
//! revision, it shifts the counter under the next known write. The memoization key hashes this
//! small state (a handful of keys) together with the set of linearized operations.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::Model;

/// What a read returns for one live key: etcd's `KeyValue` without key and lease.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyRecord {
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Puts since the key was (re)created, starting at 1.
    pub version: i64,
}

/// The compare of a [`MvccInput::Cas`]; both test equality, as etcd's `Compare` with `EQUAL`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CasCompare {
    /// The key's `mod_revision`; 0 matches an absent key (etcd compares a missing key as a zero
    /// key-value).
    ModRevision(i64),
    /// The key's value; never matches an absent key (etcd's rule for value compares).
    Value(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MvccInput {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    /// Deletes one key.
    Delete {
        key: String,
    },
    /// etcd's `Txn { compare: [key <compare>], success: [put key=value], failure: [range key] }`.
    Cas {
        key: String,
        compare: CasCompare,
        value: String,
    },
    /// The live keys in `[start, end)`, in key order.
    Range {
        start: String,
        end: String,
    },
}

/// Each output carries `revision`, the store's revision after the request (etcd's header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MvccOutput {
    Put {
        revision: i64,
    },
    Get {
        revision: i64,
        record: Option<KeyRecord>,
    },
    Delete {
        revision: i64,
        deleted: i64,
    },
    /// `record` is the failure branch's read of the key; None when the txn succeeded.
    Cas {
        revision: i64,
        succeeded: bool,
        record: Option<KeyRecord>,
    },
    Range {
        revision: i64,
        records: Vec<(String, KeyRecord)>,
        /// Keys in the range (etcd's `count`); with no limit, `records.len()`.
        count: i64,
    },
}

/// The revision counter and every live key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MvccState {
    pub revision: i64,
    pub keys: BTreeMap<String, KeyRecord>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MvccModel {
    /// The revision of an empty store: 1 in etcd and in yizhi-kv (the first write is 2).
    pub initial_revision: i64,
}

impl Default for MvccModel {
    fn default() -> Self {
        MvccModel { initial_revision: 1 }
    }
}

impl Model for MvccModel {
    type State = MvccState;
    type Input = MvccInput;
    type Output = MvccOutput;

    fn init(&self) -> MvccState {
        MvccState {
            revision: self.initial_revision,
            keys: BTreeMap::new(),
        }
    }

    fn step(&self, state: &MvccState, input: &MvccInput, output: Option<&MvccOutput>) -> Option<MvccState> {
        // Most candidate placements fail on the revision alone: check it before building anything.
        if let Some(output) = output
            && !revision_possible(state, input, output)
        {
            return None;
        }
        let (next_state, expected) = apply(state, input);
        match output {
            Some(output) if *output != expected => None,
            _ => Some(next_state),
        }
    }
}

/// A cheap necessary condition: a write that reports revision `r` changed something from `r - 1`
/// or nothing at `r`; a read reports the revision it saw.
fn revision_possible(state: &MvccState, input: &MvccInput, output: &MvccOutput) -> bool {
    let reported = match output {
        MvccOutput::Put { revision }
        | MvccOutput::Get { revision, .. }
        | MvccOutput::Delete { revision, .. }
        | MvccOutput::Cas { revision, .. }
        | MvccOutput::Range { revision, .. } => *revision,
    };
    match input {
        MvccInput::Put { .. } => reported == state.revision + 1,
        MvccInput::Get { .. } | MvccInput::Range { .. } => reported == state.revision,
        MvccInput::Delete { .. } | MvccInput::Cas { .. } => {
            reported == state.revision || reported == state.revision + 1
        }
    }
}

/// The sequential semantics: the state after `input` and the output it must produce.
fn apply(state: &MvccState, input: &MvccInput) -> (MvccState, MvccOutput) {
    match input {
        MvccInput::Put { key, value } => {
            let next = put(state, key, value);
            let revision = next.revision;
            (next, MvccOutput::Put { revision })
        }
        MvccInput::Get { key } => {
            let output = MvccOutput::Get {
                revision: state.revision,
                record: state.keys.get(key).cloned(),
            };
            (state.clone(), output)
        }
        MvccInput::Delete { key } => {
            let mut next = state.clone();
            let deleted = if next.keys.remove(key).is_some() {
                next.revision += 1;
                1
            } else {
                0
            };
            let revision = next.revision;
            (next, MvccOutput::Delete { revision, deleted })
        }
        MvccInput::Cas { key, compare, value } => {
            let current = state.keys.get(key);
            let holds = match compare {
                CasCompare::ModRevision(expected) => current.map_or(0, |r| r.mod_revision) == *expected,
                CasCompare::Value(expected) => current.is_some_and(|r| r.value == *expected),
            };
            if holds {
                let next = put(state, key, value);
                let revision = next.revision;
                let output = MvccOutput::Cas {
                    revision,
                    succeeded: true,
                    record: None,
                };
                (next, output)
            } else {
                let output = MvccOutput::Cas {
                    revision: state.revision,
                    succeeded: false,
                    record: current.cloned(),
                };
                (state.clone(), output)
            }
        }
        MvccInput::Range { start, end } => {
            let records: Vec<(String, KeyRecord)> = state
                .keys
                .range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded))
                .take_while(|(key, _)| key.as_str() < end.as_str())
                .map(|(key, record)| (key.clone(), record.clone()))
                .collect();
            let output = MvccOutput::Range {
                revision: state.revision,
                count: records.len() as i64,
                records,
            };
            (state.clone(), output)
        }
    }
}

fn put(state: &MvccState, key: &str, value: &str) -> MvccState {
    let mut next = state.clone();
    next.revision += 1;
    let revision = next.revision;
    let previous = next.keys.get(key);
    let record = KeyRecord {
        value: value.to_string(),
        create_revision: previous.map_or(revision, |r| r.create_revision),
        mod_revision: revision,
        version: previous.map_or(1, |r| r.version + 1),
    };
    next.keys.insert(key.to_string(), record);
    assert!(next.revision > state.revision, "a put must move the revision");
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> MvccInput {
        MvccInput::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn record(value: &str, create_revision: i64, mod_revision: i64, version: i64) -> KeyRecord {
        KeyRecord {
            value: value.into(),
            create_revision,
            mod_revision,
            version,
        }
    }

    /// Applies known-good steps, asserting each output is the one the model predicts.
    fn run(steps: &[(MvccInput, MvccOutput)]) -> MvccState {
        let model = MvccModel::default();
        let mut state = model.init();
        for (input, output) in steps {
            state = model
                .step(&state, input, Some(output))
                .unwrap_or_else(|| panic!("{input:?} -> {output:?} refused from {state:?}"));
        }
        state
    }

    #[test]
    fn puts_move_the_revision_and_track_create_mod_and_version() {
        let state = run(&[
            (put("a", "1"), MvccOutput::Put { revision: 2 }),
            (put("b", "1"), MvccOutput::Put { revision: 3 }),
            (put("a", "2"), MvccOutput::Put { revision: 4 }),
        ]);
        assert_eq!(state.revision, 4);
        assert_eq!(state.keys["a"], record("2", 2, 4, 2));
        assert_eq!(state.keys["b"], record("1", 3, 3, 1));
        let model = MvccModel::default();
        let stale = MvccOutput::Put { revision: 4 };
        assert_eq!(model.step(&state, &put("c", "1"), Some(&stale)), None);
    }

    #[test]
    fn delete_moves_the_revision_only_when_it_deleted_something() {
        let delete = || MvccInput::Delete { key: "a".into() };
        let state = run(&[
            (put("a", "1"), MvccOutput::Put { revision: 2 }),
            (
                delete(),
                MvccOutput::Delete {
                    revision: 3,
                    deleted: 1,
                },
            ),
            (
                delete(),
                MvccOutput::Delete {
                    revision: 3,
                    deleted: 0,
                },
            ),
            (put("a", "2"), MvccOutput::Put { revision: 4 }),
        ]);
        // Re-created: a new create revision and version 1.
        assert_eq!(state.keys["a"], record("2", 4, 4, 1));
        let model = MvccModel::default();
        let claimed = MvccOutput::Delete {
            revision: 5,
            deleted: 1,
        };
        let missing = MvccInput::Delete { key: "zz".into() };
        assert_eq!(model.step(&state, &missing, Some(&claimed)), None);
    }

    #[test]
    fn cas_compares_mod_revision_or_value_and_reads_on_failure() {
        let cas = |compare: CasCompare, value: &str| MvccInput::Cas {
            key: "a".into(),
            compare,
            value: value.into(),
        };
        let state = run(&[
            (
                cas(CasCompare::Value("x".into()), "v1"),
                MvccOutput::Cas {
                    revision: 1,
                    succeeded: false,
                    record: None,
                },
            ),
            (
                cas(CasCompare::ModRevision(0), "v1"),
                MvccOutput::Cas {
                    revision: 2,
                    succeeded: true,
                    record: None,
                },
            ),
            (
                cas(CasCompare::ModRevision(0), "v2"),
                MvccOutput::Cas {
                    revision: 2,
                    succeeded: false,
                    record: Some(record("v1", 2, 2, 1)),
                },
            ),
            (
                cas(CasCompare::Value("v1".into()), "v3"),
                MvccOutput::Cas {
                    revision: 3,
                    succeeded: true,
                    record: None,
                },
            ),
        ]);
        assert_eq!(state.keys["a"], record("v3", 2, 3, 2));
        // Unknown outcome: the txn does exactly what it would have done.
        let model = MvccModel::default();
        let won = model.step(&state, &cas(CasCompare::ModRevision(3), "v4"), None);
        assert_eq!(won.map(|s| s.revision), Some(4));
        let lost = model.step(&state, &cas(CasCompare::ModRevision(2), "v4"), None);
        assert_eq!(lost.as_ref(), Some(&state));
    }

    #[test]
    fn reads_report_the_current_revision_and_range_is_half_open() {
        let state = run(&[
            (put("k1", "a"), MvccOutput::Put { revision: 2 }),
            (put("k2", "b"), MvccOutput::Put { revision: 3 }),
            (put("k3", "c"), MvccOutput::Put { revision: 4 }),
        ]);
        let model = MvccModel::default();
        let range = MvccInput::Range {
            start: "k1".into(),
            end: "k3".into(),
        };
        let expected = MvccOutput::Range {
            revision: 4,
            records: vec![
                ("k1".into(), record("a", 2, 2, 1)),
                ("k2".into(), record("b", 3, 3, 1)),
            ],
            count: 2,
        };
        assert_eq!(model.step(&state, &range, Some(&expected)).as_ref(), Some(&state));
        let get = MvccInput::Get { key: "k2".into() };
        let at = |revision| MvccOutput::Get {
            revision,
            record: Some(record("b", 3, 3, 1)),
        };
        assert!(model.step(&state, &get, Some(&at(4))).is_some());
        assert_eq!(
            model.step(&state, &get, Some(&at(3))),
            None,
            "a read at an older revision"
        );
    }
}
