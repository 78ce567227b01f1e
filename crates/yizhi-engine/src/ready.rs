//! The `Ready` batch: everything an engine asks its runtime to do, in the order it must be done.

use crate::types::{Entry, Envelope, HardState, ReadState, Role, Snapshot, SoftState};

/// One batch of work for the runtime. Handle it strictly in field order, then call `advance()`:
///
/// 1. `snapshot`, `entries` and `hard_state` are written to stable storage. If `must_sync` is true
///    they are fsynced before step 2. `entries[0].index` may be at or below the storage's last index:
///    the runtime truncates the stored log from there first (never below the commit index; engines
///    assert this).
/// 2. `messages` are sent, after step 1 is durable: a vote or append acknowledgement must never
///    promise what a crash could forget. A runtime may send a Raft leader's appends and heartbeats
///    before step 1 (thesis §10.2.1; the server does, see `ServerEngine::may_send_before_persist`):
///    they promise nothing about the leader's disk, since the leader counts its own log toward a
///    quorum only at `advance()`.
/// 3. `committed_entries` are applied to the state machine in order.
/// 4. Each of `read_states` is answered once the state machine has applied its `index`.
///
/// `advance()` tells the engine steps 1–3 happened; only then does a leader count its own log toward
/// the commit quorum, and only then is the next `Ready` produced.
#[derive(Debug)]
pub struct Ready<M> {
    /// Set when leadership or role changed since the last `Ready`.
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    /// A snapshot received from the leader, to install before `entries`.
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub must_sync: bool,
    pub messages: Vec<crate::types::Envelope<M>>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

impl<M> Default for Ready<M> {
    fn default() -> Self {
        Ready {
            soft_state: None,
            hard_state: None,
            snapshot: None,
            entries: Vec::new(),
            must_sync: false,
            messages: Vec::<Envelope<M>>::new(),
            committed_entries: Vec::new(),
            read_states: Vec::new(),
        }
    }
}

impl<M> Ready<M> {
    pub fn is_empty(&self) -> bool {
        self.soft_state.is_none()
            && self.hard_state.is_none()
            && self.snapshot.is_none()
            && self.entries.is_empty()
            && self.messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }

    /// True when step 1 has anything to write.
    pub fn has_persistent_state(&self) -> bool {
        self.hard_state.is_some() || self.snapshot.is_some() || !self.entries.is_empty()
    }
}

/// `Some(current)` when it differs from what the previous `Ready` reported (`last_reported`, which
/// it then becomes), else `None`: a `Ready` carries soft and hard state only when they changed.
pub fn changed<T: Copy + PartialEq>(current: T, last_reported: &mut T) -> Option<T> {
    if current == *last_reported {
        return None;
    }
    *last_reported = current;
    Some(current)
}

/// The soft and hard state the last `Ready` reported: what an engine compares its current state
/// against, so that a `Ready` carries each only when it changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reported {
    pub soft_state: SoftState,
    pub hard_state: HardState,
}

impl Reported {
    /// A node starting as a follower without a leader, `hard_state` being what its storage holds.
    pub fn at_start(hard_state: HardState) -> Self {
        Reported {
            soft_state: SoftState {
                leader: None,
                role: Role::Follower,
            },
            hard_state,
        }
    }

    /// Whether either state differs from what was reported.
    pub fn differs(&self, soft_state: SoftState, hard_state: HardState) -> bool {
        soft_state != self.soft_state || hard_state != self.hard_state
    }

    /// A `Ready` opened with the states that changed, which then count as reported. Also returns
    /// the hard state reported before, against which the engine checks the change and decides
    /// `must_sync`.
    pub fn open_ready<M>(&mut self, soft_state: SoftState, hard_state: HardState) -> (Ready<M>, HardState) {
        let previous_hard_state = self.hard_state;
        let ready = Ready {
            soft_state: changed(soft_state, &mut self.soft_state),
            hard_state: changed(hard_state, &mut self.hard_state),
            ..Ready::default()
        };
        (ready, previous_hard_state)
    }
}
