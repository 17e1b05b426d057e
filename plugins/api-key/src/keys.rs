//! The configured keys: read from the config (a list) or from a key file's text (JSON or
//! TOML, through `config_files`), checked and turned into a [`KeyStore`] once, at init.
//!
//! ## How a presented key is found, and what the timing shows
//!
//! Only SHA-256 digests of keys are kept. A presented key is hashed with SHA-256; the digest is
//! hashed again with SipHash under a random key drawn per instance, and that 64-bit value is
//! looked up by binary search in a sorted index; each key in its slot (one, barring a 2^-64
//! chance) is then compared with the digest in constant time (`subtle`).
//!
//! What a request's timing could reveal is therefore bounded. The SHA-256 runs in time that
//! depends on the key's length only. The search compares SipHash values whose key an attacker
//! does not know, so where it ends says nothing about the stored digests that an attacker could
//! relate to what they sent. The final comparison takes the same time whether the digests
//! differ in their first byte or their last. Nothing is ever compared with a key itself, and
//! the digests are not exposed to a byte-by-byte guess, which would help an offline search for
//! a weak key.
//!
//! A lookup is a SHA-256 of at most `max_key_bytes`, a SipHash, about log2(keys) comparisons
//! of `u64`s and one 32-byte constant-time comparison; nothing is parsed per request.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use toml::value::{Datetime, Offset};
use wasmgate_sdk::ConfigError;

/// The most keys one config (or key file) may hold.
pub const MAX_KEYS: usize = 10_000;
/// The longest `consumer`.
pub const MAX_CONSUMER_BYTES: usize = 256;
/// The most scopes one key may hold, and the most a route may require.
pub const MAX_SCOPES: usize = 64;
/// The longest scope.
pub const MAX_SCOPE_BYTES: usize = 128;

/// The `scopes` var (the scopes, space-separated) always fits in one var.
const _: () = assert!(
    MAX_SCOPES * (MAX_SCOPE_BYTES + 1) + "scopes".len() <= wasmgate_sdk::rules::http::MAX_VAR_BYTES
);
const _: () =
    assert!(MAX_CONSUMER_BYTES + "consumer".len() <= wasmgate_sdk::rules::http::MAX_VAR_BYTES);

type Sha256Digest = [u8; 32];

/// One entry of `keys`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    consumer: String,
    #[serde(default)]
    key_sha256: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    expires: Option<Value>,
    #[serde(default)]
    scopes: Vec<String>,
}

/// A key, ready for requests.
#[derive(Debug)]
pub struct Key {
    digest: Sha256Digest,
    /// The `consumer` var.
    pub consumer: String,
    /// The `scopes` var: the key's scopes, space-separated, in config order.
    pub scopes: String,
    /// When the key stops working, in milliseconds since the Unix epoch.
    pub expires_ms: Option<i64>,
    /// Whether the key holds every scope the route requires (known at load).
    pub granted: bool,
}

/// The keys and the index they are found by (see the module docs).
pub struct KeyStore {
    keys: Vec<Key>,
    /// `(SipHash of the digest, index into keys)`, sorted.
    index: Vec<(u64, usize)>,
    hasher: RandomState,
}

