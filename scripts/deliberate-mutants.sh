#!/usr/bin/env bash
# Deliberate bugs, each of which must be caught: the five protocol bugs the consensus issue names
# (judged by yizhi-raft's tests) and the request-path bugs of issue 13 (judged by the simulator
# alone: `yizhi-sim` over SIM_SEEDS seeds of each engine must report a violation).
# Each mutation is applied to a scratch copy of the repository, never to the working tree.
# Usage: scripts/deliberate-mutants.sh [--sim-only]   (prints CAUGHT/MISSED per mutation; exits 1
# if any is missed). MUTANT_FILTER=text runs only the mutations whose name contains it.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/deliberate-mutants}"

sim_seeds="${SIM_SEEDS:-0..2000}"
sim_only=0
[ "${1:-}" = "--sim-only" ] && sim_only=1

# judge: "raft" (yizhi-raft's tests must fail), "sim" (the simulator must find a violation with
# each engine under the standard and harsh fault profiles), "sim-raft" (the same, Raft only: a
# bug in the Raft engine), "sim-paxos" (Multi-Paxos only: a path only its runtime takes) or
# "sim-raft-lease" (Raft with lease reads: a bug in the lease or the promises it rests on).
judge_fails() {
  local judge="$1"
  if [ "$judge" = raft ]; then
    ! (cd "$scratch/repo" && cargo test -q -p yizhi-raft --release >/dev/null 2>&1)
    return
  fi
  (cd "$scratch/repo" && cargo build -q --release -p yizhi-sim >/dev/null 2>&1) || return 1
  local engine faults engines="raft paxos"
  [ "$judge" = sim-raft ] && engines="raft"
  [ "$judge" = sim-paxos ] && engines="paxos"
  [ "$judge" = sim-raft-lease ] && engines="raft-lease"
  for engine in $engines; do
    for faults in standard harsh; do
      if ! "$CARGO_TARGET_DIR/release/yizhi-sim" --seeds "$sim_seeds" --engine "$engine" \
          --faults "$faults" --no-shrink >"$scratch/sim.log" 2>&1; then
        echo "        found by the simulator: $engine $faults: $(grep -m1 'VIOLATION at' "$scratch/sim.log" | cut -c1-240)"
      else
        return 1
      fi
    done
  done
}

mutate() { # name file python-replacement-old python-replacement-new [judge]
  local name="$1" file="$2" old="$3" new="$4" judge="${5:-raft}"
  if [ "$sim_only" = 1 ] && [ "$judge" = raft ]; then return 0; fi
  case "$name" in *"${MUTANT_FILTER:-}"*) ;; *) return 0 ;; esac
  rm -rf "$scratch/repo" && mkdir -p "$scratch/repo"
  (cd "$repo" && git ls-files -z | xargs -0 cp --parents -t "$scratch/repo")
  OLD="$old" NEW="$new" python3 - "$scratch/repo/$file" <<'PY' || { echo "SETUP FAILED $name"; return 1; }
import os, sys
path = sys.argv[1]
text = open(path).read()
old, new = os.environ["OLD"], os.environ["NEW"]
assert text.count(old) == 1, f"mutation anchor not found exactly once in {path}: {old!r}"
open(path, "w").write(text.replace(old, new))
PY
  if ! judge_fails "$judge"; then
    echo "MISSED  $name"; return 1
  fi
  echo "CAUGHT  $name"
}

missed=0
mutate "commit counts replicas of an earlier term (no current-term check, Figure 8)" \
  crates/yizhi-raft/src/replication.rs \
  "if candidate <= self.log.committed || self.log.term(candidate) != Ok(self.term) {" \
  "if candidate <= self.log.committed {" || missed=1
mutate "two votes in one term" \
  crates/yizhi-raft/src/election.rs \
  "        let can_vote = self.vote == Some(from)" \
  "        let can_vote = true || self.vote == Some(from)" || missed=1
mutate "vote response leaves before the vote is persisted" \
  crates/yizhi-raft/src/node.rs \
  "            ready.hard_state = Some(hard_state);" \
  "            ready.hard_state = Some(yizhi_engine::HardState { vote: self.prev_hard_state.vote, ..hard_state });" || missed=1
mutate "stale-term append accepted" \
  crates/yizhi-raft/src/raft.rs \
  "            self.step_lower_term(from, &msg);
            return;" \
  "            self.step_lower_term(from, &msg);" || missed=1
mutate "off-by-one in the log-matching check" \
  crates/yizhi-raft/src/log.rs \
  "        if !self.match_term(prev_index, prev_term) {" \
  "        if !self.match_term(prev_index.saturating_sub(1), prev_term) {" || missed=1

# Issue 13: the server's request path, run by the simulator through yizhi-member.
mutate "proposal identity ignores the boot id (request ids restart with the process)" \
  crates/yizhi-member/src/waiters.rs \
  "id.origin == self.origin && id.boot_id == self.boot_id && id.request_id != 0" \
  "id.origin == self.origin && id.request_id != 0" sim || missed=1
