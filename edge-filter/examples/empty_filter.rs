//! The benchmarks' floor: a proxy-wasm HTTP filter that does nothing.
//!
//! `make bench` loads it into the same Envoy, with the same runtime (V8), the same SDK, the same
//! build profile and the same trimmed exports as the edge filter (`scripts/wasm.sh build`), in
//! the edge filter's place in the shipped config. What Envoy pays for it is the price of any
//! Rust proxy-wasm filter (entering the VM for a context and its header callbacks); what the
//! edge filter costs beyond it is the edge filter's own work. It ignores its configuration.
//!
//! Only the wasm32 build has a body: on the host this example compiles to nothing, so
//! `cargo test --workspace` needs no proxy-wasm host functions.
#![cfg(target_arch = "wasm32")]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot) });
}}

struct EmptyRoot;

impl Context for EmptyRoot {}

impl RootContext for EmptyRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EmptyFilter))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The SDK's defaults: both header callbacks return `Continue`.
struct EmptyFilter;

impl Context for EmptyFilter {}

impl HttpContext for EmptyFilter {}
