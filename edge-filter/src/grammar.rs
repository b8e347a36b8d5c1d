//! The filter's syntax rules: what a well-formed ACME token, host, origin pattern, header name,
//! path prefix … looks like. Pure predicates on bytes and strings.
//!
//! This module imports nothing from the crate, so that everything else can import it: the
//! configuration refuses malformed values when it is loaded, the decisions refuse malformed
//! input per request, and both apply the same rule without the configuration depending on the
//! decisions that read it. The ACME token rule, which the renewer must agree with, lives in the
//! workspace `syntax` crate and is re-exported here.

pub use syntax::token::{is_base64url, is_token, MAX_LEN as MAX_TOKEN_LEN};

/// Split at the first `sep`: `a?b` → (`a`, `b`). Written without indexing so that no input,
/// however odd, can make it panic.
pub fn split_once_byte(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let mut parts = bytes.splitn(2, |&b| b == sep);
    Some((parts.next()?, parts.next()?))
}

/// A host name or IP literal, lower-cased, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host(String);

impl Host {
    /// The host text (IPv6 literals keep their brackets).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Split and check an authority (`host[:port]`), returning the host; `None` if it is not one.
///
/// Accepted: DNS names (letters, digits, `-`, `.`, `_`), IPv4, bracketed IPv6. Refused:
/// userinfo (`user@host`), empty labels, control bytes, spaces, non-ASCII (IDNs arrive as
/// punycode), ports that are not 1-65535.
pub fn parse_host(authority: &[u8]) -> Option<Host> {
    if authority.is_empty() || authority.len() > 260 {
        return None;
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix(b"[") {
        let (inner, rest) = split_once_byte(bracketed, b']')?;
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            || !inner.contains(&b':')
        {
            return None;
        }
        let port = match rest {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return None,
        };
        (authority.get(..inner.len() + 2).unwrap_or(authority), port)
    } else {
        match split_once_byte(authority, b':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some_and(|p| p != 0);
        if !valid {
            return None;
        }
    }
    if host.first() != Some(&b'[') {
        let host = host.strip_suffix(b".").unwrap_or(host);
        let labels_ok = !host.is_empty()
            && host.len() <= 253
            && host.split(|&b| b == b'.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .iter()
                        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !labels_ok {
            return None;
        }
    }
    // Checked ASCII above.
    let text = String::from_utf8(host.to_ascii_lowercase()).ok()?;
    Some(Host(text.trim_end_matches('.').to_owned()))
}

/// Is `pattern` usable in `allowed_origins`: `*`, `scheme://host[:port]` or
/// `scheme://*.domain[:port]`? (`websocket::origin_matches` compares an `Origin` with one.)
pub fn is_origin_pattern(pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((scheme, rest)) = pattern.split_once("://") else {
        return false;
    };
    let host = rest.strip_prefix("*.").unwrap_or(rest);
    !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.ends_with('/')
        && parse_host(host.as_bytes()).is_some()
}

/// An `:authority` for a callout to a cluster (`host[:port]`): visible ASCII without `/`.
pub fn is_authority(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// An absolute path of visible ASCII, no spaces or control bytes (path prefixes, the metadata
/// server's path).
pub fn is_absolute_path(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

/// A JWK thumbprint: base64url(SHA-256(...)) without padding, 43 characters (RFC 7638 §3,
/// RFC 8555 §8.1).
pub fn is_jwk_thumbprint(value: &str) -> bool {
    value.len() == 43 && is_base64url(value.as_bytes())
}

/// An RFC 9110 §5.6.2 `token`: what a cookie name must be (RFC 6265 §4.1.1).
pub fn is_http_token(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(is_tchar)
}

/// A header name as Envoy stores it: a token in lower case.
pub fn is_lowercase_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| is_tchar(b) && !b.is_ascii_uppercase())
}

/// A query parameter name of RFC 3986 unreserved characters: names are compared with the raw
/// query (split on `&` and `=`, not percent-decoded), where such a name has only one spelling.
pub fn is_query_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
}

/// A counter prefix (`wasmcustom.<prefix>.…`): letters, digits, `_` and `.`.
pub fn is_stat_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_patterns_are_validated() {
        for ok in [
            "*",
            "https://example.com",
            "https://*.example.com",
            "http://localhost:3000",
        ] {
            assert!(is_origin_pattern(ok), "{ok}");
        }
        for bad in [
            "example.com",
            "https://",
            "https://example.com/",
            "https://a b",
            "*.example.com",
        ] {
            assert!(!is_origin_pattern(bad), "{bad}");
        }
    }
}
