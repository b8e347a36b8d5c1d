//! WebSocket opening handshakes: RFC 6455 §4.2.1 (HTTP/1.1 Upgrade) and RFC 8441 §4/§5
//! (HTTP/2 extended CONNECT), plus an `Origin` allow-list against cross-site WebSocket
//! hijacking (RFC 6455 §10.2).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::config::WebSocketConfig;
use crate::request::Request;

/// Why a handshake is refused. Each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Not GET (HTTP/1.1) or not CONNECT (HTTP/2).
    Method,
    /// `Upgrade` missing, repeated, or not `websocket` (or `:protocol` not `websocket`).
    Upgrade,
    /// `Connection` does not contain the `upgrade` token. Envoy drops `Upgrade` (and
    /// `Connection`) from a request it does not upgrade, so a handshake that reaches the filter
    /// with neither, but with its `Sec-WebSocket-*` headers, is counted here too.
    Connection,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes.
    Key,
    /// `Sec-WebSocket-Version` missing or not 13: 426 with the version we speak.
    Version,
    /// `Origin` not allowed: 403.
    Origin,
    /// An upgrade (or CONNECT) on a path that is not a WebSocket path: 404. Only the
    /// configured paths take WebSockets, so nothing unchecked reaches the application, however
    /// the path is spelled (`/WS`, `/ws;x`, `/ws%2f`, `/chat`).
    Path,
}

impl Refusal {
    /// Every reason, for defining counters.
    pub const ALL: [Refusal; 7] = [
        Self::Method,
        Self::Upgrade,
        Self::Connection,
        Self::Key,
        Self::Version,
        Self::Origin,
        Self::Path,
    ];

    /// The status code the client gets.
    pub fn status(self) -> u16 {
        match self {
            // RFC 6455 §4.2.2: "426 Upgrade Required" with the versions the server speaks.
            Self::Version => 426,
            Self::Origin => 403,
            Self::Path => 404,
            Self::Method | Self::Upgrade | Self::Connection | Self::Key => 400,
        }
    }

    /// Short name for logs and counter names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Method => "method",
            Self::Upgrade => "upgrade",
            Self::Connection => "connection",
            Self::Key => "key",
            Self::Version => "version",
            Self::Origin => "origin",
            Self::Path => "path",
        }
    }
}

/// How a request on a WebSocket path was judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// A valid HTTP/1.1 Upgrade handshake.
    Upgrade,
    /// A valid HTTP/2 (or HTTP/3) extended CONNECT.
    ExtendedConnect,
    /// Not an upgrade at all, and the config lets such requests through.
    PlainHttp,
}

/// Does the request ask to switch protocols: an HTTP/1.1 `Upgrade` header, an RFC 8441
/// `:protocol` (which Envoy turns into `Upgrade` before filters run), or a CONNECT?
pub fn asks_for_upgrade(request: &Request) -> bool {
    request.method() == b"CONNECT"
        || request.first("upgrade").is_some()
        || request.first(":protocol").is_some()
}

/// Judge a request on a configured WebSocket path.
pub fn check(request: &Request, config: &WebSocketConfig) -> Result<Handshake, Refusal> {
    let method = request.method();
    let protocol = request.single(":protocol").map_err(|_| Refusal::Upgrade)?;
    let kind = if method == b"CONNECT" || protocol.is_some() {
        check_extended_connect(method, protocol)?
    } else if request.first("upgrade").is_some()
        && request.first("sec-websocket-key").is_none()
        && request.is_multiplexed()
    {
        // Envoy's HTTP/2 codec turns an RFC 8441 CONNECT into the HTTP/1.1 shape (GET +
        // Upgrade) before filters run; such a request has no key, because RFC 8441 §5 drops it.
        check_upgrade_headers(request)?;
        Handshake::ExtendedConnect
    } else {
        if config.allow_plain_http && request.first("upgrade").is_none() {
            return Ok(Handshake::PlainHttp);
        }
        if method != b"GET" {
            return Err(Refusal::Method);
        }
        check_upgrade_headers(request)?;
        check_key(request)?;
        Handshake::Upgrade
    };
    check_version(request)?;
    check_origin(request, config)?;
    Ok(kind)
}

