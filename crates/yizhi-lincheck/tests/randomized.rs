//! Generated histories: executions that are linearizable by construction must pass, the same
//! executions with one forged read must fail, and on small random histories the search must agree
//! with an exhaustive one.

mod common;

use std::collections::HashMap;

use common::*;
use yizhi_lincheck::kv::{KvInput, KvModel, KvOutput};
use yizhi_lincheck::{CheckResult, Model, Operation, Outcome, check_operations};

/// A value no generated write produces: generated values all start with `v` or `+`.
const NEVER_WRITTEN: &str = "never-written";
/// Generous: the generated histories need far fewer steps than this per key.
const RANDOM_MAX_STEPS: u64 = 10_000_000;

#[derive(Clone, Copy, Debug)]
struct Workload {
    clients: usize,
    keys: usize,
    ops: usize,
    /// Chance that an operation times out, both before and after it took effect.
    unknown_percent: u64,
}

/// Where one client is in its current operation.
#[derive(Clone, Debug)]
enum ClientState {
    Idle,
    Invoked { op: usize },
    Applied { op: usize, output: KvOutput },
}

/// Runs `workload` against a sequential reference store with interleaved clients. Each operation takes
/// effect at one tick between its invocation and return (inclusive), so the history is linearizable
/// by construction. Time advances by 0 or 1 tick per event, which exercises the tie rule.
fn generate(seed: u64, workload: Workload) -> Vec<KvOperation> {
    let mut rng = TestRng::new(seed);
    let mut store: HashMap<String, String> = HashMap::new();
    let mut clients = vec![ClientState::Idle; workload.clients];
    let mut history: Vec<KvOperation> = Vec::with_capacity(workload.ops);
    let mut now = 0u64;
    while history.len() < workload.ops || clients.iter().any(|c| !matches!(c, ClientState::Idle)) {
        now += rng.below(2);
        let client = rng.index(workload.clients);
        clients[client] = match clients[client].clone() {
            ClientState::Idle if history.len() < workload.ops => {
                let input = random_input(&mut rng, &store, workload.keys, history.len());
                history.push(timed_out(client as u64, input, now));
                ClientState::Invoked {
                    op: history.len() - 1,
                }
            }
            ClientState::Idle => ClientState::Idle,
            // Lost before it took effect: it never will, and stays Unknown.
            ClientState::Invoked { .. } if rng.percent(workload.unknown_percent) => ClientState::Idle,
            ClientState::Invoked { op } => ClientState::Applied {
                op,
                output: apply(&mut store, &history[op].input),
            },
            // Took effect but the answer was lost: stays Unknown.
            ClientState::Applied { .. } if rng.percent(workload.unknown_percent) => ClientState::Idle,
            ClientState::Applied { op, output } => {
                history[op].outcome = Outcome::Returned {
                    output,
                    return_time: now,
                };
                ClientState::Idle
            }
        };
    }
    history
}

fn random_input(rng: &mut TestRng, store: &HashMap<String, String>, keys: usize, serial: usize) -> KvInput {
    let key = format!("k{}", rng.index(keys));
    let fresh = format!("v{serial}");
    match rng.below(10) {
        0..=3 => get(&key),
        4..=5 => put(&key, &fresh),
        6 => append(&key, &format!("+{serial}")),
        // A CAS that expects what the key holds now usually wins; one that expects absence mostly loses.
        7..=8 => KvInput::Cas {
            key: key.clone(),
            expected: store.get(&key).cloned(),
            new: fresh,
        },
        _ => cas(&key, None, &fresh),
    }
}

/// The sequential reference semantics, written independently of `KvModel::step`.
fn apply(store: &mut HashMap<String, String>, input: &KvInput) -> KvOutput {
    match input {
        KvInput::Get { key } => KvOutput::Value(store.get(key).cloned()),
        KvInput::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            KvOutput::Ok
        }
        KvInput::Append { key, suffix } => {
            store.entry(key.clone()).or_default().push_str(suffix);
            KvOutput::Ok
        }
        KvInput::Cas { key, expected, new } => {
            let succeeded = store.get(key) == expected.as_ref();
            if succeeded {
                store.insert(key.clone(), new.clone());
            }
            KvOutput::CasResult { succeeded }
        }
    }
}

/// Replaces the output of one completed Get with a value nobody wrote; None if there is no such Get.
fn forge_one_read(rng: &mut TestRng, history: &mut [KvOperation]) -> Option<usize> {
    let completed_gets: Vec<usize> = (0..history.len())
        .filter(|&i| matches!(history[i].input, KvInput::Get { .. }))
        .filter(|&i| matches!(history[i].outcome, Outcome::Returned { .. }))
        .collect();
    if completed_gets.is_empty() {
        return None;
    }
    let victim = completed_gets[rng.index(completed_gets.len())];
    if let Outcome::Returned { output, .. } = &mut history[victim].outcome {
        *output = value(NEVER_WRITTEN);
    }
    Some(victim)
}

#[test]
fn generated_executions_pass_and_a_forged_read_fails() {
    let workload = Workload {
        clients: 4,
        keys: 3,
        ops: 60,
        unknown_percent: 10,
    };
    let mut forged_count = 0;
    for seed in 0..300 {
        let mut history = generate(seed, workload);
        let verdict = check_operations(&KvModel, &history, RANDOM_MAX_STEPS);
        assert_eq!(verdict, CheckResult::Linearizable, "seed {seed}: {history:#?}");
        let mut rng = TestRng::new(seed ^ 0xF0F0);
        let Some(victim) = forge_one_read(&mut rng, &mut history) else {
            continue;
        };
        forged_count += 1;
        match check_operations(&KvModel, &history, RANDOM_MAX_STEPS) {
            CheckResult::NotLinearizable { .. } => {}
            other => panic!("seed {seed}: forged read {victim} judged {other:?}"),
        }
    }
    assert!(
        forged_count > 250,
        "the generator produced too few completed reads: {forged_count}"
    );
}

