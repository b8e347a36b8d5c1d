//! `classify(request, config) -> Verdict`: everything the filter decides about a request,
//! with no I/O. The proxy-wasm glue reads headers, calls this, and carries out the verdict.

use crate::affinity::{self, Source};
use crate::challenge::{self, ChallengeAction, Token};
use crate::config::FilterConfig;
use crate::redirect;
use crate::request::{path_has_prefix, Request};
use crate::websocket::{self, Handshake, Refusal};

/// A response the filter sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Response headers (names in lower case).
    pub headers: Vec<(&'static str, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl LocalReply {
    /// A short plain-text reply.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![
                ("content-type", "text/plain; charset=utf-8".to_owned()),
                ("cache-control", "no-store".to_owned()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    /// The answer to an HTTP-01 challenge (RFC 8555 §8.3: `application/octet-stream` is
    /// also allowed; CAs accept `text/plain`, which is friendlier to humans with curl).
    pub fn key_authorization(key_authorization: &str) -> Self {
        Self {
            status: 200,
            headers: vec![
                ("content-type", "text/plain".to_owned()),
                ("cache-control", "no-store".to_owned()),
            ],
            body: key_authorization.as_bytes().to_vec(),
        }
    }

    /// A challenge that cannot be answered.
    pub fn challenge_error(status: u16) -> Self {
        let text = match status {
            404 => "no such challenge\n",
            504 => "challenge store timed out\n",
            _ => "challenge store failed\n",
        };
        Self::text(status, text)
    }
}

/// Changes to a request that goes on to Envoy's router.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    /// Remove every client-sent copy of this header (the internal affinity header); `None`
    /// when the client sent none.
    pub remove_header: Option<String>,
    /// Then set these headers (the affinity key, a substitute WebSocket key). The glue has
    /// Envoy match the route again afterwards only if `affinity.clear_route_cache` asks for it.
    pub set_headers: Vec<(String, String)>,
    /// Add this `Set-Cookie` to the response.
    pub set_cookie: Option<String>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer at once; nothing goes upstream.
    Reply(LocalReply),
    /// Store mode: fetch the key authorization, then hand the store's answer to
    /// [`store_reply`].
    FetchChallenge {
        /// The validated token.
        token: Token,
        /// Path on the store.
        path: String,
    },
    /// Pass the request on, with these changes.
    Forward(Forward),
}

/// Something worth a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A challenge answered with a key authorization.
    ChallengeAnswered,
    /// A challenge refused (bad token, or the store does not have it).
    ChallengeRefused,
    /// The store failed or timed out.
    ChallengeStoreError,
    /// A 308 to HTTPS.
    Redirected,
    /// A request on the plain listener that could not be redirected.
    RedirectRefused,
    /// A WebSocket handshake passed.
    UpgradeAccepted,
    /// A WebSocket handshake refused, and why.
    UpgradeRefused(Refusal),
    /// A new affinity cookie was issued.
    CookieIssued,
    /// An affinity cookie did not verify.
    CookieForged,
}

/// A decision and the events it produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub action: Action,
    /// What to count.
    pub events: Vec<Event>,
}

impl Verdict {
    fn new(action: Action, events: Vec<Event>) -> Self {
        Self { action, events }
    }
}