mutate "a timed-out write answered Cancelled (etcd's Go client re-sends it)" \
  crates/yizhi-member/src/failure.rs \
  "            | ProposeFailure::Stopped
            | ProposeFailure::TimedOut => StatusCode::Unavailable," \
  "            | ProposeFailure::Stopped => StatusCode::Unavailable,
            ProposeFailure::TimedOut => StatusCode::Cancelled," sim || missed=1
mutate "a forwarded proposal placed after its client's deadline" \
  crates/yizhi-member/src/routing.rs \
  "    if deadline.has_passed(now_ms) {" \
  "    if origin == Origin::Local && deadline.has_passed(now_ms) {" sim || missed=1
# Read barriers (yizhi-member/src/reads.rs): a Multi-Paxos follower asks the leader for its read
# index with a ReadRequest frame, and the answer names the read by number only.
# Not here: read ids restarting at 1 with every boot (`first_id_of_boot` returning 1) survives
# 2,000 standard and 3,000 harsh seeds of each engine. A collision needs an answer sent to the
# earlier boot to arrive after the new boot has issued as many reads as the old one had; answers
# come within one round trip, so only a long-held link with a crash and quick restart behind it
# gets there, and the simulator does not aim at that combination yet (issue 14).
mutate "a leader confirms a follower's read with its commit index, without a round of its own" \
  crates/yizhi-member/src/reads.rs \
  "        if engine.read_index(read_id).is_err() {
            return Some(refusal);
        }" \
  "        if engine.status().role == yizhi_engine::Role::Leader {
            return Some(ReadResponse { index: Some(engine.status().commit), ..refusal });
        }" sim-paxos || missed=1

# Log repair and commit, judged by the simulator alone.
mutate "a heartbeat tells a follower to commit past what it is known to hold" \
  crates/yizhi-raft/src/replication.rs \
  "            let commit = matched.min(self.log.committed);" \
  "            let commit = self.log.committed;" sim-raft || missed=1
mutate "a leader counts entries it sent, not entries acknowledged, toward commit" \
  crates/yizhi-raft/src/replication.rs \
  ".committed_index(|id| self.progress.get(&id).map(|p| p.matched));" \
  ".committed_index(|id| self.progress.get(&id).map(|p| p.matched.max(p.next.saturating_sub(1))));" sim-raft || missed=1
# Not here, and why: three guards of the append path cannot fire in this engine, so no simulator
# can find them: a follower committing past what an append proved (`leader_commit.min(last_new)`
# in log.rs), acknowledging its whole log instead of `last_new`, or answering an append below its
# commit with its last index. Each needs a follower whose log matches the leader's up to an
# append's last entry and diverges after it. But a leader probes down from its last index, and the
# reject hint (`find_conflict_by_term`) never sends it below the last matching index m (every
# index in (hint, m] would hold a term above the hint's, yet at most the follower's term there);
# so the first accepted append starts at m + 1, carries the leader's no-op or later entries,
# conflicts at m + 1 and truncates the divergent tail; afterwards the follower's log is a prefix
# of the leader's for the rest of the term. Only a leader that probes lower (etcd-io/raft's
# `MsgUnreachable` from Probe state, or a snapshot path that keeps a tail) would reach them. They
# stay as asserts and unit tests (`log.rs`, `commit_is_bounded_by_last_new_entry_not_leader_commit`).

# Leases (raft-lease), judged by the simulator's lease-within-promises check: at every lease read
# the other nodes that would vote now (up, not paused, bound by no promise) must be fewer than a
# quorum. Half the runs put every clock at an end of the skew bound, a third use the shortest
# election timeout.
mutate "a leader lease derived from the longest randomized election timeout, not the promise" \
  crates/yizhi-raft/src/config.rs \
  "let drift_scaled = self.election_timeout_ticks * 100 / (100 + self.lease_clock_drift_bound_percent);" \
  "let drift_scaled = (2 * self.election_timeout_ticks - 1) * 100 / (100 + self.lease_clock_drift_bound_percent);" sim-raft-lease || missed=1
mutate "a follower stops refusing votes halfway through its promise to the leader" \
  crates/yizhi-raft/src/raft.rs \
  "            && self.election_elapsed_ticks < self.config.election_timeout_ticks" \
  "            && self.election_elapsed_ticks < self.config.election_timeout_ticks / 2" sim-raft-lease || missed=1
# Not reached yet: the lease one to four ticks too long (four was found at standard seed 179
# while every run could draw the shortest timeout, which the harsh profile's round trips do not
# allow: see config.rs), or computed without the drift bound
# (E - 1 ticks), and a restarted node voting at once (no boot guard) survive 2,000 standard and
# harsh seeds. A lease a few ticks too long shows only when the leader's clock is slow, the
# followers' fast, the election timeout at its minimum, the leader cut off just after a confirmed
# round and a read reaching it in the last milliseconds; the simulator does not aim a partition
# at that instant. The missing boot guard matters only when a second voter is cut off from the
# leader at the same time as the first restarts.

# Multi-Paxos: what an acceptor counts as chosen.
mutate "an acceptor learns slots of earlier ballots as chosen from the leader's commit index" \
  crates/yizhi-paxos/src/acceptor.rs \
  "            if in_run || self.log.term(&self.storage, next) == Some(ballot.term()) {" \
  "            if in_run || self.log.term(&self.storage, next).is_some() {" sim-paxos || missed=1
exit $missed
