//! Fuzz target: the invariants of `sendgate::fuzzing::chunked`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sendgate::fuzzing::chunked(data));
