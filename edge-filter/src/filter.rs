//! The proxy-wasm glue: read the request from Envoy, ask [`classify`], carry out the verdict.
//!
//! Nothing here decides anything; it only moves bytes between Envoy and the decision
//! modules, makes the store and metadata-server calls, and bumps counters.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as WasmAction, ContextType, LogLevel, MetricType};

use crate::challenge::{Token, MAX_KEY_AUTHORIZATION_LEN};
use crate::config::{FilterConfig, MetadataTokenConfig, StoreConfig};
use crate::decision::{self, classify, Action, Event, LocalReply, Verdict};
use crate::metadata_token::TokenCache;
use crate::request::{Property, Request};
use crate::websocket::Refusal;

/// Largest metadata-server answer we read: a token response is well under 4 KiB.
const MAX_TOKEN_RESPONSE: usize = 16 * 1024;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EdgeRoot::default()) });
}}

/// Counter ids, defined once per plugin configuration.
struct Metrics {
    challenge_answered: Option<u32>,
    challenge_refused: Option<u32>,
    challenge_store_error: Option<u32>,
    redirected: Option<u32>,
    redirect_refused: Option<u32>,
    upgrade_accepted: Option<u32>,
    upgrade_refused: Vec<(Refusal, Option<u32>)>,
    cookie_issued: Option<u32>,
    cookie_forged: Option<u32>,
}

impl Metrics {
    fn define(prefix: &str) -> Self {
        let counter = |name: &str| {
            let full = format!("{prefix}.{name}");
            match hostcalls::define_metric(MetricType::Counter, &full) {
                Ok(id) => Some(id),
                Err(status) => {
                    log::warn!("edge-filter: cannot define counter {full}: {status:?}");
                    None
                }
            }
        };
        Self {
            challenge_answered: counter("challenge.answered"),
            challenge_refused: counter("challenge.refused"),
            challenge_store_error: counter("challenge.store_error"),
            redirected: counter("redirect.sent"),
            redirect_refused: counter("redirect.refused"),
            upgrade_accepted: counter("upgrade.accepted"),
            upgrade_refused: Refusal::ALL
                .iter()
                .map(|r| (*r, counter(&format!("upgrade.refused.{}", r.name()))))
                .collect(),
            cookie_issued: counter("affinity.cookie_issued"),
            cookie_forged: counter("affinity.cookie_forged"),
        }
    }

