//! Fuzz target: the invariants of `sendgate::fuzzing::response_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sendgate::fuzzing::response_head(data));
