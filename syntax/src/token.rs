//! ACME challenge tokens (RFC 8555 §8.3 for HTTP-01, §8.4 for DNS-01).
//!
//! A token "MUST NOT contain any characters outside the base64url alphabet" and must carry
//! at least 128 bits of entropy (RFC 8555 §8.3, §11.3): at least 22 base64url characters.
//! CAs send 43 (32 random bytes). We also bound the length so that nothing far longer is
//! taken for a token: a store key or a path built from it stays small.

/// Fewest characters a token can have: 128 bits of entropy in base64url (RFC 8555 §11.3).
pub const MIN_LEN: usize = 22;
/// Most characters we accept; Let's Encrypt and Pebble send 43.
pub const MAX_LEN: usize = 128;

/// The base64url alphabet without padding (RFC 4648 §5).
pub fn is_base64url(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Is `raw` a plausible ACME token: 22–128 base64url characters and nothing else?
///
/// Both the edge filter (before it answers or looks a token up) and `renewer serve`'s
/// challenge route use this, so a token one side accepts the other accepts too.
pub fn is_token(raw: &[u8]) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&raw.len()) && is_base64url(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8555 §8.3's example token.
    const RFC_TOKEN: &str = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";

    #[test]
    fn rfc_example_and_bounds() {
        assert!(is_token(RFC_TOKEN.as_bytes()));
        assert!(is_token(&[b'a'; MIN_LEN]));
        assert!(is_token(&[b'_'; MAX_LEN]));
        assert!(!is_token(&[b'a'; MIN_LEN - 1]));
        assert!(!is_token(&[b'a'; MAX_LEN + 1]));
    }

    #[test]
    fn anything_outside_base64url_is_refused() {
        let hostile: [&[u8]; 10] = [
            b"",
            b"../../etc/passwd-padding-padding",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA=",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ+PCt92wr/oA",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-o%41",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA?x",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA;x",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-o\0",
            b"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-o\n",
            "évaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA".as_bytes(),
        ];
        for raw in hostile {
            assert!(!is_token(raw), "{raw:?}");
        }
    }
}
