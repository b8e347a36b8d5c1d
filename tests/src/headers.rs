//! Header lists as the harness keeps them (a client's parsed response, a fake's recorded
//! request): `(name, value)` pairs in arrival order, repeated headers once per value.

/// The first value of a header (case-insensitive name).
pub(crate) fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of a header (case-insensitive name), in order.
pub(crate) fn all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}
