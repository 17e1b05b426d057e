//! `wasmgate_uri::normalise_path` under every `EscapedSlashes` mode: what comes out is in
//! normal form (a fixed point, with nothing left that an upstream would decode differently),
//! and the modes agree wherever no escaped slash is involved.

#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use wasmgate_uri::{EscapedSlashes, PathError, is_normal_path, normalise_path};

const MODES: [EscapedSlashes; 3] = [
    EscapedSlashes::Reject,
    EscapedSlashes::Keep,
    EscapedSlashes::Unescape,
];

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let results = MODES.map(|mode| normalise_path(path, mode));
    for (mode, result) in MODES.iter().zip(&results) {
        if let Ok(out) = result {
            if matches!(out, Cow::Borrowed(_)) {
                assert_eq!(out, path, "a borrowed result is the input");
            }
            check_normal(path, out, *mode);
        }
    }
    // Without an escaped slash the three modes read the path alike, and Reject only refuses
    // escaped slashes that the others deal with.
    match &results[0] {
        Ok(out) => {
            for other in &results[1..] {
                assert_eq!(other.as_ref().ok(), Some(out), "{path:?}");
            }
        }
        Err(PathError::EscapedSlash) => {}
        Err(e) => {
            for other in &results[1..] {
                assert_eq!(other.as_ref().err(), Some(e), "{path:?}");
            }
        }
    }
    if matches!(results[0], Ok(Cow::Borrowed(_))) {
        assert!(is_normal_path(path), "{path:?}");
    }
});

fn check_normal(input: &str, out: &str, mode: EscapedSlashes) {
    let bytes = out.as_bytes();
    assert_eq!(bytes.first(), Some(&b'/'), "{input:?} -> {out:?}");
    assert!(!out.contains("//"), "{input:?} -> {out:?}");
    for segment in out[1..].split('/') {
        let name = segment.split(';').next().unwrap_or(segment);
        assert!(
            name != "." && name != "..",
            "dot segment in {input:?} -> {out:?}"
        );
    }
    let mut i = 0;
    while let Some(at) = bytes[i..].iter().position(|&c| c == b'%') {
        let at = i + at;
        let hex = &bytes[at + 1..(at + 3).min(bytes.len())];
        assert!(
            hex.len() == 2 && hex.iter().all(|c| matches!(c, b'0'..=b'9' | b'A'..=b'F')),
            "escape not two upper-case hex digits in {input:?} -> {out:?}"
        );
        let byte = u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap();
        assert!(
            !(byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')),
            "encoded unreserved character in {input:?} -> {out:?}"
        );
        assert_ne!(byte, 0, "encoded NUL in {input:?} -> {out:?}");
        if mode != EscapedSlashes::Keep {
            assert!(
                byte != b'/' && byte != b'\\',
                "escaped slash under {mode:?} in {input:?} -> {out:?}"
            );
        }
        i = at + 3;
    }
    // Only what a URI path carries as it is (RFC 3986 §3.3), so no byte has a second
    // spelling that an upstream would decode to the same thing.
    assert!(
        bytes
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&c)),
        "a byte to encode in {input:?} -> {out:?}"
    );
    match normalise_path(out, mode) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, out),
        other => panic!("not a fixed point under {mode:?}: {input:?} -> {out:?} -> {other:?}"),
    }
    if mode == EscapedSlashes::Reject {
        assert!(is_normal_path(out), "{input:?} -> {out:?}");
    }
}
