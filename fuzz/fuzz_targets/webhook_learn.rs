//! Fuzz target: the invariants of `sendgate::fuzzing::webhook_learn`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sendgate::fuzzing::webhook_learn(data));
