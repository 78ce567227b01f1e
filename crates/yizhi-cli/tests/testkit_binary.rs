//! The process tests start members from the `yizhi` binary cargo built for them: the testkit
//! finds it beside the test executable, and this checks that it is the very file cargo names.

#[test]
fn the_testkit_starts_the_binary_cargo_built_for_these_tests() {
    let expected = match std::env::var_os("YIZHI_BIN") {
        Some(path) => std::path::PathBuf::from(path),
        None => std::path::PathBuf::from(env!("CARGO_BIN_EXE_yizhi")),
    };
    assert_eq!(yizhi_testkit::yizhi_binary(), expected);
}
