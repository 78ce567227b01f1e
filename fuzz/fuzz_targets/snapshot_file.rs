//! Snapshot files: `decode_snapshot` never panics on any bytes, and a decoded snapshot re-encodes
//! to exactly the file it was read from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yizhi_storage::snapshot_file::{decode_snapshot, encode_snapshot};

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = decode_snapshot(data) {
        let encoded = encode_snapshot(&snapshot);
        assert_eq!(encoded, data, "{:?} is not canonical", snapshot.meta);
        assert_eq!(decode_snapshot(&encoded).as_ref(), Ok(&snapshot));
    }
});
