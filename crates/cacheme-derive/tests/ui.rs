//! Compile errors of the derives: each `tests/ui/*.rs` must fail to compile
//! with the message in the `.stderr` next to it.
//! Regenerate them with `TRYBUILD=overwrite cargo test -p cacheme-derive --test ui`.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
