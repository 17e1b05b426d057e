//! `wasmgate:plugin/header-rules`: header changes a plugin declares once, at `init`, and the
//! host makes on every request. The template grammar lives here, so the host (which renders
//! templates), the SDK's mock host (which renders them the same way) and plugins (which parse
//! a config's templates for their errors) read a template alike.
//!
//! A template is text with variables in it: `${client_ip}`, `${request_id}`, `${route}`,
//! `${method}`, `${path}`, `${header.NAME}` (the first value of a request header) and
//! `${var.NAME}` (a pipeline variable). A variable with no value renders as nothing.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::http::{MAX_VAR_BYTES, is_header_name, is_header_value};

/// Most rules one plugin may declare in one `init`; past it, declaring is `not-allowed`.
pub const MAX_RULES: usize = 64;

/// Longest template, in bytes; a longer one is `invalid-value`.
pub const MAX_TEMPLATE_BYTES: usize = 8 * 1024;

/// Longest request id kept from a client, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// Whether a client's request id is kept (`request-id`): 1 to [`MAX_REQUEST_ID_BYTES`] of
/// letters, digits and `-_.:`. Any other is replaced by a new one.
pub fn is_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// A value a template reads from the request when it is rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// `${client_ip}`: the client's IP address.
    ClientIp,
    /// `${request_id}`: the id a `request-id` rule gave the request, or else the host's own.
    RequestId,
    /// `${route}`: the name of the route that matched.
    Route,
    /// `${method}`: the request's method.
    Method,
    /// `${path}`: the request's path, as the upstream gets it.
    Path,
    /// `${header.NAME}`: the first value of a request header (the name in lower case).
    Header(String),
    /// `${var.NAME}`: a pipeline variable.
    Var(String),
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Text as it is.
    Text(String),
    /// A variable, filled in at each request.
    Variable(Variable),
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// Longer than [`MAX_TEMPLATE_BYTES`].
    TooLong,
    /// A `${` with no `}` after it.
    Unclosed,
    /// A `${…}` that names no variable.
    Unknown(String),
    /// Text with CR, LF, NUL or another control byte other than tab.
    ControlByte,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong => write!(f, "longer than {MAX_TEMPLATE_BYTES} bytes"),
            Self::Unclosed => f.write_str("unclosed `${`"),
            Self::Unknown(name) => write!(f, "unknown variable `${{{name}}}`"),
            Self::ControlByte => f.write_str("contains CR, LF, NUL or another control byte"),
        }
    }
}