#[test]
fn a_tiny_step_budget_leaves_a_big_concurrent_history_undecided() {
    let history = generate(
        7,
        Workload {
            clients: 5,
            keys: 1,
            ops: 200,
            unknown_percent: 5,
        },
    );
    let max_steps = 10;
    let expected = CheckResult::Undecided {
        partition: 0,
        steps: max_steps,
    };
    assert_eq!(check_operations(&KvModel, &history, max_steps), expected);
    // The budget, not the history, made it undecided.
    assert_eq!(
        check_operations(&KvModel, &history, RANDOM_MAX_STEPS),
        CheckResult::Linearizable
    );
}

#[test]
fn performance_sanity_3000_ops_5_clients_10_keys() {
    let workload = Workload {
        clients: 5,
        keys: 10,
        ops: 3000,
        unknown_percent: 2,
    };
    let mut history = generate(42, workload);
    let started = std::time::Instant::now();
    assert_eq!(
        check_operations(&KvModel, &history, RANDOM_MAX_STEPS),
        CheckResult::Linearizable
    );
    eprintln!("3000-op history checked in {:?}", started.elapsed());
    assert!(forge_one_read(&mut TestRng::new(42), &mut history).is_some());
    let verdict = check_operations(&KvModel, &history, RANDOM_MAX_STEPS);
    assert!(
        matches!(verdict, CheckResult::NotLinearizable { .. }),
        "forged read judged {verdict:?}"
    );
}

/// Exhaustive reference: tries every order of every subset of unknown ops, respecting real time.
fn brute_force_is_linearizable(history: &[KvOperation]) -> bool {
    fn search(history: &[KvOperation], remaining: u32, state: &Option<String>) -> bool {
        let known = |i: usize| matches!(history[i].outcome, Outcome::Returned { .. });
        let members = |set: u32| (0..history.len()).filter(move |&i| set & (1 << i) != 0);
        if members(remaining).all(|i| !known(i)) {
            return true;
        }
        members(remaining).any(|next| {
            let must_come_first = |earlier: usize| match history[earlier].outcome {
                Outcome::Returned { return_time, .. } => return_time < history[next].invoke_time,
                Outcome::Unknown | Outcome::Unacknowledged { .. } => false,
            };
            let output = history[next].outcome.output();
            !members(remaining).any(must_come_first)
                && KvModel
                    .step(state, &history[next].input, output)
                    .is_some_and(|after| search(history, remaining & !(1 << next), &after))
        })
    }
    assert!(history.len() < 32, "the reference tracks ops in a u32");
    search(history, (1u32 << history.len()) - 1, &None)
}

fn random_small_history(rng: &mut TestRng) -> Vec<KvOperation> {
    let values = ["a", "b"];
    let random_value = |rng: &mut TestRng| values[rng.index(values.len())];
    let len = 1 + rng.index(6);
    (0..len)
        .map(|client| {
            let (input, output) = match rng.below(4) {
                0 => (
                    get("k"),
                    KvOutput::Value(rng.percent(30).then(|| random_value(rng).to_string())),
                ),
                1 => (put("k", random_value(rng)), OK),
                2 => (append("k", random_value(rng)), OK),
                _ => {
                    let expected = rng.percent(70).then(|| random_value(rng));
                    let output = if rng.percent(50) { CAS_WON } else { CAS_LOST };
                    (cas("k", expected, random_value(rng)), output)
                }
            };
            let invoke_time = rng.below(8);
            if rng.percent(20) {
                timed_out(client as u64, input, invoke_time)
            } else {
                done(
                    client as u64,
                    input,
                    invoke_time,
                    invoke_time + rng.below(6),
                    output,
                )
            }
        })
        .collect()
}

#[test]
fn the_search_agrees_with_exhaustive_enumeration_on_small_histories() {
    let mut rng = TestRng::new(2024);
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..20_000 {
        let history = random_small_history(&mut rng);
        let expected = brute_force_is_linearizable(&history);
        let verdict = check_operations(&KvModel, &history, RANDOM_MAX_STEPS);
        match (&verdict, expected) {
            (CheckResult::Linearizable, true) => accepted += 1,
            (CheckResult::NotLinearizable { .. }, false) => rejected += 1,
            _ => panic!("round {round}: search says {verdict:?}, brute force says {expected}: {history:#?}"),
        }
    }
    // Both verdicts must be common, or the comparison proves little.
    assert!(
        accepted > 2_000 && rejected > 2_000,
        "accepted {accepted}, rejected {rejected}"
    );
}

#[test]
fn generated_histories_record_their_operations_faithfully() {
    // Guards the generator itself: every completed op returned no earlier than it was invoked, and
    // there are both unknown and completed ops to test with.
    let history = generate(
        3,
        Workload {
            clients: 3,
            keys: 2,
            ops: 200,
            unknown_percent: 10,
        },
    );
    assert_eq!(history.len(), 200);
    let unknown = history.iter().filter(|op| op.outcome == Outcome::Unknown).count();
    assert!(
        unknown > 0 && unknown < history.len() / 2,
        "{unknown} unknown ops"
    );
    for Operation {
        invoke_time, outcome, ..
    } in &history
    {
        if let Outcome::Returned { return_time, .. } = outcome {
            assert!(return_time >= invoke_time);
        }
    }
}
