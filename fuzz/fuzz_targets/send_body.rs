//! Fuzz target: the invariants of `sendgate::fuzzing::send_body`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sendgate::fuzzing::send_body(data));
