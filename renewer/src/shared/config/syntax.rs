//! Syntax rules for config values (URLs, project ids, DNS names, listen addresses). A leaf:
//! it imports nothing from the crate, so every module may use it.

use std::net::SocketAddr;

/// An `http://` or `https://` URL that parses.
pub fn check_http_url(url: &str) -> Result<(), String> {
    if (url.starts_with("http://") || url.starts_with("https://"))
        && url.parse::<http::Uri>().is_ok()
    {
        Ok(())
    } else {
        Err(format!("{url:?} is not an http(s) URL"))
    }
}

/// A Google Cloud project id: 6 to 30 of `[a-z0-9-]`, starting with a letter.
pub fn is_project_id(p: &str) -> bool {
    (6..=30).contains(&p.len())
        && p.starts_with(|c: char| c.is_ascii_lowercase())
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !p.ends_with('-')
}

/// A DNS name the CA can validate with HTTP-01: LDH labels of 1..=63, at most 253 in total,
/// at least two labels, no IP address.
pub fn check_domain(d: &str) -> Result<(), String> {
    if d.is_empty() || d.len() > 253 {
        return Err("must be 1 to 253 characters".into());
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least two labels (example.com)".into());
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return Err("labels must be 1 to 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits and '-' are allowed in labels".into());
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("labels must not start or end with '-'".into());
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("IP addresses are not DNS names".into());
    }
    Ok(())
}

/// A listen address such as `127.0.0.1:9903`.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an address like 127.0.0.1:9903"))
}

/// `http://HOST:PORT/PATH`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppUrl {
    /// `HOST:PORT`.
    pub authority: String,
    /// The path, `/` when none was given.
    pub path: String,
}

impl AppUrl {
    /// Parses `http://host:port/path` (plain HTTP: the app listens on the node's own network).
    pub fn parse(text: &str) -> Result<AppUrl, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("{text:?} is not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let port_ok = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(format!("{text:?}: expected http://HOST:PORT/PATH"));
        }
        if path
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(format!(
                "{text:?}: the path has spaces or control characters"
            ));
        }
        Ok(AppUrl {
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}
