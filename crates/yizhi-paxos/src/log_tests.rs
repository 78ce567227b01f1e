use super::*;
use yizhi_engine::{EntryPayload, MemStorage, Membership};

#[test]
fn reads_overlay_unstable_on_storage() {
    let mut storage = MemStorage::new_with_membership(Membership::new([1]));
    storage.append(&[Entry::noop(1, 1), Entry::noop(2, 1), Entry::noop(3, 1)]);
    let mut log = SlotLog::new(0);
    log.write(
        &storage,
        vec![Entry::noop(2, 5), Entry::noop(3, 5), Entry::noop(4, 5)],
    );
    assert_eq!(log.last(&storage), 4);
    let terms: Vec<Term> = log
        .entries(&storage, 1, 4, u64::MAX)
        .unwrap()
        .iter()
        .map(|e| e.term)
        .collect();
    assert_eq!(terms, vec![1, 5, 5, 5]);
    assert_eq!(log.entries(&storage, 1, 4, 0).unwrap().len(), 1);
    assert_eq!(log.take_unstable().len(), 3);
}

#[test]
#[should_panic(expected = "write rule")]
fn a_write_that_would_drop_later_slots_is_refused() {
    let mut storage = MemStorage::new_with_membership(Membership::new([1]));
    storage.append(&[Entry::noop(1, 1), Entry::noop(2, 1), Entry::noop(3, 1)]);
    let mut log = SlotLog::new(0);
    log.write(&storage, vec![Entry::noop(2, 5)]);
}

fn v(index: LogIndex, term: Term) -> Entry {
    Entry {
        index,
        term,
        payload: EntryPayload::Normal(bytes::Bytes::from_static(b"0123456789")),
    }
}

fn indexes(entries: &[Entry]) -> Vec<LogIndex> {
    entries.iter().map(|e| e.index).collect()
}

#[test]
fn a_pending_snapshot_raises_the_floor_and_hides_the_prefix() {
    let mut storage = MemStorage::new_with_membership(Membership::new([1]));
    storage.append(&[
        Entry::noop(1, 1),
        Entry::noop(2, 1),
        Entry::noop(3, 1),
        Entry::noop(4, 1),
    ]);
    let mut log = SlotLog::new(0);
    assert!(!log.has_unstable());
    log.install_snapshot(2, vec![Entry::noop(3, 2), Entry::noop(4, 2)]);
    assert_eq!(log.first_available(&storage), 3);
    assert_eq!(log.entry(&storage, 2), None, "covered by the snapshot");
    assert_eq!(log.entry(&storage, 3).map(|e| e.term), Some(2));
    assert!(log.has_unstable());
    assert!(matches!(
        log.entries(&storage, 2, 4, u64::MAX),
        Err(StorageError::Compacted {
            index: 2,
            first_index: 3
        })
    ));
    assert_eq!(indexes(&log.take_unstable()), vec![3, 4]);
}

#[test]
fn unstable_reads_stop_at_the_byte_limit_inclusively() {
    let storage = MemStorage::new_with_membership(Membership::new([1]));
    let mut log = SlotLog::new(0);
    log.write(&storage, (1..=4).map(|i| v(i, 1)).collect());
    let size = v(1, 1).size_bytes();
    assert_eq!(
        indexes(&log.entries(&storage, 1, 4, 2 * size).unwrap()),
        vec![1, 2]
    );
    assert_eq!(
        indexes(&log.entries(&storage, 1, 4, 2 * size + 1).unwrap()),
        vec![1, 2]
    );
    assert_eq!(
        indexes(&log.entries(&storage, 1, 4, 3 * size - 1).unwrap()),
        vec![1, 2]
    );
    assert_eq!(
        indexes(&log.entries(&storage, 1, 4, u64::MAX).unwrap()),
        vec![1, 2, 3, 4]
    );
}

#[test]
fn a_write_below_the_unstable_part_replaces_it_and_one_inside_it_truncates_there() {
    let mut storage = MemStorage::new_with_membership(Membership::new([1]));
    storage.append(&[Entry::noop(1, 1), Entry::noop(2, 1)]);
    let mut log = SlotLog::new(0);
    log.write(
        &storage,
        vec![
            Entry::noop(3, 2),
            Entry::noop(4, 2),
            Entry::noop(5, 2),
            Entry::noop(6, 2),
        ],
    );
    log.write(
        &storage,
        vec![Entry::noop(5, 3), Entry::noop(6, 3), Entry::noop(7, 3)],
    );
    let terms: Vec<(LogIndex, Term)> = log
        .entries(&storage, 1, 7, u64::MAX)
        .unwrap()
        .iter()
        .map(|e| (e.index, e.term))
        .collect();
    assert_eq!(
        terms,
        vec![(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (6, 3), (7, 3)]
    );
    log.write(&storage, (2..=7).map(|i| Entry::noop(i, 4)).collect());
    assert_eq!(indexes(&log.take_unstable()), vec![2, 3, 4, 5, 6, 7]);
}

#[test]
fn a_tail_beyond_the_stored_log_is_read_from_the_unstable_part_alone() {
    // A snapshot pending in this Ready reaches past everything stored; its tail is unstable.
    let storage = MemStorage::new_with_membership(Membership::new([1]));
    let mut log = SlotLog::new(0);
    log.install_snapshot(5, vec![Entry::noop(6, 2), Entry::noop(7, 2)]);
    assert_eq!(log.last(&storage), 7);
    assert_eq!(
        indexes(&log.entries(&storage, 6, 7, u64::MAX).unwrap()),
        vec![6, 7]
    );
    assert_eq!(indexes(&log.entries(&storage, 7, 7, u64::MAX).unwrap()), vec![7]);
}
