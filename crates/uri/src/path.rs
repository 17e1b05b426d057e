//! One normal form for request paths (RFC 3986 §6.2.2 and §5.2.4), computed once per request.
//!
//! What [`normalise_path`] does, in order:
//! 1. Percent-encoded unreserved characters (`A–Z a–z 0–9 - . _ ~`) are decoded (`%61` → `a`,
//!    `%2E` → `.`); every other percent-encoding is kept, with upper-case hex (`%c3%a9` →
//!    `%C3%A9`). A `%` not followed by two hex digits is refused. A byte that a URI path does
//!    not carry as it is (RFC 3986 §3.3: anything but unreserved characters, sub-delims, `:`,
//!    `@` and `/`) is percent-encoded: non-ASCII, `"`, `{`, `|`, … (`/café` → `/caf%C3%A9`),
//!    so no path has two spellings that an upstream decodes alike.
//! 2. `%00` and a raw NUL are refused. An encoded `/` or `\` (`%2F`, `%5C`) and a raw `\`
//!    are refused, kept (as `%2F`, `%5C`: a segment, never a separator) or turned into `/`,
//!    as [`EscapedSlashes`] says.
//! 3. Repeated slashes are merged (`//` → `/`).
//! 4. Dot segments are removed (`/a/./b` → `/a/b`, `/a/b/../c` → `/a/c`; `..` never climbs
//!    above `/`). A dot segment with path parameters (`..;x`, `.;x`), which Tomcat and Jetty
//!    read as `..`, is refused.
//!
//! The query is not part of the path and is never touched.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode;

/// What to do with an encoded `/` or `\` (`%2F`, `%5C`) or a raw `\` in a path, as Envoy's
/// `path_with_escaped_slashes_action` chooses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EscapedSlashes {
    /// Refuse the request (the default): an upstream that decodes `%2F` would otherwise see
    /// a different path from the one that was routed.
    #[default]
    Reject,
    /// Keep them encoded, as part of a segment (`%2F`, `%5C`). For upstreams that treat an
    /// encoded slash as data; such an upstream must not decode it into a separator.
    Keep,
    /// Turn them into `/` before slashes are merged and dot segments removed.
    Unescape,
}

/// Why a path has no normal form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// An encoded `/` or `\`, or a raw `\`, under [`EscapedSlashes::Reject`].
    EscapedSlash,
    /// A NUL, encoded (`%00`) or not.
    Nul,
    /// A dot segment with path parameters (`..;x`).
    DotSegmentParameters,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAbsolute => "the path does not start with '/'",
            Self::BadEscape => "'%' is not followed by two hex digits",
            Self::EscapedSlash => "an encoded '/' or '\\', or a raw '\\'",
            Self::Nul => "a NUL (%00)",
            Self::DotSegmentParameters => "a dot segment with parameters ('..;')",
        })
    }
}

impl std::error::Error for PathError {}

/// The normal form of `path` (see the module docs), borrowed when `path` is already normal.
pub fn normalise_path(path: &str, escaped: EscapedSlashes) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_plain(bytes) {
        return Ok(Cow::Borrowed(path));
    }
    let flat = decode(path, escaped)?;
    let normal = remove_dot_segments(&flat)?;
    Ok(if normal == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(normal)
    })
}

/// Whether `path` is already in normal form (a config's route prefixes must be).
pub fn is_normal_path(path: &str) -> bool {
    matches!(
        normalise_path(path, EscapedSlashes::Reject),
        Ok(Cow::Borrowed(_))
    )
}

/// Only path characters, no `%`, no `//` and no segment starting with `.`: nothing to do.
/// Most paths are like this, and one pass over the bytes tells.
fn is_plain(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for &c in bytes {
        match c {
            b'/' | b'.' if prev == b'/' => return false,
            b'/' => {}
            c if !is_path_char(c) => return false,
            _ => {}
        }
        prev = c;
    }
    true
}

