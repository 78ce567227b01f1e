#!/usr/bin/env bash
# Mutation testing of the Raft engine: every mutant of the protocol code must make some test fail.
# Usage: scripts/mutants.sh [extra cargo-mutants args, e.g. --file crates/yizhi-raft/src/log.rs]
# Installs cargo-mutants if missing. Results land in mutants.out/ (caught.txt, missed.txt, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
# The simulator's seed test also judges the engine; keep it short per mutant.
export YIZHI_SIM_CI_SEEDS="${YIZHI_SIM_CI_SEEDS:-40}"
cargo mutants --package yizhi-raft --test-workspace=true --profile mutants --jobs 2 "$@"
