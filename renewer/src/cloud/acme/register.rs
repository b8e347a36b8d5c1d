//! Registering an account at a CA with a key the renewer already holds (RFC 8555 §7.3), with
//! an external account binding when the CA wants one (§7.3.4).
//!
//! Why not instant-acme: 0.8.5 registers a given key only without a binding
//! (`create_from_key`), and with a binding only a key it generates (`create`). A fallback CA
//! that wants a binding (Google Trust Services, ZeroSSL) would then get its own key, so its
//! HTTP-01 key authorizations would carry another thumbprint than the one the edge filter's
//! stateless mode answers with (§8.1: `token || '.' || base64url(JWK thumbprint)`). One key
//! for every CA's account keeps one thumbprint. After registering, the account is used
//! through instant-acme as any other (its credentials are the same JSON).
//!
//! The request is the one §7.3 describes: a JWS in the flattened JSON serialization (§6.2),
//! signed with ES256 (the key type instant-acme uses for accounts), the public key as `jwk` in
//! the protected header; the binding is a second JWS over that JWK, MACed with HS256 under the
//! CA's key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use instant_acme::{AccountCredentials, BodyWrapper, HttpClient, Problem};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use rustls::pki_types::PrivatePkcs8KeyDer;
use serde_json::{json, Value};

use super::ca_http::{classify, hint_slot, CaHttp, HintSlot};
use super::AcmeError;

/// The CA's external account binding key (§7.3.4): its key identifier and MAC key.
pub(super) struct EabKey {
    pub key_id: String,
    pub hmac_key: Vec<u8>,
}

/// What the new account is registered with.
pub(super) struct Registration<'a> {
    pub directory_url: &'a str,
    /// The account key, PKCS#8 DER of a P-256 key (another CA's account key).
    pub key_pkcs8: PrivatePkcs8KeyDer<'static>,
    /// `mailto:` URLs.
    pub contact: &'a [String],
    pub eab: Option<&'a EabKey>,
}

/// A fresh nonce is fetched at most this many times for one request: a CA answers `badNonce`
/// now and then (Pebble rejects 5 % of good ones by default), and each answer carries the next.
const NONCE_TRIES: usize = 3;

