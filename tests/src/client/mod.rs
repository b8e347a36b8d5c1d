//! Clients that talk to what the harness starts.
//!
//! Tests of a proxy must be able to send requests no well-behaved client library would send
//! (duplicate Host, smuggling attempts, bad paths), so the HTTP client here writes bytes exactly
//! as given and only parses the answer. WebSocket clients always connect TCP to 127.0.0.1 while
//! keeping the URL's host for SNI and `Host`, so tests can use real-looking DNS names without
//! touching /etc/hosts.
//!
//! * [`http1`]: raw and well-formed HTTP/1.1 exchanges, over TCP or TLS;
//! * [`tls`]: the client TLS config (trusting one CA only), the certificate a server presents,
//!   a keep-alive HTTPS connection;
//! * [`ws`]: WebSocket clients.

pub mod http1;
pub mod tls;
pub mod ws;

pub use http1::{
    http_get, http_get_at, http_request, https_request, raw_http, raw_http_at, raw_https,
    RawResponse,
};
pub use tls::{
    served_serial, served_serial_at, tls_client_config, tls_peer_certificates, HttpsConn,
};
pub use ws::{ws_connect, ws_echo, ws_try_connect, ws_try_connect_from, WsResponse, WsStream};
