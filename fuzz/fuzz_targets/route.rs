//! Fuzz target: the invariants of `sendgate::fuzzing::route`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sendgate::fuzzing::route(data));
