//! A stored response as one kv value, in a compact binary form:
//!
//! ```text
//! body | status u16 | stored_at u64 | ttl_ms u64 | stale_ms u64 | age_s u64 | count u32 |
//!      count × (name length u32, name, value length u32, value) | meta length u32 | version u8
//! ```
//!
//! Integers are little-endian; the meta is everything between the body and the last five
//! bytes. The body comes first so that a hit reads the fixed fields from the end, and then hands
//! the value's own buffer, cut to the body's length, to the reply: the body is never copied
//! inside the plugin. A value that does not decode (another version, say) is a miss, and is
//! replaced by the next store.

use wasmgate_sdk::Reply;

/// Bumped whenever the layout changes.
const VERSION: u8 = 1;
/// Meta length and version.
const FOOTER: usize = 4 + 1;
/// Status, four times and the header count.
const FIXED: usize = 2 + 4 * 8 + 4;

/// When an entry was stored and how long it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    /// Wall-clock milliseconds.
    pub stored_at: u64,
    /// Fresh (a hit) for this long after `stored_at`.
    pub ttl_ms: u64,
    /// Then, for this long, an answer when the upstream fails.
    pub stale_ms: u64,
    /// The upstream's `Age` when it was stored, in seconds.
    pub initial_age_s: u64,
}

impl Times {
    pub fn is_fresh(&self, now: u64) -> bool {
        now.saturating_sub(self.stored_at) < self.ttl_ms
    }

    pub fn serves_on_error(&self, now: u64) -> bool {
        now.saturating_sub(self.stored_at) < self.kv_ttl_ms()
    }

    /// The `Age` to send: the upstream's at storing, plus the time since, in whole seconds.
    pub fn age_s(&self, now: u64) -> u64 {
        self.initial_age_s
            .saturating_add(now.saturating_sub(self.stored_at) / 1000)
    }

    /// How long kv keeps the entry: fresh, then stale.
    pub fn kv_ttl_ms(&self) -> u64 {
        self.ttl_ms.saturating_add(self.stale_ms)
    }
}

