//! HTTP → HTTPS: the 308 `Location` for a plain-HTTP request (RFC 9110 §15.4.9).
//!
//! The URL is rebuilt from parts that were each checked, so nothing a client sends can add a
//! header, change the scheme, or point the redirect at another host than the one it asked for.

use std::fmt::Write as _;

use crate::config::RedirectConfig;
use crate::grammar;

/// Why a request cannot be redirected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectError {
    /// No `Host` / `:authority` (HTTP/1.0 clients): 400.
    MissingHost,
    /// A host that is not a host name or IP literal: 400.
    BadHost,
    /// A well-formed host that this listener does not serve: 421 (RFC 9110 §15.5.20).
    UnknownHost,
    /// A path that is not an origin-form path: 400.
    BadPath,
}

impl RedirectError {
    /// The status code the client gets.
    pub fn status(self) -> u16 {
        match self {
            Self::UnknownHost => 421,
            Self::MissingHost | Self::BadHost | Self::BadPath => 400,
        }
    }
}

/// The `Location` for a plain-HTTP request: `https://<host>[:port]<path>?<query>`.
pub fn location(
    authority: Option<&[u8]>,
    path: &[u8],
    config: &RedirectConfig,
) -> Result<String, RedirectError> {
    let authority = authority
        .filter(|a| !a.is_empty())
        .ok_or(RedirectError::MissingHost)?;
    let host = grammar::parse_host(authority).ok_or(RedirectError::BadHost)?;
    if !config.allowed_hosts.is_empty()
        && !config.allowed_hosts.iter().any(|allowed| {
            allowed
                .trim_end_matches('.')
                .eq_ignore_ascii_case(host.as_str())
        })
    {
        return Err(RedirectError::UnknownHost);
    }
    // Origin-form only (RFC 9112 §3.2.1); Envoy has already turned absolute-form into it.
    if path.first() != Some(&b'/') {
        return Err(RedirectError::BadPath);
    }
    let port = match config.https_port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    let mut location = format!("https://{}{port}", host.as_str());
    push_encoded(&mut location, path);
    Ok(location)
}