/// What a template's variables are read from.
pub trait Source {
    /// Appends the variable's value to `out` (nothing when it has none).
    fn push(&self, variable: &Variable, out: &mut String);
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    /// Parses a template, refusing one that could never render a valid header value by itself.
    pub fn parse(s: &str) -> Result<Self, TemplateError> {
        if s.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::TooLong);
        }
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or(TemplateError::Unclosed)?;
            let name = &after[..end];
            let variable = match name {
                "client_ip" => Variable::ClientIp,
                "request_id" => Variable::RequestId,
                "route" => Variable::Route,
                "method" => Variable::Method,
                "path" => Variable::Path,
                _ => match name.split_once('.') {
                    Some(("header", h)) if is_header_name(h) => {
                        Variable::Header(h.to_ascii_lowercase())
                    }
                    Some(("var", v)) if !v.is_empty() && v.len() <= MAX_VAR_BYTES => {
                        Variable::Var(v.to_owned())
                    }
                    _ => return Err(TemplateError::Unknown(name.to_owned())),
                },
            };
            parts.push(Part::Variable(variable));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        for p in &parts {
            if let Part::Text(t) = p
                && !is_header_value(t)
            {
                return Err(TemplateError::ControlByte);
            }
        }
        Ok(Self(parts))
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &[Part] {
        &self.0
    }

    /// The text, when the template has no variables.
    pub fn as_text(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }

    /// The template with `variable` filled in as `value` wherever it stands (a value known
    /// when the template is declared, as the route's name is), text joined to its neighbours.
    /// The filled-in text is not checked: what a template renders always is.
    pub fn fill(&self, variable: &Variable, value: &str) -> Template {
        let mut parts: Vec<Part> = Vec::with_capacity(self.0.len());
        for part in &self.0 {
            let text = match part {
                Part::Variable(v) if v == variable => value,
                Part::Text(t) => t,
                Part::Variable(_) => {
                    parts.push(part.clone());
                    continue;
                }
            };
            match parts.last_mut() {
                Some(Part::Text(t)) => t.push_str(text),
                _ if text.is_empty() => {}
                _ => parts.push(Part::Text(text.to_owned())),
            }
        }
        Template(parts)
    }

    /// Appends the rendered value to `out`. A value read from the request may hold bytes a
    /// header cannot: the caller checks the result.
    pub fn render(&self, source: &impl Source, out: &mut String) {
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Variable(v) => source.push(v, out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Req;

    impl Source for Req {
        fn push(&self, variable: &Variable, out: &mut String) {
            match variable {
                Variable::ClientIp => out.push_str("10.0.0.1"),
                Variable::RequestId => out.push_str("id-1"),
                Variable::Route => out.push_str("api"),
                Variable::Method => out.push_str("GET"),
                Variable::Path => out.push_str("/x"),
                Variable::Header(h) if h == "x-a" => out.push('A'),
                Variable::Var(v) if v == "consumer" => out.push_str("alice"),
                Variable::Header(_) | Variable::Var(_) => {}
            }
        }
    }

    fn render(t: &str) -> String {
        let mut out = String::new();
        Template::parse(t).unwrap().render(&Req, &mut out);
        out
    }

    #[test]
    fn templates_render_each_variable() {
        assert_eq!(
            render("${client_ip}|${request_id}|${route}|${method}|${path}"),
            "10.0.0.1|id-1|api|GET|/x"
        );
        assert_eq!(render("h=${header.X-A};v=${var.consumer}"), "h=A;v=alice");
        assert_eq!(render("${header.missing}${var.unset}"), "");
        assert_eq!(render("plain $ {x} }"), "plain $ {x} }");
    }

    #[test]
    fn templates_are_checked() {
        assert_eq!(Template::parse("a${route"), Err(TemplateError::Unclosed));
        assert_eq!(
            Template::parse("${nope}"),
            Err(TemplateError::Unknown("nope".into()))
        );
        assert!(matches!(
            Template::parse("${header.a b}"),
            Err(TemplateError::Unknown(_))
        ));
        assert!(matches!(
            Template::parse("${var.}"),
            Err(TemplateError::Unknown(_))
        ));
        assert_eq!(Template::parse("a\r\nb"), Err(TemplateError::ControlByte));
        let long = "a".repeat(MAX_TEMPLATE_BYTES + 1);
        assert_eq!(Template::parse(&long), Err(TemplateError::TooLong));
    }

    #[test]
    fn plain_text_is_known_at_load() {
        assert_eq!(Template::parse("x").unwrap().as_text(), Some("x"));
        assert_eq!(Template::parse("").unwrap().as_text(), Some(""));
        assert_eq!(Template::parse("${route}").unwrap().as_text(), None);
    }

    #[test]
    fn a_known_value_is_filled_in_once() {
        let t = Template::parse("a ${route} b ${method}${route}").unwrap();
        let filled = t.fill(&Variable::Route, "api");
        assert_eq!(
            filled.parts(),
            [
                Part::Text("a api b ".into()),
                Part::Variable(Variable::Method),
                Part::Text("api".into())
            ]
        );
        let t = Template::parse("${route}-${route}").unwrap();
        assert_eq!(t.fill(&Variable::Route, "r").as_text(), Some("r-r"));
        assert_eq!(t.fill(&Variable::Route, "").as_text(), Some("-"));
        let t = Template::parse("${route}").unwrap();
        assert_eq!(t.fill(&Variable::Route, "").parts(), []);
    }

    #[test]
    fn request_ids_from_clients_are_short_and_plain() {
        assert!(is_request_id("abc-123_x.y:z"));
        assert!(!is_request_id(""));
        assert!(!is_request_id("a b"));
        assert!(!is_request_id(&"a".repeat(MAX_REQUEST_ID_BYTES + 1)));
        assert!(is_request_id(&"a".repeat(MAX_REQUEST_ID_BYTES)));
    }
}
