#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests need where it is missing
# (scripts/install-test-deps.sh), then runs every test of the workspace in release mode. The
# etcdctl suite is required here: with YIZHI_REQUIRE_ETCDCTL set, a missing etcdctl fails those
# tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
echo "== etcdctl: $(ETCDCTL_API=3 etcdctl version | head -1)"

export YIZHI_REQUIRE_ETCDCTL=1
cargo test --workspace --release "$@"

# The same etcdctl, failover and bad-input suites against clusters running the Multi-Paxos engine
# (members read `--engine` from YIZHI_ENGINE).
echo "== the server suites again with --engine paxos"
YIZHI_ENGINE=paxos cargo test --release -p yizhi-cli --test etcdctl --test failover --test bad_input --test request_path
