//! The OAuth access token for store mode, from the GCE metadata server, cached until shortly
//! before it expires so that a challenge costs one store round trip, not two.
//!
//! The metadata server answers
//! `{"access_token": "...", "expires_in": 3599, "token_type": "Bearer"}`.

use serde::Deserialize;

/// Refresh this long before the token expires, so a request never carries a token that
/// expires on its way to the store.
pub const REFRESH_MARGIN_MS: u64 = 60_000;

/// Why a metadata server response cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a 200.
    #[error("metadata server answered status {0:?}")]
    Status(Option<u16>),
    /// Not the JSON we expect.
    #[error("metadata server response is not a token: {0}")]
    Malformed(String),
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
    #[serde(default = "bearer")]
    token_type: String,
}

fn bearer() -> String {
    "Bearer".to_owned()
}

/// A cached token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenCache {
    token: Option<String>,
    /// When to stop using it (already shortened by the refresh margin), ms since the epoch.
    use_until_ms: u64,
}

impl TokenCache {
    /// The `Authorization` header value, if a token is cached and still fresh at `now_ms`.
    pub fn authorization(&self, now_ms: u64) -> Option<String> {
        match &self.token {
            Some(token) if now_ms < self.use_until_ms => Some(format!("Bearer {token}")),
            _ => None,
        }
    }

    /// Take a metadata server response received at `now_ms`, and return the header value.
    pub fn accept(
        &mut self,
        status: Option<u16>,
        body: &[u8],
        now_ms: u64,
    ) -> Result<String, TokenError> {
        if status != Some(200) {
            return Err(TokenError::Status(status));
        }
        let parsed: TokenResponse =
            serde_json::from_slice(body).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !parsed.token_type.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::Malformed(format!(
                "token_type {:?} is not Bearer",
                parsed.token_type
            )));
        }
        // The token goes into a header: visible ASCII only, and bounded.
        if parsed.access_token.is_empty()
            || parsed.access_token.len() > 4096
            || !parsed.access_token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(TokenError::Malformed("access_token is not a token".into()));
        }
        let lifetime_ms = parsed.expires_in.saturating_mul(1000);
        // Short-lived tokens: use them for half their life rather than not at all.
        let margin = REFRESH_MARGIN_MS.min(lifetime_ms / 2);
        self.use_until_ms = now_ms.saturating_add(lifetime_ms - margin);
        self.token = Some(parsed.access_token);
        Ok(self.authorization(now_ms).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        br#"{"access_token":"ya29.c.abc-DEF_123","expires_in":3599,"token_type":"Bearer"}"#;

    #[test]
    fn caches_until_shortly_before_expiry() {
        let mut cache = TokenCache::default();
        assert_eq!(cache.authorization(0), None);
        let header = cache.accept(Some(200), BODY, 1_000_000).unwrap();
        assert_eq!(header, "Bearer ya29.c.abc-DEF_123");
        assert_eq!(
            cache.authorization(1_000_000 + 3_000_000).as_deref(),
            Some(header.as_str())
        );
        let expiry = 1_000_000 + 3_599_000;
        assert_eq!(cache.authorization(expiry - REFRESH_MARGIN_MS), None);
    }

    #[test]
    fn short_lived_tokens_are_used_for_half_their_life() {
        let mut cache = TokenCache::default();
        cache
            .accept(Some(200), br#"{"access_token":"t","expires_in":10}"#, 0)
            .unwrap();
        assert!(cache.authorization(4_999).is_some());
        assert!(cache.authorization(5_000).is_none());
    }

    #[test]
    fn bad_responses_are_errors_and_keep_nothing() {
        let mut cache = TokenCache::default();
        assert_eq!(
            cache.accept(Some(403), BODY, 0),
            Err(TokenError::Status(Some(403)))
        );
        assert_eq!(cache.accept(None, b"", 0), Err(TokenError::Status(None)));
        for body in [
            &b"not json"[..],
            br#"{"access_token":"","expires_in":5}"#,
            br#"{"access_token":"a b","expires_in":5}"#,
            br#"{"access_token":"a\r\nX: y","expires_in":5}"#,
            br#"{"access_token":"a","expires_in":5,"token_type":"MAC"}"#,
            br#"{"access_token":"a"}"#,
            br#"{"access_token":"a","expires_in":-5}"#,
        ] {
            assert!(
                matches!(
                    cache.accept(Some(200), body, 0),
                    Err(TokenError::Malformed(_))
                ),
                "{body:?}"
            );
        }
        assert_eq!(cache.authorization(0), None);
    }
}
