//! Raw KV calls through the generated tonic client, for the tests that check what the wire
//! answers (the `yizhi-client` facade would hide it). Each panics naming the call that failed.

use tonic::Request;
use tonic::transport::Channel;
use yizhi_proto::etcdserverpb as pb;
use yizhi_proto::etcdserverpb::kv_client::KvClient;
use yizhi_proto::mvccpb::KeyValue;

/// `message` as a request carrying the metadata `pairs` (ASCII values).
pub fn with_metadata<T>(message: T, pairs: &[(&'static str, &str)]) -> Request<T> {
    let mut request = Request::new(message);
    for (key, value) in pairs {
        request
            .metadata_mut()
            .insert(*key, value.parse().expect("ascii metadata"));
    }
    request
}

/// A Range of the one key `key`.
pub fn range_request(key: impl AsRef<[u8]>) -> pb::RangeRequest {
    pb::RangeRequest {
        key: key.as_ref().to_vec(),
        ..Default::default()
    }
}

/// The key-values a linearizable Range of the one key `key` answers (none or one).
pub async fn get(kv: &mut KvClient<Channel>, key: impl AsRef<[u8]>) -> Vec<KeyValue> {
    kv.range(range_request(key))
        .await
        .expect("range")
        .into_inner()
        .kvs
}

/// Puts `value` at `key`; the revision of the put.
pub async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    put_leased(kv, key, value, 0).await
}

/// Puts `value` at `key` attached to `lease` (0: none); the revision of the put.
pub async fn put_leased(kv: &mut KvClient<Channel>, key: &str, value: &str, lease: i64) -> i64 {
    let response = kv
        .put(pb::PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            lease,
            ..Default::default()
        })
        .await
        .expect("put")
        .into_inner();
    response.header.expect("header").revision
}

/// Deletes the one key `key`; the answer.
pub async fn delete(kv: &mut KvClient<Channel>, key: impl AsRef<[u8]>) -> pb::DeleteRangeResponse {
    kv.delete_range(pb::DeleteRangeRequest {
        key: key.as_ref().to_vec(),
        ..Default::default()
    })
    .await
    .expect("delete")
    .into_inner()
}
