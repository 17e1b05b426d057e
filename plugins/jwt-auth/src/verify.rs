//! Checking one token: its form, algorithm, key and signature. Runs only when the token is not
//! in the cache.
//!
//! `jsonwebtoken::decode` is not used: it builds a verifier (parsing the key) on every call and
//! checks `exp`/`nbf` against the component's own clock. This uses the crate's verifiers, built
//! once when a key is loaded, and the claims are checked by the caller against the host's clock.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::keys::{Key, parse_algorithm};

/// Why a token was refused. The text is sent to the client, so it says what is wrong with the
/// token and nothing about the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    TooLarge,
    Malformed(&'static str),
    AlgorithmNotAllowed,
    UnknownKey,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    MissingClaim(String),
}

impl Invalid {
    pub fn message(&self) -> String {
        match self {
            Invalid::TooLarge => "token too large".into(),
            Invalid::Malformed(what) => format!("malformed token: {what}"),
            Invalid::AlgorithmNotAllowed => "token algorithm not allowed".into(),
            Invalid::UnknownKey => "no key for this token".into(),
            Invalid::Signature => "invalid token signature".into(),
            Invalid::Expired => "token expired".into(),
            Invalid::NotYetValid => "token not yet valid".into(),
            Invalid::Issuer => "token issuer not accepted".into(),
            Invalid::Audience => "token audience not accepted".into(),
            Invalid::MissingClaim(name) => format!("token lacks the `{name}` claim"),
        }
    }
}

#[derive(Deserialize)]
struct JoseHeader<'a> {
    #[serde(borrow)]
    alg: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    kid: Option<std::borrow::Cow<'a, str>>,
    /// Extensions the verifier must understand (RFC 7515 §4.1.11); this one knows none.
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// A token whose signature checked out, with its claims.
pub struct Verified {
    pub claims: Map<String, Value>,
}

/// Checks form, algorithm (against the allow-list) and signature (against the keys).
pub fn signature<'k>(
    token: &str,
    allowed: &[Algorithm],
    keys: impl IntoIterator<Item = &'k Key>,
) -> Result<Verified, Invalid> {
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid::Malformed("not three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| Invalid::Malformed("header is not base64url"))?;
    // RFC 7515 §5.2: the header must be UTF-8 JSON. serde skips the values of fields it
    // ignores without checking their UTF-8, so the check is made on the whole header first.
    let header: JoseHeader<'_> = std::str::from_utf8(&header)
        .ok()
        .and_then(|h| serde_json::from_str(h).ok())
        .ok_or(Invalid::Malformed("header is not a JWS header"))?;
    if header.crit.is_some() {
        return Err(Invalid::Malformed("unsupported critical header extension"));
    }
    let alg = parse_algorithm(&header.alg)
        .filter(|a| allowed.contains(a))
        .ok_or(Invalid::AlgorithmNotAllowed)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| Invalid::Malformed("signature is not base64url"))?;
    let message = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];

    // With a `kid`, only the keys of that id (and keys without one) are tried; without one,
    // every key for the algorithm is.
    let kid = header.kid.as_deref();
    let mut tried = false;
    let mut valid = false;
    for key in keys {
        if let (Some(want), Some(have)) = (kid, key.kid.as_deref())
            && want != have
        {
            continue;
        }
        let Some(verifier) = key.verifier(alg) else {
            continue;
        };
        tried = true;
        if verifier.verify(message, &signature).is_ok() {
            valid = true;
            break;
        }
    }
    if !tried {
        return Err(Invalid::UnknownKey);
    }
    if !valid {
        return Err(Invalid::Signature);
    }

    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| Invalid::Malformed("payload is not base64url"))?;
    let claims: Map<String, Value> = serde_json::from_slice(&payload)
        .map_err(|_| Invalid::Malformed("payload is not a JSON object"))?;
    Ok(Verified { claims })
}

/// A NumericDate claim in milliseconds; `Err` when present but not a number.
pub fn numeric_date_ms(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, Invalid> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(n) = value else {
        return Err(Invalid::Malformed(match name {
            "exp" => "`exp` is not a number",
            "nbf" => "`nbf` is not a number",
            _ => "a date claim is not a number",
        }));
    };
    let ms = if let Some(i) = n.as_i64() {
        i.saturating_mul(1000)
    } else if let Some(u) = n.as_u64() {
        i64::try_from(u).unwrap_or(i64::MAX).saturating_mul(1000)
    } else {
        // `as` saturates, and NaN cannot come out of JSON.
        (n.as_f64().unwrap_or(0.0) * 1000.0).floor() as i64
    };
    Ok(Some(ms))
}

/// Whether a string claim (or any string of an array claim) is in `accepted`.
pub fn matches_any(value: Option<&Value>, accepted: &[String]) -> bool {
    match value {
        Some(Value::String(s)) => accepted.iter().any(|a| a == s),
        Some(Value::Array(items)) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| accepted.iter().any(|a| a == s))),
        _ => false,
    }
}

/// A claim as text for a header or a var: strings as they are, numbers and booleans written
/// out; objects, arrays and null have no text form.
pub fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