/// Decide what happens to a request on a listener with this configuration. `nonce` supplies
/// per-request unique bytes and is called only when a new key must be minted.
///
/// Order matters: a challenge is answered before the redirect (CAs validate over plain
/// HTTP, RFC 8555 §8.3), and when affinity is on, a request that is forwarded never keeps a
/// client's copy of the internal affinity header, whatever else happens to it.
pub fn classify(request: &Request, config: &FilterConfig, nonce: &dyn Fn() -> Vec<u8>) -> Verdict {
    let path = request.path();
    if let Some(acme) = &config.acme {
        if let Some(raw_token) = challenge::token_in_path(path) {
            return match challenge::decide(raw_token, acme) {
                ChallengeAction::Answer(ka) => Verdict::new(
                    Action::Reply(LocalReply::key_authorization(&ka)),
                    vec![Event::ChallengeAnswered],
                ),
                ChallengeAction::Fetch { token, path } => {
                    Verdict::new(Action::FetchChallenge { token, path }, vec![])
                }
                ChallengeAction::NotFound => Verdict::new(
                    Action::Reply(LocalReply::challenge_error(404)),
                    vec![Event::ChallengeRefused],
                ),
            };
        }
    }

    if let Some(redirect) = &config.redirect {
        let passthrough = redirect
            .passthrough_prefixes
            .iter()
            .any(|p| path_has_prefix(request.path_only(), p));
        if !passthrough {
            return match redirect::location(request.first(":authority"), path, redirect) {
                Ok(location) => Verdict::new(
                    Action::Reply(LocalReply {
                        status: 308,
                        headers: vec![
                            ("location", location),
                            ("content-type", "text/plain; charset=utf-8".to_owned()),
                        ],
                        body: b"use https\n".to_vec(),
                    }),
                    vec![Event::Redirected],
                ),
                Err(e) => Verdict::new(
                    Action::Reply(LocalReply::text(e.status(), "bad request\n")),
                    vec![Event::RedirectRefused],
                ),
            };
        }
    }

    let mut events = Vec::new();
    let mut forward = Forward::default();
    if let Some(ws) = &config.websocket {
        let on_ws_path = ws
            .path_prefixes
            .iter()
            .any(|p| path_has_prefix(request.path_only(), p));
        if on_ws_path {
            match websocket::check(request, ws) {
                Ok(Handshake::Upgrade) => events.push(Event::UpgradeAccepted),
                Ok(Handshake::ExtendedConnect) => {
                    events.push(Event::UpgradeAccepted);
                    // Envoy forwards an RFC 8441 CONNECT to HTTP/1.1 backends as an Upgrade
                    // but adds no Sec-WebSocket-Key (envoyproxy/envoy#8547), which RFC 6455
                    // backends must refuse. The client never sees the backend's Accept over
                    // HTTP/2, so any well-formed key does.
                    if request.first("sec-websocket-key").is_none() {
                        forward.set_headers.push((
                            "sec-websocket-key".to_owned(),
                            websocket::substitute_key(&nonce()),
                        ));
                    }
                }
                Ok(Handshake::PlainHttp) => {}
                Err(refusal) => return refuse_upgrade(refusal),
            }
        } else if websocket::asks_for_upgrade(request) {
            // Only the WebSocket paths take upgrades: one anywhere else would reach the app
            // with no handshake or Origin check and no affinity key.
            return refuse_upgrade(Refusal::Path);
        }
    }

    if let Some(config) = &config.affinity {
        let decided = affinity::decide(request, config, nonce);
        // The client's copies of the internal header go, but only a request that has one
        // costs the host call (setting the header below replaces them anyway).
        if request.has(&config.header) {
            forward.remove_header = Some(config.header.clone());
        }
        // The route hashes the request's one valid cookie itself when no header is there:
        // with no client copy to remove, the header write (and the route match Envoy redoes
        // after one) is saved.
        let route_has_it = decided.hashed_by_route && forward.remove_header.is_none();
        if let Some(key) = decided.key.filter(|_| !route_has_it) {
            forward.set_headers.push((config.header.clone(), key));
        }
        if decided.forged_cookie {
            events.push(Event::CookieForged);
        }
        if decided.source == Some(Source::NewCookie) {
            events.push(Event::CookieIssued);
        }
        forward.set_cookie = decided.set_cookie;
    }
    Verdict::new(Action::Forward(forward), events)
}

/// The cookie route's shortcut (`affinity.cookie_route`): whether a request needs nothing from
/// the filter because its first `Cookie` header holds the only copy of a valid cookie, which
/// the route hashes itself ([`affinity::lone_valid_cookie`]). `first_cookie` is that header
/// (Envoy answers a single-header read with the first copy). The glue then skips [`classify`]
/// and the whole header map: one host call instead of two, and none of the decisions.
///
/// This is only the same answer as [`classify`]'s because of what the cookie route admits:
/// no `Upgrade` (so no handshake to check), no client copy of the internal header (none to
/// remove) and no key source listed before the cookie (none to win over it), which Envoy's
/// route match guarantees (`render.sh`'s `cookie_route`), as it guarantees the sticky bypass
/// route's requests need no filter at all. Each such check here would be another host call,
/// ~1 % of a request measured in place.
pub fn cookie_alone_decides(
    config: &FilterConfig,
    first_cookie: impl FnOnce() -> Option<Vec<u8>>,
) -> bool {
    let Some(affinity) = config.affinity.as_ref().filter(|a| a.cookie_route) else {
        return false;
    };
    let Some(cookie) = &affinity.cookie else {
        return false;
    };
    first_cookie().is_some_and(|value| affinity::lone_valid_cookie(&value, cookie))
}

fn refuse_upgrade(refusal: Refusal) -> Verdict {
    let mut reply = LocalReply::text(refusal.status(), refusal_text(refusal));
    if refusal == Refusal::Version {
        let (name, value) = websocket::VERSION_HEADER;
        reply.headers.push((name, value.to_owned()));
    }
    Verdict::new(Action::Reply(reply), vec![Event::UpgradeRefused(refusal)])
}

fn refusal_text(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::Method => "websocket handshake must be GET\n",
        Refusal::Upgrade => "websocket handshake needs Upgrade: websocket\n",
        Refusal::Connection => {
            "websocket handshake needs Connection: Upgrade (with Upgrade: websocket)\n"
        }
        Refusal::Key => "websocket handshake needs a valid Sec-WebSocket-Key\n",
        Refusal::Version => "websocket version 13 required\n",
        Refusal::Origin => "origin not allowed\n",
        Refusal::Path => "no websocket endpoint at this path\n",
    }
}

/// The reply for a store-mode challenge, once the store answered (or did not).
pub fn store_reply(token: &Token, status: Option<u16>, body: &[u8]) -> Verdict {
    use challenge::StoreOutcome;
    match challenge::judge_store_response(token, status, body) {
        StoreOutcome::Found(ka) => Verdict::new(
            Action::Reply(LocalReply::key_authorization(&ka)),
            vec![Event::ChallengeAnswered],
        ),
        StoreOutcome::NotFound => Verdict::new(
            Action::Reply(LocalReply::challenge_error(404)),
            vec![Event::ChallengeRefused],
        ),
        outcome => Verdict::new(
            Action::Reply(LocalReply::challenge_error(outcome.status())),
            vec![Event::ChallengeStoreError],
        ),
    }
}

#[cfg(test)]
mod tests;