/// Appends the meta to `body`, which becomes the value (no copy of the body).
pub fn encode<'h>(
    status: u16,
    times: &Times,
    headers: impl Iterator<Item = (&'h str, &'h str)>,
    mut body: Vec<u8>,
) -> Vec<u8> {
    let start = body.len();
    // Exactly what the meta takes, so a large body is not moved into a buffer twice its size.
    let headers: Vec<(&str, &str)> = headers.collect();
    let header_bytes: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    body.reserve_exact(FIXED + header_bytes + FOOTER);
    body.extend_from_slice(&status.to_le_bytes());
    for t in [
        times.stored_at,
        times.ttl_ms,
        times.stale_ms,
        times.initial_age_s,
    ] {
        body.extend_from_slice(&t.to_le_bytes());
    }
    let count_at = body.len();
    body.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for (name, value) in headers {
        for s in [name, value] {
            body.extend_from_slice(&len32(s.len()).to_le_bytes());
            body.extend_from_slice(s.as_bytes());
        }
        count += 1;
    }
    body[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
    let meta_len = len32(body.len() - start);
    body.extend_from_slice(&meta_len.to_le_bytes());
    body.push(VERSION);
    body
}

/// Header values are bounded far below 4 GiB by the host.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A decoded value: the fixed fields read, the headers and body still in the buffer.
#[derive(Debug)]
pub struct Entry {
    value: Vec<u8>,
    body_len: usize,
    pub status: u16,
    pub times: Times,
    header_count: u32,
}

impl Entry {
    /// Reads the fixed fields; `None` for a value this version did not write.
    pub fn decode(value: Vec<u8>) -> Option<Self> {
        let n = value.len();
        if n < FOOTER + FIXED || value[n - 1] != VERSION {
            return None;
        }
        let meta_len = usize::try_from(u32_at(&value, n - FOOTER)?).ok()?;
        let body_len = (n - FOOTER).checked_sub(meta_len)?;
        if meta_len < FIXED {
            return None;
        }
        let at = body_len;
        let u64_at = |i: usize| Some(u64::from_le_bytes(value.get(i..i + 8)?.try_into().ok()?));
        let status = u16::from_le_bytes(value.get(at..at + 2)?.try_into().ok()?);
        let times = Times {
            stored_at: u64_at(at + 2)?,
            ttl_ms: u64_at(at + 10)?,
            stale_ms: u64_at(at + 18)?,
            initial_age_s: u64_at(at + 26)?,
        };
        let header_count = u32_at(&value, at + 34)?;
        Some(Self {
            value,
            body_len,
            status,
            times,
            header_count,
        })
    }

    /// The stored response as a reply, with `extra` headers after its own; without the body
    /// for a HEAD request. `None` when the headers do not decode.
    pub fn into_reply(mut self, head: bool, extra: [(&str, String); 2]) -> Option<Reply> {
        let meta_end = self.value.len() - FOOTER;
        let mut at = self.body_len + FIXED;
        let count = usize::try_from(self.header_count).ok()?;
        let mut headers = Vec::with_capacity(count.min(256) + extra.len());
        for _ in 0..count {
            let name = string_at(&self.value[..meta_end], &mut at)?;
            let value = string_at(&self.value[..meta_end], &mut at)?;
            headers.push((name, value));
        }
        if at != meta_end {
            return None;
        }
        for (name, value) in extra {
            headers.push((name.to_owned(), value));
        }
        let body = if head {
            Vec::new()
        } else {
            self.value.truncate(self.body_len);
            self.value
        };
        Some(Reply {
            status: self.status,
            headers,
            body,
        })
    }
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}

/// A length-prefixed string at `*at`, moving `*at` past it.
fn string_at(b: &[u8], at: &mut usize) -> Option<String> {
    let len = usize::try_from(u32_at(b, *at)?).ok()?;
    let start = *at + 4;
    let bytes = b.get(start..start.checked_add(len)?)?;
    *at = start + len;
    String::from_utf8(bytes.to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMES: Times = Times {
        stored_at: 1_700_000_000_000,
        ttl_ms: 300_000,
        stale_ms: 60_000,
        initial_age_s: 7,
    };

    fn value(body: &[u8]) -> Vec<u8> {
        let headers = [("content-type", "text/plain"), ("x-a", "é")];
        encode(200, &TIMES, headers.into_iter(), body.to_vec())
    }

    #[test]
    fn round_trips_and_keeps_the_body_in_place() {
        let v = value(b"hello");
        // The meta's size was reserved exactly: a large body is never moved twice.
        assert_eq!(v.len(), v.capacity());
        let e = Entry::decode(v).unwrap();
        assert_eq!((e.status, e.times), (200, TIMES));
        let reply = e.into_reply(false, [("x-cache", "HIT".into()), ("age", "9".into())]);
        let reply = reply.unwrap();
        assert_eq!(reply.body, b"hello");
        let names: Vec<_> = reply
            .headers
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        assert_eq!(
            names,
            ["content-type=text/plain", "x-a=é", "x-cache=HIT", "age=9"]
        );

        let head = Entry::decode(value(b"hello")).unwrap();
        assert!(
            head.into_reply(true, Default::default())
                .unwrap()
                .body
                .is_empty()
        );
        let empty = Entry::decode(value(b"")).unwrap();
        assert!(
            empty
                .into_reply(false, Default::default())
                .unwrap()
                .body
                .is_empty()
        );
    }

    #[test]
    fn anything_else_is_not_an_entry() {
        let good = value(b"hello");
        for cut in 0..good.len() {
            // A value cut short never decodes into a reply.
            let short = good[..cut].to_vec();
            let reply = Entry::decode(short).and_then(|e| e.into_reply(false, Default::default()));
            assert!(reply.is_none(), "{cut}");
        }
        let mut other = good.clone();
        *other.last_mut().unwrap() = VERSION + 1;
        assert!(Entry::decode(other).is_none());
        assert!(Entry::decode(b"{\"status\":200}".to_vec()).is_none());
    }

    #[test]
    fn times() {
        let t = TIMES;
        let at = |ms: u64| t.stored_at + ms;
        assert!(t.is_fresh(at(299_999)) && !t.is_fresh(at(300_000)));
        assert!(t.serves_on_error(at(359_999)) && !t.serves_on_error(at(360_000)));
        assert_eq!(t.age_s(at(2_999)), 9);
        // A clock that went back is not a negative age.
        assert_eq!(t.age_s(t.stored_at - 5_000), 7);
    }
}
