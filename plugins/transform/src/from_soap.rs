//! SOAP responses into JSON.
//!
//! The document must be a well-formed SOAP 1.1 or 1.2 envelope in UTF-8. A DOCTYPE is refused
//! (SOAP forbids one, and without it no entity but XML's five can be defined, so nothing
//! expands), and so is nesting deeper than [`MAX_DEPTH`]. The first element in the Body becomes
//! the JSON; a Fault becomes a code and a message.

use std::collections::BTreeMap;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use serde_json::Number;

use crate::json::{Json, Object};
use crate::soap::{MAX_DEPTH, SoapVersion, XSI};

/// How element text becomes JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextOptions {
    /// Text that is a JSON number becomes a number.
    pub numbers: bool,
    /// `true` and `false` become booleans.
    pub booleans: bool,
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// The Body's first element, as an object.
    Body(Json),
    Fault(Fault),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Fault {
    /// The fault code without its prefix (`Client`, `Sender`), with SOAP 1.2 subcodes joined by
    /// dots (`Sender.InvalidOrder`), as SOAP 1.1 writes them.
    pub code: String,
    pub message: String,
}

impl Fault {
    /// Whether the fault blames the request: `Client` (SOAP 1.1) or `Sender` (SOAP 1.2).
    pub fn is_client(&self) -> bool {
        let head = self.code.split('.').next().unwrap_or_default();
        head == "Client" || head == "Sender"
    }
}

/// Reads a SOAP response. `Err` holds why it is not one, for the log.
pub fn read(body: &[u8], options: TextOptions) -> Result<Outcome, String> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_owned())?;
    let mut reader = NsReader::from_str(text);
    let mut depth = 0usize;
    let mut version = None;
    let mut seen_root = false;
    let mut seen_body = false;
    let mut in_body = false;
    let mut capture: Option<Capture> = None;
    let mut outcome: Option<Outcome> = None;

    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("not well-formed: {e}"))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                let level = depth + 1;
                if level > MAX_DEPTH {
                    return Err(format!("nested more than {MAX_DEPTH} levels deep"));
                }
                let (ns, local) = resolve(&reader, e)?;
                let nil = is_nil(&reader, e)?;
                match (&mut capture, level) {
                    (Some(c), _) => c.start(local, nil),
                    (None, 1) => {
                        if seen_root {
                            return Err("more than one root element".into());
                        }
                        seen_root = true;
                        version = ns.as_deref().and_then(SoapVersion::from_namespace);
                        if version.is_none() || local != "Envelope" {
                            return Err("the root is not a SOAP envelope".into());
                        }
                    }
                    (None, 2) => {
                        let env = version.map(SoapVersion::envelope_namespace);
                        if local == "Body" && ns.as_deref() == env {
                            if seen_body {
                                return Err("more than one Body".into());
                            }
                            seen_body = true;
                            in_body = !empty;
                        }
                    }
                    (None, 3) if in_body && outcome.is_none() => {
                        let env = version.map(SoapVersion::envelope_namespace);
                        let fault = local == "Fault" && ns.as_deref() == env;
                        // A fault's code and message are text, whatever the options say: typed,
                        // `<faultstring>500</faultstring>` would become a number and be lost.
                        let options = if fault {
                            TextOptions::default()
                        } else {
                            options
                        };
                        let mut c = Capture::new(options, fault);
                        c.start(local, nil);
                        capture = Some(c);
                    }
                    (None, _) => {}
                }
                if empty {
                    finish_element(&mut capture, &mut outcome, version);
                } else {
                    depth = level;
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                finish_element(&mut capture, &mut outcome, version);
                if depth == 1 {
                    in_body = false;
                }
            }
            Event::Text(t) => {
                let content = t.xml10_content();
                match &mut capture {
                    Some(c) => c.text(&content),
                    None if depth == 0 && !is_blank(&content) => {
                        return Err("text outside the envelope".into());
                    }
                    None => {}
                }
            }
            Event::CData(t) => match &mut capture {
                Some(c) => c.text(&t.xml10_content()),
                None if depth == 0 => return Err("CDATA outside the envelope".into()),
                None => {}
            },
            Event::GeneralRef(r) => {
                let c = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => {
                        let entity = quick_xml::escape::resolve_xml_entity(&r)
                            .ok_or_else(|| format!("undefined entity `{}`", crate::shorten(&r)))?;
                        entity.chars().next().unwrap_or_default()
                    }
                    Err(e) => return Err(format!("bad character reference: {e}")),
                };
                match &mut capture {
                    Some(capture) => capture.text(c.encode_utf8(&mut [0; 4])),
                    None if depth == 0 => return Err("a reference outside the envelope".into()),
                    None => {}
                }
            }
            Event::DocType(_) => return Err("a DOCTYPE is not allowed".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 || !seen_root {
        return Err("the document ends early".into());
    }
    if !seen_body {
        return Err("the envelope has no Body".into());
    }
    Ok(outcome.unwrap_or(Outcome::Body(Json::Object(Vec::new()))))
}

