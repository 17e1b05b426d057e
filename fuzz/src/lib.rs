//! What the fuzz targets share: the JSON a SOAP round trip is expected to give back.

use transform::fuzzing::{Json, MAX_DEPTH, Object};

/// The operation the targets' envelopes call.
pub const OPERATION: &str = "GetUser";
/// Its namespace.
pub const NAMESPACE: &str = "urn:example:users";

/// Elements above the operation's members: Envelope, Body and the operation.
const ENVELOPE_LEVELS: usize = 3;

/// What reading back the envelope written for `params` gives, with text read as text
/// (`TextOptions::default()`): a null, an empty array and a null in an array write nothing;
/// an array of one writes one element; a scalar comes back as its text; an object without
/// members comes back as "". `None` when the envelope nests deeper than a response may.
pub fn read_back(params: &Object) -> Option<Json> {
    if depth(params) + ENVELOPE_LEVELS > MAX_DEPTH {
        return None;
    }
    Some(match members(params) {
        m if m.is_empty() => {
            Json::Object(vec![(OPERATION.to_owned(), Json::String(String::new()))])
        }
        m => Json::Object(m),
    })
}

fn members(object: &Object) -> Object {
    object
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), value(v)?)))
        .collect()
}

fn value(v: &Json) -> Option<Json> {
    match v {
        Json::Null => None,
        Json::Bool(b) => Some(Json::String(b.to_string())),
        Json::Number(n) => Some(Json::String(n.to_string())),
        Json::String(s) => Some(Json::String(s.clone())),
        Json::Object(m) => Some(match members(m) {
            m if m.is_empty() => Json::String(String::new()),
            m => Json::Object(m),
        }),
        Json::Array(items) => {
            let mut items: Vec<Json> = items.iter().filter_map(value).collect();
            match items.len() {
                0 => None,
                1 => items.pop(),
                _ => Some(Json::Array(items)),
            }
        }
    }
}

/// How many elements deep the members of `object` nest (1 for scalars only).
fn depth(object: &Object) -> usize {
    fn of(v: &Json) -> usize {
        match v {
            Json::Object(m) => 1 + depth(m),
            Json::Array(items) => items.iter().map(of).max().unwrap_or(1),
            _ => 1,
        }
    }
    object.iter().map(|(_, v)| of(v)).max().unwrap_or(0)
}
