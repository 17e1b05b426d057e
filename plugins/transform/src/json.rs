//! A JSON value that keeps object keys in document order, and the dotted-path operations on it.
//!
//! `serde_json::Value` sorts object keys (the workspace builds serde_json without
//! `preserve_order`), which would reorder a client's fields and, worse, reorder SOAP elements that
//! a schema's `xs:sequence` wants in order. Duplicate keys are refused: with two values for one
//! key, a gateway and a service could each act on a different one.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;

/// An object: its members in document order, keys unique.
pub type Object = Vec<(String, Json)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    Array(Vec<Json>),
    Object(Object),
}

impl Json {
    pub fn parse(text: &[u8]) -> Result<Json, serde_json::Error> {
        serde_json::from_slice(text)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        // Serializing this type cannot fail: keys are strings and numbers are finite.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_value(value: serde_json::Value) -> Json {
        match value {
            serde_json::Value::Null => Json::Null,
            serde_json::Value::Bool(b) => Json::Bool(b),
            serde_json::Value::Number(n) => Json::Number(n),
            serde_json::Value::String(s) => Json::String(s),
            serde_json::Value::Array(items) => {
                Json::Array(items.into_iter().map(Json::from_value).collect())
            }
            serde_json::Value::Object(map) => Json::Object(
                map.into_iter()
                    .map(|(k, v)| (k, Json::from_value(v)))
                    .collect(),
            ),
        }
    }

    /// A member of an object (`None` for other values).
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }
}

/// A dotted path (`user.address.city`), split once when the config is read. Paths go through
/// objects only; a key that holds a dot cannot be named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(Vec<String>);

