//! The store's limits: plain values every replica must agree on. They sit below every module
//! that applies or encodes commands (store, session table, codecs), so those import them from
//! here and never from each other.

/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Deepest txn-in-txn accepted; bounds recursion in validation, apply and the codec.
pub const MAX_TXN_DEPTH: usize = 16;
/// etcd's `MaxLeaseTTL` (about 285 years).
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;
/// etcd raises shorter TTLs to 1.5 election timeouts; with its default 1 s timeout, 2 s.
pub const DEFAULT_MIN_LEASE_TTL_SECS: i64 = 2;

/// Limits, each with etcd's default where etcd has one. Every replica must use the same
/// values: they decide whether a replicated command fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvConfig {
    pub max_txn_ops: usize,
    pub min_lease_ttl_secs: i64,
    /// Client sessions (see the `session` module) kept at once; a new client beyond it is
    /// refused with [`crate::KvError::TooManyClientSessions`].
    pub max_client_sessions: usize,
    /// Responses one client may hold unacknowledged (at or above its floor).
    pub max_unacknowledged_per_client: usize,
    /// Bound of [`crate::SessionStats::stored_bytes`].
    pub max_session_bytes: u64,
    /// A response encoding larger than this is not kept (a duplicate then gets
    /// [`crate::KvError::DuplicateResponseNotRetained`]); every new request reserves this much of
    /// `max_session_bytes` before it applies, so that its response can always be stored.
    pub max_stored_response_bytes: u64,
    /// A client not heard from for longer than this, by the session clock, is forgotten.
    pub client_idle_expiry_ms: u64,
}

pub const DEFAULT_MAX_CLIENT_SESSIONS: usize = 10_000;
pub const DEFAULT_MAX_UNACKNOWLEDGED_PER_CLIENT: usize = 256;
pub const DEFAULT_MAX_SESSION_BYTES: u64 = 64 << 20;
pub const DEFAULT_MAX_STORED_RESPONSE_BYTES: u64 = 1 << 20;
pub const DEFAULT_CLIENT_IDLE_EXPIRY_MS: u64 = 300_000;

impl Default for KvConfig {
    fn default() -> Self {
        KvConfig {
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            min_lease_ttl_secs: DEFAULT_MIN_LEASE_TTL_SECS,
            max_client_sessions: DEFAULT_MAX_CLIENT_SESSIONS,
            max_unacknowledged_per_client: DEFAULT_MAX_UNACKNOWLEDGED_PER_CLIENT,
            max_session_bytes: DEFAULT_MAX_SESSION_BYTES,
            max_stored_response_bytes: DEFAULT_MAX_STORED_RESPONSE_BYTES,
            client_idle_expiry_ms: DEFAULT_CLIENT_IDLE_EXPIRY_MS,
        }
    }
}
