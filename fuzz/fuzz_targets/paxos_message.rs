//! Multi-Paxos peer messages: decoding never panics, and whatever decodes is canonical (re-encodes to the
//! very same bytes, so it decodes to the same value again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use yizhi_engine::WireMessage;
use yizhi_paxos::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let encoded = message.to_bytes();
        assert_eq!(encoded, data, "{message:?} is not canonical");
        assert_eq!(message.encoded_len(), data.len());
        assert_eq!(Message::decode(&encoded).as_ref(), Ok(&message));
    }
});
