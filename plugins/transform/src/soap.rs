//! What both directions of the SOAP bridge share: versions, namespaces and XML's rules for
//! names and characters.

/// The SOAP 1.1 envelope namespace.
pub const SOAP11_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The SOAP 1.2 envelope namespace.
pub const SOAP12_ENV: &str = "http://www.w3.org/2003/05/soap-envelope";
/// For `xsi:nil`.
pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Nesting past this is refused both ways: JSON objects under the operation element, and XML
/// elements in a response (counted from the envelope).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoapVersion {
    V11,
    V12,
}

impl SoapVersion {
    pub fn envelope_namespace(self) -> &'static str {
        match self {
            SoapVersion::V11 => SOAP11_ENV,
            SoapVersion::V12 => SOAP12_ENV,
        }
    }

    pub fn from_namespace(ns: &str) -> Option<SoapVersion> {
        match ns {
            SOAP11_ENV => Some(SoapVersion::V11),
            SOAP12_ENV => Some(SoapVersion::V12),
            _ => None,
        }
    }
}

/// A character XML 1.0 can carry (its `Char` production). Rust strings hold no surrogates.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// An XML name without a colon (`NCName`), so a JSON key can never pick a namespace prefix or
/// break out of its tag.
pub fn is_ncname(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) if is_name_start(first) => chars.all(is_name_char),
        _ => false,
    }
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "a", "clientId", "_x", "a-b.c", "é", "名前", "x1", "xmlnsish",
        ] {
            assert!(is_ncname(good), "{good}");
        }
        for bad in [
            "", "a b", "<x>", "1a", "-a", ".a", "a:b", "a>", "a\"", "a/", "a&b", "\u{0}", "a\tb",
        ] {
            assert!(!is_ncname(bad), "{bad:?}");
        }
    }

    #[test]
    fn chars() {
        for good in [
            '\t', '\n', '\r', ' ', 'a', '\u{D7FF}', '\u{E000}', '\u{FFFD}', '😀',
        ] {
            assert!(is_xml_char(good), "{good:?}");
        }
        for bad in [
            '\u{0}', '\u{1}', '\u{8}', '\u{B}', '\u{C}', '\u{1F}', '\u{FFFE}', '\u{FFFF}',
        ] {
            assert!(!is_xml_char(bad), "{bad:?}");
        }
    }
}
