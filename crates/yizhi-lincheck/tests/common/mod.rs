//! Shared helpers for the integration tests: terse history builders and a seeded RNG.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use yizhi_lincheck::kv::{KvInput, KvModel, KvOutput};
use yizhi_lincheck::{CheckResult, Operation, Outcome, check_operations};

pub type KvOperation = Operation<KvInput, KvOutput>;

/// Enough for every hand-written history here to be decided; they are tiny.
pub const SCENARIO_MAX_STEPS: u64 = 100_000;

pub fn put(key: &str, value: &str) -> KvInput {
    KvInput::Put {
        key: key.into(),
        value: value.into(),
    }
}

pub fn get(key: &str) -> KvInput {
    KvInput::Get { key: key.into() }
}

pub fn cas(key: &str, expected: Option<&str>, new: &str) -> KvInput {
    KvInput::Cas {
        key: key.into(),
        expected: expected.map(String::from),
        new: new.into(),
    }
}

pub fn append(key: &str, suffix: &str) -> KvInput {
    KvInput::Append {
        key: key.into(),
        suffix: suffix.into(),
    }
}

pub const OK: KvOutput = KvOutput::Ok;
pub const ABSENT: KvOutput = KvOutput::Value(None);
pub const CAS_WON: KvOutput = KvOutput::CasResult { succeeded: true };
pub const CAS_LOST: KvOutput = KvOutput::CasResult { succeeded: false };

pub fn value(value: &str) -> KvOutput {
    KvOutput::Value(Some(value.into()))
}

/// An operation the client saw complete.
pub fn done(
    client_id: u64,
    input: KvInput,
    invoke_time: u64,
    return_time: u64,
    output: KvOutput,
) -> KvOperation {
    Operation {
        client_id,
        input,
        invoke_time,
        outcome: Outcome::Returned { output, return_time },
    }
}

/// An operation whose client timed out: it may or may not have taken effect.
pub fn timed_out(client_id: u64, input: KvInput, invoke_time: u64) -> KvOperation {
    Operation {
        client_id,
        input,
        invoke_time,
        outcome: Outcome::Unknown,
    }
}

pub fn check(history: &[KvOperation]) -> CheckResult {
    check_operations(&KvModel, history, SCENARIO_MAX_STEPS)
}

pub fn assert_linearizable(history: &[KvOperation]) {
    assert_eq!(check(history), CheckResult::Linearizable, "history: {history:#?}");
}

/// Asserts a violation and returns (failing partition, explanation).
pub fn assert_rejected(history: &[KvOperation]) -> (usize, String) {
    match check(history) {
        CheckResult::NotLinearizable {
            partition,
            explanation,
        } => (partition, explanation),
        other => panic!("expected a violation, got {other:?} for {history:#?}"),
    }
}

/// SplitMix64 (Steele, Lea & Flood, 2014): one seed replays a whole generated history.
#[derive(Debug)]
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, bound)`, with a modulo bias too small to matter for tests.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no valid answer");
        self.next_u64() % bound
    }

    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
