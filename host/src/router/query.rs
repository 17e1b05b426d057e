//! The query parameters routes match on, read from a request at most once, and only when a
//! route whose other matchers hold has a `query` matcher.
//!
//! Names and values are compared percent-decoded, `+` as a space, as a server reading the
//! form (`application/x-www-form-urlencoded`) would; the bytes are compared as they decode,
//! so a value that is not UTF-8 still matches exactly or not at all. A parameter sent more
//! than once matches by its first value. Only the names some route asks for are kept, each
//! once, so a long query costs one pass over its bytes.

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::fast::RandomState;
use percent_encoding::percent_decode;

/// The decoded names any route matches, each with its slot.
#[derive(Debug, Default)]
pub(super) struct Names(HashMap<Box<[u8]>, usize, RandomState>);

impl Names {
    /// The slot of `name`, added when new.
    pub(super) fn slot(&mut self, name: &str) -> usize {
        let next = self.0.len();
        *self.0.entry(name.as_bytes().into()).or_insert(next)
    }
}

/// One request's values for [`Names`], parsed when first asked for.
pub(super) struct Values<'a> {
    names: &'a Names,
    query: Option<&'a str>,
    parsed: Option<Vec<Option<Cow<'a, [u8]>>>>,
}

impl<'a> Values<'a> {
    pub(super) fn new(names: &'a Names, query: Option<&'a str>) -> Self {
        Self {
            names,
            query,
            parsed: None,
        }
    }

    /// The first value of the parameter in `slot`, decoded; `None` when the request has none.
    pub(super) fn get(&mut self, slot: usize) -> Option<&[u8]> {
        let (names, query) = (self.names, self.query);
        let parsed = self.parsed.get_or_insert_with(|| parse(names, query));
        parsed.get(slot)?.as_deref()
    }
}

fn parse<'a>(names: &Names, query: Option<&'a str>) -> Vec<Option<Cow<'a, [u8]>>> {
    let mut slots = vec![None; names.0.len()];
    let mut left = slots.len();
    for pair in query.unwrap_or_default().split('&') {
        if left == 0 {
            break;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let Some(&slot) = names.0.get(&*decode(name))
            && slots[slot].is_none()
        {
            slots[slot] = Some(decode(value));
            left -= 1;
        }
    }
    slots
}

/// Percent-decoded, `+` as a space; borrowed when there is nothing to decode.
fn decode(s: &str) -> Cow<'_, [u8]> {
    if !s.contains('+') {
        return percent_decode(s.as_bytes()).into();
    }
    let spaced: Vec<u8> = s
        .bytes()
        .map(|b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(percent_decode(&spaced).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ns: &[&str]) -> Names {
        let mut n = Names::default();
        for name in ns {
            n.slot(name);
        }
        n
    }

    #[test]
    fn values_are_decoded_and_the_first_one_counts() {
        let n = names(&["version", "a b", "é"]);
        let mut v = Values::new(&n, Some("x=1&version=2&version=3&a+b=c%20d&%C3%A9=%FF"));
        assert_eq!(v.get(0), Some(&b"2"[..]));
        assert_eq!(v.get(1), Some(&b"c d"[..]));
        assert_eq!(v.get(2), Some(&b"\xff"[..]));
        let mut v = Values::new(&n, Some("versio=2&version&&=x"));
        assert_eq!(
            v.get(0),
            Some(&b""[..]),
            "a name alone is present and empty"
        );
        assert_eq!(v.get(1), None);
        let mut v = Values::new(&n, None);
        assert_eq!(v.get(0), None);
        // A bad escape stays as it is.
        let mut v = Values::new(&n, Some("version=%zz%"));
        assert_eq!(v.get(0), Some(&b"%zz%"[..]));
    }

    #[test]
    fn parsing_stops_once_every_name_has_its_value() {
        let n = names(&["v"]);
        let long = format!("v=1&{}", "x=y&".repeat(100_000));
        let mut v = Values::new(&n, Some(&long));
        assert_eq!(v.get(0), Some(&b"1"[..]));
    }
}