/// Steps 1 and 2: percent-encodings decoded or made upper-case, bytes a path cannot carry
/// encoded, escaped separators dealt with. The result still starts with `/`, and is ASCII.
fn decode(path: &str, escaped: EscapedSlashes) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .position(|&c| c != b'/' && !is_path_char(c))
            .unwrap_or(bytes.len() - i);
        // A run is ASCII, so a non-empty one starts and ends on character boundaries; `i`
        // itself may be inside a character whose first bytes were just encoded.
        if run > 0 {
            out.push_str(&path[i..i + run]);
            i += run;
        }
        let Some(&c) = bytes.get(i) else { break };
        let decoded = match c {
            b'%' => {
                let triplet = bytes.get(i..i + 3).ok_or(PathError::BadEscape)?;
                i += 3;
                decode_triplet(triplet)?
            }
            b'\\' => {
                i += 1;
                b'\\'
            }
            0 => return Err(PathError::Nul),
            other => {
                i += 1;
                push_encoded(&mut out, other);
                continue;
            }
        };
        match decoded {
            0 => return Err(PathError::Nul),
            b'/' | b'\\' => match escaped {
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Keep => push_encoded(&mut out, decoded),
                EscapedSlashes::Unescape => out.push('/'),
            },
            d if is_unreserved(d) => out.push(d as char),
            d => push_encoded(&mut out, d),
        }
    }
    Ok(out)
}

