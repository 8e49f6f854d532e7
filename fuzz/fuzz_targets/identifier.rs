//! Fuzz target: the invariants of `sendgate::fuzzing::identifier`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sendgate::fuzzing::identifier(data));
