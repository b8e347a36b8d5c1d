//! Percent-encoding of URL paths and queries, for the clients and the fakes alike.

use std::collections::BTreeMap;

/// Percent-encodes everything but RFC 3986 unreserved characters (so '/' becomes %2F), for
/// query values and single path segments.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` escapes (a `%` not followed by two hex digits stays as it is): a path
/// segment as the fakes of Google APIs receive it.
pub fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let escaped = match tail {
            [h, l, ..] if b == b'%' => std::str::from_utf8(&[*h, *l])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                rest = &tail[2..];
            }
            None => {
                out.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes a query component (`application/x-www-form-urlencoded`: `+` is a space).
pub fn query_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// A query string (without the `?`) as decoded names and values; a name without `=` has the
/// empty value, and of a repeated name the last value counts.
pub fn query_map(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (query_decode(k), query_decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_it_encodes() {
        let s = "a b/c%d+é";
        assert_eq!(percent_encode(s), "a%20b%2Fc%25d%2B%C3%A9");
        assert_eq!(percent_decode(&percent_encode(s)), s);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(query_decode("a+b%2B"), "a b+");
    }

    #[test]
    fn query_maps_decode_names_and_values() {
        let q = query_map("name=a%2Fb&flag&x=1&x=2&&sp=a+b");
        assert_eq!(q["name"], "a/b");
        assert_eq!(q["flag"], "");
        assert_eq!(q["x"], "2");
        assert_eq!(q["sp"], "a b");
        assert_eq!(q.len(), 4);
    }
}