fn is_blank(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// The element's namespace (`None` when unbound) and local name. An undeclared prefix is an
/// error: the document is not namespace-well-formed.
fn resolve(
    reader: &NsReader<&[u8]>,
    e: &BytesStart<'_>,
) -> Result<(Option<String>, String), String> {
    let (ns, local) = reader.resolver().resolve_element(e.name());
    let ns = match ns {
        ResolveResult::Bound(ns) => Some(ns.0.to_owned()),
        ResolveResult::Unbound => None,
        ResolveResult::Unknown(prefix) => {
            return Err(format!("undeclared prefix `{}`", crate::shorten(&prefix)));
        }
    };
    Ok((ns, local.as_ref().to_owned()))
}

/// Whether the element says `xsi:nil="true"`. Reading every attribute also checks that they
/// are well-formed.
fn is_nil(reader: &NsReader<&[u8]>, e: &BytesStart<'_>) -> Result<bool, String> {
    let mut nil = false;
    for attr in e.attributes() {
        let attr = attr.map_err(|err| format!("bad attribute: {err}"))?;
        let (ns, local) = reader.resolver().resolve_attribute(attr.key);
        if matches!(ns, ResolveResult::Bound(ns) if ns.0 == XSI) && local.as_ref() == "nil" {
            let value = attr
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|err| format!("bad attribute: {err}"))?;
            nil = matches!(value.trim(), "true" | "1");
        }
    }
    Ok(nil)
}

fn finish_element(
    capture: &mut Option<Capture>,
    outcome: &mut Option<Outcome>,
    version: Option<SoapVersion>,
) {
    let Some(c) = capture else { return };
    if let Some(done) = c.end() {
        *outcome = Some(done.into_outcome(version));
        *capture = None;
    }
}

/// Builds JSON from one element's subtree, without recursion.
struct Capture {
    options: TextOptions,
    fault: bool,
    stack: Vec<Frame>,
}

struct Frame {
    name: String,
    nil: bool,
    text: String,
    children: Object,
    /// Built once an element has many children, so a hostile run of distinct names costs
    /// log time per child rather than a scan.
    index: Option<BTreeMap<String, usize>>,
}

/// An element with its value, once its end tag was read.
struct Done {
    name: String,
    value: Json,
    fault: bool,
}

const INDEX_FROM: usize = 16;

impl Capture {
    fn new(options: TextOptions, fault: bool) -> Self {
        Self {
            options,
            fault,
            stack: Vec::new(),
        }
    }

    fn start(&mut self, name: String, nil: bool) {
        self.stack.push(Frame {
            name,
            nil,
            text: String::new(),
            children: Vec::new(),
            index: None,
        });
    }

    fn text(&mut self, text: &str) {
        if let Some(top) = self.stack.last_mut() {
            top.text.push_str(text);
        }
    }

