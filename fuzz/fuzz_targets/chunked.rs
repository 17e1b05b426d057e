//! The chunked body decoder, fed any bytes, split into reads of any sizes. Besides not
//! panicking: however the bytes are split, the decoder yields the same data and comes to the
//! same end (complete with the same bytes left over and the same trailers, an error, or
//! waiting for more), never yields more data than it was given, and never consumes a byte
//! past the body's end.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use wasmgate_h1::{Chunk, ChunkedDecoder, Invalid};

#[derive(Debug, PartialEq)]
enum End {
    Complete {
        left: Vec<u8>,
        trailers: Option<http::HeaderMap>,
    },
    Error(Invalid),
    NeedsMore,
}

/// Decodes `input` fed in pieces whose sizes come from `sizes` (cycled; 0 counts as 1).
fn decode(input: &[u8], sizes: &[u8]) -> (Vec<u8>, End) {
    let mut dec = ChunkedDecoder::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    let mut sizes = sizes.iter().copied().cycle();
    loop {
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(Chunk::Data(d))) => {
                    assert!(!d.is_empty(), "an empty data piece");
                    out.extend_from_slice(&d);
                }
                Ok(Some(Chunk::End)) => {
                    let mut left = buf.to_vec();
                    left.extend_from_slice(&input[fed..]);
                    let trailers = dec.take_trailers();
                    return (out, End::Complete { left, trailers });
                }
                Ok(None) => {
                    assert!(buf.is_empty(), "the decoder waits with bytes in hand");
                    break;
                }
                Err(e) => return (out, End::Error(e)),
            }
        }
        if fed == input.len() {
            return (out, End::NeedsMore);
        }
        let n = usize::from(sizes.next().unwrap_or(1).max(1)).min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&split_len, rest)) = data.split_first() else {
        return;
    };
    let split_len = usize::from(split_len % 8).min(rest.len());
    let (sizes, input) = rest.split_at(split_len);
    let whole = decode(input, &[255]);
    let bytewise = decode(input, &[1]);
    let split = decode(input, if sizes.is_empty() { &[3] } else { sizes });
    assert!(whole.0.len() <= input.len());
    assert_eq!(whole, bytewise, "one read vs byte by byte");
    assert_eq!(whole, split, "one read vs reads of {sizes:?}");
    if let End::Complete { left, .. } = &whole.1 {
        assert!(
            input.ends_with(left),
            "bytes past the end are left as they were"
        );
    }
});