impl KeyStore {
    fn new(keys: Vec<Key>) -> Self {
        let hasher = RandomState::new();
        let mut index: Vec<(u64, usize)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (hasher.hash_one(k.digest), i))
            .collect();
        index.sort_unstable();
        Self {
            keys,
            index,
            hasher,
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key a client presented, if it is one of ours.
    pub fn find(&self, presented: &str) -> Option<&Key> {
        let digest: Sha256Digest = Sha256::digest(presented.as_bytes()).into();
        let slot = self.hasher.hash_one(digest);
        let start = self.index.partition_point(|&(h, _)| h < slot);
        self.index[start..]
            .iter()
            .take_while(|&&(h, _)| h == slot)
            .map(|&(_, i)| &self.keys[i])
            .find(|k| bool::from(k.digest.ct_eq(&digest)))
    }
}

/// The keys of a config, and what is worth a warning about them.
pub struct Loaded {
    pub store: KeyStore,
    /// Entries given as a plain `key`.
    pub plain: Vec<usize>,
    /// Entries already expired at load.
    pub expired: Vec<usize>,
}

/// Reads `keys`: a list of entries, or the text of a key file (what `config_files` puts
/// there). `now_ms` is only for the warning about keys already expired.
pub fn load(
    keys: Option<Value>,
    required_scopes: &[String],
    max_key_bytes: usize,
    now_ms: i64,
) -> Result<Loaded, ConfigError> {
    let entries = match keys {
        None => {
            return Err(ConfigError::at(
                "keys",
                "required: a list of keys, or a key file given with `config_files = { keys = \"PATH\" }`",
            ));
        }
        Some(Value::Array(entries)) => entries,
        Some(Value::String(text)) => {
            entries_of_file(&text).map_err(|e| ConfigError::at("keys", e))?
        }
        Some(_) => {
            return Err(ConfigError::at(
                "keys",
                "must be a list of keys, or the text of a JSON or TOML key file",
            ));
        }
    };
    if entries.len() > MAX_KEYS {
        return Err(ConfigError::at(
            "keys",
            format!("{} keys, more than the {MAX_KEYS} allowed", entries.len()),
        ));
    }
    let mut keys = Vec::with_capacity(entries.len());
    let mut seen: HashMap<Sha256Digest, usize> = HashMap::with_capacity(entries.len());
    let (mut plain, mut expired) = (Vec::new(), Vec::new());
    for (i, value) in entries.into_iter().enumerate() {
        let at = |field: &str| format!("keys[{i}].{field}");
        let entry: Entry = serde_path_to_error::deserialize(value).map_err(|err| {
            let key = if err.path().iter().next().is_some() {
                format!("keys[{i}].{}", err.path())
            } else {
                format!("keys[{i}]")
            };
            ConfigError::at(key, err.inner().to_string())
        })?;
        check_consumer(&entry.consumer).map_err(|e| ConfigError::at(at("consumer"), e))?;
        let digest = match (entry.key_sha256, entry.key) {
            (Some(hex), None) => {
                parse_sha256(&hex).map_err(|e| ConfigError::at(at("key_sha256"), e))?
            }
            (None, Some(key)) => {
                check_plain_key(&key, max_key_bytes).map_err(|e| ConfigError::at(at("key"), e))?;
                plain.push(i);
                Sha256::digest(key.as_bytes()).into()
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::at(
                    format!("keys[{i}]"),
                    "give `key_sha256` or `key`, not both",
                ));
            }
            (None, None) => {
                return Err(ConfigError::at(
                    format!("keys[{i}]"),
                    "needs `key_sha256` (the SHA-256 of the key, in hex), or `key` for development",
                ));
            }
        };
        if let Some(first) = seen.insert(digest, i) {
            return Err(ConfigError::at(
                format!("keys[{i}]"),
                format!("the same key as keys[{first}]"),
            ));
        }
        let expires_ms = entry
            .expires
            .map(expires_ms)
            .transpose()
            .map_err(|e| ConfigError::at(at("expires"), e))?;
        if expires_ms.is_some_and(|e| e <= now_ms) {
            expired.push(i);
        }
        let scopes = scopes(&at("scopes"), entry.scopes)?;
        let granted = required_scopes.iter().all(|r| scopes.contains(r));
        keys.push(Key {
            digest,
            consumer: entry.consumer,
            scopes: scopes.join(" "),
            expires_ms,
            granted,
        });
    }
    Ok(Loaded {
        store: KeyStore::new(keys),
        plain,
        expired,
    })
}

/// A key file's entries. JSON (a list, or an object with a `keys` list) is tried first, then
/// TOML (a `keys` list: `[[keys]]` tables, or `keys = [...]`).
fn entries_of_file(text: &str) -> Result<Vec<Value>, String> {
    let json_err = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(entries)) => return Ok(entries),
        Ok(Value::Object(mut top)) => {
            return match (top.remove("keys"), top.keys().next()) {
                (Some(Value::Array(entries)), None) => Ok(entries),
                (_, Some(other)) => Err(format!(
                    "the JSON key file has a key `{other}`: expected a list of keys, or an object with only `keys`"
                )),
                _ => {
                    Err("a JSON key file is a list of keys, or an object with a `keys` list".into())
                }
            };
        }
        Ok(_) => {
            return Err(
                "a JSON key file is a list of keys, or an object with a `keys` list".into(),
            );
        }
        Err(e) => e,
    };
    let mut top: toml::Table = match toml::from_str(text) {
        Ok(top) => top,
        Err(toml_err) => {
            return Err(format!(
                "the key file is neither JSON ({json_err}) nor TOML ({})",
                toml_error(text, &toml_err)
            ));
        }
    };
    match (top.remove("keys"), top.keys().next()) {
        (Some(toml::Value::Array(entries)), None) => entries
            .into_iter()
            .map(|e| serde_json::to_value(e).map_err(|e| format!("the TOML key file: {e}")))
            .collect(),
        (_, Some(other)) => Err(format!(
            "the TOML key file has a key `{other}`: expected only `keys` (`[[keys]]` tables)"
        )),
        _ => Err("a TOML key file holds a `keys` list (`[[keys]]` tables)".into()),
    }
}