    /// Closes the innermost element; returns the captured one when that was it.
    fn end(&mut self) -> Option<Done> {
        let mut frame = self.stack.pop()?;
        let name = std::mem::take(&mut frame.name);
        let value = frame.value(self.options);
        match self.stack.last_mut() {
            Some(parent) => {
                parent.add(name, value);
                None
            }
            None => Some(Done {
                name,
                value,
                fault: self.fault,
            }),
        }
    }
}

impl Frame {
    fn value(self, options: TextOptions) -> Json {
        if self.nil {
            return Json::Null;
        }
        if self.children.is_empty() {
            return scalar(self.text, options);
        }
        let mut members = self.children;
        let text = self.text.trim();
        if !text.is_empty() {
            // Mixed content: `#` cannot start an element name, so the key is free.
            members.push(("#text".to_owned(), Json::String(text.to_owned())));
        }
        Json::Object(members)
    }

    /// Adds a child; a repeated name turns its value into an array. Values are never arrays
    /// otherwise, so an array here always means repetition.
    fn add(&mut self, name: String, value: Json) {
        let at = match &self.index {
            Some(index) => index.get(&name).copied(),
            None => self.children.iter().position(|(k, _)| *k == name),
        };
        match at {
            Some(at) => {
                let slot = &mut self.children[at].1;
                match slot {
                    Json::Array(items) => items.push(value),
                    _ => {
                        let first = std::mem::replace(slot, Json::Null);
                        *slot = Json::Array(vec![first, value]);
                    }
                }
            }
            None => {
                if let Some(index) = &mut self.index {
                    index.insert(name.clone(), self.children.len());
                }
                self.children.push((name, value));
                if self.index.is_none() && self.children.len() >= INDEX_FROM {
                    self.index = Some(
                        self.children
                            .iter()
                            .enumerate()
                            .map(|(i, (k, _))| (k.clone(), i))
                            .collect(),
                    );
                }
            }
        }
    }
}

fn scalar(text: String, options: TextOptions) -> Json {
    if options.booleans {
        match text.as_str() {
            "true" => return Json::Bool(true),
            "false" => return Json::Bool(false),
            _ => {}
        }
    }
    if options.numbers
        && let Some(n) = number(&text)
    {
        return Json::Number(n);
    }
    Json::String(text)
}

