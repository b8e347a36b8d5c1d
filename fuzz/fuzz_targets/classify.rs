//! The edge filter's decision entry point on a whole request and configuration
//! (`edge-filter/src/fuzzing.rs` has the input format and the properties checked).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| edge_filter::classify_bytes(data));
