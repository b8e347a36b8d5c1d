//! Test harness for acme-edge.
//!
//! Integration tests need real servers (Envoy with the wasm filter, WebSocket apps, HTTP stores,
//! a fake GCS, a fake metadata server, Pebble as the ACME CA). Starting them ad hoc in every
//! test leads to port clashes, leaked processes and flaky waits, so this crate is the one place
//! that owns their life cycle:
//!
//! * everything listens on loopback only: 127.0.0.1, and a local cluster's nodes on their own
//!   127.0.1.x (its clients connect from 127.0.2.x);
//! * servers in this process (backends, stores, fakes) bind port 0 and the kernel picks one;
//!   a port that must be known before it is bound (Envoy's, Pebble's, fake-gcs-server's, the
//!   renewer's listeners, a local cluster's `APP_PORT`, the HTTP-01 port Pebble validates on)
//!   comes from [`free_port`], below the kernel's ephemeral range, so no port the kernel picks
//!   can take it before its owner binds it;
//! * every spawned process or task is stopped in `Drop`, so a panicking test leaves nothing
//!   behind (except if the whole test binary is SIGKILLed: child processes then outlive it);
//! * waits are bounded by generous timeouts, and nothing here asserts on timing.
//!
//! Modules are named by domain; the most used items are re-exported at the root.

pub mod acme_responder;
pub mod acme_stack;
pub mod ari;
pub mod backend;
pub mod bench;
pub mod client;
pub mod cloud_dns;
pub mod cluster;
pub mod compute;
pub mod envoy;
pub mod fault_proxy;
pub mod front;
pub mod gcs;
pub mod google_apis;
mod headers;
pub mod http2;
pub mod metadata;
pub mod node;
pub mod pebble;
pub mod percent;
pub mod ports;
pub mod renewer_process;
pub mod secret_manager;
pub mod server;
pub mod store;
pub mod tls;
pub mod workspace;

pub use acme_responder::{key_auth_lookup, Http01Request, Http01Responder, KeyAuthLookup};
pub use acme_stack::{
    kill_renewer_when, renewer_bin, run_renewer, store_lookup, AcmeStack, RenewerOutput,
};
pub use ari::AriResponder;
pub use backend::EchoBackend;
pub use client::{
    http_get, http_get_at, http_request, https_request, raw_http, raw_https, served_serial,
    served_serial_at, tls_client_config, tls_peer_certificates, ws_connect, ws_echo,
    ws_try_connect, ws_try_connect_from, HttpsConn, RawResponse, WsResponse, WsStream,
};
pub use cloud_dns::FakeCloudDns;
pub use envoy::{
    envoy_bin, envoy_expect_refusal, envoy_validate, render_app_node, squash_whitespace, wasm_path,
    ClusterHost, Envoy,
};
pub use fault_proxy::FaultProxy;
pub use gcs::{fake_gcs_bin, FakeGcs};
pub use google_apis::{ApiRequest, GoogleApis, Renewals};
pub use http2::{h2_extended_connect, h2_extended_connect_tls, H2Connect, H2Io};
pub use metadata::MetadataServer;
pub use pebble::{Pebble, PebbleBuilder};
pub use percent::percent_encode;
pub use ports::{free_port, wait_for, IO_TIMEOUT, STARTUP_TIMEOUT};
pub use renewer_process::{trigger, RenewerProcess};
pub use secret_manager::FakeSecretManager;
pub use server::RecordedRequest;
pub use store::HttpStore;
pub use tls::TlsFiles;
pub use workspace::repo_root;

/// Re-exported so tests can build and match WebSocket messages without naming the crate.
pub use tokio_tungstenite::tungstenite::Message;
