//! Free loopback ports for test clusters.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports below Linux's ephemeral range (32768+), so outgoing connections never hold them.
const PORT_RANGE: std::ops::Range<u16> = 20_000..32_768;

/// Ports handed out by this process (a probed port is free only until someone binds it).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `count` distinct ports in [`PORT_RANGE`] that are free right now.
pub fn free_ports(count: usize) -> Vec<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let mut state = u64::from(std::process::id())
        ^ SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
        ^ (handed_out.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut ports = Vec::with_capacity(count);
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..100_000 {
        if ports.len() == count {
            break;
        }
        // xorshift64*: only spreads tests over the range; nothing depends on the sequence.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = PORT_RANGE.start + (state.wrapping_mul(0x2545_F491_4F6C_DD1D) % span) as u16;
        // `yizhi up` puts its members on x2379/x2380; leave those to people trying it out.
        if port % 10_000 == 2379 || port % 10_000 == 2380 || handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), count, "not enough free ports in {PORT_RANGE:?}");
    ports
}
