//! The renewer's config loader: TOML plus `RENEWER__*` overrides (`renewer::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| renewer::fuzzing::config_bytes(data));
