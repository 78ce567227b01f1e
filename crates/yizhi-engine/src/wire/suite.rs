//! The property suite every engine's message codec must pass (cargo feature `testkit`): seeded
//! round trips of every variant with the predicted length, truncation, trailing bytes, version and
//! tag damage, random input, damaged encodings, and replay of the fuzz seed corpus (CI has no
//! libFuzzer).
//!
//! An engine describes its message type in a [`CodecSpec`] and runs the suite with
//! [`codec_suite!`](crate::codec_suite), which writes one `#[test]` per property. What only one
//! engine has (its entry-order rules, its pinned bytes) stays in that engine's own codec tests.

use std::fmt::Debug;
use std::path::Path;

use super::{WireError, WireMessage};
use crate::rng::SeededRng;

/// What the suite must know about an engine's message type. Every field is a constant or a plain
/// function, so an engine's test declares its spec as a `const`.
#[derive(Debug)]
pub struct CodecSpec<M> {
    /// What the decoder calls a whole message in its errors (`"raft message"`).
    pub what: &'static str,
    /// The engine's wire version byte.
    pub version: u8,
    /// How many variants the message has; their tags are `1..=variants`.
    pub variants: usize,
    /// A message's position among `variants`. Make it an exhaustive match: a new variant then
    /// stops it compiling, and `every_variant_is_generated` fails until `random` draws it.
    pub variant_index: fn(&M) -> usize,
    /// A valid message of any variant, with field values where varint lengths change.
    pub random: fn(&mut SeededRng) -> M,
    /// How many log entries a message carries (0 for variants without any), so the suite can
    /// require that runs of several entries are drawn too.
    pub entries_carried: fn(&M) -> usize,
    /// The fuzz target's seed corpus directory (`fuzz/corpus/<target>`).
    pub corpus_dir: &'static str,
}

/// Input lengths `random_bytes_never_panic` draws below.
const MAX_RANDOM_INPUT_BYTES: u64 = 48;
/// Encodings of each variant `write_seed_corpus` writes.
const CORPUS_FILES_PER_VARIANT: usize = 2;

impl<M: WireMessage + Clone + Debug + PartialEq> CodecSpec<M> {
    fn seeded_messages(&self, seed: u64, count: usize) -> Vec<M> {
        let mut rng = SeededRng::new(seed);
        (0..count).map(|_| (self.random)(&mut rng)).collect()
    }

    /// Decoding arbitrary bytes must not panic; whatever decodes is canonical (re-encodes to the
    /// same bytes, so it also decodes to the same value again).
    pub fn check_arbitrary_input(&self, bytes: &[u8]) -> Option<M> {
        super::check_canonical(bytes)
    }

    pub fn every_variant_round_trips_with_the_predicted_length(&self) {
        for message in self.seeded_messages(1, 20_000) {
            let bytes = message.to_bytes();
            assert_eq!(bytes.len(), message.encoded_len(), "{message:?}");
            assert_eq!(M::decode(&bytes), Ok(message.clone()));
            // `encode` appends; it never touches what is already in the buffer.
            let mut out = vec![0xAA];
            message.encode(&mut out);
            assert_eq!(out[1..], bytes[..]);
        }
    }

    pub fn every_variant_is_generated(&self) {
        let mut seen = vec![false; self.variants];
        let mut several_entries = false;
        for message in self.seeded_messages(2, 2_000) {
            seen[(self.variant_index)(&message)] = true;
            several_entries |= (self.entries_carried)(&message) > 1;
        }
        assert_eq!(seen, vec![true; self.variants]);
        assert!(several_entries, "no message with several entries was drawn");
    }

    pub fn every_strict_prefix_is_an_error(&self) {
        for message in self.seeded_messages(3, 2_000) {
            let bytes = message.to_bytes();
            for cut in 0..bytes.len() {
                assert!(
                    M::decode(&bytes[..cut]).is_err(),
                    "prefix {cut}/{} of {message:?}",
                    bytes.len()
                );
            }
        }
    }

    pub fn trailing_bytes_are_an_error(&self) {
        for message in self.seeded_messages(4, 1_000) {
            let mut bytes = message.to_bytes();
            let end = bytes.len();
            bytes.push(0);
            assert_eq!(
                M::decode(&bytes),
                Err(WireError::TrailingBytes {
                    what: self.what,
                    offset: end,
                    count: 1
                })
            );
        }
    }

    pub fn any_other_version_is_refused(&self) {
        for message in self.seeded_messages(5, 50) {
            let mut bytes = message.to_bytes();
            for version in (0..=u8::MAX).filter(|v| *v != self.version) {
                bytes[0] = version;
                assert!(matches!(
                    M::decode(&bytes),
                    Err(WireError::UnsupportedVersion { offset: 0, .. })
                ));
            }
        }
    }