impl Path {
    pub fn parse(text: &str) -> Result<Path, String> {
        if text.is_empty() {
            return Err("the path is empty".into());
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("`{text}` has an empty segment"));
        }
        Ok(Path(segments))
    }

    /// Whether `self` is `other` or one of its ancestors.
    pub fn covers(&self, other: &Path) -> bool {
        other.0.starts_with(&self.0)
    }

    /// Whether both paths name a member of the same object.
    pub fn same_parent(&self, other: &Path) -> bool {
        self.0.len() == other.0.len() && self.0[..self.0.len() - 1] == other.0[..other.0.len() - 1]
    }

    /// The object holding the member this path names, and the member's key.
    fn parent_mut<'a>(&'a self, root: &'a mut Json) -> Option<(&'a mut Object, &'a String)> {
        let (last, parents) = self.0.split_last()?;
        let mut current = root;
        for segment in parents {
            current = match current {
                Json::Object(members) => members
                    .iter_mut()
                    .find(|(k, _)| k == segment)
                    .map(|(_, v)| v)?,
                _ => return None,
            };
        }
        match current {
            Json::Object(members) => Some((members, last)),
            _ => None,
        }
    }

    /// Removes the value at this path and returns it.
    pub fn take(&self, root: &mut Json) -> Option<Json> {
        let (members, last) = self.parent_mut(root)?;
        let at = members.iter().position(|(k, _)| k == last)?;
        Some(members.remove(at).1)
    }

    /// Renames the member this path names to `to`, a path with the same parent, keeping its
    /// place among its siblings (a SOAP schema's `xs:sequence` cares). A member already called
    /// `to` is replaced. Returns whether the member was there.
    pub fn rename_in_place(&self, root: &mut Json, to: &Path) -> bool {
        let Some(new_key) = to.0.last() else {
            return false;
        };
        let Some((members, last)) = self.parent_mut(root) else {
            return false;
        };
        let Some(mut at) = members.iter().position(|(k, _)| k == last) else {
            return false;
        };
        if let Some(existing) = members.iter().position(|(k, _)| k == new_key) {
            members.remove(existing);
            if existing < at {
                at -= 1;
            }
        }
        members[at].0.clone_from(new_key);
        true
    }

    /// Sets the value at this path, replacing what was there and creating missing objects on
    /// the way. When a value on the way is not an object, nothing changes and the value comes
    /// back.
    pub fn put(&self, root: &mut Json, value: Json) -> Result<(), Json> {
        let Some((last, parents)) = self.0.split_last() else {
            return Err(value);
        };
        let mut current = root;
        for segment in parents {
            current = match current {
                Json::Object(members) => {
                    let at = match members.iter().position(|(k, _)| k == segment) {
                        Some(at) => at,
                        None => {
                            members.push((segment.clone(), Json::Object(Vec::new())));
                            members.len() - 1
                        }
                    };
                    &mut members[at].1
                }
                _ => return Err(value),
            };
        }
        match current {
            Json::Object(members) => {
                match members.iter_mut().find(|(k, _)| k == last) {
                    Some((_, slot)) => *slot = value,
                    None => members.push((last.clone(), value)),
                }
                Ok(())
            }
            _ => Err(value),
        }
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => serializer.serialize_unit(),
            Json::Bool(b) => serializer.serialize_bool(*b),
            Json::Number(n) => n.serialize(serializer),
            Json::String(s) => serializer.serialize_str(s),
            Json::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(members) => {
                let mut map = serializer.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Objects up to this size are checked for duplicate keys by scanning; larger ones through a
/// sorted set, so a hostile object with many keys costs `n log n`, not `n²`.
const SCAN_LIMIT: usize = 16;

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
        Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("a number JSON cannot carry"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Object = Vec::new();
        let mut seen: Option<BTreeSet<String>> = None;
        while let Some(key) = map.next_key::<String>()? {
            let duplicate = match &mut seen {
                Some(set) => !set.insert(key.clone()),
                None => {
                    let duplicate = members.iter().any(|(k, _)| *k == key);
                    if members.len() >= SCAN_LIMIT {
                        let mut set: BTreeSet<String> =
                            members.iter().map(|(k, _)| k.clone()).collect();
                        set.insert(key.clone());
                        seen = Some(set);
                    }
                    duplicate
                }
            };
            if duplicate {
                return Err(de::Error::custom(format!(
                    "duplicate key `{}`",
                    crate::shorten(&key)
                )));
            }
            let value = map.next_value()?;
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Json {
        Json::parse(text.as_bytes()).unwrap()
    }

    fn path(text: &str) -> Path {
        Path::parse(text).unwrap()
    }

    #[test]
    fn keeps_key_order_both_ways() {
        let text = r#"{"z":1,"a":{"y":[true,null,"s"],"b":2.5},"m":-3}"#;
        assert_eq!(String::from_utf8(parse(text).to_vec()).unwrap(), text);
    }

    #[test]
    fn refuses_duplicate_keys_small_and_large() {
        assert!(Json::parse(br#"{"a":1,"a":2}"#).is_err());
        assert!(Json::parse(br#"{"o":{"x":1,"y":2,"x":3}}"#).is_err());
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let ok = format!("{{{}}}", many.join(","));
        assert!(Json::parse(ok.as_bytes()).is_ok());
        let dup = format!("{{{},\"k3\":0}}", many.join(","));
        let err = Json::parse(dup.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("duplicate key `k3`"), "{err}");
    }

    #[test]
    fn refuses_what_is_not_json() {
        for bad in ["", "{", "{\"a\":}", "{} {}", "[1,]", "{'a':1}", "nul"] {
            assert!(Json::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(Json::parse(b"{\"a\":\"\xff\"}").is_err());
    }

    #[test]
    fn paths_parse_and_cover() {
        assert!(Path::parse("").is_err());
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse(".a").is_err());
        assert!(path("a").covers(&path("a.b")));
        assert!(path("a.b").covers(&path("a.b")));
        assert!(!path("a.b").covers(&path("a")));
        assert!(!path("a").covers(&path("ab")));
        assert_eq!(path("a.b.c").to_string(), "a.b.c");
    }

    #[test]
    fn take_and_put_nested() {
        let mut doc = parse(r#"{"user":{"name":"Ann","age":3},"list":[1]}"#);
        assert_eq!(
            path("user.name").take(&mut doc),
            Some(Json::String("Ann".into()))
        );
        assert_eq!(path("user.name").take(&mut doc), None);
        assert_eq!(path("list.0").take(&mut doc), None, "arrays are not walked");
        assert_eq!(path("missing.x").take(&mut doc), None);
        path("profile.full.name")
            .put(&mut doc, Json::String("Ann".into()))
            .unwrap();
        path("user.age").put(&mut doc, Json::Bool(true)).unwrap();
        assert_eq!(
            doc,
            parse(r#"{"user":{"age":true},"list":[1],"profile":{"full":{"name":"Ann"}}}"#)
        );
        // A scalar on the way: nothing changes, the value comes back.
        assert_eq!(
            path("user.age.x").put(&mut doc, Json::Null),
            Err(Json::Null)
        );
        let mut doc = parse(r#"{"a":1,"user":{"x":1,"fullName":"Ann","name":"old","z":2}}"#);
        assert!(path("user.fullName").rename_in_place(&mut doc, &path("user.name")));
        assert!(!path("user.missing").rename_in_place(&mut doc, &path("user.other")));
        assert!(path("a").rename_in_place(&mut doc, &path("b")));
        assert_eq!(
            String::from_utf8(doc.to_vec()).unwrap(),
            r#"{"b":1,"user":{"x":1,"name":"Ann","z":2}}"#
        );
        assert!(path("a.b").same_parent(&path("a.c")));
        assert!(!path("a.b").same_parent(&path("c.b")));
        assert!(!path("a").same_parent(&path("a.b")));
        let mut scalar = parse("3");
        assert_eq!(path("a").put(&mut scalar, Json::Null), Err(Json::Null));
        assert_eq!(path("a").take(&mut scalar), None);
    }
}