/// Register (or find: a CA answers 200 with the existing account for a key it knows) the
/// account for `reg.key_pkcs8` at `reg.directory_url`, and return its credentials.
pub(super) async fn register(
    client: CaHttp,
    last_error: &HintSlot,
    reg: Registration<'_>,
) -> Result<AccountCredentials, AcmeError> {
    let fail = |e: instant_acme::Error| classify(e, &hint_slot(last_error));
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        reg.key_pkcs8.secret_pkcs8_der(),
        &SystemRandom::new(),
    )
    .map_err(|e| {
        AcmeError::Other(format!(
            "the account key to register at {} is not a P-256 PKCS#8 key: {e}",
            reg.directory_url
        ))
    })?;
    let directory = get_json(&client, reg.directory_url).await.map_err(fail)?;
    let url_of = |field: &str| {
        directory[field].as_str().map(str::to_owned).ok_or_else(|| {
            AcmeError::Other(format!(
                "the directory {} has no {field}",
                reg.directory_url
            ))
        })
    };
    let (new_nonce, new_account) = (url_of("newNonce")?, url_of("newAccount")?);
    let jwk = jwk_of(&key);

    let mut payload = json!({ "termsOfServiceAgreed": true });
    if !reg.contact.is_empty() {
        payload["contact"] = json!(reg.contact);
    }
    if let Some(eab) = reg.eab {
        payload["externalAccountBinding"] = binding(eab, &jwk, &new_account);
    }
    let payload = b64(payload.to_string().as_bytes());

    let mut nonce = fetch_nonce(&client, &new_nonce).await.map_err(fail)?;
    for _ in 0..NONCE_TRIES {
        let protected = b64(json!({
            "alg": "ES256",
            "jwk": jwk,
            "nonce": nonce,
            "url": new_account,
        })
        .to_string()
        .as_bytes());
        let signature = key
            .sign(
                &SystemRandom::new(),
                format!("{protected}.{payload}").as_bytes(),
            )
            .map_err(|_| AcmeError::Other("signing the newAccount request failed".into()))?;
        let body = json!({
            "protected": protected,
            "payload": payload,
            "signature": b64(signature.as_ref()),
        });
        let request = http::Request::post(&new_account)
            .header(http::header::CONTENT_TYPE, "application/jose+json")
            .body(BodyWrapper::from(body.to_string().into_bytes()))
            .map_err(|e| AcmeError::Other(format!("newAccount request: {e}")))?;
        let response = client.request(request).await.map_err(fail)?;
        let status = response.parts.status;
        let next_nonce = header(&response.parts.headers, "replay-nonce");
        let location = header(&response.parts.headers, "location");
        let body = read_body(response).await.map_err(fail)?;
        if status.is_success() {
            // A badNonce answer on the way left its status for `classify`: not this outcome's.
            if let Ok(mut hint) = hint_slot(last_error).lock() {
                *hint = None;
            }
            let id = location.ok_or_else(|| {
                AcmeError::Other(format!(
                    "{new_account} answered {status} without the account's Location"
                ))
            })?;
            let credentials = json!({
                "id": id,
                "key_pkcs8": b64(reg.key_pkcs8.secret_pkcs8_der()),
                "directory": reg.directory_url,
            });
            return serde_json::from_value(credentials)
                .map_err(|e| AcmeError::Other(format!("account credentials: {e}")));
        }
        let problem: Problem = serde_json::from_slice(&body).map_err(|e| fail(e.into()))?;
        let bad_nonce = problem
            .r#type
            .as_deref()
            .is_some_and(|t| t.ends_with(":badNonce"));
        match next_nonce {
            Some(next) if bad_nonce => nonce = next,
            _ => return Err(fail(instant_acme::Error::Api(problem))),
        }
    }
    Err(AcmeError::Transient {
        message: format!("{new_account} refused {NONCE_TRIES} nonces in a row (badNonce)"),
        retry_after: None,
    })
}

/// The public key as a JWK (RFC 7518 §6.2.1): the field order of RFC 7638's thumbprint input,
/// though the CA computes the thumbprint itself.
fn jwk_of(key: &EcdsaKeyPair) -> Value {
    // An uncompressed point: 0x04, then x and y, 32 bytes each.
    let point = key.public_key().as_ref();
    let (x, y) = point
        .get(1..)
        .unwrap_or_default()
        .split_at(point.len().saturating_sub(1) / 2);
    json!({ "crv": "P-256", "kty": "EC", "x": b64(x), "y": b64(y) })
}

/// The external account binding (§7.3.4): a JWS over the account's JWK, MACed with the CA's
/// key, naming the key by `kid` and the `newAccount` URL it is for.
fn binding(eab: &EabKey, jwk: &Value, new_account: &str) -> Value {
    let protected = b64(
        json!({ "alg": "HS256", "kid": eab.key_id, "url": new_account })
            .to_string()
            .as_bytes(),
    );
    let payload = b64(jwk.to_string().as_bytes());
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &eab.hmac_key);
    let tag = ring::hmac::sign(&key, format!("{protected}.{payload}").as_bytes());
    json!({
        "protected": protected,
        "payload": payload,
        "signature": b64(tag.as_ref()),
    })
}

