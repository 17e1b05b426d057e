//! The upstream response head parser, fed anything an upstream could send. Besides not
//! panicking: a head is parsed the same whether the bytes after it have arrived or not (the
//! gateway parses whatever a read gave it), the I/O side's end-of-head scan finds every head
//! the parser completes, and the parser consumes exactly the head and nothing after it.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wasmgate_h1::{Asked, Framing, Invalid, Parsed, ends_head, parse_response_head};

/// What a parse came to, in a comparable form: (bytes consumed, status, framing, reuse,
/// header count) for a final head.
#[derive(Debug, PartialEq)]
enum Outcome {
    Partial,
    Error(Invalid),
    Interim(usize, u16),
    Final(usize, u16, &'static str, bool, usize),
}

fn parse(input: &[u8], asked: Asked) -> Outcome {
    let mut buf = BytesMut::from(input);
    let result = parse_response_head(&mut buf, asked);
    let used = input.len() - buf.len();
    match result {
        Ok(None) => {
            assert_eq!(used, 0, "a partial head consumes nothing");
            Outcome::Partial
        }
        Err(e) => Outcome::Error(e),
        Ok(Some(parsed)) => {
            assert_eq!(&buf[..], &input[used..], "only the head is consumed");
            assert!(
                ends_head(&input[..used]),
                "the end-of-head scan misses a head the parser completes"
            );
            match parsed {
                Parsed::Interim(status) => {
                    assert!(status.is_informational());
                    assert!(status != 101, "a 101 is final or refused");
                    Outcome::Interim(used, status.as_u16())
                }
                Parsed::Final(head) => {
                    let framing = match head.framing {
                        None => {
                            if head.status == 101 {
                                assert!(asked == Asked::Upgrade && !head.reuse);
                            }
                            "none"
                        }
                        Some(Framing::Length(_)) => "length",
                        Some(Framing::Chunked(_)) => "chunked",
                        Some(Framing::Close) => {
                            assert!(!head.reuse, "a body delimited by close never reuses");
                            "close"
                        }
                    };
                    assert!(
                        framing != "chunked" || !head.headers.contains_key("content-length"),
                        "a chunked response must not pass its Content-Length on"
                    );
                    Outcome::Final(
                        used,
                        head.status.as_u16(),
                        framing,
                        head.reuse,
                        head.headers.len(),
                    )
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, input)) = data.split_first() else {
        return;
    };
    let asked = match flags & 3 {
        1 => Asked::Head,
        2 => Asked::Upgrade,
        _ => Asked::Plain,
    };
    let whole = parse(input, asked);
    // Every prefix either needs more bytes or comes to the same outcome as the whole.
    let step = usize::from(flags >> 2).max(1);
    for cut in (0..input.len()).step_by(step) {
        let part = parse(&input[..cut], asked);
        if part != Outcome::Partial {
            assert_eq!(part, whole, "prefix of {cut} bytes");
        }
    }
});
