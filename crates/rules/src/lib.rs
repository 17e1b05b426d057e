//! What the gateway lets a plugin write, in one place.
//!
//! The host enforces these rules on every value a plugin hands it; the SDK's mock host
//! enforces the same ones, so a plugin tested natively fails where it would fail in the
//! gateway; plugins and the scaffold's templates check their configs against them at load.
//! One module per WIT interface whose input is bounded. The crate has no dependencies and
//! needs no `std` (only `alloc`, for templates), so it builds for `wasm32-wasip2` and natively
//! alike.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod header_rules;

/// `wasmgate:plugin/http`: headers, statuses, queued response headers and variables.
pub mod http {
    use core::ops::RangeInclusive;

    /// Headers the host manages itself, lower-case and sorted: the framing header
    /// `content-length` and the hop-by-hop headers (RFC 9110 §7.6.1, with the unregistered
    /// `proxy-connection` some clients still send). A plugin that could set them could
    /// smuggle a second request past the upstream, or forward a proxy's credentials, so
    /// setting, appending or removing one is `not-allowed`. A reply's `content-length` is
    /// dropped instead (the host frames the reply itself).
    pub const HOST_MANAGED_HEADERS: [&str; 9] = [
        "connection",
        "content-length",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];

    /// Whether a header is in [`HOST_MANAGED_HEADERS`], compared case-insensitively.
    pub fn is_host_managed(name: &str) -> bool {
        // The lengths mostly differ, so nearly every comparison ends at the length.
        HOST_MANAGED_HEADERS
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Whether a request header is `host`, the `Host` the upstream is sent (over the route's
    /// `host_header`). It takes one value, so appending to it is `not-allowed`, and the value
    /// must be a host name or address with an optional port (else `invalid-value`).
    pub fn is_host_header(name: &str) -> bool {
        name.eq_ignore_ascii_case("host")
    }

    /// Longest header name the host takes, in bytes.
    pub const MAX_HEADER_NAME_BYTES: usize = (1 << 16) - 1;

    /// Whether `name` may name a header: an HTTP token (RFC 9110 §5.6.2) of at most
    /// [`MAX_HEADER_NAME_BYTES`]. Anything else is `invalid-name`.
    pub fn is_header_name(name: &str) -> bool {
        name.len() <= MAX_HEADER_NAME_BYTES && is_token(name)
    }

    /// Whether `value` may be a header value: no control bytes but tab, and no DEL (so no
    /// CR, LF or NUL). Bytes past ASCII pass, as UTF-8. Anything else is `invalid-value`.
    pub fn is_header_value(value: &str) -> bool {
        value
            .bytes()
            .all(|b| (b >= 0x20 && b != 0x7f) || b == b'\t')
    }

    /// Whether `s` is an HTTP token (RFC 9110 §5.6.2), as header names and methods are.
    pub fn is_token(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }

    /// The statuses a plugin may set or reply with: final ones. Others are `invalid-value`
    /// (`set-status`) or a bad reply.
    pub const FINAL_STATUS: RangeInclusive<u16> = 200..=599;

    /// Most response header changes one plugin may queue in one request's request phase;
    /// past it, queueing is `not-allowed`.
    pub const MAX_RESPONSE_EDITS: usize = 64;

    /// Most variables one request carries; past it, `set-var` of a new name is ignored
    /// (changing an existing one still works).
    pub const MAX_VARS: usize = 128;

    /// Largest variable, name and value together, in bytes; `set-var` of a larger one is
    /// ignored. It also bounds the variable name `set-response-header-from-var` may name
    /// (`invalid-value` past it).
    pub const MAX_VAR_BYTES: usize = 16 * 1024;
}

/// `wasmgate:plugin/kv`: a bounded store per plugin.
pub mod kv {
    /// Longest key, in bytes (`too-large` past it).
    pub const MAX_KEY_BYTES: usize = 1024;
    /// Largest value, in bytes (`too-large` past it), unless the plugin's
    /// `kv_max_value_bytes` says otherwise.
    pub const MAX_VALUE_BYTES: usize = 64 * 1024;
    /// The most `kv_max_value_bytes` may be.
    pub const MAX_VALUE_BYTES_LIMIT: usize = 8 << 20;
    /// Most entries one plugin's namespace holds; past it the host evicts the least used
    /// entries rather than refusing a write. An entry larger than [`MAX_VALUE_BYTES`] counts
    /// as one entry per [`MAX_VALUE_BYTES`] it holds, so a namespace never holds more than
    /// `MAX_ENTRIES × MAX_VALUE_BYTES`, whatever its values' size.
    pub const MAX_ENTRIES: u64 = 10_000;

    /// How many entries a key and value count as against [`MAX_ENTRIES`].
    pub fn weight(key: usize, value: usize) -> u32 {
        let slots = (key + value).div_ceil(MAX_VALUE_BYTES).max(1);
        u32::try_from(slots).unwrap_or(u32::MAX)
    }
}

/// `wasmgate:plugin/log`: plugin lines (and stdout and stderr lines) are cut to a bounded length.
pub mod log {
    /// Longest line kept, in bytes; the rest is cut (see [`cut_line`]).
    pub const MAX_LINE_BYTES: usize = 4096;

    /// `line` cut to at most [`MAX_LINE_BYTES`], on a character boundary.
    pub fn cut_line(line: &str) -> &str {
        cut(line, MAX_LINE_BYTES)
    }

    /// `s` cut to at most `max` bytes, on a character boundary.
    pub fn cut(s: &str, max: usize) -> &str {
        if s.len() <= max {
            return s;
        }
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        &s[..end]
    }
}

/// `wasmgate:plugin/rate-limit`: limiter names, keys and quotas.
pub mod rate_limit {
    /// Longest limiter name (`open` fails past it) and key (`check` refuses past it, so a
    /// hostile client cannot grow the host's table with huge keys), in bytes.
    pub const MAX_KEY_BYTES: usize = 1024;
    /// Longest quota period, in milliseconds (a leap year); `open` fails past it, or at 0.
    pub const MAX_PERIOD_MS: u64 = 366 * 24 * 3600 * 1000;
}

#[cfg(test)]
mod tests {
    use super::http::*;
    use super::log::cut;

    #[test]
    fn host_managed_headers_are_lower_case_sorted_and_matched_in_any_case() {
        assert!(HOST_MANAGED_HEADERS.is_sorted());
        for h in HOST_MANAGED_HEADERS {
            assert!(h.bytes().all(|b| !b.is_ascii_uppercase()), "{h}");
            assert!(is_header_name(h), "{h}");
            assert!(is_host_managed(h));
        }
        assert!(is_host_managed("Proxy-Authorization"));
        assert!(is_host_managed("CONTENT-LENGTH"));
        for other in [
            "",
            "x-te",
            "tes",
            "content-type",
            "authorization",
            "host",
            "proxy",
        ] {
            assert!(!is_host_managed(other), "{other}");
        }
    }

    #[test]
    fn header_names_are_bounded_tokens() {
        assert!(is_header_name("X-Custom_1.a~"));
        for bad in ["", "a b", "a:b", "a\r\n", "é", "a\"b", "(x)"] {
            assert!(!is_header_name(bad), "{bad:?}");
        }
        let long = "a".repeat(MAX_HEADER_NAME_BYTES);
        assert!(is_header_name(&long));
        assert!(!is_header_name(&(long + "a")));
    }

    #[test]
    fn header_values_refuse_control_bytes_but_tab() {
        assert!(is_header_value(""));
        assert!(is_header_value("ok value\t\u{e9}"));
        for bad in ["a\rb", "a\nb", "a\0b", "\x7f", "\x1b[0m"] {
            assert!(!is_header_value(bad), "{bad:?}");
        }
    }

    #[test]
    fn lines_are_cut_on_a_character_boundary() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("", 0), "");
    }
}
