//! A ready-made model of a string key-value store with put, get, compare-and-swap and append.
//!
//! Keys never interact, so [`KvModel::partition`] checks each key on its own and the state is the
//! value of that one key.

use std::collections::HashMap;

use crate::{Model, Operation};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvInput {
    Put {
        key: String,
        value: String,
    },
    Get {
        key: String,
    },
    /// Succeeds iff the current value equals `expected` (None = the key is absent).
    Cas {
        key: String,
        expected: Option<String>,
        new: String,
    },
    /// On a missing key, creates it with `suffix`.
    Append {
        key: String,
        suffix: String,
    },
}

impl KvInput {
    pub fn key(&self) -> &str {
        match self {
            KvInput::Put { key, .. }
            | KvInput::Get { key }
            | KvInput::Cas { key, .. }
            | KvInput::Append { key, .. } => key,
        }
    }
}

/// Put and Append answer `Ok`, Get answers `Value(current)`, Cas answers `CasResult`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOutput {
    Ok,
    Value(Option<String>),
    CasResult { succeeded: bool },
}

#[derive(Clone, Copy, Debug, Default)]
pub struct KvModel;

impl Model for KvModel {
    /// The value of the partition's one key; None when absent.
    type State = Option<String>;
    type Input = KvInput;
    type Output = KvOutput;

    fn init(&self) -> Self::State {
        None
    }

    fn step(&self, state: &Self::State, input: &KvInput, output: Option<&KvOutput>) -> Option<Self::State> {
        let (next_state, expected_output) = apply(state, input);
        match output {
            Some(output) if *output != expected_output => None,
            _ => Some(next_state),
        }
    }

    /// One partition per key, in order of each key's first appearance so results are reproducible.
    fn partition(&self, history: &[Operation<KvInput, KvOutput>]) -> Vec<Vec<usize>> {
        let mut partition_of_key: HashMap<&str, usize> = HashMap::new();
        let mut partitions: Vec<Vec<usize>> = Vec::new();
        for (index, operation) in history.iter().enumerate() {
            let partition = *partition_of_key.entry(operation.input.key()).or_insert_with(|| {
                partitions.push(Vec::new());
                partitions.len() - 1
            });
            partitions[partition].push(index);
        }
        assert_eq!(
            partitions.iter().map(Vec::len).sum::<usize>(),
            history.len(),
            "an op was dropped"
        );
        partitions
    }
}

/// The sequential semantics: the state after `input` and the output it must produce.
fn apply(state: &Option<String>, input: &KvInput) -> (Option<String>, KvOutput) {
    match input {
        KvInput::Put { value, .. } => (Some(value.clone()), KvOutput::Ok),
        KvInput::Get { .. } => (state.clone(), KvOutput::Value(state.clone())),
        KvInput::Cas { expected, new, .. } => {
            let succeeded = state == expected;
            let next_state = if succeeded {
                Some(new.clone())
            } else {
                state.clone()
            };
            (next_state, KvOutput::CasResult { succeeded })
        }
        KvInput::Append { suffix, .. } => {
            let mut value = state.clone().unwrap_or_default();
            value.push_str(suffix);
            (Some(value), KvOutput::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(value: &str) -> Option<String> {
        Some(value.to_string())
    }

    fn cas(expected: Option<String>, new: &str) -> KvInput {
        KvInput::Cas {
            key: "k".into(),
            expected,
            new: new.into(),
        }
    }

    #[test]
    fn get_must_return_the_current_value() {
        let get = KvInput::Get { key: "k".into() };
        assert_eq!(
            KvModel.step(&some("a"), &get, Some(&KvOutput::Value(some("a")))),
            Some(some("a"))
        );
        assert_eq!(KvModel.step(&some("a"), &get, Some(&KvOutput::Value(None))), None);
        assert_eq!(KvModel.step(&None, &get, Some(&KvOutput::Ok)), None);
        assert_eq!(KvModel.step(&some("a"), &get, None), Some(some("a")));
    }

    #[test]
    fn cas_succeeds_exactly_when_the_value_matches() {
        let won = KvOutput::CasResult { succeeded: true };
        let lost = KvOutput::CasResult { succeeded: false };
        assert_eq!(KvModel.step(&None, &cas(None, "b"), Some(&won)), Some(some("b")));
        assert_eq!(KvModel.step(&None, &cas(None, "b"), Some(&lost)), None);
        assert_eq!(
            KvModel.step(&some("a"), &cas(some("a"), "b"), Some(&won)),
            Some(some("b"))
        );
        assert_eq!(
            KvModel.step(&some("a"), &cas(some("z"), "b"), Some(&lost)),
            Some(some("a"))
        );
        assert_eq!(KvModel.step(&some("a"), &cas(None, "b"), Some(&won)), None);
        // Unknown outcome: the input still does exactly what it would have done.
        assert_eq!(
            KvModel.step(&some("a"), &cas(some("a"), "b"), None),
            Some(some("b"))
        );
        assert_eq!(
            KvModel.step(&some("a"), &cas(some("z"), "b"), None),
            Some(some("a"))
        );
    }

    #[test]
    fn put_and_append_write_and_answer_ok() {
        let put = KvInput::Put {
            key: "k".into(),
            value: "v".into(),
        };
        let append = KvInput::Append {
            key: "k".into(),
            suffix: "x".into(),
        };
        assert_eq!(
            KvModel.step(&some("a"), &put, Some(&KvOutput::Ok)),
            Some(some("v"))
        );
        assert_eq!(KvModel.step(&some("a"), &put, Some(&KvOutput::Value(None))), None);
        assert_eq!(KvModel.step(&None, &append, Some(&KvOutput::Ok)), Some(some("x")));
        assert_eq!(KvModel.step(&some("a"), &append, None), Some(some("ax")));
    }

    #[test]
    fn partition_groups_by_key_in_order_of_first_appearance() {
        let op = |key: &str| Operation {
            client_id: 0,
            input: KvInput::Get { key: key.into() },
            invoke_time: 0,
            outcome: crate::Outcome::Unknown,
        };
        let history = [op("b"), op("a"), op("b"), op("c"), op("a")];
        assert_eq!(KvModel.partition(&history), vec![vec![0, 2], vec![1, 4], vec![3]]);
        assert!(KvModel.partition(&[]).is_empty());
    }
}
