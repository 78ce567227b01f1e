//! WAL records: `decode_record` never panics on any bytes, and a decoded record re-encodes to
//! exactly the frame it was read from (the encoding is canonical).
#![no_main]

use libfuzzer_sys::fuzz_target;
use yizhi_storage::codec::{decode_record, encode_record, encoded_len};

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = decode_record(data) {
        let mut encoded = Vec::new();
        encode_record(&decoded.record, &mut encoded);
        assert_eq!(encoded.len(), encoded_len(&decoded.record));
        assert_eq!(encoded, data[..decoded.frame_len], "{decoded:?} is not canonical");
        assert_eq!(decode_record(&encoded).as_ref(), Ok(&decoded));
    }
});
