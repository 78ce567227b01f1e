//! Leases as replicated state. Time is whatever logical clock the leader stamps into grants and
//! keep-alives (`now_ms`); the core never reads a clock. Expiry is the leader's decision: it asks
//! [`MvccStore::expired_leases`] and proposes a revoke, as etcd's primary lessor does.

use crate::backend::{Backend, LeaseRecord};
use crate::config::MAX_LEASE_TTL_SECS;
use crate::error::KvError;
use crate::index::IndexKey;
use crate::store::MvccStore;
use crate::types::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseId, LeaseKeepAliveResponse, LeaseRevokeResponse,
    LeaseTimeToLive, NO_LEASE,
};

const MS_PER_SEC: u64 = 1000;

fn expiry_ms(now_ms: u64, ttl_secs: i64) -> u64 {
    assert!(ttl_secs > 0 && ttl_secs <= MAX_LEASE_TTL_SECS, "ttl {ttl_secs}");
    now_ms.saturating_add((ttl_secs as u64).saturating_mul(MS_PER_SEC))
}

impl<B: Backend> MvccStore<B> {
    pub(crate) fn lease_grant(&mut self, req: &LeaseGrantRequest) -> Result<LeaseGrantResponse, KvError> {
        if req.id < NO_LEASE {
            return Err(KvError::InvalidLeaseId { id: req.id });
        }
        if req.ttl_secs > MAX_LEASE_TTL_SECS {
            return Err(KvError::LeaseTtlTooLarge);
        }
        if self.leases.contains_key(&req.id) {
            return Err(KvError::LeaseExists);
        }
        let id = if req.id == NO_LEASE {
            self.assign_lease_id()
        } else {
            req.id
        };
        // etcd silently raises short TTLs so a lease cannot expire during an election.
        let ttl_secs = req.ttl_secs.max(self.config.min_lease_ttl_secs);
        let lease = LeaseRecord {
            id,
            granted_ttl_secs: ttl_secs,
            expiry_ms: expiry_ms(req.now_ms, ttl_secs),
        };
        self.leases.insert(id, lease);
        self.pending.batch.put_leases.push(lease);
        Ok(LeaseGrantResponse {
            revision: self.meta.current_revision,
            id,
            ttl_secs,
        })
    }

    /// etcd picks random IDs; replicas must agree, so ours count up from a persisted cursor,
    /// stepping over IDs that callers chose themselves.
    fn assign_lease_id(&mut self) -> LeaseId {
        let mut id = self.meta.next_lease_id;
        while self.leases.contains_key(&id) {
            id = id.checked_add(1).expect("2^63 leases cannot exist");
        }
        self.meta.next_lease_id = id + 1;
        assert!(id > NO_LEASE);
        id
    }

    /// Deletes every key attached to the lease, all at one revision, then the lease.
    pub(crate) fn lease_revoke(&mut self, id: LeaseId) -> Result<LeaseRevokeResponse, KvError> {
        if !self.leases.contains_key(&id) {
            return Err(KvError::LeaseNotFound);
        }
        let keys = self.lease_keys.remove(&id).unwrap_or_default();
        for key in keys {
            assert!(
                self.index
                    .get(key.as_bytes(), self.read_main())
                    .is_some_and(|e| e.lease == id),
                "lease {id} lists {key:?}, which is not attached to it"
            );
            self.delete_key(key.to_bytes())?;
        }
        self.leases.remove(&id);
        self.pending.batch.delete_leases.push(id);
        Ok(LeaseRevokeResponse {
            revision: self.read_main(),
        })
    }

    pub(crate) fn lease_keep_alive(
        &mut self,
        id: LeaseId,
        now_ms: u64,
    ) -> Result<LeaseKeepAliveResponse, KvError> {
        let lease = self.leases.get_mut(&id).ok_or(KvError::LeaseNotFound)?;
        let before_ms = lease.expiry_ms;
        // Never shortened: members stamp keep-alives with their own clocks, and a leader that
        // answered a keep-alive from memory relies on the replicated expiry only growing.
        lease.expiry_ms = before_ms.max(expiry_ms(now_ms, lease.granted_ttl_secs));
        assert!(lease.expiry_ms > now_ms || lease.expiry_ms == u64::MAX);
        assert!(
            lease.expiry_ms >= before_ms,
            "lease {id} expiry shrank below {before_ms}"
        );
        let lease = *lease;
        self.pending.batch.put_leases.push(lease);
        Ok(LeaseKeepAliveResponse {
            revision: self.meta.current_revision,
            id,
            ttl_secs: lease.granted_ttl_secs,
        })
    }

    /// Leases whose expiry is at or before `now_ms`, soonest first (ties by ID): what the leader
    /// should propose revoking.
    pub fn expired_leases(&self, now_ms: u64) -> Vec<LeaseId> {
        let mut expired: Vec<(u64, LeaseId)> = self
            .leases
            .values()
            .filter(|l| l.expiry_ms <= now_ms)
            .map(|l| (l.expiry_ms, l.id))
            .collect();
        expired.sort_unstable();
        expired.into_iter().map(|(_, id)| id).collect()
    }

    /// The replicated expiry (ms) and granted TTL (s) of a lease, if it exists.
    pub fn lease_expiry(&self, id: LeaseId) -> Option<(u64, i64)> {
        self.leases.get(&id).map(|l| (l.expiry_ms, l.granted_ttl_secs))
    }

    /// Every lease with its replicated expiry (ms) and granted TTL (s), ascending by ID.
    pub fn lease_expiries(&self) -> impl Iterator<Item = (LeaseId, u64, i64)> + '_ {
        self.leases
            .values()
            .map(|l| (l.id, l.expiry_ms, l.granted_ttl_secs))
    }

    pub fn lease_time_to_live(&self, id: LeaseId, now_ms: u64) -> Result<LeaseTimeToLive, KvError> {
        let lease = self.leases.get(&id).ok_or(KvError::LeaseNotFound)?;
        let remaining_ms = lease.expiry_ms.saturating_sub(now_ms);
        let keys = self
            .lease_keys
            .get(&id)
            .map(|keys| keys.iter().map(IndexKey::to_bytes).collect())
            .unwrap_or_default();
        Ok(LeaseTimeToLive {
            revision: self.meta.current_revision,
            id,
            ttl_secs: (remaining_ms / MS_PER_SEC) as i64,
            granted_ttl_secs: lease.granted_ttl_secs,
            keys,
        })
    }

    /// Every lease ID, ascending (etcd's LeaseLeases).
    pub fn lease_ids(&self) -> Vec<LeaseId> {
        self.leases.keys().copied().collect()
    }
}
