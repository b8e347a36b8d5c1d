//! The benchmarks' second floor: the empty filter plus the one host call the edge filter
//! cannot do without on a sticky request, the read of the `Cookie` header.
//!
//! On a sticky path, a request whose affinity cookie alone decides its key meets only the
//! cookie route's instance of the edge filter, which reads that one header and checks the
//! cookie (a client must never choose its key, so the cookie is verified before Envoy may
//! hash it). `make bench` runs this module beside the empty filter and the edge filter on
//! that load, all three on one CPU at once: read floor ÷ empty is what the read costs (a
//! proxy-wasm host call, and Envoy's call back into the VM for the answer's memory), edge
//! filter ÷ read floor what the rest of the filter's work costs. Built like the empty filter
//! (`scripts/wasm.sh build`); it ignores its configuration.
//!
//! Only the wasm32 build has a body, as for `empty_filter.rs`.
#![cfg(target_arch = "wasm32")]

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(ReadRoot) });
}}

struct ReadRoot;

impl Context for ReadRoot {}

impl RootContext for ReadRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ReadFilter))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Reads the first `Cookie` header the way the edge filter's cookie route does, then lets
/// the request through. `black_box` keeps the optimiser from dropping the value unread.
struct ReadFilter;

impl Context for ReadFilter {}

impl HttpContext for ReadFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        std::hint::black_box(self.get_http_request_header_bytes("cookie"));
        Action::Continue
    }
}
