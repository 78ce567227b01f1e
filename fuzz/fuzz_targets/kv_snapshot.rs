//! KV state-machine snapshots: installing any bytes on a fresh store never panics; a refused
//! snapshot leaves the store as it was; an accepted one re-snapshots to bytes that install to the
//! same state on another fresh store.
#![no_main]

use libfuzzer_sys::fuzz_target;
use yizhi_kv::{KvConfig, MemBackend, MvccStore};

fn fresh() -> MvccStore<MemBackend> {
    MvccStore::open(MemBackend::new(), KvConfig::default()).expect("an empty store opens")
}

fuzz_target!(|data: &[u8]| {
    let mut store = fresh();
    let empty = store.snapshot().expect("memory backend");
    match store.install_snapshot(data) {
        Err(_) => assert_eq!(
            store.snapshot().expect("memory backend"),
            empty,
            "a refused install changed the store"
        ),
        Ok(()) => {
            let image = store.snapshot().expect("memory backend");
            let mut copy = fresh();
            copy.install_snapshot(&image)
                .expect("a store's own snapshot installs");
            assert_eq!(copy.snapshot().expect("memory backend"), image);
            assert_eq!(copy.state_hash(), store.state_hash());
        }
    }
});
