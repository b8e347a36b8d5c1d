//! The fuzz target of the filter's decisions: a whole request (method, path, headers, peer
//! address, protocol) and a whole configuration, decoded from bytes, through
//! [`classify`](crate::classify), with the properties every verdict must have checked.
//!
//! `fuzz/fuzz_targets/classify.rs` (cargo-fuzz, `make fuzz`) calls [`classify_bytes`]; a unit
//! test below replays the stored corpus (`fuzz/corpus/classify/`) on every `make test`. Built
//! only for tests and with the `fuzzing` feature: never part of the wasm module.
//!
//! Input format, chosen so that corpus files are readable and libFuzzer's byte mutations land
//! on meaningful pieces: lines separated by `\n`;
//! 1. the configuration: `#0`…`#3` picks a built-in one (the shipped listeners), anything
//!    else is parsed as the plugin JSON (a refused config ends the run: no request);
//! 2. the peer address (empty: none); 3. the protocol (`HTTP/1.1`, `HTTP/2`, empty: none);
//! 4. and on: headers as `name:value` (pseudo-headers as `:method:GET`); a line without `:`
//!    is a header with an empty value.

use crate::decision::{classify, store_reply, Action, Verdict};
use crate::websocket;
use crate::{FilterConfig, Property, Request};

const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";

/// The built-in configurations: the shipped plain and TLS listeners, store mode, and one
/// with everything on at once.
#[allow(
    clippy::panic,
    reason = "a built-in configuration that does not parse is a bug of this file, not a finding"
)]
fn builtin(n: u8) -> FilterConfig {
    let json = match n % 4 {
        0 => {
            r#"{"stat_prefix": "edge_http",
                 "acme": {"thumbprint": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"},
                 "redirect": {"https_port": 443, "allowed_hosts": ["app.test"],
                              "passthrough_prefixes": ["/.edge/healthz"]}}"#
        }
        1 => {
            r#"{"stat_prefix": "edge_https",
                 "websocket": {"path_prefixes": ["/ws"], "allowed_origins": ["https://app.test"]},
                 "affinity": {"sources": [{"query": "room"}, "cookie", "client_address"],
                              "cookie": {"secret": "fuzz-cookie-secret-0123456789abcdef"}}}"#
        }
        2 => {
            r#"{"acme": {"store": {"cluster": "s", "authority": "s",
                                    "path": "/o/acme-challenge%2F{token}?alt=media"}},
                 "redirect": {"https_port": 8443}}"#
        }
        _ => {
            r#"{"websocket": {"path_prefixes": ["/ws", "/socket.io/"],
                               "allowed_origins": ["https://*.app.test", "http://localhost:3000"],
                               "require_origin": true, "allow_plain_http": true},
                 "affinity": {"sources": [{"header": "x-room"}, "cookie"],
                              "cookie": {"secret": "fuzz-cookie-secret-0123456789abcdef",
                                         "same_site": "None", "issue": "always"}},
                 "acme": {"thumbprint": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"}}"#
        }
    };
    match FilterConfig::parse(json.as_bytes()) {
        Ok(config) => config,
        Err(e) => panic!("built-in fuzz config {n} is invalid: {e}"),
    }
}

/// Decode one input and check every property of the verdict; panics (a finding) when one
/// does not hold.
pub fn classify_bytes(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let config = match lines.next().unwrap_or_default() {
        [b'#', n, ..] => builtin(n.wrapping_sub(b'0')),
        json => match FilterConfig::parse(json) {
            Ok(config) => config,
            Err(e) => {
                assert!(!e.field.is_empty(), "a config error names no field: {e}");
                return;
            }
        },
    };
    let text = |line: Option<&[u8]>| {
        line.filter(|l| !l.is_empty())
            .map(|l| String::from_utf8_lossy(l).into_owned())
    };
    let client_address = text(lines.next());
    let http_version = text(lines.next());
    let headers = lines
        .map(|line| {
            // `:method:GET` is the pseudo-header `:method`; `name:value` a header.
            let (prefix, rest) = match line.strip_prefix(b":") {
                Some(rest) => (":", rest),
                None => ("", line),
            };
            let mut parts = rest.splitn(2, |&b| b == b':');
            let name = parts.next().unwrap_or_default();
            let value = parts.next().unwrap_or_default();
            (
                format!(
                    "{prefix}{}",
                    String::from_utf8_lossy(name).to_ascii_lowercase()
                ),
                value.to_vec(),
            )
        })
        .collect();
    let request = Request {
        headers,
        client_address: Property::known(client_address.as_deref()),
        http_version: Property::known(http_version.as_deref()),
    };
    let verdict = classify(&request, &config, &|| b"fuzz-nonce".to_vec());
    check(&request, &config, &verdict);
    if let Action::FetchChallenge { token, .. } = &verdict.action {
        assert!(crate::grammar::is_token(token.as_str().as_bytes()));
        // Whatever the store answers, the reply is well-formed and never another token's.
        for body in [format!("{}.x", token.as_str()), format!("{TOKEN}.x")] {
            let reply = store_reply(token, Some(200), body.as_bytes());
            check(&request, &config, &reply);
        }
    }
}

