//! transform's JSON→SOAP writer: a JSON object either has a SOAP form or is refused for a
//! reason it really has, and the envelope written reads back (with the SOAP→JSON reader) as
//! the same data, so nothing in a client's JSON can add, drop or move markup.

#![no_main]

use libfuzzer_sys::fuzz_target;
use transform::fuzzing::{
    EnvelopeWriter, Json, MAX_DEPTH, Object, Outcome, SoapVersion, TextOptions, is_ncname,
    is_xml_char, read,
};
use wasmgate_fuzz::{NAMESPACE, OPERATION, read_back};

fuzz_target!(|data: &[u8]| {
    let Ok(Json::Object(params)) = Json::parse(data) else {
        return;
    };
    let expected = read_back(&params);
    let refusable = has_no_soap_form(&params, 1);
    for version in [SoapVersion::V11, SoapVersion::V12] {
        let writer = EnvelopeWriter {
            version,
            operation: OPERATION.to_owned(),
            namespace: NAMESPACE.to_owned(),
        };
        let xml = match writer.write(&params) {
            Ok(xml) => xml,
            Err(refusal) => {
                assert!(refusable, "refused without a reason: {refusal}");
                continue;
            }
        };
        assert!(!refusable, "written although it has no SOAP form");
        let text = std::str::from_utf8(&xml).expect("the envelope is UTF-8");
        let back = read(&xml, TextOptions::default());
        match &expected {
            Some(expected) => assert_eq!(
                back.as_ref().ok(),
                Some(&Outcome::Body(expected.clone())),
                "{text}"
            ),
            None => assert!(back.is_err(), "{text}"),
        }
        let typed = TextOptions {
            numbers: true,
            booleans: true,
        };
        assert_eq!(
            read(&xml, typed).is_ok(),
            expected.is_some(),
            "text options change whether {text} reads"
        );
    }
});

/// Whether some member has a key that is not an XML name, an array in an array, a string XML
/// cannot carry, or an element nested deeper than the writer goes.
fn has_no_soap_form(members: &Object, depth: usize) -> bool {
    members.iter().any(|(key, value)| {
        !is_ncname(key)
            || match value {
                Json::Array(items) => items.iter().any(|item| match item {
                    Json::Array(_) => true,
                    item => element_refused(item, depth),
                }),
                value => element_refused(value, depth),
            }
    })
}

fn element_refused(value: &Json, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return true;
    }
    match value {
        Json::String(s) => !s.chars().all(is_xml_char),
        Json::Object(members) => has_no_soap_form(members, depth + 1),
        _ => false,
    }
}
