//! Yizhi's MVCC key-value state machine: etcd v3's data model (revisions, ranges, txns, compaction, leases, watches), deterministic and IO-free at its core.
