//! ACME HTTP-01 (RFC 8555 §8.3): validate the token, answer it or say where to fetch it.
//!
//! The token is checked before anything else happens, so a hostile path (`../`, `%2e%2e`,
//! control bytes, an overlong string) is a 404 that never reaches a store or a backend.

use crate::config::{AcmeConfig, StoreConfig};
use crate::grammar::{self, MAX_TOKEN_LEN};

/// Path prefix of HTTP-01 challenges (RFC 8555 §8.3).
pub const PREFIX: &str = "/.well-known/acme-challenge/";

/// Longest key authorization we serve from a store: a token, '.', and at most 64 characters
/// of thumbprint (a SHA-256 JWK thumbprint has 43). A longer store answer is not one, and is
/// not even read.
pub const MAX_KEY_AUTHORIZATION_LEN: usize = MAX_TOKEN_LEN + 1 + 64;

/// If `path` is a challenge path, the token in it (checked or not).
pub fn token_in_path(path: &[u8]) -> Option<&[u8]> {
    path.strip_prefix(PREFIX.as_bytes())
}

/// A token that can be answered: base64url only, bounded length, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Check a token taken from the path; `None` for anything that is not a plausible token
    /// (22–128 base64url characters: the rule `renewer serve` applies too).
    pub fn parse(raw: &[u8]) -> Option<Self> {
        if !grammar::is_token(raw) {
            return None;
        }
        // Only ASCII is left after the check above.
        String::from_utf8(raw.to_vec()).ok().map(Self)
    }

    /// The token text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What to do with a challenge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeAction {
    /// Answer with this key authorization (stateless mode).
    Answer(String),
    /// Fetch the key authorization from the store at this path (store mode).
    Fetch {
        /// The validated token, for checking what the store returns.
        token: Token,
        /// Request path for the store.
        path: String,
    },
    /// Not a valid token: 404, no store call.
    NotFound,
}

/// Decide what a challenge request gets. `raw_token` is what follows [`PREFIX`] in the path.
pub fn decide(raw_token: &[u8], config: &AcmeConfig) -> ChallengeAction {
    let Some(token) = Token::parse(raw_token) else {
        return ChallengeAction::NotFound;
    };
    match (&config.thumbprint, &config.store) {
        // RFC 8555 §8.1: keyAuthorization = token || '.' || base64url(Thumbprint(accountKey))
        (Some(thumbprint), _) => ChallengeAction::Answer(format!("{}.{thumbprint}", token.0)),
        (None, Some(store)) => ChallengeAction::Fetch {
            path: store_path(store, &token),
            token,
        },
        (None, None) => ChallengeAction::NotFound,
    }
}

/// The store request path for a token. The token is base64url, so it needs no escaping.
pub fn store_path(store: &StoreConfig, token: &Token) -> String {
    store.path.replacen("{token}", token.as_str(), 1)
}

/// How the store answered, as far as the client is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// 200 with a key authorization for this token.
    Found(String),
    /// The store does not have it.
    NotFound,
    /// The store timed out.
    Timeout,
    /// The store failed or returned something that is not a key authorization.
    Failed,
}

impl StoreOutcome {
    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            Self::Found(_) => 200,
            Self::NotFound => 404,
            Self::Timeout => 504,
            Self::Failed => 502,
        }
    }
}