/// The number, when `text` is written exactly as a JSON number and fits without losing digits
/// of an integer (an integer past 64 bits stays text).
fn number(text: &str) -> Option<Number> {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let int_start = i;
    if digits(&mut i) == 0 || (b[int_start] == b'0' && i - int_start > 1) {
        return None;
    }
    let mut integer = true;
    if b.get(i) == Some(&b'.') {
        i += 1;
        integer = false;
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        integer = false;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    if integer {
        return match text.parse::<i64>() {
            Ok(n) => Some(n.into()),
            Err(_) => text.parse::<u64>().ok().map(Number::from),
        };
    }
    text.parse::<f64>().ok().and_then(Number::from_f64)
}

impl Done {
    fn into_outcome(self, version: Option<SoapVersion>) -> Outcome {
        if self.fault {
            return Outcome::Fault(fault(&self.value, version));
        }
        match self.value {
            object @ Json::Object(_) => Outcome::Body(object),
            other => Outcome::Body(Json::Object(vec![(self.name, other)])),
        }
    }
}

fn fault(value: &Json, version: Option<SoapVersion>) -> Fault {
    let text = |v: Option<&Json>| match v {
        Some(Json::String(s)) => s.trim().to_owned(),
        Some(Json::Array(items)) => items
            .first()
            .and_then(Json::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned(),
        _ => String::new(),
    };
    match version {
        Some(SoapVersion::V12) => {
            let mut parts = Vec::new();
            let mut code = value.get("Code");
            while let Some(c) = code {
                if parts.len() >= MAX_DEPTH {
                    break;
                }
                parts.push(local_part(&text(c.get("Value"))).to_owned());
                code = c.get("Subcode");
            }
            Fault {
                code: parts.join("."),
                message: text(value.get("Reason").and_then(|r| r.get("Text"))),
            }
        }
        _ => Fault {
            code: local_part(&text(value.get("faultcode"))).to_owned(),
            message: text(value.get("faultstring")),
        },
    }
}

/// `soap:Client` is `Client`: the prefix means nothing to a JSON client.
fn local_part(qname: &str) -> &str {
    qname.rsplit_once(':').map_or(qname, |(_, local)| local)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENV11: &str = r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:t="urn:t">"#;
    const ENV12: &str =
        r#"<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope" xmlns:t="urn:t">"#;

    fn body11(inner: &str) -> String {
        format!("{ENV11}<s:Body>{inner}</s:Body></s:Envelope>")
    }

    fn read_json(doc: &str, options: TextOptions) -> serde_json::Value {
        match read(doc.as_bytes(), options).unwrap() {
            Outcome::Body(json) => serde_json::from_slice(&json.to_vec()).unwrap(),
            Outcome::Fault(f) => panic!("fault {f:?}"),
        }
    }

    fn plain(doc: &str) -> serde_json::Value {
        read_json(doc, TextOptions::default())
    }

    #[test]
    fn first_body_element_becomes_an_object() {
        let doc = body11(
            "<t:GetUserResponse><t:user><t:name>Ann</t:name><t:age>7</t:age>\
             <t:address><t:city>Oslo</t:city></t:address></t:user>\
             <t:tag>a</t:tag><t:tag>b</t:tag><t:empty/><t:gone xsi:nil=\"true\" \
             xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"/></t:GetUserResponse>\
             <t:Ignored>x</t:Ignored>",
        );
        assert_eq!(
            plain(&doc),
            serde_json::json!({
                "user": {"name": "Ann", "age": "7", "address": {"city": "Oslo"}},
                "tag": ["a", "b"],
                "empty": "",
                "gone": null
            })
        );
        // Key order follows the document.
        let json = match read(doc.as_bytes(), TextOptions::default()).unwrap() {
            Outcome::Body(json) => String::from_utf8(json.to_vec()).unwrap(),
            Outcome::Fault(_) => unreachable!(),
        };
        assert!(
            json.starts_with(r#"{"user":{"name":"Ann","age":"7""#),
            "{json}"
        );
    }

    #[test]
    fn headers_are_skipped_and_soap12_works() {
        let doc = format!(
            "{ENV12}<e:Header><t:Auth><t:token>secret</t:token></t:Auth></e:Header>\
             <e:Body><t:R><t:v>1</t:v></t:R></e:Body></e:Envelope>"
        );
        assert_eq!(plain(&doc), serde_json::json!({"v": "1"}));
    }

    #[test]
    fn leaf_or_empty_body() {
        assert_eq!(
            plain(&body11("<t:Count>3</t:Count>")),
            serde_json::json!({"Count": "3"})
        );
        assert_eq!(plain(&body11("")), serde_json::json!({}));
        assert_eq!(
            plain(&format!("{ENV11}<s:Body/></s:Envelope>")),
            serde_json::json!({})
        );
    }

    #[test]
    fn text_is_unescaped_exactly() {
        let doc = body11(
            "<t:R><t:s>&lt;b&gt;&amp;amp;&quot;&apos;&lt;/b&gt; ]]&gt; &#13;&#x41;\n\t</t:s>\
             <t:c><![CDATA[<raw> & ]]></t:c><t:ws>  </t:ws></t:R>",
        );
        assert_eq!(
            plain(&doc),
            serde_json::json!({"s": "<b>&amp;\"'</b> ]]> \rA\n\t", "c": "<raw> & ", "ws": "  "})
        );
    }

    #[test]
    fn mixed_content_keeps_its_text() {
        let doc = body11("<t:R><t:p> hello <t:b>x</t:b> world </t:p></t:R>");
        assert_eq!(
            plain(&doc),
            serde_json::json!({"p": {"b": "x", "#text": "hello  world"}})
        );
    }

    #[test]
    fn numbers_and_booleans_when_asked() {
        let doc = body11(
            "<t:R><t:i>42</t:i><t:n>-7</t:n><t:f>6.50</t:f><t:e>1e3</t:e><t:z>007</t:z>\
             <t:big>123456789012345678901234567890</t:big><t:u>18446744073709551615</t:u>\
             <t:x>12a</t:x><t:sp> 5</t:sp><t:b>true</t:b><t:nb>True</t:nb><t:d>1.</t:d></t:R>",
        );
        let options = TextOptions {
            numbers: true,
            booleans: true,
        };
        assert_eq!(
            read_json(&doc, options),
            serde_json::json!({
                "i": 42, "n": -7, "f": 6.5, "e": 1000.0, "z": "007",
                "big": "123456789012345678901234567890", "u": 18446744073709551615u64,
                "x": "12a", "sp": " 5", "b": true, "nb": "True", "d": "1."
            })
        );
        assert_eq!(
            plain(&doc)["i"],
            serde_json::json!("42"),
            "text stays text by default"
        );
        assert_eq!(plain(&doc)["b"], serde_json::json!("true"));
    }

    #[test]
    fn soap11_faults() {
        let doc = body11(
            "<s:Fault><faultcode>s:Client.InvalidOrder</faultcode>\
             <faultstring>bad &lt;order&gt;</faultstring><detail><x>secret</x></detail></s:Fault>",
        );
        let fault = match read(doc.as_bytes(), TextOptions::default()).unwrap() {
            Outcome::Fault(f) => f,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fault,
            Fault {
                code: "Client.InvalidOrder".into(),
                message: "bad <order>".into()
            }
        );
        assert!(fault.is_client());
        let doc = body11(
            "<s:Fault><faultcode>s:Server</faultcode><faultstring>down</faultstring></s:Fault>",
        );
        let Outcome::Fault(fault) = read(doc.as_bytes(), TextOptions::default()).unwrap() else {
            panic!()
        };
        assert_eq!(fault.code, "Server");
        assert!(!fault.is_client());
    }

    #[test]
    fn a_fault_keeps_its_text_when_text_is_typed() {
        let typed = TextOptions {
            numbers: true,
            booleans: true,
        };
        let doc = body11(
            "<s:Fault><faultcode>s:Server</faultcode><faultstring>500</faultstring></s:Fault>",
        );
        let Outcome::Fault(fault) = read(doc.as_bytes(), typed).unwrap() else {
            panic!()
        };
        assert_eq!(fault.message, "500");
        let doc = format!(
            "{ENV12}<e:Body><e:Fault><e:Code><e:Value>e:Receiver</e:Value></e:Code>\
             <e:Reason><e:Text>true</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"
        );
        let Outcome::Fault(fault) = read(doc.as_bytes(), typed).unwrap() else {
            panic!()
        };
        assert_eq!(fault.message, "true");
    }

    #[test]
    fn soap12_faults() {
        let doc = format!(
            "{ENV12}<e:Body><e:Fault><e:Code><e:Value>e:Sender</e:Value>\
             <e:Subcode><e:Value>t:InvalidOrder</e:Value></e:Subcode></e:Code>\
             <e:Reason><e:Text xml:lang=\"en\">bad</e:Text><e:Text xml:lang=\"fr\">mauvais</e:Text></e:Reason>\
             </e:Fault></e:Body></e:Envelope>"
        );
        let Outcome::Fault(fault) = read(doc.as_bytes(), TextOptions::default()).unwrap() else {
            panic!()
        };
        assert_eq!(fault.code, "Sender.InvalidOrder");
        assert_eq!(fault.message, "bad");
        assert!(fault.is_client());
        let doc = format!(
            "{ENV12}<e:Body><e:Fault><e:Code><e:Value>e:Receiver</e:Value></e:Code>\
             <e:Reason><e:Text>down</e:Text></e:Reason></e:Fault></e:Body></e:Envelope>"
        );
        let Outcome::Fault(fault) = read(doc.as_bytes(), TextOptions::default()).unwrap() else {
            panic!()
        };
        assert_eq!(
            (fault.code.as_str(), fault.is_client()),
            ("Receiver", false)
        );
    }

    #[test]
    fn a_fault_outside_the_envelope_namespace_is_data() {
        let doc = body11("<t:Fault><t:faultcode>x</t:faultcode></t:Fault>");
        assert_eq!(plain(&doc), serde_json::json!({"faultcode": "x"}));
    }

    #[test]
    fn refuses_what_is_not_a_soap_envelope() {
        let cases = [
            ("", "ends early"),
            ("not xml at all", "text outside"),
            ("{\"a\":1}", "text outside"),
            ("<html><body>oops</body></html>", "not a SOAP envelope"),
            ("<Envelope><Body/></Envelope>", "not a SOAP envelope"),
            (
                "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"></s:Envelope>",
                "no Body",
            ),
            (&body11("<t:R>"), "not well-formed"),
            (&body11("<t:R></t:X>"), "not well-formed"),
            (&body11("<t:R>&bogus;</t:R>"), "undefined entity"),
            (&body11("<x:R/>"), "undeclared prefix"),
            (&format!("{}<more/>", body11("")), "more than one root"),
            (&format!("{}trailing", body11("")), "text outside"),
            (&body11("<t:R a=\"1\" a=\"2\"/>"), "bad attribute"),
            (
                &format!("{ENV11}<s:Body/><s:Body/></s:Envelope>"),
                "more than one Body",
            ),
        ];
        for (doc, why) in cases {
            let err = read(doc.as_bytes(), TextOptions::default()).unwrap_err();
            assert!(err.contains(why), "{doc:?}: {err}");
        }
        assert!(read(b"\xff\xfe<", TextOptions::default()).is_err());
    }

    #[test]
    fn refuses_a_doctype_so_no_entity_expands() {
        let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><R>&lol2;</R></s:Body></s:Envelope>"#;
        let err = read(billion_laughs.as_bytes(), TextOptions::default()).unwrap_err();
        assert!(err.contains("DOCTYPE"), "{err}");
        let external = r#"<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>"#;
        assert!(read(external.as_bytes(), TextOptions::default()).is_err());
    }

    #[test]
    fn bounds_depth() {
        let nest = |n: usize| format!("{}x{}", "<t:a>".repeat(n), "</t:a>".repeat(n));
        // Envelope and Body take two levels.
        assert!(
            read(
                body11(&nest(MAX_DEPTH - 2)).as_bytes(),
                TextOptions::default()
            )
            .is_ok()
        );
        let err = read(
            body11(&nest(MAX_DEPTH - 1)).as_bytes(),
            TextOptions::default(),
        )
        .unwrap_err();
        assert!(err.contains("nested more than 64"), "{err}");
        // Deep Header content counts too.
        let doc = format!(
            "{ENV11}<s:Header>{}</s:Header><s:Body/></s:Envelope>",
            nest(MAX_DEPTH)
        );
        assert!(read(doc.as_bytes(), TextOptions::default()).is_err());
    }

    #[test]
    fn many_repeated_and_distinct_children() {
        let mut inner = String::from("<t:R>");
        for i in 0..200 {
            inner.push_str(&format!("<t:k{i}>{i}</t:k{i}><t:rep>{i}</t:rep>"));
        }
        inner.push_str("</t:R>");
        let json = plain(&body11(&inner));
        assert_eq!(json["rep"].as_array().unwrap().len(), 200);
        assert_eq!(json["k199"], "199");
        assert_eq!(json.as_object().unwrap().len(), 201);
    }
}
