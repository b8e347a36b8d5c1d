//! What the filter knows about one request, read from Envoy once per request.
//!
//! Header values are bytes, never `String`: a client can send any octet in a header value, and
//! the decisions must refuse such input rather than fail on it.

use crate::grammar::split_once_byte;

/// A request as seen by the filter: header names in lower case (Envoy's form), pseudo-headers
/// (`:method`, `:path`, `:authority`, `:protocol`) included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// All request headers in arrival order; a name may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Downstream peer address as Envoy reports it (`1.2.3.4:5678` or `[::1]:5678`).
    pub client_address: Option<String>,
    /// Envoy's `request.protocol` property: `HTTP/1.1`, `HTTP/2`, `HTTP/3`. Only consulted
    /// for requests with an `Upgrade` header, so the glue may leave it `None` otherwise.
    pub http_version: Option<String>,
}

impl Request {
    /// Build a request from `(name, value)` pairs, with no peer address or protocol (how the
    /// tests build requests; the glue fills in every field from Envoy).
    pub fn from_pairs<N, V>(pairs: impl IntoIterator<Item = (N, V)>) -> Self
    where
        N: Into<String>,
        V: Into<Vec<u8>>,
    {
        Self {
            headers: pairs
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
            ..Self::default()
        }
    }

    /// Every value of a header, in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The value of a header that must appear at most once: `Err(Duplicate)` when it appears more than once.
    pub fn single(&self, name: &str) -> Result<Option<&[u8]>, Duplicate> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice());
        let first = values.next();
        if values.next().is_some() {
            return Err(Duplicate);
        }
        Ok(first)
    }

    /// The first value of a header.
    pub fn first(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// `:method`.
    pub fn method(&self) -> &[u8] {
        self.first(":method").unwrap_or_default()
    }

    /// `:path`, query included.
    pub fn path(&self) -> &[u8] {
        self.first(":path").unwrap_or_default()
    }

    /// The path without its query.
    pub fn path_only(&self) -> &[u8] {
        let path = self.path();
        split_once_byte(path, b'?').map_or(path, |(p, _)| p)
    }

    /// The raw query string (after `?`), if any.
    pub fn query(&self) -> Option<&[u8]> {
        split_once_byte(self.path(), b'?').map(|(_, q)| q)
    }

    /// True when the request came over HTTP/2 or HTTP/3 (RFC 8441 / RFC 9220 upgrades).
    pub fn is_multiplexed(&self) -> bool {
        matches!(self.http_version.as_deref(), Some("HTTP/2" | "HTTP/3"))
    }
}

/// A header that must appear at most once appeared several times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate;

/// True when `path` is `prefix` or lies below it on a segment boundary
/// (`/ws` matches `/ws`, `/ws/x`, `/ws?x` but not `/wsx`).
pub fn path_has_prefix(path: &[u8], prefix: &str) -> bool {
    let prefix = prefix.as_bytes();
    if !path.starts_with(prefix) {
        return false;
    }
    prefix.ends_with(b"/") || matches!(path.get(prefix.len()), None | Some(b'/' | b'?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_is_case_insensitive_and_keeps_duplicates() {
        let r = Request::from_pairs([("upgrade", "websocket"), ("Upgrade", "h2c"), ("x", "")]);
        assert_eq!(r.values("upgrade").count(), 2);
        assert_eq!(r.single("upgrade"), Err(Duplicate));
        assert_eq!(r.single("x"), Ok(Some(&b""[..])));
        assert_eq!(r.single("missing"), Ok(None));
    }

    #[test]
    fn path_and_query() {
        let r = Request::from_pairs([(":path", "/a/b?room=1&x")]);
        assert_eq!(r.path_only(), b"/a/b");
        assert_eq!(r.query(), Some(&b"room=1&x"[..]));
        let r = Request::from_pairs([(":path", "/a")]);
        assert_eq!(r.query(), None);
        assert_eq!(Request::default().path(), b"");
    }

    #[test]
    fn prefix_matches_on_segment_boundaries() {
        assert!(path_has_prefix(b"/ws", "/ws"));
        assert!(path_has_prefix(b"/ws/room", "/ws"));
        assert!(path_has_prefix(b"/ws?room=1", "/ws"));
        assert!(!path_has_prefix(b"/wsx", "/ws"));
        assert!(!path_has_prefix(b"/w", "/ws"));
        assert!(path_has_prefix(b"/anything", "/"));
        assert!(path_has_prefix(b"/ws/x", "/ws/"));
    }
}