/// A TOML error in one line: its message and where (`line 3 column 7`).
fn toml_error(text: &str, err: &toml::de::Error) -> String {
    let message = err.message().trim();
    let Some(span) = err.span() else {
        return message.to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("{message} at line {line} column {column}")
}

fn check_consumer(consumer: &str) -> Result<(), String> {
    if consumer.is_empty() || consumer.len() > MAX_CONSUMER_BYTES {
        return Err(format!("must be 1 to {MAX_CONSUMER_BYTES} bytes"));
    }
    if consumer.chars().any(char::is_control) {
        return Err("must not hold control characters".into());
    }
    Ok(())
}

/// A plain key must be one a client can send: visible ASCII, no spaces, and no longer than a
/// presented key may be.
fn check_plain_key(key: &str, max_key_bytes: usize) -> Result<(), String> {
    if key.is_empty() || key.len() > max_key_bytes {
        return Err(format!(
            "must be 1 to {max_key_bytes} bytes (`max_key_bytes`)"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be visible ASCII characters, without spaces".into());
    }
    Ok(())
}

fn parse_sha256(hex: &str) -> Result<Sha256Digest, String> {
    let bad = || {
        "must be 64 hex digits: the SHA-256 of the key (`printf %s KEY | sha256sum`)".to_string()
    };
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
        if !pair.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
    }
    Ok(digest)
}

/// Checks scopes (`at` names them: `required_scopes`, `keys[2].scopes`) and drops repeats.
pub fn scopes(at: &str, list: Vec<String>) -> Result<Vec<String>, ConfigError> {
    if list.len() > MAX_SCOPES {
        return Err(ConfigError::at(at, format!("at most {MAX_SCOPES} scopes")));
    }
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for (i, scope) in list.into_iter().enumerate() {
        let fine = !scope.is_empty()
            && scope.len() <= MAX_SCOPE_BYTES
            && scope.bytes().all(|b| b.is_ascii_graphic());
        if !fine {
            return Err(ConfigError::at(
                format!("{at}[{i}]"),
                format!(
                    "a scope is 1 to {MAX_SCOPE_BYTES} visible ASCII characters, without spaces"
                ),
            ));
        }
        if !out.contains(&scope) {
            out.push(scope);
        }
    }
    Ok(out)
}

/// `expires`: an RFC 3339 date-time with a UTC offset, as a string or a TOML date-time, in
/// milliseconds since the Unix epoch.
fn expires_ms(value: Value) -> Result<i64, String> {
    const EXAMPLE: &str = "as \"2027-06-30T00:00:00Z\"";
    let datetime: Datetime = match value {
        Value::String(text) => text
            .parse()
            .map_err(|e| format!("`{text}` is not an RFC 3339 date-time ({e}), {EXAMPLE}"))?,
        other => Datetime::deserialize(other)
            .map_err(|_| format!("must be an RFC 3339 date-time, {EXAMPLE}"))?,
    };
    let (Some(date), Some(time), Some(offset)) = (datetime.date, datetime.time, datetime.offset)
    else {
        return Err(format!(
            "`{datetime}` needs a date, a time and a UTC offset (`Z` or `+02:00`), {EXAMPLE}"
        ));
    };
    let days = days_from_civil(i64::from(date.year), date.month, date.day);
    let seconds = days * 86_400
        + i64::from(time.hour) * 3_600
        + i64::from(time.minute) * 60
        + i64::from(time.second.unwrap_or(0));
    let offset_seconds = match offset {
        Offset::Z => 0,
        Offset::Custom { minutes } => i64::from(minutes) * 60,
    };
    let millis = i64::from(time.nanosecond.unwrap_or(0) / 1_000_000);
    Ok((seconds - offset_seconds) * 1_000 + millis)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`). The parser has already checked the month and day.
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (i64::from(month) + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_count_days_from_the_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        assert_eq!(days_from_civil(2027, 6, 30), 20_999);
    }

    #[test]
    fn expires_is_rfc_3339_with_an_offset() {
        // `date -u -d 2027-06-30T00:00:00Z +%s` = 1814313600.
        let at = 1_814_313_600_000;
        assert_eq!(expires_ms(json!("2027-06-30T00:00:00Z")), Ok(at));
        assert_eq!(expires_ms(json!("2027-06-30t00:00:00z")), Ok(at));
        assert_eq!(expires_ms(json!("2027-06-30 00:00:00Z")), Ok(at));
        assert_eq!(expires_ms(json!("2027-06-30T02:00:00+02:00")), Ok(at));
        assert_eq!(expires_ms(json!("2027-06-29T22:30:00-01:30")), Ok(at));
        assert_eq!(expires_ms(json!("2027-06-30T00:00:00.250Z")), Ok(at + 250));
        assert_eq!(expires_ms(json!("1970-01-01T00:00:00Z")), Ok(0));
        for bad in [
            json!("2027-06-30"),
            json!("2027-06-30T00:00:00"),
            json!("00:00:00"),
            json!("2027-02-30T00:00:00Z"),
            json!("2027-06-30T24:00:00Z"),
            json!("tomorrow"),
            json!(1_814_313_600),
            json!({ "date": "2027-06-30" }),
        ] {
            assert!(expires_ms(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_are_64_hex_digits() {
        let digest = parse_sha256(&"aB".repeat(32)).unwrap();
        assert_eq!(digest, [0xab; 32]);
        for bad in [
            "ab".repeat(31),
            "ab".repeat(33),
            "zz".repeat(32),
            "é".repeat(32),
        ] {
            assert!(parse_sha256(&bad).is_err(), "{bad}");
        }
    }
}
