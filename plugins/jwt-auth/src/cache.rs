//! Verified tokens, found by a randomly keyed 64-bit hash of the token (std's SipHash) and
//! then compared with the token kept in the entry, so a repeated token costs a short hash, a
//! map lookup and one comparison instead of a signature check, and two tokens never share an
//! outcome: a token whose hash matches another's is a miss, and replaces it when verified.
//!
//! Bounded with two generations: new entries go to the current one; when it is full it becomes
//! the previous one and the old previous one is dropped whole. A hit in the previous generation
//! moves the entry back to the current one, so tokens in use survive and the rest age out,
//! with O(1) work per request and no per-entry bookkeeping.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};

struct Entry<V> {
    token: Box<str>,
    /// Wall-clock milliseconds from which the entry is no longer valid.
    expires_at: i64,
    value: V,
}

/// The maps' keys are already SipHash outputs: they are their own hash.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<V> = HashMap<u64, Entry<V>, BuildHasherDefault<KeyIsHash>>;

pub struct Cache<V> {
    generation_size: usize,
    /// Random keys, drawn per instance: nobody outside can aim two tokens at one entry.
    hasher: RandomState,
    current: Map<V>,
    previous: Map<V>,
}

impl<V> Cache<V> {
    /// A cache of at most `size` entries (rounded up to an even number); 0 keeps nothing.
    pub fn new(size: usize) -> Self {
        Self {
            generation_size: size.div_ceil(2),
            hasher: RandomState::new(),
            current: Map::default(),
            previous: Map::default(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// The value for `token`, unless it has expired at `now`.
    pub fn get(&mut self, token: &str, now: i64) -> Option<&V> {
        if self.generation_size == 0 {
            return None;
        }
        let key = self.hasher.hash_one(token);
        let live = |e: &Entry<V>| e.expires_at > now && same(&e.token, token);
        let found = self.current.get(&key);
        if !found.is_some_and(live) {
            if found.is_some_and(|e| e.expires_at <= now) {
                self.current.remove(&key);
            }
            let entry = self.previous.remove(&key).filter(live)?;
            self.insert_entry(key, entry);
        }
        self.current.get(&key).map(|e| &e.value)
    }

    /// Keeps `value` for `token` until `expires_at` (wall-clock milliseconds).
    pub fn insert(&mut self, token: String, value: V, expires_at: i64) {
        if self.generation_size == 0 {
            return;
        }
        let key = self.hasher.hash_one(token.as_str());
        self.previous.remove(&key);
        let token = token.into_boxed_str();
        self.insert_entry(
            key,
            Entry {
                token,
                expires_at,
                value,
            },
        );
    }

    /// Drops every entry (when a key that may have verified them is gone).
    pub fn clear(&mut self) {
        self.current.clear();
        self.previous.clear();
    }

    fn insert_entry(&mut self, key: u64, entry: Entry<V>) {
        if self.current.len() >= self.generation_size && !self.current.contains_key(&key) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, entry);
    }
}

/// Whether two tokens are the same, eight bytes at a step (the component's `memcmp` takes one
/// byte at a time, and a token is a few hundred).
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let ((words_a, rest_a), (words_b, rest_b)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    words_a
        .iter()
        .zip(words_b)
        .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && rest_a == rest_b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> String {
        format!("token-{i}")
    }

    #[test]
    fn expires_at_the_deadline() {
        let mut c = Cache::new(10);
        c.insert(key(1), "a", 1_000);
        assert_eq!(c.get(&key(1), 999), Some(&"a"));
        assert_eq!(c.get(&key(1), 1_000), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn stays_bounded_and_keeps_what_is_used() {
        let mut c = Cache::new(100);
        for i in 0..10_000 {
            c.insert(key(i), i, i64::MAX);
            // Token 0 is in constant use and must never be evicted.
            assert_eq!(c.get(&key(0), 0), Some(&0));
            assert!(c.len() <= 100, "{}", c.len());
        }
        assert_eq!(c.get(&key(9_999), 0), Some(&9_999));
        assert_eq!(c.get(&key(1), 0), None);
    }

    #[test]
    fn size_zero_keeps_nothing() {
        let mut c = Cache::new(0);
        c.insert(key(1), 1, i64::MAX);
        assert_eq!(c.get(&key(1), 0), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn an_expired_entry_in_the_previous_generation_is_dropped() {
        let mut c = Cache::new(2);
        c.insert(key(1), 1, 50);
        c.insert(key(2), 2, i64::MAX); // rotates: key 1 is now in the previous generation
        assert_eq!(c.get(&key(1), 50), None);
        assert_eq!(c.get(&key(1), 0), None);
        assert_eq!(c.get(&key(2), 0), Some(&2));
    }

    #[test]
    fn a_token_is_found_only_by_itself() {
        let mut c = Cache::new(10);
        let token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.sig-0123456789";
        c.insert(token.to_owned(), 1, i64::MAX);
        assert_eq!(c.get(token, 0), Some(&1));
        let mut other = token.to_owned();
        other.pop();
        other.push('8');
        assert_eq!(c.get(&other, 0), None);
        assert_eq!(c.get(&token[1..], 0), None);
        assert_eq!(c.get("", 0), None);
    }

    #[test]
    fn same_compares_every_byte() {
        for len in 0..40 {
            let a: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            assert!(same(&a, &a.clone()));
            for at in 0..len {
                let mut b = a.clone().into_bytes();
                b[at] = b'Z';
                assert!(!same(&a, std::str::from_utf8(&b).unwrap()), "{len} {at}");
            }
            assert!(!same(&a, &format!("{a}x")));
        }
    }
}