fn check_extended_connect(method: &[u8], protocol: Option<&[u8]>) -> Result<Handshake, Refusal> {
    if method != b"CONNECT" {
        return Err(Refusal::Method);
    }
    // RFC 8441 §4: the `:protocol` pseudo-header names the protocol; for us, websocket.
    match protocol {
        Some(p) if p.eq_ignore_ascii_case(b"websocket") => Ok(Handshake::ExtendedConnect),
        _ => Err(Refusal::Upgrade),
    }
}

fn check_upgrade_headers(request: &Request) -> Result<(), Refusal> {
    // Item 4: Connection includes the "Upgrade" token; it is a comma-separated list and may
    // be split over several header lines (RFC 9110 §5.3).
    let has_upgrade_token = request.values("connection").any(|v| {
        v.split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    // RFC 6455 §4.2.1 item 3: Upgrade contains "websocket" (case-insensitive). We require it
    // to be the only protocol named, which is what Envoy's upgrade matching expects too.
    match request.single("upgrade") {
        Ok(Some(v)) if v.trim_ascii().eq_ignore_ascii_case(b"websocket") => {}
        // Upgrade is a hop-by-hop header that only Connection can keep (RFC 9110 §7.6.1):
        // Envoy's HTTP/1.1 codec drops it when Connection does not name it. A handshake
        // (it carries Sec-WebSocket-*) that arrives without both lacked the Connection token.
        Ok(None) if !has_upgrade_token && has_websocket_headers(request) => {
            return Err(Refusal::Connection)
        }
        _ => return Err(Refusal::Upgrade),
    }
    if !has_upgrade_token {
        return Err(Refusal::Connection);
    }
    Ok(())
}

/// Does the request carry the handshake's own headers (a key or a version)?
fn has_websocket_headers(request: &Request) -> bool {
    request.first("sec-websocket-key").is_some() || request.first("sec-websocket-version").is_some()
}

fn check_key(request: &Request) -> Result<(), Refusal> {
    // Item 5: Sec-WebSocket-Key is base64 of a 16-byte nonce (so exactly 24 characters).
    let key = request
        .single("sec-websocket-key")
        .map_err(|_| Refusal::Key)?
        .ok_or(Refusal::Key)?
        .trim_ascii();
    match STANDARD.decode(key) {
        Ok(nonce) if nonce.len() == 16 && key.len() == 24 => Ok(()),
        _ => Err(Refusal::Key),
    }
}

fn check_version(request: &Request) -> Result<(), Refusal> {
    // Item 6: version 13, exactly once.
    match request.single("sec-websocket-version") {
        Ok(Some(v)) if v.trim_ascii() == b"13" => Ok(()),
        _ => Err(Refusal::Version),
    }
}

fn check_origin(request: &Request, config: &WebSocketConfig) -> Result<(), Refusal> {
    let origin = request.single("origin").map_err(|_| Refusal::Origin)?;
    match origin {
        None if config.require_origin => Err(Refusal::Origin),
        None => Ok(()),
        // The config refuses an empty list; should one get here, no Origin is allowed.
        Some(origin) => {
            if config
                .allowed_origins
                .iter()
                .any(|pattern| origin_matches(pattern, origin))
            {
                Ok(())
            } else {
                Err(Refusal::Origin)
            }
        }
    }
}

/// Does an `Origin` value (RFC 6454 §7: `scheme://host[:port]`) match a configured pattern
/// (one that `grammar::is_origin_pattern` accepted)?
/// Comparison is ASCII case-insensitive; `*.domain` matches subdomains, not the domain itself.
pub fn origin_matches(pattern: &str, origin: &[u8]) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((scheme, host)) = pattern.split_once("://") else {
        return false;
    };
    let Some(suffix) = host.strip_prefix('*') else {
        return pattern.as_bytes().eq_ignore_ascii_case(origin);
    };
    // `scheme://*.domain[:port]`: the origin is `scheme://<labels>.domain[:port]`.
    let (scheme, suffix) = (scheme.as_bytes(), suffix.as_bytes());
    let Some((origin_scheme, rest)) = origin.split_at_checked(scheme.len()) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix(b"://") else {
        return false;
    };
    let Some((labels, origin_suffix)) =
        rest.split_at_checked(rest.len().saturating_sub(suffix.len()))
    else {
        return false;
    };
    origin_scheme.eq_ignore_ascii_case(scheme)
        && !labels.is_empty()
        && origin_suffix.eq_ignore_ascii_case(suffix)
        && labels
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A `Sec-WebSocket-Key` for a backend when the client (HTTP/2, RFC 8441 §5) sent none:
/// base64 of 16 bytes derived from the per-request nonce. It only has to be well-formed and
/// differ between requests; it protects nothing.
pub fn substitute_key(nonce: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(nonce);
    STANDARD.encode(digest.get(..16).unwrap_or_default())
}

/// The headers a 426 carries (RFC 6455 §4.2.2 item 4).
pub const VERSION_HEADER: (&str, &str) = ("sec-websocket-version", "13");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Property;

    // RFC 6455 §1.3 sample handshake key.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn config() -> WebSocketConfig {
        WebSocketConfig {
            path_prefixes: vec!["/ws".into()],
            allowed_origins: vec!["*".into()],
            require_origin: false,
            allow_plain_http: false,
        }
    }

    fn valid() -> Vec<(&'static str, &'static str)> {
        vec![
            (":method", "GET"),
            (":path", "/ws"),
            (":authority", "example.com"),
            ("upgrade", "websocket"),
            ("connection", "Upgrade"),
            ("sec-websocket-key", KEY),
            ("sec-websocket-version", "13"),
        ]
    }

    fn with(change: &[(&'static str, Option<&'static str>)]) -> Request {
        let mut pairs = valid();
        for (name, value) in change {
            pairs.retain(|(n, _)| n != name);
            if let Some(v) = value {
                pairs.push((name, v));
            }
        }
        Request::from_pairs(pairs)
    }

    /// Headers to replace (`Some`) or drop (`None`) in the valid handshake.
    type Change = &'static [(&'static str, Option<&'static str>)];

    fn judge(r: &Request) -> Result<Handshake, Refusal> {
        check(r, &config())
    }

    #[test]
    fn rfc_sample_handshake_is_accepted() {
        assert_eq!(judge(&with(&[])), Ok(Handshake::Upgrade));
    }

    #[test]
    fn header_values_are_case_insensitive_and_lists() {
        assert_eq!(
            judge(&with(&[("upgrade", Some("WebSocket"))])),
            Ok(Handshake::Upgrade)
        );
        for connection in [
            "keep-alive, Upgrade",
            "UPGRADE",
            "keep-alive,upgrade ",
            " upgrade",
        ] {
            assert_eq!(
                judge(&with(&[("connection", Some(connection))])),
                Ok(Handshake::Upgrade),
                "{connection}"
            );
        }
        // Connection split over two header lines.
        let mut r = with(&[("connection", Some("keep-alive"))]);
        r.headers.push(("connection".into(), b"upgrade".to_vec()));
        assert_eq!(judge(&r), Ok(Handshake::Upgrade));
    }

    #[test]
    fn each_fault_has_its_status() {
        let cases: [(Change, Refusal); 18] = [
            (&[(":method", Some("POST"))], Refusal::Method),
            // What Envoy hands on when Connection did not name Upgrade: it dropped Upgrade.
            (
                &[("upgrade", None), ("connection", Some("keep-alive"))],
                Refusal::Connection,
            ),
            (
                &[("upgrade", None), ("connection", None)],
                Refusal::Connection,
            ),
            (&[(":method", Some("get"))], Refusal::Method),
            (&[("upgrade", None)], Refusal::Upgrade),
            (&[("upgrade", Some("h2c"))], Refusal::Upgrade),
            (&[("upgrade", Some("websocket, h2c"))], Refusal::Upgrade),
            (&[("upgrade", Some(""))], Refusal::Upgrade),
            (&[("connection", None)], Refusal::Connection),
            (&[("connection", Some("keep-alive"))], Refusal::Connection),
            (&[("connection", Some("upgrades"))], Refusal::Connection),
            (&[("sec-websocket-key", None)], Refusal::Key),
            (&[("sec-websocket-key", Some(""))], Refusal::Key),
            (
                &[("sec-websocket-key", Some("dGhlIHNhbXBsZSBub25jZQ"))],
                Refusal::Key,
            ),
            (
                &[("sec-websocket-key", Some("dGhlIHNhbXBsZSBub25jZSE="))],
                Refusal::Key,
            ),
            (
                &[("sec-websocket-key", Some("!!!!!!!!!!!!!!!!!!!!!!=="))],
                Refusal::Key,
            ),
            (&[("sec-websocket-version", None)], Refusal::Version),
            (&[("sec-websocket-version", Some("8"))], Refusal::Version),
        ];
        for (change, refusal) in cases {
            assert_eq!(judge(&with(change)), Err(refusal), "{change:?}");
        }
        assert_eq!(Refusal::Version.status(), 426);
        assert_eq!(Refusal::Key.status(), 400);
        assert_eq!(Refusal::Origin.status(), 403);
        assert_eq!(Refusal::Path.status(), 404);
        // Without any handshake header it is simply not a WebSocket request.
        let plain = Request::from_pairs([(":method", "GET"), (":path", "/ws")]);
        assert_eq!(judge(&plain), Err(Refusal::Upgrade));
    }

    #[test]
    fn upgrades_are_recognised_in_every_form() {
        assert!(asks_for_upgrade(&with(&[])));
        assert!(asks_for_upgrade(&with(&[("upgrade", Some("h2c"))])));
        assert!(asks_for_upgrade(&Request::from_pairs([
            (":method", "CONNECT"),
            (":protocol", "websocket")
        ])));
        assert!(asks_for_upgrade(&Request::from_pairs([(
            ":method", "CONNECT"
        )])));
        assert!(!asks_for_upgrade(&Request::from_pairs([
            (":method", "GET"),
            ("connection", "upgrade"),
            ("sec-websocket-key", KEY)
        ])));
    }

    #[test]
    fn duplicated_empty_and_hostile_headers_are_refused() {
        let mut r = with(&[]);
        r.headers.push(("sec-websocket-key".into(), KEY.into()));
        assert_eq!(judge(&r), Err(Refusal::Key));
        let mut r = with(&[]);
        r.headers
            .push(("sec-websocket-version".into(), b"13".to_vec()));
        assert_eq!(judge(&r), Err(Refusal::Version));
        let mut r = with(&[]);
        r.headers.push(("upgrade".into(), b"websocket".to_vec()));
        assert_eq!(judge(&r), Err(Refusal::Upgrade));
        let r = with(&[(
            "sec-websocket-key",
            Some("dGhlIHNhbXBsZSBub25jZQ==\r\nX: y"),
        )]);
        assert_eq!(judge(&r), Err(Refusal::Key));
        let mut r = with(&[("sec-websocket-key", None)]);
        r.headers.push(("sec-websocket-key".into(), vec![0xff; 24]));
        assert_eq!(judge(&r), Err(Refusal::Key));
        let r = with(&[("sec-websocket-version", Some("13\0"))]);
        assert_eq!(judge(&r), Err(Refusal::Version));
        let r = with(&[("upgrade", Some("web\0socket"))]);
        assert_eq!(judge(&r), Err(Refusal::Upgrade));
    }

    #[test]
    fn origin_allow_list() {
        let mut c = config();
        c.allowed_origins = vec![
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ];
        let ok = [
            "https://app.example.com",
            "HTTPS://APP.example.com",
            "https://a.b.example.org",
        ];
        for origin in ok {
            let mut r = with(&[]);
            r.headers.push(("origin".into(), origin.into()));
            assert_eq!(check(&r, &c), Ok(Handshake::Upgrade), "{origin}");
        }
        let bad = [
            "https://evil.com",
            "http://app.example.com",
            "https://app.example.com.evil.com",
            "https://example.org",
            "https://evil.com/.example.org",
            "https://app.example.com:444",
            "null",
            "",
        ];
        for origin in bad {
            let mut r = with(&[]);
            r.headers.push(("origin".into(), origin.into()));
            assert_eq!(check(&r, &c), Err(Refusal::Origin), "{origin}");
        }
        // Two Origin headers are refused rather than guessed at.
        let mut r = with(&[]);
        r.headers
            .push(("origin".into(), b"https://app.example.com".to_vec()));
        r.headers
            .push(("origin".into(), b"https://evil.com".to_vec()));
        assert_eq!(check(&r, &c), Err(Refusal::Origin));
        // Non-browser clients send no Origin: allowed unless required.
        assert_eq!(check(&with(&[]), &c), Ok(Handshake::Upgrade));
        c.require_origin = true;
        assert_eq!(check(&with(&[]), &c), Err(Refusal::Origin));
    }

    #[test]
    fn extended_connect_is_accepted() {
        // RFC 8441 §5 example, as Envoy presents HTTP/2 pseudo-headers.
        let mut r = Request::from_pairs([
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/ws"),
            (":authority", "server.example.com"),
            ("sec-websocket-version", "13"),
            ("origin", "http://www.example.com"),
        ]);
        r.http_version = Property::known(Some("HTTP/2"));
        assert_eq!(judge(&r), Ok(Handshake::ExtendedConnect));
        // Wrong protocol or missing version still refused.
        let mut bad = r.clone();
        bad.headers[1].1 = b"h2c".to_vec();
        assert_eq!(judge(&bad), Err(Refusal::Upgrade));
        let mut bad = r.clone();
        bad.headers.retain(|(n, _)| n != "sec-websocket-version");
        assert_eq!(judge(&bad), Err(Refusal::Version));
        let mut bad = r.clone();
        bad.headers[0].1 = b"GET".to_vec();
        assert_eq!(judge(&bad), Err(Refusal::Method));
    }

    #[test]
    fn extended_connect_after_envoys_h2_to_h1_transform() {
        let mut r = Request::from_pairs([
            (":method", "GET"),
            (":path", "/ws"),
            ("upgrade", "websocket"),
            ("connection", "upgrade"),
            ("sec-websocket-version", "13"),
        ]);
        r.http_version = Property::known(Some("HTTP/2"));
        assert_eq!(judge(&r), Ok(Handshake::ExtendedConnect));
        // Over HTTP/1.1 the same request lacks its key.
        r.http_version = Property::known(Some("HTTP/1.1"));
        assert_eq!(judge(&r), Err(Refusal::Key));
    }

    #[test]
    fn plain_http_passes_only_when_allowed() {
        let plain = Request::from_pairs([(":method", "GET"), (":path", "/ws/poll")]);
        assert_eq!(judge(&plain), Err(Refusal::Upgrade));
        let mut c = config();
        c.allow_plain_http = true;
        assert_eq!(check(&plain, &c), Ok(Handshake::PlainHttp));
        // Over HTTP/2 as well (no Upgrade header: not mistaken for an RFC 8441 upgrade).
        let mut h2_plain = plain.clone();
        h2_plain.http_version = Property::known(Some("HTTP/2"));
        assert_eq!(check(&h2_plain, &c), Ok(Handshake::PlainHttp));
        // A broken upgrade is still refused when plain HTTP is allowed.
        assert_eq!(
            check(&with(&[("sec-websocket-key", None)]), &c),
            Err(Refusal::Key)
        );
    }
}
