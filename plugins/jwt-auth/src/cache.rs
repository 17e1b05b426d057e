//! Verified tokens, keyed by the SHA-256 of the token, so a repeated token costs a hash and a
//! map lookup instead of a signature check.
//!
//! Bounded with two generations: new entries go to the current one; when it is full it becomes
//! the previous one and the old previous one is dropped whole. A hit in the previous generation
//! moves the entry back to the current one, so tokens in use survive and the rest age out,
//! with O(1) work per request and no per-entry bookkeeping.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use sha2::{Digest, Sha256};

/// SHA-256 of a token. The digest is already uniform, so its first 8 bytes are its hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }
}

impl Hash for TokenHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(prefix));
    }
}

#[derive(Default)]
pub struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
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

type Map<V> = HashMap<TokenHash, Entry<V>, BuildHasherDefault<PrefixHasher>>;

struct Entry<V> {
    /// Wall-clock milliseconds from which the entry is no longer valid.
    expires_at: i64,
    value: V,
}

pub struct Cache<V> {
    generation_size: usize,
    current: Map<V>,
    previous: Map<V>,
}

impl<V> Cache<V> {
    /// A cache of at most `size` entries (rounded up to an even number); 0 keeps nothing.
    pub fn new(size: usize) -> Self {
        Self {
            generation_size: size.div_ceil(2),
            current: Map::default(),
            previous: Map::default(),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// The value for `key`, unless it has expired at `now`.
    pub fn get(&mut self, key: &TokenHash, now: i64) -> Option<&V> {
        if self.generation_size == 0 {
            return None;
        }
        if self.current.get(key).is_some_and(|e| e.expires_at <= now) {
            self.current.remove(key);
            return None;
        }
        if !self.current.contains_key(key) {
            let entry = self.previous.remove(key)?;
            if entry.expires_at <= now {
                return None;
            }
            self.insert_entry(*key, entry);
        }
        self.current.get(key).map(|e| &e.value)
    }

    /// Keeps `value` for `key` until `expires_at` (wall-clock milliseconds).
    pub fn insert(&mut self, key: TokenHash, value: V, expires_at: i64) {
        if self.generation_size == 0 {
            return;
        }
        self.previous.remove(&key);
        self.insert_entry(key, Entry { expires_at, value });
    }

    fn insert_entry(&mut self, key: TokenHash, entry: Entry<V>) {
        if self.current.len() >= self.generation_size && !self.current.contains_key(&key) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> TokenHash {
        TokenHash::of(&format!("token-{i}"))
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
}
