//! The state machine every simulated node applies is the server's own: `yizhi_kv::MvccStore` over
//! the in-memory backend, fed the bytes of `yizhi_kv::encode_command` from the log. This module
//! translates between the client workload (the checker's [`MvccInput`]/[`MvccOutput`]) and the
//! store's etcd-shaped requests and responses.

use bytes::Bytes;
use yizhi_kv::{
    Command, CommandResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest, KeyValue, KvConfig,
    MemBackend, MvccStore, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseOp, SnapshotError,
    TxnRequest,
};
use yizhi_lincheck::mvcc::{CasCompare, KeyRecord, MvccInput, MvccOutput};

/// The replicated state machine of one node.
pub type Store = MvccStore<MemBackend>;

pub fn empty_store() -> Store {
    MvccStore::open(MemBackend::new(), KvConfig::default()).expect("the in-memory backend cannot fail")
}

/// The store a snapshot images; an empty image (a snapshot taken before anything was applied)
/// is an empty store.
pub fn store_from_snapshot(data: &[u8]) -> Result<Store, SnapshotError> {
    let mut store = empty_store();
    if !data.is_empty() {
        store.install_snapshot(data)?;
    }
    Ok(store)
}

pub fn snapshot_of(store: &Store) -> Bytes {
    Bytes::from(store.snapshot().expect("the in-memory backend cannot fail"))
}

/// The command a write input replicates; None for reads, which go through ReadIndex instead.
pub fn command_for(input: &MvccInput) -> Option<Command> {
    let command = match input {
        MvccInput::Get { .. } | MvccInput::Range { .. } => return None,
        MvccInput::Put { key, value } => Command::Put(put_request(key, value)),
        MvccInput::Delete { key } => Command::DeleteRange(DeleteRangeRequest {
            key: bytes_of(key),
            ..DeleteRangeRequest::default()
        }),
        MvccInput::Cas { key, compare, value } => {
            let target = match compare {
                CasCompare::ModRevision(revision) => CompareTarget::Mod(*revision),
                CasCompare::Value(expected) => CompareTarget::Value(bytes_of(expected)),
            };
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target,
                    key: bytes_of(key),
                    range_end: Bytes::new(),
                }],
                success: vec![RequestOp::Put(put_request(key, value))],
                failure: vec![RequestOp::Range(get_request(key))],
            })
        }
    };
    Some(command)
}

/// The local read a read input performs once ReadIndex says it is safe; None for writes.
pub fn read_for(input: &MvccInput) -> Option<RangeRequest> {
    match input {
        MvccInput::Get { key } => Some(get_request(key)),
        MvccInput::Range { start, end } => Some(RangeRequest {
            key: bytes_of(start),
            range_end: bytes_of(end),
            ..RangeRequest::default()
        }),
        _ => None,
    }
}

/// What the checker sees of a write's response.
///
/// # Panics
///
/// If the response does not have the shape the command asks for: the state machine is broken.
pub fn write_output(input: &MvccInput, response: &CommandResponse) -> MvccOutput {
    match (input, response) {
        (MvccInput::Put { .. }, CommandResponse::Put(put)) => MvccOutput::Put {
            revision: put.revision,
        },
        (MvccInput::Delete { .. }, CommandResponse::DeleteRange(delete)) => MvccOutput::Delete {
            revision: delete.revision,
            deleted: delete.deleted,
        },
        (MvccInput::Cas { .. }, CommandResponse::Txn(txn)) => {
            assert_eq!(txn.responses.len(), 1, "one op per branch: {txn:?}");
            let record = match (&txn.responses[0], txn.succeeded) {
                (ResponseOp::Put(_), true) => None,
                (ResponseOp::Range(range), false) => single_record(range),
                (other, succeeded) => panic!("txn (succeeded {succeeded}) answered {other:?}"),
            };
            MvccOutput::Cas {
                revision: txn.revision,
                succeeded: txn.succeeded,
                record,
            }
        }
        (input, response) => panic!("{input:?} was answered with {response:?}"),
    }
}

/// What the checker sees of a read's response.
pub fn read_output(input: &MvccInput, response: &RangeResponse) -> MvccOutput {
    match input {
        MvccInput::Get { .. } => MvccOutput::Get {
            revision: response.revision,
            record: single_record(response),
        },
        MvccInput::Range { .. } => MvccOutput::Range {
            revision: response.revision,
            records: response
                .kvs
                .iter()
                .map(|kv| (string_of(&kv.key), record_of(kv)))
                .collect(),
            count: response.count,
        },
        other => panic!("{other:?} is not a read"),
    }
}

fn single_record(range: &RangeResponse) -> Option<KeyRecord> {
    assert!(range.kvs.len() <= 1, "a one-key read returned {range:?}");
    range.kvs.first().map(record_of)
}

fn record_of(kv: &KeyValue) -> KeyRecord {
    KeyRecord {
        value: string_of(&kv.value),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
    }
}

fn put_request(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: bytes_of(key),
        value: bytes_of(value),
        ..PutRequest::default()
    }
}

fn get_request(key: &str) -> RangeRequest {
    RangeRequest {
        key: bytes_of(key),
        ..RangeRequest::default()
    }
}

fn bytes_of(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// Keys and values are written by the simulator's clients, always ASCII; anything else read back
/// is shown lossily, and then cannot match what the model expects.
fn string_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use yizhi_kv::{decode_command, encode_command};

    fn apply(store: &mut Store, index: u64, input: &MvccInput) -> MvccOutput {
        let bytes = encode_command(&command_for(input).expect("a write"));
        let command = decode_command(&bytes).expect("own encoding decodes");
        let applied = store.apply(&command, index).expect("in-memory backend");
        write_output(input, &applied.response.expect("a valid command"))
    }

    #[test]
    fn the_real_store_answers_as_the_model_expects() {
        let mut store = empty_store();
        let put = |value: &str| MvccInput::Put {
            key: "k1".into(),
            value: value.into(),
        };
        assert_eq!(apply(&mut store, 1, &put("a")), MvccOutput::Put { revision: 2 });
        let cas = MvccInput::Cas {
            key: "k1".into(),
            compare: CasCompare::ModRevision(0),
            value: "b".into(),
        };
        let record = KeyRecord {
            value: "a".into(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
        };
        let lost = MvccOutput::Cas {
            revision: 2,
            succeeded: false,
            record: Some(record.clone()),
        };
        assert_eq!(apply(&mut store, 2, &cas), lost);
        let delete = MvccInput::Delete { key: "k1".into() };
        let deleted = MvccOutput::Delete {
            revision: 3,
            deleted: 1,
        };
        assert_eq!(apply(&mut store, 3, &delete), deleted);
        let range = MvccInput::Range {
            start: "k".into(),
            end: "l".into(),
        };
        let response = store
            .range(&read_for(&range).expect("a read"))
            .expect("valid range");
        let empty = MvccOutput::Range {
            revision: 3,
            records: Vec::new(),
            count: 0,
        };
        assert_eq!(read_output(&range, &response), empty);
    }

    #[test]
    fn snapshots_restore_the_same_state_and_the_empty_image_is_empty() {
        let mut store = empty_store();
        let put = MvccInput::Put {
            key: "k2".into(),
            value: "v".into(),
        };
        apply(&mut store, 1, &put);
        let restored = store_from_snapshot(&snapshot_of(&store)).expect("own snapshot");
        assert_eq!(restored.state_hash(), store.state_hash());
        assert_eq!(store_from_snapshot(&[]).expect("empty").current_revision(), 1);
        assert!(store_from_snapshot(&[1, 2, 3]).is_err());
    }
}
