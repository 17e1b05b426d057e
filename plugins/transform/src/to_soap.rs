//! JSON request bodies into SOAP envelopes.
//!
//! Every element name is checked to be an `NCName` and every string to hold only characters
//! XML 1.0 can carry, then escaped; nothing from the client reaches the document unchecked, so
//! it cannot add markup.

use std::fmt;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use crate::json::{Json, Object};
use crate::soap::{MAX_DEPTH, SoapVersion, is_ncname, is_xml_char};

/// The fixed part of a request envelope, checked when the config is read.
#[derive(Debug)]
pub struct EnvelopeWriter {
    pub version: SoapVersion,
    pub operation: String,
    pub namespace: String,
}

/// Why a JSON body has no SOAP form, and where in it.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Innermost first, as the error travels out.
    path: Vec<Segment>,
    reason: String,
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl Refusal {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            path: Vec::new(),
            reason: reason.into(),
        }
    }

    fn within(mut self, segment: Segment) -> Self {
        self.path.push(segment);
        self
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            return f.write_str(&self.reason);
        }
        let mut at = String::new();
        for segment in self.path.iter().rev() {
            match segment {
                Segment::Key(k) => {
                    if !at.is_empty() {
                        at.push('.');
                    }
                    at.push_str(&crate::shorten(k));
                }
                Segment::Index(i) => at.push_str(&format!("[{i}]")),
            }
        }
        write!(f, "at `{at}`: {}", self.reason)
    }
}

type Out = Writer<Vec<u8>>;

impl EnvelopeWriter {
    /// The envelope for one request: the operation element, in the configured namespace, with
    /// one child element per member of `params`.
    pub fn write(&self, params: &Object) -> Result<Vec<u8>, Refusal> {
        let mut w = Writer::new(Vec::with_capacity(256));
        let env = self.version.envelope_namespace();
        emit(
            &mut w,
            Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)),
        )?;
        emit(
            &mut w,
            Event::Start(BytesStart::new("soap:Envelope").with_attributes([("xmlns:soap", env)])),
        )?;
        emit(&mut w, Event::Start(BytesStart::new("soap:Body")))?;
        // The operation declares the namespace as the default, so every element under it is
        // qualified in it without a prefix a JSON key could collide with.
        emit(
            &mut w,
            Event::Start(
                BytesStart::new(self.operation.as_str())
                    .with_attributes([("xmlns", self.namespace.as_str())]),
            ),
        )?;
        write_members(&mut w, params, 1)?;
        emit(&mut w, Event::End(BytesEnd::new(self.operation.as_str())))?;
        emit(&mut w, Event::End(BytesEnd::new("soap:Body")))?;
        emit(&mut w, Event::End(BytesEnd::new("soap:Envelope")))?;
        Ok(w.into_inner())
    }
}

fn emit(w: &mut Out, event: Event<'_>) -> Result<(), Refusal> {
    // Writing into a Vec cannot fail; keep the error path anyway rather than unwrap.
    w.write_event(event)
        .map_err(|e| Refusal::new(format!("the envelope could not be written: {e}")))
}

fn write_members(w: &mut Out, members: &Object, depth: usize) -> Result<(), Refusal> {
    for (key, value) in members {
        write_field(w, key, value, depth).map_err(|r| r.within(Segment::Key(key.clone())))?;
    }
    Ok(())
}

/// One member: nothing for null, repeated elements for an array, one element otherwise.
fn write_field(w: &mut Out, name: &str, value: &Json, depth: usize) -> Result<(), Refusal> {
    if !is_ncname(name) {
        return Err(Refusal::new("the key is not a valid XML element name"));
    }
    match value {
        Json::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let result = match item {
                    Json::Array(_) => Err(Refusal::new("an array in an array has no XML form")),
                    item => write_element(w, name, item, depth),
                };
                result.map_err(|r| r.within(Segment::Index(i)))?;
            }
            Ok(())
        }
        value => write_element(w, name, value, depth),
    }
}

fn write_element(w: &mut Out, name: &str, value: &Json, depth: usize) -> Result<(), Refusal> {
    if depth > MAX_DEPTH {
        return Err(Refusal::new(format!(
            "nested more than {MAX_DEPTH} levels deep"
        )));
    }
    match value {
        Json::Null | Json::Array(_) => Ok(()),
        Json::Bool(b) => leaf(w, name, if *b { "true" } else { "false" }.to_owned()),
        Json::Number(n) => leaf(w, name, n.to_string()),
        Json::String(s) => leaf(w, name, escape_text(s)?),
        Json::Object(members) => {
            emit(w, Event::Start(BytesStart::new(name)))?;
            write_members(w, members, depth + 1)?;
            emit(w, Event::End(BytesEnd::new(name)))
        }
    }
}

