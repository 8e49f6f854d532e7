//! Fuzz target: the invariants of `sendgate::fuzzing::request_head`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sendgate::fuzzing::request_head(data));