/// Judge a store response. `status` is `None` when Envoy could not get a response at all.
/// A 200 body is served only if it is a key authorization for *this* token: a store that
/// returns something else (an HTML error page, another token's answer) must not be echoed.
pub fn judge_store_response(token: &Token, status: Option<u16>, body: &[u8]) -> StoreOutcome {
    match status {
        Some(200) => {
            let body = body.trim_ascii_end();
            let expected_prefix = format!("{}.", token.as_str());
            let thumbprint = body.strip_prefix(expected_prefix.as_bytes());
            match thumbprint {
                Some(t)
                    if !t.is_empty()
                        && body.len() <= MAX_KEY_AUTHORIZATION_LEN
                        && grammar::is_base64url(t) =>
                {
                    // Checked ASCII above.
                    String::from_utf8(body.to_vec())
                        .map(StoreOutcome::Found)
                        .unwrap_or(StoreOutcome::Failed)
                }
                _ => StoreOutcome::Failed,
            }
        }
        Some(404) => StoreOutcome::NotFound,
        // Envoy's async client answers a route timeout with a local 504.
        Some(504 | 408) => StoreOutcome::Timeout,
        _ => StoreOutcome::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8555 §8.3 example token and a thumbprint in RFC 7638's shape.
    const TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    const THUMB: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

    fn stateless() -> AcmeConfig {
        AcmeConfig {
            thumbprint: Some(THUMB.into()),
            store: None,
        }
    }

    fn store() -> AcmeConfig {
        AcmeConfig {
            thumbprint: None,
            store: Some(StoreConfig {
                cluster: "gcs".into(),
                authority: "storage.googleapis.com".into(),
                path: "/storage/v1/b/bkt/o/acme-challenge%2F{token}?alt=media".into(),
                timeout_ms: 1000,
                metadata_token: None,
            }),
        }
    }

    #[test]
    fn stateless_answers_token_dot_thumbprint() {
        assert_eq!(
            decide(TOKEN.as_bytes(), &stateless()),
            ChallengeAction::Answer(format!("{TOKEN}.{THUMB}"))
        );
    }

    #[test]
    fn store_mode_builds_the_gcs_object_path() {
        match decide(TOKEN.as_bytes(), &store()) {
            ChallengeAction::Fetch { path, token } => {
                assert_eq!(token.as_str(), TOKEN);
                assert_eq!(
                    path,
                    format!("/storage/v1/b/bkt/o/acme-challenge%2F{TOKEN}?alt=media")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn hostile_tokens_are_not_found() {
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        let hostile: [&[u8]; 16] = [
            b"",
            b"../../etc/passwd",
            b"..%2f..%2fetc%2fpasswd",
            b"%2e%2e%2f%2e%2e%2fsecretsecretsecret",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA/",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA?x=1",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA=",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ+PCt92wr/oA",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3\r\nSet-Cookie: x",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ\0PCt92wr-oA",
            "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-é".as_bytes(),
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ PCt92wr-oA",
            b"short",
            long.as_bytes(),
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA#frag",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA;x",
        ];
        for raw in hostile {
            assert_eq!(
                decide(raw, &stateless()),
                ChallengeAction::NotFound,
                "{raw:?}"
            );
            assert_eq!(decide(raw, &store()), ChallengeAction::NotFound, "{raw:?}");
        }
        let max = "a".repeat(MAX_TOKEN_LEN);
        assert!(matches!(
            decide(max.as_bytes(), &stateless()),
            ChallengeAction::Answer(_)
        ));
    }

    #[test]
    fn only_the_exact_prefix_is_a_challenge() {
        assert_eq!(
            token_in_path(format!("/.well-known/acme-challenge/{TOKEN}").as_bytes()),
            Some(TOKEN.as_bytes())
        );
        assert_eq!(token_in_path(b"/.well-known/acme-challenge"), None);
        assert_eq!(token_in_path(b"/.well-known/ACME-challenge/x"), None);
        assert_eq!(token_in_path(b"//.well-known/acme-challenge/x"), None);
    }

    #[test]
    fn store_responses_are_judged() {
        let token = Token::parse(TOKEN.as_bytes()).unwrap();
        let good = format!("{TOKEN}.{THUMB}");
        assert_eq!(
            judge_store_response(&token, Some(200), good.as_bytes()),
            StoreOutcome::Found(good.clone())
        );
        // A trailing newline from `echo > file` style stores is tolerated.
        assert_eq!(
            judge_store_response(&token, Some(200), format!("{good}\n").as_bytes()),
            StoreOutcome::Found(good.clone())
        );
        let other = format!("AAAAAAAAAAAAAAAAAAAAAAAAA.{THUMB}");
        for body in [
            other.as_bytes(),
            b"<html>error</html>",
            b"",
            format!("{TOKEN}.").as_bytes(),
            format!("{TOKEN}.{THUMB}\r\nX: y").as_bytes(),
        ] {
            assert_eq!(
                judge_store_response(&token, Some(200), body),
                StoreOutcome::Failed,
                "{body:?}"
            );
        }
        let huge = format!("{TOKEN}.{}", "a".repeat(500));
        assert_eq!(
            judge_store_response(&token, Some(200), huge.as_bytes()),
            StoreOutcome::Failed
        );
        assert_eq!(
            judge_store_response(&token, Some(404), b""),
            StoreOutcome::NotFound
        );
        assert_eq!(
            judge_store_response(&token, Some(504), b""),
            StoreOutcome::Timeout
        );
        assert_eq!(
            judge_store_response(&token, Some(503), b""),
            StoreOutcome::Failed
        );
        assert_eq!(
            judge_store_response(&token, Some(403), b""),
            StoreOutcome::Failed
        );
        assert_eq!(
            judge_store_response(&token, None, b""),
            StoreOutcome::Failed
        );
        assert_eq!(StoreOutcome::Timeout.status(), 504);
        assert_eq!(StoreOutcome::Failed.status(), 502);
    }
}
