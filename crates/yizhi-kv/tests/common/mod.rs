//! Helpers shared by the integration tests: a store driven through the codec, as the log would.
#![allow(dead_code)]

pub mod workload;

use bytes::Bytes;
use yizhi_kv::*;

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// `command` wrapped for exactly-once application as `(client_id, seq)`.
pub fn deduped(client_id: u64, seq: u64, acked_below: u64, now_ms: u64, command: Command) -> Command {
    Command::Deduped {
        request: ClientSeq {
            client_id,
            seq,
            acked_below,
        },
        now_ms,
        command: Box::new(command),
    }
}

#[derive(Debug)]
pub struct Kv {
    pub store: MvccStore<MemBackend>,
    pub log_index: u64,
    pub events: Vec<Vec<Event>>,
}

impl Kv {
    pub fn new() -> Self {
        Self::with_config(KvConfig::default())
    }

    pub fn with_config(config: KvConfig) -> Self {
        Kv {
            store: MvccStore::open(MemBackend::new(), config).unwrap(),
            log_index: 0,
            events: Vec::new(),
        }
    }

    /// Applies `command` after a round trip through the codec, as a replica would see it.
    pub fn apply(&mut self, command: Command) -> Result<CommandResponse, KvError> {
        let decoded = decode_command(&encode_command(&command)).unwrap();
        assert_eq!(decoded, command);
        self.log_index += 1;
        let applied = self.store.apply(&decoded, self.log_index).unwrap();
        assert_eq!(self.store.applied_index(), self.log_index);
        if !applied.events.is_empty() {
            self.events.push(applied.events);
        }
        applied.response
    }

    pub fn put(&mut self, key: &str, value: &str) -> PutResponse {
        self.put_req(PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })
        .unwrap()
    }

    pub fn put_req(&mut self, req: PutRequest) -> Result<PutResponse, KvError> {
        match self.apply(Command::Put(req))? {
            CommandResponse::Put(r) => Ok(r),
            other => panic!("{other:?}"),
        }
    }

    pub fn delete(&mut self, key: &str, range_end: &str) -> DeleteRangeResponse {
        self.delete_req(DeleteRangeRequest {
            key: b(key),
            range_end: b(range_end),
            prev_kv: false,
        })
        .unwrap()
    }

    pub fn delete_req(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, KvError> {
        match self.apply(Command::DeleteRange(req))? {
            CommandResponse::DeleteRange(r) => Ok(r),
            other => panic!("{other:?}"),
        }
    }

    pub fn txn(&mut self, req: TxnRequest) -> Result<TxnResponse, KvError> {
        match self.apply(Command::Txn(req))? {
            CommandResponse::Txn(r) => Ok(r),
            other => panic!("{other:?}"),
        }
    }

    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, KvError> {
        match self.apply(Command::Compact(CompactionRequest {
            revision,
            physical: false,
        }))? {
            CommandResponse::Compact(r) => Ok(r),
            other => panic!("{other:?}"),
        }
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        let r = self.range(key, "", 0).unwrap();
        assert!(r.kvs.len() <= 1);
        r.kvs.into_iter().next()
    }

    pub fn range(&self, key: &str, range_end: &str, revision: i64) -> Result<RangeResponse, KvError> {
        self.store.range(&RangeRequest {
            key: b(key),
            range_end: b(range_end),
            revision,
            ..Default::default()
        })
    }

    pub fn keys(&self, req: &RangeRequest) -> Vec<String> {
        let r = self.store.range(req).unwrap();
        r.kvs
            .iter()
            .map(|kv| String::from_utf8(kv.key.to_vec()).unwrap())
            .collect()
    }
}

pub fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest {
        key: b(key),
        value: b(value),
        ..Default::default()
    })
}

pub fn delete_op(key: &str, range_end: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest {
        key: b(key),
        range_end: b(range_end),
        prev_kv: false,
    })
}

pub fn range_op(key: &str, range_end: &str) -> RequestOp {
    RequestOp::Range(RangeRequest {
        key: b(key),
        range_end: b(range_end),
        ..Default::default()
    })
}

pub fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare {
        result,
        target,
        key: b(key),
        range_end: Bytes::new(),
    }
}
