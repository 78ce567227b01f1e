//! Multi-Paxos peer messages: decoding never panics, and whatever decodes is canonical (re-encodes to the
//! very same bytes, so it decodes to the same value again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use yizhi_engine::wire::check_canonical;
use yizhi_paxos::Message;

fuzz_target!(|data: &[u8]| {
    check_canonical::<Message>(data);
});