/// Append a path and query, percent-encoding every byte outside what RFC 3986 allows there
/// (§3.3 `pchar` and `/`, §3.4 `?`), so nothing a client sent (a space, `<`, `"`, a control
/// byte, non-ASCII) is copied raw into the header. `'` is a sub-delim, allowed by the RFC,
/// but encoded as well: a `Location` may end up inside quoted HTML attributes. An existing
/// `%XX` escape is kept as it is (the path is passed on, not interpreted); a `%` that starts
/// no escape becomes `%25`.
pub fn push_encoded(out: &mut String, path: &[u8]) {
    let mut rest = path;
    while let Some((&b, tail)) = rest.split_first() {
        let escape_follows =
            matches!(tail, [h, l, ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit());
        if (b == b'%' && escape_follows) || is_location_safe(b) {
            out.push(char::from(b));
        } else {
            // Two upper-case hex digits (RFC 3986 §2.1); `write!` to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
        rest = tail;
    }
}

/// RFC 3986 unreserved, sub-delims except `'`, and `:` `@` `/` `?`.
fn is_location_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RedirectConfig {
        RedirectConfig {
            https_port: 443,
            allowed_hosts: vec![],
            passthrough_prefixes: vec![],
        }
    }

    fn loc(authority: &[u8], path: &[u8]) -> Result<String, RedirectError> {
        location(Some(authority), path, &config())
    }

    #[test]
    fn keeps_path_and_query_and_drops_the_plain_port() {
        assert_eq!(
            loc(b"Example.COM:80", b"/a/b?x=1&y=%20").unwrap(),
            "https://example.com/a/b?x=1&y=%20"
        );
        assert_eq!(loc(b"example.com", b"/").unwrap(), "https://example.com/");
        assert_eq!(loc(b"example.com.", b"/").unwrap(), "https://example.com/");
        assert_eq!(loc(b"10.0.0.1:8080", b"/x").unwrap(), "https://10.0.0.1/x");
        assert_eq!(loc(b"[::1]:8080", b"/x").unwrap(), "https://[::1]/x");
        assert_eq!(
            loc(b"[2001:DB8::1]", b"/").unwrap(),
            "https://[2001:db8::1]/"
        );
    }

    #[test]
    fn uses_the_configured_https_port() {
        let mut c = config();
        c.https_port = 8443;
        assert_eq!(
            location(Some(b"example.com:8080"), b"/p?q", &c).unwrap(),
            "https://example.com:8443/p?q"
        );
    }

    #[test]
    fn missing_host_is_400() {
        assert_eq!(
            location(None, b"/", &config()),
            Err(RedirectError::MissingHost)
        );
        assert_eq!(
            location(Some(b""), b"/", &config()),
            Err(RedirectError::MissingHost)
        );
        assert_eq!(RedirectError::MissingHost.status(), 400);
    }

    #[test]
    fn hostile_hosts_are_400() {
        let long = "a".repeat(300);
        let hostile: [&[u8]; 17] = [
            b"evil.com@example.com",
            b"example.com\r\nSet-Cookie: a=b",
            b"example.com\0",
            b"exa mple.com",
            b"example.com:",
            b"example.com:0",
            b"example.com:65536",
            b"example.com:80:80",
            b"example.com/evil",
            "exämple.com".as_bytes(),
            b"..",
            b"a..b",
            b"[::1",
            b"[::1]x",
            b"[]",
            b"[example.com]",
            long.as_bytes(),
        ];
        for host in hostile {
            assert_eq!(loc(host, b"/"), Err(RedirectError::BadHost), "{host:?}");
        }
    }

    #[test]
    fn paths_that_are_not_origin_form_are_400() {
        for path in [&b""[..], b"*", b"http://evil.com/"] {
            assert_eq!(
                loc(b"example.com", path),
                Err(RedirectError::BadPath),
                "{path:?}"
            );
        }
    }

    #[test]
    fn bytes_outside_rfc_3986_are_percent_encoded() {
        let cases: [(&[u8], &str); 9] = [
            (
                b"/a\r\nLocation: http://evil.com",
                "/a%0D%0ALocation:%20http://evil.com",
            ),
            (b"/a b", "/a%20b"),
            (b"/\0", "/%00"),
            ("/é?q=é".as_bytes(), "/%C3%A9?q=%C3%A9"),
            (b"/<script>\"x\"'y'", "/%3Cscript%3E%22x%22%27y%27"),
            (b"/a?b=<&c=\"", "/a?b=%3C&c=%22"),
            (b"/%zz%4", "/%25zz%254"),
            (b"/x#frag[]{}|\\^`", "/x%23frag%5B%5D%7B%7D%7C%5C%5E%60"),
            // Allowed as they are: unreserved, sub-delims, : @ / ? and escapes.
            (
                b"/a-._~!$&()*+,;=:@/?q=%20&r=1",
                "/a-._~!$&()*+,;=:@/?q=%20&r=1",
            ),
        ];
        for (path, want) in cases {
            assert_eq!(
                loc(b"example.com", path).unwrap(),
                format!("https://example.com{want}"),
                "{path:?}"
            );
        }
    }

    #[test]
    fn every_byte_of_a_location_is_allowed_by_rfc_3986() {
        let all: Vec<u8> = std::iter::once(b'/').chain(0..=255).collect();
        let location = loc(b"example.com", &all).unwrap();
        assert!(location
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?%".contains(&b)));
    }

    #[test]
    fn same_host_paths_stay_as_they_are() {
        // A path starting with `//` stays on the same host: the authority comes first.
        assert_eq!(
            loc(b"example.com", b"//evil.com/x").unwrap(),
            "https://example.com//evil.com/x"
        );
        // Dot segments and encodings are passed through, not interpreted, as the origin would.
        assert_eq!(
            loc(b"example.com", b"/%2e%2e/../x").unwrap(),
            "https://example.com/%2e%2e/../x"
        );
    }

    #[test]
    fn allow_list_gives_421_for_other_hosts() {
        let mut c = config();
        c.allowed_hosts = vec!["example.com".into(), "www.example.com.".into()];
        assert!(location(Some(b"EXAMPLE.com:80"), b"/", &c).is_ok());
        assert!(location(Some(b"www.example.com"), b"/", &c).is_ok());
        assert_eq!(
            location(Some(b"evil.com"), b"/", &c),
            Err(RedirectError::UnknownHost)
        );
        assert_eq!(RedirectError::UnknownHost.status(), 421);
        assert_eq!(
            location(Some(b"ex ample.com"), b"/", &c),
            Err(RedirectError::BadHost)
        );
    }
}
