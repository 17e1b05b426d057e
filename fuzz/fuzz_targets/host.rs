//! `wasmgate_uri::parse_host`: an accepted value is a plain name or address, lower-cased, with
//! nothing an authority parser could read another way, and reads back as itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate_uri::parse_host;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(host)) = parse_host(data) else {
        return;
    };
    let name = host.name.as_ref();
    assert!(!name.is_empty(), "{data:?}");
    assert!(name.len() <= 255 + 2, "{data:?}");
    // Nothing that could start user info, a path, a query, a fragment, an escape or a zone.
    for c in b"@/\\?#%" {
        assert!(!data.contains(c), "{data:?} accepted as {host:?}");
    }
    assert!(
        data.iter().all(|c| c.is_ascii_graphic()),
        "{data:?} accepted as {host:?}"
    );
    if let Some(inner) = name.strip_prefix('[') {
        let inner = inner.strip_suffix(']').expect("a bracketed name closes");
        assert!(
            inner.parse::<std::net::Ipv6Addr>().is_ok(),
            "{data:?} accepted as {host:?}"
        );
        assert!(
            inner
                .bytes()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f' | b':' | b'.')),
            "{data:?} accepted as {host:?}"
        );
    } else {
        assert!(
            name.bytes().all(|c| c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'-' | b'.' | b'_' | b'~')),
            "{data:?} accepted as {host:?}"
        );
    }
    let text = match host.port {
        Some(port) => format!("{name}:{port}"),
        None => name.to_owned(),
    };
    let again = parse_host(text.as_bytes()).map(|h| h.map(|h| (h.name.into_owned(), h.port)));
    assert_eq!(
        again,
        Ok(Some((name.to_owned(), host.port))),
        "{data:?} -> {text:?}"
    );
    // Written as given, the value reads as it was: case and port digits are all that differ.
    if data.iter().all(|c| !c.is_ascii_uppercase()) && host.port.is_none() && !data.ends_with(b":")
    {
        assert_eq!(name.as_bytes(), data);
    }
});
