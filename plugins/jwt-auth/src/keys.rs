//! Verification keys: `secret`, `public_key` (PEM) and JWK sets (`jwks`, and the sets fetched
//! from `jwks_url`), each turned into one ready verifier per algorithm it may verify, at init
//! or when a set is fetched, so a request never parses key material.

use jsonwebtoken::crypto::JwtVerifier;
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use wasmgate_sdk::ConfigError;

/// Smaller RSA moduli are refused: they are factorable at a cost within reach.
pub const MIN_RSA_BITS: usize = 2048;

/// Every algorithm the plugin verifies, in the order the README lists them.
pub const SUPPORTED: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    SUPPORTED.into_iter().find(|a| alg_name(*a) == name)
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
        _ => "unsupported",
    }
}

/// One configured key, with a verifier for each allowed algorithm it can check. A key is bound
/// to its own family (an HMAC secret never verifies an RS256 token, an RSA key never an HS256
/// one), which is what makes algorithm confusion impossible.
pub struct Key {
    pub kid: Option<String>,
    verifiers: Verifiers,
}

type Verifiers = Vec<(Algorithm, Box<dyn JwtVerifier>)>;

impl Key {
    pub fn verifier(&self, alg: Algorithm) -> Option<&dyn JwtVerifier> {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v.as_ref())
    }

    pub fn algorithms(&self) -> impl Iterator<Item = Algorithm> + '_ {
        self.verifiers.iter().map(|(a, _)| *a)
    }
}

/// Builds the verifiers of `key` for the allowed algorithms among `candidates`. Empty when the
/// allow-list has none of them.
fn verifiers(
    key: &DecodingKey,
    candidates: &[Algorithm],
    allowed: &[Algorithm],
) -> Result<Verifiers, String> {
    let mut out = Vec::new();
    for alg in candidates.iter().filter(|a| allowed.contains(a)) {
        if let Some(min) = hmac_min_len(*alg) {
            let len = key.try_get_as_bytes().map_or(0, <[u8]>::len);
            if len < min {
                return Err(format!(
                    "a {len}-byte secret is shorter than {}'s {min} bytes (RFC 7518 §3.2)",
                    alg_name(*alg)
                ));
            }
        }
        let verifier = (DEFAULT_PROVIDER.verifier_factory)(alg, key)
            .map_err(|e| format!("not a usable {} key: {e}", alg_name(*alg)))?;
        out.push((*alg, verifier));
    }
    Ok(out)
}

/// RFC 7518 §3.2: an HMAC key is at least as long as the hash's output.
fn hmac_min_len(alg: Algorithm) -> Option<usize> {
    match alg {
        Algorithm::HS256 => Some(32),
        Algorithm::HS384 => Some(48),
        Algorithm::HS512 => Some(64),
        _ => None,
    }
}

fn family_names(family: AlgorithmFamily) -> String {
    let names: Vec<&str> = family.algorithms().iter().map(|a| alg_name(*a)).collect();
    names.join("/")
}

pub fn from_secret(secret: &str, allowed: &[Algorithm]) -> Result<Key, ConfigError> {
    if secret.is_empty() {
        return Err(ConfigError::at("secret", "must not be empty"));
    }
    let key = DecodingKey::from_secret(secret.as_bytes());
    let verifiers = verifiers(&key, AlgorithmFamily::Hmac.algorithms(), allowed)
        .map_err(|e| ConfigError::at("secret", e))?;
    if verifiers.is_empty() {
        return Err(ConfigError::at(
            "secret",
            "`algorithms` has no HS algorithm to use it with",
        ));
    }
    Ok(Key {
        kid: None,
        verifiers,
    })
}

