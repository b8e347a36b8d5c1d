//! The bundle check `renewer sync` runs before it installs a certificate (`renewer::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| renewer::fuzzing::bundle_bytes(data));
