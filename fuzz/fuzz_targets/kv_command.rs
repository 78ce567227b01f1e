//! Replicated KV commands: `decode_command` never panics on any bytes, and a decoded command
//! survives encode → decode unchanged (the encoding is not canonical: varints may be overlong).
#![no_main]

use libfuzzer_sys::fuzz_target;
use yizhi_kv::{decode_command, encode_command};

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = decode_command(data) {
        let encoded = encode_command(&command);
        assert_eq!(decode_command(&encoded).as_ref(), Ok(&command));
        assert_eq!(encode_command(&command), encoded, "encoding is deterministic");
    }
});
