//! What the filter knows about one request, read from Envoy once per request.
//!
//! Header values are bytes, never `String`: a client can send any octet in a header value, and
//! the decisions must refuse such input rather than fail on it.
//!
//! The headers come in one host call. Envoy's properties (the peer address, the protocol) are
//! [`Property`]s: read on first use, so a request whose decision never needs one costs no
//! host call for it (each is a call into Envoy and a call back into the VM for the answer).

use std::cell::OnceCell;

use crate::grammar::split_once_byte;

/// An Envoy property of the request, read at most once and only if a decision asks for it.
#[derive(Clone, Default)]
pub struct Property {
    value: OnceCell<Option<String>>,
    read: Option<fn() -> Option<String>>,
}

impl Property {
    /// A value known up front (tests, fuzzing).
    pub fn known(value: Option<&str>) -> Self {
        Self {
            value: OnceCell::from(value.map(str::to_owned)),
            read: None,
        }
    }

    /// A value `read` fetches on first use (the glue's host call).
    pub fn lazy(read: fn() -> Option<String>) -> Self {
        Self {
            value: OnceCell::new(),
            read: Some(read),
        }
    }

    /// The value, read now if it was not yet.
    pub fn get(&self) -> Option<&str> {
        self.value
            .get_or_init(|| self.read.and_then(|read| read()))
            .as_deref()
    }

    /// Whether it has been read (or was known).
    pub fn is_read(&self) -> bool {
        self.value.get().is_some()
    }
}

impl std::fmt::Debug for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.value.get() {
            Some(value) => value.fmt(f),
            None => f.write_str("<not read>"),
        }
    }
}

impl PartialEq for Property {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Property {}

/// A request as seen by the filter: header names in lower case (Envoy's form), pseudo-headers
/// (`:method`, `:path`, `:authority`, `:protocol`) included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// All request headers in arrival order; a name may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Downstream peer address as Envoy reports it (`1.2.3.4:5678` or `[::1]:5678`), Envoy's
    /// `source.address`: read only when the `client_address` key source is reached.
    pub client_address: Property,
    /// Envoy's `request.protocol` property: `HTTP/1.1`, `HTTP/2`, `HTTP/3`: read only for
    /// requests that ask for an upgrade.
    pub http_version: Property,
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
        matches!(self.http_version.get(), Some("HTTP/2" | "HTTP/3"))
    }

    /// Whether the client sent this header at all.
    pub fn has(&self, name: &str) -> bool {
        self.first(name).is_some()
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
    fn properties_are_read_once_and_only_when_asked() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static READS: AtomicUsize = AtomicUsize::new(0);
        fn read() -> Option<String> {
            READS.fetch_add(1, Ordering::SeqCst);
            Some("HTTP/2".to_owned())
        }
        let r = Request {
            http_version: Property::lazy(read),
            ..Request::default()
        };
        assert!(!r.http_version.is_read());
        assert_eq!(READS.load(Ordering::SeqCst), 0);
        assert!(r.is_multiplexed());
        assert!(r.is_multiplexed());
        assert_eq!(READS.load(Ordering::SeqCst), 1);
        assert_eq!(format!("{:?}", r.http_version), "Some(\"HTTP/2\")");
        assert_eq!(format!("{:?}", Property::lazy(read)), "<not read>");
        assert_eq!(Property::known(None).get(), None);
        assert_eq!(Property::default().get(), None);
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
