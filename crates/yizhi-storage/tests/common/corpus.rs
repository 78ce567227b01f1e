//! The checked-in fuzz seed corpora, read by the corpus replay tests of yizhi-storage and of
//! yizhi-kv (which includes this file by path: the two crates share no test-only crate).

use std::path::PathBuf;

pub fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// Every file of a target's corpus, which must exist and hold at least `min_files`.
pub fn corpus(target: &str, min_files: usize) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(corpus_dir(target))
        .expect("the seed corpus is checked in")
        .map(|entry| {
            let path = entry.expect("readable corpus directory").path();
            let bytes = std::fs::read(&path).expect("readable corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= min_files,
        "{target}: only {} corpus files",
        files.len()
    );
    files
}