    fn record(&self, event: Event) {
        let id = match event {
            Event::ChallengeAnswered => self.challenge_answered,
            Event::ChallengeRefused => self.challenge_refused,
            Event::ChallengeStoreError => self.challenge_store_error,
            Event::Redirected => self.redirected,
            Event::RedirectRefused => self.redirect_refused,
            Event::UpgradeAccepted => self.upgrade_accepted,
            Event::UpgradeRefused(reason) => self
                .upgrade_refused
                .iter()
                .find(|(r, _)| *r == reason)
                .and_then(|(_, id)| *id),
            Event::CookieIssued => self.cookie_issued,
            Event::CookieForged => self.cookie_forged,
        };
        if let Some(id) = id {
            // A failed counter update is not worth failing a request for.
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}

/// What one plugin configuration shares with its HTTP contexts (one per worker thread).
struct Shared {
    config: FilterConfig,
    metrics: Metrics,
    token: RefCell<TokenCache>,
    /// Mixed into new affinity keys so two requests never share a nonce.
    requests: Cell<u64>,
    /// Log "clear_route_cache unavailable" once, not per request.
    route_cache_warned: Cell<bool>,
}

/// Root context: parses the plugin configuration.
#[derive(Default)]
pub struct EdgeRoot {
    shared: Option<Rc<Shared>>,
}

impl Context for EdgeRoot {}

impl RootContext for EdgeRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match FilterConfig::parse(&bytes) {
            Ok(config) => {
                let metrics = Metrics::define(&config.stat_prefix);
                log::info!(
                    "edge-filter: configured (acme: {}, redirect: {}, websocket: {}, affinity: {})",
                    describe_acme(&config),
                    config.redirect.is_some(),
                    config.websocket.is_some(),
                    config.affinity.is_some()
                );
                self.shared = Some(Rc::new(Shared {
                    config,
                    metrics,
                    token: RefCell::new(TokenCache::default()),
                    requests: Cell::new(0),
                    route_cache_warned: Cell::new(false),
                }));
                true
            }
            Err(e) => {
                // Envoy refuses the plugin when this returns false; this line is what the
                // operator sees, so it names the field.
                log::error!("edge-filter: invalid plugin configuration: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(EdgeFilter {
            shared,
            context_id,
            pending: Pending::None,
            set_cookie: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// An Envoy property of the current request as text (a host call, and one back into the VM
/// for the answer's memory).
fn property(path: &[&str]) -> Option<String> {
    hostcalls::get_property(path.to_vec())
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn describe_acme(config: &FilterConfig) -> &'static str {
    match &config.acme {
        None => "off",
        Some(a) if a.thumbprint.is_some() => "stateless",
        Some(a) if a.store.as_ref().is_some_and(|s| s.metadata_token.is_some()) => {
            "store+metadata-token"
        }
        Some(_) => "store",
    }
}

/// An outstanding call to the metadata server or the store.
enum Pending {
    None,
    /// Waiting for an access token, then fetch `path` for `token`.
    MetadataToken {
        token: Token,
        path: String,
    },
    /// Waiting for the store's answer for `token`.
    Store {
        token: Token,
    },
}

/// Per-request context.
pub struct EdgeFilter {
    shared: Rc<Shared>,
    context_id: u32,
    pending: Pending,
    set_cookie: Option<String>,
}

impl EdgeFilter {
    fn read_request(&self) -> Request {
        Request {
            // One host call for all headers (the `_bytes` getter: the String one panics on
            // non-UTF-8 values). Reading only the needed ones would lose duplicates: Envoy
            // answers a single-header read with the first copy.
            headers: self.get_http_request_headers_bytes(),
            // Not the last X-Forwarded-For entry, though it would save this host call: for a
            // loopback peer Envoy appends its own address there, not the peer's.
            client_address: Property::lazy(|| property(&["source", "address"])),
            http_version: Property::lazy(|| property(&["request", "protocol"])),
        }
    }

    fn now_ms(&self) -> u64 {
        self.get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Per-request input for new affinity keys: Envoy's request id (a UUID from Envoy's
    /// random source), the time, this context and a counter.
    fn nonce(&self, request: &Request) -> Vec<u8> {
        let n = self.shared.requests.get().wrapping_add(1);
        self.shared.requests.set(n);
        let nanos = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mut nonce = request.first("x-request-id").unwrap_or_default().to_vec();
        nonce.extend_from_slice(&nanos.to_le_bytes());
        nonce.extend_from_slice(&self.context_id.to_le_bytes());
        nonce.extend_from_slice(&n.to_le_bytes());
        nonce
    }

    fn record(&self, events: &[Event]) {
        for event in events {
            self.shared.metrics.record(*event);
        }
    }

    fn reply(&self, reply: &LocalReply) {
        let headers: Vec<(&str, &str)> = reply
            .headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .collect();
        self.send_http_response(u32::from(reply.status), headers, Some(&reply.body));
    }

    /// Reply with a verdict computed after a callout, and count it.
    fn finish(&self, verdict: &Verdict) {
        self.record(&verdict.events);
        if let Action::Reply(reply) = &verdict.action {
            self.reply(reply);
        }
    }

    fn store_failed(&self, why: &str) {
        log::warn!("edge-filter: challenge store: {why}");
        self.finish(&Verdict {
            action: Action::Reply(LocalReply::challenge_error(502)),
            events: vec![Event::ChallengeStoreError],
        });
    }

    fn store_config(&self) -> Option<&StoreConfig> {
        self.shared.config.acme.as_ref()?.store.as_ref()
    }

    /// Start the store-mode lookup: with a cached token, or by fetching one first.
    fn fetch_challenge(&mut self, token: Token, path: String) -> WasmAction {
        let Some(store) = self.store_config().cloned() else {
            self.store_failed("store mode without store config");
            return WasmAction::Pause;
        };
        match &store.metadata_token {
            Some(meta) => {
                let cached = self.shared.token.borrow().authorization(self.now_ms());
                match cached {
                    Some(auth) => self.call_store(&store, token, &path, Some(&auth)),
                    None => self.call_metadata(meta, token, path),
                }
            }
            None => self.call_store(&store, token, &path, None),
        }
        WasmAction::Pause
    }

    fn call_metadata(&mut self, meta: &MetadataTokenConfig, token: Token, path: String) {
        let headers = vec![
            (":method", "GET"),
            (":path", meta.path.as_str()),
            (":authority", meta.authority.as_str()),
            // Required by the metadata server (SSRF protection on its side).
            ("metadata-flavor", "Google"),
        ];
        let timeout = Duration::from_millis(meta.timeout_ms);
        match self.dispatch_http_call(&meta.cluster, headers, None, vec![], timeout) {
            Ok(_) => self.pending = Pending::MetadataToken { token, path },
            Err(status) => self.store_failed(&format!(
                "cannot call metadata cluster {:?}: {status:?}",
                meta.cluster
            )),
        }
    }

    fn call_store(&mut self, store: &StoreConfig, token: Token, path: &str, auth: Option<&str>) {
        let mut headers = vec![
            (":method", "GET"),
            (":path", path),
            (":authority", store.authority.as_str()),
        ];
        if let Some(auth) = auth {
            headers.push(("authorization", auth));
        }
        let timeout = Duration::from_millis(store.timeout_ms);
        match self.dispatch_http_call(&store.cluster, headers, None, vec![], timeout) {
            Ok(_) => self.pending = Pending::Store { token },
            Err(status) => self.store_failed(&format!(
                "cannot call store cluster {:?}: {status:?}",
                store.cluster
            )),
        }
    }

    fn callout_status(&self) -> Option<u16> {
        self.get_http_call_response_header_bytes(":status")
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok())
    }

    fn callout_body(&self, size: usize, limit: usize) -> Option<Vec<u8>> {
        if size > limit {
            return None;
        }
        Some(
            self.get_http_call_response_body(0, size)
                .unwrap_or_default(),
        )
    }

    fn clear_route_cache(&self) {
        // Envoy 1.28+: re-run route selection now that the affinity header changed, so a
        // route match on it (not only the hash policy, which is read later) sees it. Asked
        // for by `affinity.clear_route_cache`.
        if hostcalls::call_foreign_function("clear_route_cache", None).is_err()
            && !self.shared.route_cache_warned.replace(true)
        {
            log::warn!("edge-filter: Envoy has no clear_route_cache; routes keyed on the affinity header may be stale");
        }
    }
}

impl Context for EdgeFilter {
    fn on_http_call_response(
        &mut self,
        _id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let status = self.callout_status();
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::None => {}
            Pending::MetadataToken { token, path } => {
                let body = self
                    .callout_body(body_size, MAX_TOKEN_RESPONSE)
                    .unwrap_or_default();
                let now = self.now_ms();
                let accepted = self.shared.token.borrow_mut().accept(status, &body, now);
                match (accepted, self.store_config().cloned()) {
                    (Ok(auth), Some(store)) => self.call_store(&store, token, &path, Some(&auth)),
                    (Err(e), _) => self.store_failed(&format!("metadata token: {e}")),
                    (Ok(_), None) => self.store_failed("store mode without store config"),
                }
            }
            Pending::Store { token } => {
                // Only a 200 body matters, and one longer than a key authorization is not
                // one: don't even read it.
                let body = if status == Some(200) {
                    self.callout_body(body_size, MAX_KEY_AUTHORIZATION_LEN + 2)
                } else {
                    Some(Vec::new())
                };
                let verdict = match body {
                    Some(body) => decision::store_reply(&token, status, &body),
                    None => decision::store_reply(&token, None, b""),
                };
                if verdict.events.contains(&Event::ChallengeStoreError) {
                    log::warn!(
                        "edge-filter: challenge store answered {status:?} for token {}",
                        token.as_str()
                    );
                }
                self.finish(&verdict);
            }
        }
    }
}

impl HttpContext for EdgeFilter {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> WasmAction {
        // The cookie route's instance: one header read instead of the whole map when the
        // cookie alone decides.
        if decision::cookie_alone_decides(&self.shared.config, || {
            self.get_http_request_header_bytes("cookie")
        }) {
            return WasmAction::Continue;
        }
        let request = self.read_request();
        let verdict = classify(&request, &self.shared.config, &|| self.nonce(&request));
        self.record(&verdict.events);
        match verdict.action {
            Action::Reply(reply) => {
                self.reply(&reply);
                WasmAction::Pause
            }
            Action::FetchChallenge { token, path } => self.fetch_challenge(token, path),
            Action::Forward(forward) => {
                // Setting a header replaces every copy of it, so a separate removal is only
                // needed when no value is set (one host call fewer per request).
                if let Some(name) = &forward.remove_header {
                    if !forward.set_headers.iter().any(|(n, _)| n == name) {
                        self.set_http_request_header(name, None);
                    }
                }
                for (name, value) in &forward.set_headers {
                    self.set_http_request_header(name, Some(value));
                }
                let changed = forward.remove_header.is_some() || !forward.set_headers.is_empty();
                let rematch = self
                    .shared
                    .config
                    .affinity
                    .as_ref()
                    .is_some_and(|a| a.clear_route_cache);
                if changed && rematch {
                    self.clear_route_cache();
                }
                self.set_cookie = forward.set_cookie;
                WasmAction::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _headers: usize, _end_of_stream: bool) -> WasmAction {
        if let Some(cookie) = self.set_cookie.take() {
            self.add_http_response_header("set-cookie", &cookie);
        }
        WasmAction::Continue
    }
}