fn leaf(w: &mut Out, name: &str, escaped: String) -> Result<(), Refusal> {
    emit(w, Event::Start(BytesStart::new(name)))?;
    emit(w, Event::Text(BytesText::from_escaped(escaped)))?;
    emit(w, Event::End(BytesEnd::new(name)))
}

/// Escapes text content. `>` is escaped too, so `]]>` cannot appear; `\r` becomes `&#13;`,
/// which a parser keeps (a literal one would be turned into `\n`). A character XML 1.0 cannot
/// carry at all (most C0 controls, U+FFFE, U+FFFF) is refused rather than dropped or replaced,
/// so the service never gets a value other than the one the client sent.
fn escape_text(text: &str) -> Result<String, Refusal> {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#13;"),
            c if is_xml_char(c) => out.push(c),
            c => {
                return Err(Refusal::new(format!(
                    "the string holds U+{:04X}, which XML 1.0 cannot carry",
                    u32::from(c)
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(version: SoapVersion) -> EnvelopeWriter {
        EnvelopeWriter {
            version,
            operation: "GetUser".into(),
            namespace: "http://example.com/users".into(),
        }
    }

    fn params(text: &str) -> Object {
        match Json::parse(text.as_bytes()).unwrap() {
            Json::Object(members) => members,
            other => panic!("not an object: {other:?}"),
        }
    }

    fn write(text: &str) -> Result<String, String> {
        writer(SoapVersion::V11)
            .write(&params(text))
            .map(|b| String::from_utf8(b).unwrap())
            .map_err(|r| r.to_string())
    }

    #[test]
    fn writes_the_envelope_shape() {
        let xml = write(r#"{"id":7,"active":true,"name":"Ann","gone":null}"#).unwrap();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
             <GetUser xmlns=\"http://example.com/users\">\
             <id>7</id><active>true</active><name>Ann</name>\
             </GetUser></soap:Body></soap:Envelope>"
        );
        let xml = String::from_utf8(writer(SoapVersion::V12).write(&Vec::new()).unwrap()).unwrap();
        assert!(
            xml.contains("xmlns:soap=\"http://www.w3.org/2003/05/soap-envelope\""),
            "{xml}"
        );
        assert!(xml.contains("<GetUser xmlns=\"http://example.com/users\"></GetUser>"));
    }

    #[test]
    fn nested_objects_arrays_and_order() {
        let xml = write(
            r#"{"z":{"b":1,"a":{"c":"x"}},"tags":["p","q",null],"items":[{"n":1},{"n":2}],"none":[]}"#,
        )
        .unwrap();
        assert!(
            xml.contains(
                "<z><b>1</b><a><c>x</c></a></z><tags>p</tags><tags>q</tags>\
                 <items><n>1</n></items><items><n>2</n></items></GetUser>"
            ),
            "{xml}"
        );
    }

    #[test]
    fn escapes_hostile_strings() {
        let xml = write(r#"{"s":"<b>&amp;\"'</b> ]]> \r\n\t"}"#).unwrap();
        assert!(
            xml.contains("<s>&lt;b&gt;&amp;amp;\"'&lt;/b&gt; ]]&gt; &#13;\n\t</s>"),
            "{xml}"
        );
        let xml = write(r#"{"s":"</s><injected/>"}"#).unwrap();
        assert!(!xml.contains("<injected/>"), "{xml}");
    }

    #[test]
    fn refuses_what_xml_cannot_say() {
        let err = write(r#"{"user":{"a b":1}}"#).unwrap_err();
        assert_eq!(
            err,
            "at `user.a b`: the key is not a valid XML element name"
        );
        for key in ["<x>", "1st", "a:b", "", "x/", "x\"y"] {
            let body = serde_json::json!({ key: 1 }).to_string();
            assert!(write(&body).is_err(), "{key:?}");
        }
        assert!(
            write(r#"{"bad key":null}"#).is_err(),
            "checked even when omitted"
        );
        let err = write(r#"{"list":[[1]]}"#).unwrap_err();
        assert_eq!(err, "at `list[0]`: an array in an array has no XML form");
        let err = write(r#"{"a":{"b":["ok","\u0001"]}}"#).unwrap_err();
        assert_eq!(
            err,
            "at `a.b[1]`: the string holds U+0001, which XML 1.0 cannot carry"
        );
        assert!(write("{\"s\":\"\u{FFFF}\"}").is_err());
        assert!(write(r#"{"s":"\u0000"}"#).is_err());
    }

    #[test]
    fn bounds_depth() {
        let nest = |n: usize| format!("{}1{}", r#"{"a":"#.repeat(n), "}".repeat(n));
        assert!(write(&nest(MAX_DEPTH)).is_ok());
        let err = write(&nest(MAX_DEPTH + 1)).unwrap_err();
        assert!(err.contains("nested more than 64 levels"), "{err}");
    }
}