/// A PEM public key: RSA (`PUBLIC KEY` or `RSA PUBLIC KEY`), EC P-256/P-384 or Ed25519.
pub fn from_pem(pem: &str, allowed: &[Algorithm]) -> Result<Key, ConfigError> {
    let at = |msg: String| ConfigError::at("public_key", msg);
    if pem.contains("PRIVATE KEY") {
        return Err(at(
            "is a private key; give the public key (`PUBLIC KEY` PEM)".into(),
        ));
    }
    let (key, candidates): (DecodingKey, &[Algorithm]) =
        if let Ok(key) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
            let der = key
                .try_get_as_bytes()
                .map_err(|e| at(format!("not an RSA public key: {e}")))?;
            let public = <RsaPublicKey as rsa::pkcs1::DecodeRsaPublicKey>::from_pkcs1_der(der)
                .map_err(|e| at(format!("not an RSA public key: {e}")))?;
            check_rsa_size(&public).map_err(at)?;
            (key, AlgorithmFamily::Rsa.algorithms())
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem.as_bytes()) {
            let point = key.try_get_as_bytes().unwrap_or_default();
            let candidates: &[Algorithm] = match point.len() {
                65 => &[Algorithm::ES256],
                97 => &[Algorithm::ES384],
                _ => return Err(at("an EC key on a curve other than P-256 or P-384".into())),
            };
            (key, candidates)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem.as_bytes()) {
            if key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0) != 32 {
                return Err(at("not an Ed25519 public key".into()));
            }
            (key, &[Algorithm::EdDSA])
        } else {
            return Err(at(
                "not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into()
            ));
        };
    let verifiers = verifiers(&key, candidates, allowed).map_err(at)?;
    if verifiers.is_empty() {
        let names: Vec<&str> = candidates.iter().map(|a| alg_name(*a)).collect();
        return Err(at(format!(
            "`algorithms` has none of {} to use this key with",
            names.join("/")
        )));
    }
    Ok(Key {
        kid: None,
        verifiers,
    })
}

fn check_rsa_size(key: &RsaPublicKey) -> Result<(), String> {
    let bits = key.n().bits();
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "an RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    Ok(())
}

/// `jwks`: an object with `keys`, or that object as JSON text (what `config_files` gives).
/// Errors name `jwks` or the key at fault (`jwks.keys[N]`).
pub fn from_jwks(jwks: &serde_json::Value, allowed: &[Algorithm]) -> Result<Vec<Key>, ConfigError> {
    let parsed;
    let jwks = match jwks {
        serde_json::Value::String(text) => {
            parsed = serde_json::from_str::<serde_json::Value>(text)
                .map_err(|e| ConfigError::at("jwks", format!("not valid JSON: {e}")))?;
            &parsed
        }
        other => other,
    };
    match jwk_set(jwks, allowed) {
        Ok(keys) => Ok(keys.into_iter().map(|(key, _)| key).collect()),
        Err(SetError {
            key: Some(i),
            message,
        }) => Err(ConfigError::at(format!("jwks.keys[{i}]"), message)),
        Err(SetError { key: None, message }) => Err(ConfigError::at("jwks", message)),
    }
}

