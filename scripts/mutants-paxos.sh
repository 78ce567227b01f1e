#!/usr/bin/env bash
# Mutation testing of the Multi-Paxos engine: every mutant of the protocol code must make one of
# yizhi-paxos's own tests fail (the simulator's sweeps are not run per mutant: too slow on 2 cores).
# Usage: scripts/mutants-paxos.sh [extra cargo-mutants args, e.g. --file crates/yizhi-paxos/src/proposer.rs
#        or --in-diff <(git diff <base> -- crates/yizhi-paxos/src)]
# Installs cargo-mutants if missing. Results land in mutants.out/ (caught.txt, missed.txt, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
# The test kit drives the engine in tests; mutating it would test the tests' plumbing.
cargo mutants --package yizhi-paxos --test-workspace=false --profile mutants \
    --exclude crates/yizhi-paxos/src/testkit.rs --jobs "${MUTANTS_JOBS:-1}" "$@"