fn check(request: &Request, config: &FilterConfig, verdict: &Verdict) {
    match &verdict.action {
        Action::Reply(reply) => {
            assert!(
                (200..600).contains(&reply.status),
                "status {}",
                reply.status
            );
            for (name, value) in &reply.headers {
                assert!(
                    value.bytes().all(|b| (0x20..0x7f).contains(&b)),
                    "{name}: {value:?} is not printable ASCII"
                );
                if *name == "location" {
                    let rest = value.strip_prefix("https://").unwrap_or_default();
                    assert!(!rest.is_empty(), "Location {value:?}");
                    assert!(
                        rest.bytes()
                            .all(|b| b.is_ascii_alphanumeric()
                                || b"-._~!$&()*+,;=:@/?%[]".contains(&b)),
                        "Location {value:?} has a byte RFC 3986 does not allow"
                    );
                }
            }
        }
        Action::FetchChallenge { path, .. } => {
            assert!(config.acme.as_ref().is_some_and(|a| a.store.is_some()));
            assert!(
                path.bytes().all(|b| b.is_ascii_graphic()),
                "store path {path:?}"
            );
        }
        Action::Forward(forward) => {
            for (name, value) in &forward.set_headers {
                assert!(
                    value.bytes().all(|b| b.is_ascii_graphic()),
                    "{name}: {value:?}"
                );
            }
            if let Some(cookie) = &forward.set_cookie {
                assert!(
                    cookie.bytes().all(|b| (0x20..0x7f).contains(&b)),
                    "{cookie:?}"
                );
            }
            // Nothing asks for an upgrade past a websocket listener without being checked:
            // a forwarded upgrade is on a WebSocket path.
            if let Some(ws) = &config.websocket {
                if websocket::asks_for_upgrade(request) {
                    let path = request.path_only();
                    assert!(
                        ws.path_prefixes
                            .iter()
                            .any(|p| crate::request::path_has_prefix(path, p)),
                        "an upgrade on {:?} was forwarded",
                        String::from_utf8_lossy(path)
                    );
                }
            }
            // The internal header is always the filter's own, never the client's: a client's
            // copy is removed, and no removal is asked for when there is none.
            if let Some(affinity) = &config.affinity {
                let sent = request.has(&affinity.header);
                assert_eq!(
                    forward.remove_header.as_deref(),
                    sent.then_some(affinity.header.as_str())
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input in the stored corpus (and every crash input kept there) runs clean.
    #[test]
    fn the_stored_corpus_replays_clean() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/classify");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            classify_bytes(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no corpus in {}", dir.display());
    }

    #[test]
    fn the_format_reaches_every_section() {
        for input in [
            &b"#0\n1.2.3.4:5\nHTTP/1.1\n:method:GET\n:path:/.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA\n:authority:app.test"[..],
            b"#1\n[::1]:9\nHTTP/2\n:method:GET\n:path:/chat\nupgrade:websocket\nconnection:upgrade",
            b"#2\n\n\n:method:GET\n:path:/.well-known/acme-challenge/evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA",
            b"{\"redirect\": {}}\n\n\n:path:/a b<\">\n:authority:x.test",
            b"{\"bogus\": 1}",
            b"",
        ] {
            classify_bytes(input);
        }
    }
}
