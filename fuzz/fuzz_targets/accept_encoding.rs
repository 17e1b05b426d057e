//! The `Accept-Encoding` negotiation, fed anything a client could send. Besides not
//! panicking: the answer does not depend on how the elements are split across field lines,
//! and a coding is only chosen when the value names it, its `x-` alias, or `*`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate_h1::{Coding, preferred_coding};

fuzz_target!(|data: &[u8]| {
    let whole = preferred_coding([data]);
    // The same elements, one field line each.
    let lines: Vec<&[u8]> = data.split(|b| *b == b',').collect();
    assert_eq!(preferred_coding(lines), whole, "split across lines");
    let lower = data.to_ascii_lowercase();
    let names = |s: &[u8]| lower.windows(s.len()).any(|w| w == s) || lower.contains(&b'*');
    match whole {
        Some(Coding::Brotli) => assert!(names(b"br")),
        Some(Coding::Gzip) => assert!(names(b"gzip")),
        None => {}
    }
});
