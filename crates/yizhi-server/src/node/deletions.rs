//! Wake-ups for tasks waiting until a key is deleted (Lock and Campaign waiters waiting for their
//! predecessor). The applier looks up each applied delete here, so a release wakes exactly the
//! waiters of that key — not every waiter on every applied batch.
//!
//! A waiter registers *before* it checks the store and then waits on its [`Notify`]: a deletion
//! applied between the check and the wait leaves a permit behind, so it is never missed. A
//! snapshot install replaces the store without events and wakes everyone to look again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use yizhi_kv::{Event, EventKind};

/// Registrations at once per member: two per waiter (its predecessor and its own key), and the
/// waiters of each client listener are bounded by the Lock/Election waiter limit.
pub const MAX_REGISTRATIONS: usize = 65_536;

#[derive(Debug, Default)]
pub struct DeletionWaiters {
    inner: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    by_key: BTreeMap<Bytes, BTreeMap<u64, Arc<Notify>>>,
    next_id: u64,
    count: usize,
}

/// Removes its registration when dropped (a granted, failed or cancelled waiter).
#[derive(Debug)]
pub struct Registration<'a> {
    owner: &'a DeletionWaiters,
    key: Bytes,
    id: u64,
}

impl DeletionWaiters {
    /// Registers `notify` to be woken when `key` is deleted; `None` when the registry is full.
    pub fn register(&self, key: Bytes, notify: Arc<Notify>) -> Option<Registration<'_>> {
        let mut registry = self.inner.lock().expect("deletion waiters lock");
        if registry.count >= MAX_REGISTRATIONS {
            return None;
        }
        registry.next_id += 1;
        let id = registry.next_id;
        registry.by_key.entry(key.clone()).or_default().insert(id, notify);
        registry.count += 1;
        Some(Registration { owner: self, key, id })
    }

    /// Wakes the waiters of every key deleted in `events`.
    pub fn notify(&self, events: &[Vec<Event>]) {
        let registry = self.inner.lock().expect("deletion waiters lock");
        if registry.count == 0 {
            return;
        }
        for event in events.iter().flatten() {
            if event.kind == EventKind::Delete
                && let Some(waiters) = registry.by_key.get(&event.kv.key)
            {
                waiters.values().for_each(|n| n.notify_one());
            }
        }
    }

    /// Wakes everyone (the store changed without events: a snapshot was installed).
    pub fn notify_all(&self) {
        let registry = self.inner.lock().expect("deletion waiters lock");
        registry
            .by_key
            .values()
            .flat_map(|w| w.values())
            .for_each(|n| n.notify_one());
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("deletion waiters lock").count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut registry = self.owner.inner.lock().expect("deletion waiters lock");
        let waiters = registry.by_key.get_mut(&self.key).expect("a registered key");
        assert!(
            waiters.remove(&self.id).is_some(),
            "registration {} removed twice",
            self.id
        );
        if waiters.is_empty() {
            registry.by_key.remove(&self.key);
        }
        registry.count -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_kv::KeyValue;

    fn event(kind: EventKind, key: &'static str) -> Event {
        Event {
            kind,
            kv: KeyValue {
                key: Bytes::from_static(key.as_bytes()),
                ..Default::default()
            },
            prev_kv: None,
        }
    }

    #[tokio::test]
    async fn only_a_delete_of_the_registered_key_wakes_and_an_early_one_is_not_lost() {
        let registry = DeletionWaiters::default();
        let notify = Arc::new(Notify::new());
        let registration = registry.register(Bytes::from_static(b"a"), notify.clone());
        assert!(registration.is_some());
        registry.notify(&[vec![event(EventKind::Put, "a"), event(EventKind::Delete, "b")]]);
        let woke = tokio::time::timeout(std::time::Duration::from_millis(20), notify.notified()).await;
        assert!(
            woke.is_err(),
            "a put of the key or a delete of another key must not wake"
        );
        // Deleted before the waiter waits: the permit is kept.
        registry.notify(&[vec![event(EventKind::Delete, "a")]]);
        tokio::time::timeout(std::time::Duration::from_secs(1), notify.notified())
            .await
            .expect("woken by the delete");
        assert_eq!(registry.len(), 1);
        drop(registration);
        assert!(registry.is_empty());
        registry.notify_all();
    }

    #[test]
    fn the_registry_is_bounded() {
        let registry = DeletionWaiters::default();
        let notify = Arc::new(Notify::new());
        let held: Vec<_> = (0..MAX_REGISTRATIONS)
            .map(|_| {
                registry
                    .register(Bytes::from_static(b"k"), notify.clone())
                    .expect("room")
            })
            .collect();
        assert!(
            registry
                .register(Bytes::from_static(b"k"), notify.clone())
                .is_none()
        );
        drop(held);
        assert!(registry.register(Bytes::from_static(b"k"), notify).is_some());
    }
}