/// The byte a `%XX` triplet stands for. percent-encoding passes an invalid triplet through
/// unchanged, so more than one byte out means it was not `%` and two hex digits.
fn decode_triplet(triplet: &[u8]) -> Result<u8, PathError> {
    let mut it = percent_decode(triplet);
    match (it.next(), it.next()) {
        (Some(b), None) => Ok(b),
        _ => Err(PathError::BadEscape),
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// A byte a path segment carries as it is (RFC 3986 §3.3 `pchar`, less `pct-encoded`).
fn is_path_char(c: u8) -> bool {
    is_unreserved(c)
        || matches!(
            c,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn push_encoded(out: &mut String, c: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(c >> 4)] as char);
    out.push(HEX[usize::from(c & 0xf)] as char);
}

/// Steps 3 and 4, on a path whose every `/` is a separator.
fn remove_dot_segments(flat: &str) -> Result<String, PathError> {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in flat[1..].split('/') {
        trailing_slash = true;
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => {
                let name = seg.split(';').next().unwrap_or(seg);
                if name == "." || name == ".." {
                    return Err(PathError::DotSegmentParameters);
                }
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(flat.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalise_path(p, EscapedSlashes::Reject).map(Cow::into_owned)
    }

    fn with(p: &str, e: EscapedSlashes) -> Result<String, PathError> {
        normalise_path(p, e).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed() {
        for p in ["/", "/api/users/7", "/a.b/c.d", "/a/..b", "/a;b", "/x-y_z~"] {
            assert!(
                matches!(normalise_path(p, EscapedSlashes::Reject), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn the_bypasses_resolve_to_the_guarded_path() {
        assert_eq!(n("/api/%61dmin/users").unwrap(), "/api/admin/users");
        assert_eq!(n("/api//admin/users").unwrap(), "/api/admin/users");
        assert_eq!(n("/api/x/../admin/users").unwrap(), "/api/admin/users");
        assert_eq!(n("/api/x/%2e%2E/admin/users").unwrap(), "/api/admin/users");
        assert_eq!(n("/api/./admin").unwrap(), "/api/admin");
        assert_eq!(n("/api/x/..%2fadmin/users"), Err(PathError::EscapedSlash));
        assert_eq!(n("/api/x/..%5cadmin/users"), Err(PathError::EscapedSlash));
        assert_eq!(n("/api/x/..\\admin/users"), Err(PathError::EscapedSlash));
        assert_eq!(
            n("/api/x/..;/admin/users"),
            Err(PathError::DotSegmentParameters)
        );
        assert_eq!(
            n("/api/x/%2e%2e;jsessionid=1/admin"),
            Err(PathError::DotSegmentParameters)
        );
        assert_eq!(n("/api/x/.;/admin"), Err(PathError::DotSegmentParameters));
    }

    #[test]
    fn escaped_slashes_follow_the_setting() {
        use EscapedSlashes::*;
        assert_eq!(
            with("/api/x/..%2fadmin", Keep).unwrap(),
            "/api/x/..%2Fadmin"
        );
        assert_eq!(with("/a\\b", Keep).unwrap(), "/a%5Cb");
        assert_eq!(with("/api/x/..%2fadmin", Unescape).unwrap(), "/api/admin");
        assert_eq!(with("/api/x/..%5Cadmin", Unescape).unwrap(), "/api/admin");
        assert_eq!(with("/api/x/..\\admin", Unescape).unwrap(), "/api/admin");
        for mode in [Reject, Keep, Unescape] {
            assert_eq!(with("/a%00b", mode), Err(PathError::Nul));
            assert_eq!(with("/a\0b", mode), Err(PathError::Nul));
        }
    }

    #[test]
    fn dot_segments_and_slashes_per_rfc_3986() {
        assert_eq!(n("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(n("/..").unwrap(), "/");
        assert_eq!(n("/../../x").unwrap(), "/x");
        assert_eq!(n("//").unwrap(), "/");
        assert_eq!(n("///a///b//").unwrap(), "/a/b/");
        assert_eq!(n("/a/.well-known").unwrap(), "/a/.well-known");
        assert_eq!(n("/a/...").unwrap(), "/a/...");
    }

    #[test]
    fn percent_encodings() {
        assert_eq!(n("/%7Euser/%41%42").unwrap(), "/~user/AB");
        assert_eq!(n("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(n("/a%20b%3Bc%3f").unwrap(), "/a%20b%3Bc%3F");
        assert_eq!(n("/%25").unwrap(), "/%25");
        assert_eq!(n("/%2"), Err(PathError::BadEscape));
        assert_eq!(n("/%zz"), Err(PathError::BadEscape));
        assert_eq!(n("/%%41"), Err(PathError::BadEscape));
        assert_eq!(n("/a%"), Err(PathError::BadEscape));
        assert_eq!(n("/é%41"), Ok("/%C3%A9A".into()));
    }

    #[test]
    fn bytes_a_path_cannot_carry_are_encoded() {
        // One resource, one spelling: an upstream decodes both of each pair alike.
        assert_eq!(n("/café").unwrap(), "/caf%C3%A9");
        assert_eq!(n("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(n("/.{/").unwrap(), "/.%7B/");
        assert_eq!(
            n("/a\"b{c}|d^e`f[g]<h> i").unwrap(),
            "/a%22b%7Bc%7D%7Cd%5Ee%60f%5Bg%5D%3Ch%3E%20i"
        );
        assert_eq!(n("/a?b#c").unwrap(), "/a%3Fb%23c");
        assert!(!is_normal_path("/café"));
        assert!(is_normal_path("/caf%C3%A9"));
        // Sub-delims, `:` and `@` are path characters, and stay.
        assert!(is_normal_path("/a!$&'()*+,;=:@b"));
    }

    #[test]
    fn only_origin_form() {
        assert_eq!(n(""), Err(PathError::NotAbsolute));
        assert_eq!(n("*"), Err(PathError::NotAbsolute));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn normal_form_is_a_fixed_point() {
        for p in [
            "/api/%61dmin//x/../y/",
            "/a/%2e./b",
            "/caf%c3%a9/./",
            "/a/b/..",
            "/",
            "/x/%7e",
        ] {
            let once = n(p).unwrap();
            assert_eq!(n(&once).unwrap(), once, "{p}");
            assert!(is_normal_path(&once), "{once}");
        }
        assert!(!is_normal_path("/api//x"));
        assert!(!is_normal_path("/api/%61"));
        assert!(is_normal_path("/api/users/"));
    }
}
