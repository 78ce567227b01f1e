#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests need where it is missing, then
# runs every test of the workspace in release mode. The etcdctl suite is required here: with
# YIZHI_REQUIRE_ETCDCTL set, a missing etcdctl fails those tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcdctl >/dev/null 2>&1; then
    echo "== installing etcdctl (Debian package etcd-client)"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: etcdctl is missing and apt-get is not available;" >&2
        echo "install etcd's etcdctl (v3.4 or newer) on PATH and run this again." >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            echo "scripts/test.sh: etcdctl is missing; installing it needs root or sudo." >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q etcd-client
    command -v etcdctl >/dev/null 2>&1 || {
        echo "scripts/test.sh: etcd-client installed but etcdctl is still not on PATH" >&2
        exit 1
    }
fi
echo "== etcdctl: $(ETCDCTL_API=3 etcdctl version | head -1)"

export YIZHI_REQUIRE_ETCDCTL=1
cargo test --workspace --release "$@"

# The same etcdctl, failover and bad-input suites against clusters running the Multi-Paxos engine
# (members read `--engine` from YIZHI_ENGINE).
echo "== the server suites again with --engine paxos"
YIZHI_ENGINE=paxos cargo test --release -p yizhi-server --test etcdctl --test failover --test bad_input