/// The JWK thumbprint (RFC 7638) of an account key: what every HTTP-01 key authorization of
/// that account ends with (RFC 8555 §8.1), and what `renewer account` shows.
pub(super) fn thumbprint(key_pkcs8: &PrivatePkcs8KeyDer<'_>) -> Result<String, AcmeError> {
    use sha2::{Digest, Sha256};
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        key_pkcs8.secret_pkcs8_der(),
        &SystemRandom::new(),
    )
    .map_err(|e| AcmeError::Other(format!("not a P-256 PKCS#8 account key: {e}")))?;
    // RFC 7638 §3.2: the required members only, in lexicographic order, no whitespace; the
    // JWK is built in that order, so it serializes so with or without serde_json's
    // preserve_order.
    Ok(b64(&Sha256::digest(jwk_of(&key).to_string().as_bytes())))
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn get_json(client: &CaHttp, url: &str) -> Result<Value, instant_acme::Error> {
    let request = http::Request::get(url)
        .body(BodyWrapper::from(Vec::new()))
        .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
    let response = client.request(request).await?;
    let status = response.parts.status;
    let body = read_body(response).await?;
    if !status.is_success() {
        return Err(instant_acme::Error::Other(
            format!("GET {url} answered {status}").into(),
        ));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// A fresh nonce from `newNonce` (§7.2: HEAD, the nonce in `Replay-Nonce`).
async fn fetch_nonce(client: &CaHttp, url: &str) -> Result<String, instant_acme::Error> {
    let request = http::Request::head(url)
        .body(BodyWrapper::from(Vec::new()))
        .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
    let response = client.request(request).await?;
    header(&response.parts.headers, "replay-nonce").ok_or_else(|| {
        instant_acme::Error::Other(format!("{url} answered without a Replay-Nonce").into())
    })
}

async fn read_body(response: instant_acme::BytesResponse) -> Result<Bytes, instant_acme::Error> {
    let mut body = response.body;
    body.into_bytes().await.map_err(instant_acme::Error::Other)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> (EcdsaKeyPair, PrivatePkcs8KeyDer<'static>) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate");
        let der = PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("load");
        (key, der)
    }

    fn decode(s: &Value) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(s.as_str().expect("string"))
            .expect("base64url")
    }

    #[test]
    fn the_jwk_is_the_public_point() {
        let (key, _) = key();
        let jwk = jwk_of(&key);
        let (x, y) = (decode(&jwk["x"]), decode(&jwk["y"]));
        assert_eq!((x.len(), y.len()), (32, 32));
        let point = [&[4u8][..], &x, &y].concat();
        assert_eq!(point, key.public_key().as_ref());
        // RFC 7638 §3.2: members in lexicographic order, no whitespace.
        let text = jwk.to_string();
        assert!(
            text.starts_with("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":"),
            "{text}"
        );
    }

    #[test]
    fn the_binding_macs_the_jwk_under_the_cas_key() {
        let (key, _) = key();
        let jwk = jwk_of(&key);
        let eab = EabKey {
            key_id: "kid-1".into(),
            hmac_key: b"0123456789abcdef0123456789abcdef".to_vec(),
        };
        let b = binding(&eab, &jwk, "https://ca.test/new-acct");
        let protected: Value = serde_json::from_slice(&decode(&b["protected"])).expect("json");
        assert_eq!(
            protected,
            json!({"alg": "HS256", "kid": "kid-1", "url": "https://ca.test/new-acct"})
        );
        let payload: Value = serde_json::from_slice(&decode(&b["payload"])).expect("json");
        assert_eq!(payload, jwk);
        let signed = format!(
            "{}.{}",
            b["protected"].as_str().expect("protected"),
            b["payload"].as_str().expect("payload")
        );
        let mac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &eab.hmac_key);
        ring::hmac::verify(&mac, signed.as_bytes(), &decode(&b["signature"])).expect("valid MAC");
    }

    #[test]
    fn the_thumbprint_is_sha256_of_the_canonical_jwk() {
        use sha2::{Digest, Sha256};
        let (key, der) = key();
        let jwk = jwk_of(&key);
        let canonical = format!(
            "{{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":{},\"y\":{}}}",
            jwk["x"], jwk["y"]
        );
        assert_eq!(
            thumbprint(&der).expect("thumbprint"),
            b64(&Sha256::digest(canonical.as_bytes()))
        );
        assert!(thumbprint(&PrivatePkcs8KeyDer::from(vec![1, 2, 3])).is_err());
    }
}
