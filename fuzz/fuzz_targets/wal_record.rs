//! WAL frames: `decode_frame` (records and batch headers) never panics on any bytes, a decoded frame
//! re-encodes to exactly the bytes it was read from (the encoding is canonical), `decode_record`
//! agrees with it, and scanning the bytes as a segment never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yizhi_storage::codec::{Frame, SEGMENT_HEADER_BYTES, decode_frame, decode_record, encode_frame};
use yizhi_storage::recovery::scan_segment;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = decode_frame(data) {
        let mut encoded = Vec::new();
        encode_frame(&decoded.frame, &mut encoded);
        assert_eq!(encoded, data[..decoded.frame_len], "{decoded:?} is not canonical");
        assert_eq!(decode_frame(&encoded).as_ref(), Ok(&decoded));
        let as_record = decode_record(data).map(|d| Frame::Record(d.record));
        assert_eq!(as_record.is_ok(), matches!(decoded.frame, Frame::Record(_)));
    }
    if data.len() >= SEGMENT_HEADER_BYTES {
        let _ = scan_segment(data, data[0] & 1 == 1);
    }
});