/// Why a JWK set was refused: what is wrong, and the index of the key at fault when one is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetError {
    pub key: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.key {
            Some(i) => write!(f, "keys[{i}]: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The usable keys of a JWK set, each with the JWK it was made from.
///
/// Keys meant for something else (`use` other than `sig`, `key_ops` without `verify`), of a
/// type or curve the plugin does not verify, or whose `alg` is not allowed, are skipped: a
/// published JWKS often carries such keys. Broken key material is an error, and so is a set
/// with no usable key.
pub fn jwk_set<'a>(
    jwks: &'a serde_json::Value,
    allowed: &[Algorithm],
) -> Result<Vec<(Key, &'a serde_json::Value)>, SetError> {
    let Some(list) = jwks.get("keys").and_then(|k| k.as_array()) else {
        return Err(SetError {
            key: None,
            message: "must be a JWK set: an object (or JSON text of one) with a `keys` array"
                .into(),
        });
    };
    let mut keys = Vec::new();
    for (i, value) in list.iter().enumerate() {
        let at = |message: String| SetError {
            key: Some(i),
            message,
        };
        let jwk: Jwk =
            serde_json::from_value(value.clone()).map_err(|e| at(format!("not a JWK: {e}")))?;
        if let Some(key) = from_jwk(&jwk, value, allowed).map_err(at)? {
            keys.push((key, value));
        }
    }
    if keys.is_empty() {
        return Err(SetError {
            key: None,
            message: "has no signing key usable with `algorithms`".into(),
        });
    }
    Ok(keys)
}

fn from_jwk(
    jwk: &Jwk,
    raw: &serde_json::Value,
    allowed: &[Algorithm],
) -> Result<Option<Key>, String> {
    let common = &jwk.common;
    if matches!(&common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Ok(None);
    }
    if matches!(&common.key_operations, Some(ops) if !ops.contains(&KeyOperations::Verify)) {
        return Ok(None);
    }
    let (key, candidates): (DecodingKey, &[Algorithm]) = match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            let key = DecodingKey::from_rsa_components(&params.n, &params.e)
                .map_err(|e| format!("bad `n` or `e`: {e}"))?;
            if let DecodingKeyKind::RsaModulusExponent { n, e } = key.kind() {
                let public =
                    RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
                        .map_err(|e| format!("not an RSA public key: {e}"))?;
                check_rsa_size(&public)?;
            }
            (key, AlgorithmFamily::Rsa.algorithms())
        }
        AlgorithmParameters::EllipticCurve(params) => {
            let candidates: &[Algorithm] = match params.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return Ok(None),
            };
            let key = DecodingKey::from_ec_components(&params.x, &params.y)
                .map_err(|e| format!("bad `x` or `y`: {e}"))?;
            (key, candidates)
        }
        AlgorithmParameters::OctetKeyPair(params) => {
            if params.curve != EllipticCurve::Ed25519 {
                return Ok(None);
            }
            let key =
                DecodingKey::from_ed_components(&params.x).map_err(|e| format!("bad `x`: {e}"))?;
            // The verifier slices the first 32 bytes; a shorter key must not reach it.
            if key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0) != 32 {
                return Err("`x` is not a 32-byte Ed25519 public key".into());
            }
            (key, &[Algorithm::EdDSA])
        }
        AlgorithmParameters::OctetKey(_) => {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad `k`: {e}"))?;
            if key.try_get_as_bytes().map(<[u8]>::is_empty).unwrap_or(true) {
                return Err("`k` is empty".into());
            }
            (key, AlgorithmFamily::Hmac.algorithms())
        }
        _ => {
            // A known key type that did not parse is broken, not foreign.
            let kty = raw.get("kty").and_then(|k| k.as_str()).unwrap_or_default();
            let crv = raw.get("crv").and_then(|c| c.as_str()).unwrap_or_default();
            let supported = match kty {
                "RSA" | "oct" => true,
                "EC" => matches!(crv, "P-256" | "P-384"),
                "OKP" => crv == "Ed25519",
                _ => false,
            };
            if supported {
                return Err(format!("a `{kty}` key with missing or malformed members"));
            }
            return Ok(None);
        }
    };
    // A key that names its algorithm is used for that one only (RFC 7517 `alg`).
    let restricted;
    let candidates = match &common.key_algorithm {
        None => candidates,
        Some(key_alg) => match Algorithm::try_from(*key_alg) {
            Ok(alg) if candidates.contains(&alg) => {
                restricted = [alg];
                &restricted[..]
            }
            Ok(alg) => {
                return Err(format!(
                    "`alg` {} does not fit a key of this type (expected one of {})",
                    alg_name(alg),
                    family_names(key.family())
                ));
            }
            Err(_) => return Ok(None),
        },
    };
    let verifiers = verifiers(&key, candidates, allowed)?;
    if verifiers.is_empty() {
        return Ok(None);
    }
    Ok(Some(Key {
        kid: common.key_id.clone(),
        verifiers,
    }))
}
