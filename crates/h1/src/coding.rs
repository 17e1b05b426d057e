//! Content negotiation for compression: which coding a client's `Accept-Encoding` asks for
//! (RFC 9110 §12.5.3), among the ones the gateway can apply.

/// A content coding the gateway applies to responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

impl Coding {
    /// Its name in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Brotli => "br",
            Self::Gzip => "gzip",
        }
    }
}

/// The coding to answer with, given each `Accept-Encoding` field value: the acceptable one
/// with the highest weight, brotli before gzip on a tie. A coding is acceptable when it is
/// named (`x-gzip` is gzip) with a weight above zero, or when it is not named and `*` is,
/// with a weight above zero. `None`: neither is acceptable, or no field was sent. Elements
/// that do not parse are ignored, as if they were not there.
pub fn preferred_coding<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Coding> {
    // Weights in thousandths; `None` when not named.
    let (mut br, mut gzip, mut any) = (None, None, None);
    for value in values {
        for element in value.split(|b| *b == b',') {
            let mut params = element.split(|b| *b == b';');
            let name = params.next().unwrap_or_default().trim_ascii();
            let mut weight = Some(1000);
            for param in params {
                let param = param.trim_ascii();
                if let Some(q) = param
                    .strip_prefix(b"q=")
                    .or_else(|| param.strip_prefix(b"Q="))
                {
                    weight = qvalue(q);
                }
            }
            let Some(weight) = weight else { continue };
            let slot = if name.eq_ignore_ascii_case(b"br") {
                &mut br
            } else if name.eq_ignore_ascii_case(b"gzip") || name.eq_ignore_ascii_case(b"x-gzip") {
                &mut gzip
            } else if name == b"*" {
                &mut any
            } else {
                continue;
            };
            // Named twice: the higher weight stands.
            *slot = Some(slot.map_or(weight, |w: u16| w.max(weight)));
        }
    }
    let br = br.or(any).unwrap_or(0);
    let gzip = gzip.or(any).unwrap_or(0);
    match (br, gzip) {
        (0, 0) => None,
        (b, g) if b >= g => Some(Coding::Brotli),
        _ => Some(Coding::Gzip),
    }
}

/// A weight (`qvalue`, RFC 9110 §12.4.2) in thousandths: `0`, `1`, or up to three decimals.
fn qvalue(q: &[u8]) -> Option<u16> {
    let (int, frac) = match q.iter().position(|b| *b == b'.') {
        Some(dot) => (&q[..dot], &q[dot + 1..]),
        None => (q, &[][..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(v: &str) -> Option<Coding> {
        preferred_coding([v.as_bytes()])
    }

    #[test]
    fn the_heaviest_acceptable_coding_wins() {
        assert_eq!(pick("gzip, deflate, br"), Some(Coding::Brotli));
        assert_eq!(pick("gzip"), Some(Coding::Gzip));
        assert_eq!(pick("br;q=0.5, gzip;q=0.8"), Some(Coding::Gzip));
        assert_eq!(pick("BR ; Q=1.0 , GZIP"), Some(Coding::Brotli));
        assert_eq!(pick("x-gzip"), Some(Coding::Gzip));
        assert_eq!(pick("*"), Some(Coding::Brotli));
        assert_eq!(pick("*;q=0.1, br;q=0"), Some(Coding::Gzip));
        assert_eq!(pick("gzip;q=0.001"), Some(Coding::Gzip));
        assert_eq!(
            preferred_coding(["gzip;q=0".as_bytes(), b"br"]),
            Some(Coding::Brotli)
        );
    }

    #[test]
    fn nothing_acceptable_is_none() {
        for v in [
            "",
            "identity",
            "deflate, zstd",
            "gzip;q=0",
            "gzip;q=0.000, br;q=0",
            "*;q=0",
            // Weights that do not parse: the element is ignored.
            "gzip;q=2",
            "gzip;q=0.0001",
            "gzip;q=1.5",
            "gzip;q=abc",
            "gzip;q=",
        ] {
            assert_eq!(pick(v), None, "{v:?}");
        }
        assert_eq!(preferred_coding(std::iter::empty::<&[u8]>()), None);
    }
}
