#!/usr/bin/env bash
# The five deliberate protocol bugs the consensus issue names; each must make a yizhi-raft test fail.
# Each mutation is applied to a scratch copy of the repository, never to the working tree.
# Usage: scripts/deliberate-mutants.sh   (prints CAUGHT/MISSED per mutation; exits 1 if any is missed)
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/deliberate-mutants}"

mutate() { # name file python-replacement-old python-replacement-new
  local name="$1" file="$2" old="$3" new="$4"
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
  if (cd "$scratch/repo" && cargo test -q -p yizhi-raft --release >/dev/null 2>&1); then
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
exit $missed