    pub fn unknown_tags_are_refused_and_known_ones_never_give_back_the_message(&self) {
        for message in self.seeded_messages(6, 200) {
            let original = message.to_bytes();
            for tag in (0..=u8::MAX).filter(|t| *t != original[1]) {
                let mut bytes = original.clone();
                bytes[1] = tag;
                let decoded = M::decode(&bytes);
                if tag == 0 || tag as usize > self.variants {
                    assert_eq!(
                        decoded,
                        Err(WireError::UnknownTag {
                            what: self.what,
                            offset: 1,
                            tag
                        })
                    );
                } else if let Ok(other) = decoded {
                    assert_ne!(other, message);
                    self.check_arbitrary_input(&bytes);
                }
            }
        }
    }

    pub fn random_bytes_never_panic(&self) {
        let mut rng = SeededRng::new(7);
        let mut decoded = 0;
        for _ in 0..100_000 {
            let len = rng.below(MAX_RANDOM_INPUT_BYTES) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            // Mostly valid version and tag bytes, so the fields behind them get exercised too.
            if len > 0 && rng.chance(3, 4) {
                bytes[0] = self.version;
            }
            if len > 1 && rng.chance(3, 4) {
                bytes[1] = rng.range_inclusive(1, self.variants as u64) as u8;
            }
            decoded += usize::from(self.check_arbitrary_input(&bytes).is_some());
        }
        assert!(
            decoded > 100,
            "only {decoded} random inputs decoded: the test explores too little"
        );
    }

    pub fn damaged_encodings_never_panic(&self) {
        let mut rng = SeededRng::new(8);
        for message in self.seeded_messages(9, 5_000) {
            let mut bytes = message.to_bytes();
            for _ in 0..rng.range_inclusive(1, 3) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] ^= 1 << rng.below(8);
            }
            self.check_arbitrary_input(&bytes);
        }
    }

    pub fn fuzz_corpus_replays_without_panics(&self) {
        let mut files = 0;
        let mut valid = 0;
        for entry in std::fs::read_dir(self.corpus_dir).expect("the seed corpus is checked in") {
            let path = entry.expect("readable corpus directory").path();
            let bytes = std::fs::read(&path).expect("readable corpus file");
            files += 1;
            valid += usize::from(self.check_arbitrary_input(&bytes).is_some());
        }
        assert!(files >= self.variants, "only {files} corpus files");
        assert!(valid >= self.variants, "only {valid} corpus files decode");
    }

    /// Regenerates the seed corpus: valid encodings of every variant and one truncated encoding of
    /// each. Run by hand after a format change.
    pub fn write_seed_corpus(&self) {
        let dir = Path::new(self.corpus_dir);
        std::fs::create_dir_all(dir).unwrap();
        let mut rng = SeededRng::new(10);
        let mut written = vec![0usize; self.variants];
        while written.iter().any(|n| *n < CORPUS_FILES_PER_VARIANT) {
            let message = (self.random)(&mut rng);
            let kind = (self.variant_index)(&message);
            if written[kind] >= CORPUS_FILES_PER_VARIANT {
                continue;
            }
            let bytes = message.to_bytes();
            std::fs::write(dir.join(format!("valid-{kind:02}-{}", written[kind])), &bytes).unwrap();
            if written[kind] == 0 && bytes.len() > 2 {
                let cut = rng.range_inclusive(1, bytes.len() as u64 - 1) as usize;
                std::fs::write(dir.join(format!("truncated-{kind:02}")), &bytes[..cut]).unwrap();
            }
            written[kind] += 1;
        }
    }
}

/// Writes one `#[test]` per property of [`CodecSpec`] for the spec `$spec` (a `const`), with the
/// properties' names; `write_seed_corpus` is ignored (it writes files), so run it by hand:
/// `cargo test -p <engine> --test codec -- --ignored write_seed_corpus`.
#[macro_export]
macro_rules! codec_suite {
    ($spec:expr) => {
        $crate::codec_suite!(@tests $spec;
            every_variant_round_trips_with_the_predicted_length,
            every_variant_is_generated,
            every_strict_prefix_is_an_error,
            trailing_bytes_are_an_error,
            any_other_version_is_refused,
            unknown_tags_are_refused_and_known_ones_never_give_back_the_message,
            random_bytes_never_panic,
            damaged_encodings_never_panic,
            fuzz_corpus_replays_without_panics,
        );

        #[test]
        #[ignore = "writes files into fuzz/corpus; run by hand after a format change"]
        fn write_seed_corpus() {
            $spec.write_seed_corpus();
        }
    };
    (@tests $spec:expr; $($property:ident),* $(,)?) => {
        $(
            #[test]
            fn $property() {
                $spec.$property();
            }
        )*
    };
}
