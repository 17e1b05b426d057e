//! What a request's and a response's caching headers say (RFC 9111 §5): the `Cache-Control`
//! directives the cache acts on, and the `Expires`, `Date` and `Age` it reads freshness from.

/// The `Cache-Control` directives of a request that the cache acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache`, or `max-age=0` (a browser's reload): do not answer from the cache.
    pub no_cache: bool,
    /// `no-store`: do not store the response.
    pub no_store: bool,
}

impl RequestDirectives {
    /// Reads every `Cache-Control` value of a request.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut d = Self::default();
        for (name, arg) in values.into_iter().flat_map(directives) {
            if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            } else if name.eq_ignore_ascii_case("max-age") && delta_seconds(arg) == Some(0) {
                d.no_cache = true;
            }
        }
        d
    }
}

/// The `Cache-Control` directives of a response that the cache acts on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResponseDirectives {
    pub no_store: bool,
    /// `no-cache` (with or without field names): every use must be revalidated, which this
    /// cache does not do, so it does not store.
    pub no_cache: bool,
    /// `private` (with or without field names): not for a shared cache.
    pub private: bool,
    pub public: bool,
    /// Never served stale (`must-revalidate` also lets a response to a request with
    /// `Authorization` be stored, RFC 9111 §3.5).
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    /// Seconds; an unparsable value counts as 0 (stale at once).
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl ResponseDirectives {
    /// Reads every `Cache-Control` value of a response.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        let mut d = Self::default();
        for (name, arg) in values.into_iter().flat_map(directives) {
            let is = |n: &str| name.eq_ignore_ascii_case(n);
            if is("no-store") {
                d.no_store = true;
            } else if is("no-cache") {
                d.no_cache = true;
            } else if is("private") {
                d.private = true;
            } else if is("public") {
                d.public = true;
            } else if is("must-revalidate") {
                d.must_revalidate = true;
            } else if is("proxy-revalidate") {
                d.proxy_revalidate = true;
            } else if is("max-age") {
                // Of two, the shorter: either may be the one meant, and shorter is safe.
                let s = delta_seconds(arg).unwrap_or(0);
                d.max_age = Some(d.max_age.map_or(s, |t| t.min(s)));
            } else if is("s-maxage") {
                let s = delta_seconds(arg).unwrap_or(0);
                d.s_maxage = Some(d.s_maxage.map_or(s, |t| t.min(s)));
            }
        }
        d
    }
}

/// The directives of one header value: `name` or `name=arg`, the argument unquoted.
fn directives(value: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    // A quoted argument with a comma in it (`no-cache="a, b"`) splits into pieces; the first
    // still names the directive, and the rest name none this cache reads.
    value.split(',').filter_map(|part| {
        let part = part.trim();
        if part.is_empty() {
            return None;
        }
        Some(match part.split_once('=') {
            Some((name, arg)) => (name.trim_end(), Some(arg.trim_start().trim_matches('"'))),
            None => (part, None),
        })
    })
}

/// RFC 9111 §1.2.2: digits; a value past 2^31 counts as 2^31.
fn delta_seconds(arg: Option<&str>) -> Option<u64> {
    let arg = arg?;
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(arg.parse::<u64>().unwrap_or(u64::MAX).min(1 << 31))
}

/// An `Age` value in seconds; an invalid one is ignored (RFC 9111 §5.1).
pub fn age_seconds(value: &str) -> Option<u64> {
    delta_seconds(Some(value.trim()))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7) as seconds since the
/// Unix epoch. The obsolete RFC 850 and asctime forms are not read: an `Expires` in one of
/// them counts as already expired, which RFC 9111 §5.3 allows for an invalid date.
pub fn http_date(value: &str) -> Option<u64> {
    let b = value.trim().as_bytes();
    if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
        return None;
    }
    let num = |s: &[u8]| -> Option<u64> {
        s.iter().try_fold(0u64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u64::from(c - b'0'))
        })
    };
    let day = num(&b[5..7])?;
    let month = match &b[8..11] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let year = num(&b[12..16])?;
    if b[7] != b' ' || b[11] != b' ' || b[16] != b' ' || b[19] != b':' || b[22] != b':' {
        return None;
    }
    let (h, m, s) = (num(&b[17..19])?, num(&b[20..22])?, num(&b[23..25])?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 || year < 1970 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`), for years from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_directives() {
        let d = RequestDirectives::parse(["no-cache"]);
        assert!(d.no_cache && !d.no_store);
        let d = RequestDirectives::parse(["Max-Age=0, x=1", "NO-STORE"]);
        assert!(d.no_cache && d.no_store);
        assert_eq!(
            RequestDirectives::parse(["max-age=10", "only-if-cached"]),
            RequestDirectives::default()
        );
    }

    #[test]
    fn response_directives() {
        let d = ResponseDirectives::parse(["public, max-age=300", "s-maxage=\"60\""]);
        assert!(d.public && !d.private && !d.no_store);
        assert_eq!((d.max_age, d.s_maxage), (Some(300), Some(60)));
        let d = ResponseDirectives::parse([r#"private="set-cookie", no-cache="a, b""#]);
        assert!(d.private && d.no_cache);
        let d = ResponseDirectives::parse(["max-age=abc, max-age=600", "proxy-revalidate"]);
        assert_eq!(d.max_age, Some(0));
        assert!(d.proxy_revalidate && !d.must_revalidate);
        let d = ResponseDirectives::parse(["max-age=99999999999999999999"]);
        assert_eq!(d.max_age, Some(1 << 31));
    }

    #[test]
    fn dates() {
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date("Tue, 29 Feb 2028 12:00:00 GMT"),
            Some(1_835_438_400)
        );
        for bad in [
            "0",
            "-1",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 36 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(http_date(bad), None, "{bad}");
        }
        assert_eq!(age_seconds(" 12 "), Some(12));
        assert_eq!(age_seconds("-3"), None);
    }
}
