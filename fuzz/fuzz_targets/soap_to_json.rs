//! transform's SOAP→JSON reader on any document: it never panics, the text options change
//! only how text is typed (never whether a document reads), what it gives is JSON that parses
//! back to itself (unique keys, finite numbers), and where that JSON has a SOAP form, writing
//! and reading it again gives what the JSON→SOAP round trip promises.

#![no_main]

use libfuzzer_sys::fuzz_target;
use transform::fuzzing::{EnvelopeWriter, Json, Outcome, SoapVersion, TextOptions, read};
use wasmgate_fuzz::{NAMESPACE, OPERATION, read_back};

fuzz_target!(|data: &[u8]| {
    let text = read(data, TextOptions::default());
    let typed = read(
        data,
        TextOptions {
            numbers: true,
            booleans: true,
        },
    );
    match (&text, &typed) {
        (Err(_), Err(_)) => return,
        (Ok(Outcome::Fault(a)), Ok(Outcome::Fault(b))) => {
            assert_eq!(a, b, "a fault's text is not typed");
            for part in a.code.split('.') {
                assert!(!part.contains(':'), "a prefix left in {:?}", a.code);
            }
            return;
        }
        (Ok(Outcome::Body(_)), Ok(Outcome::Body(_))) => {}
        _ => panic!("the text options changed the outcome: {text:?} / {typed:?}"),
    }
    let (Ok(Outcome::Body(doc)), Ok(Outcome::Body(typed_doc))) = (&text, &typed) else {
        unreachable!()
    };
    assert!(matches!(doc, Json::Object(_)), "{doc:?}");
    let again = Json::parse(&doc.to_vec()).expect("the JSON parses");
    assert_eq!(&again, doc);
    Json::parse(&typed_doc.to_vec()).expect("the typed JSON parses");
    same_but_typed(doc, typed_doc);
    let Ok(Outcome::Body(Json::Object(params))) = text else {
        unreachable!()
    };
    let writer = EnvelopeWriter {
        version: SoapVersion::V11,
        operation: OPERATION.to_owned(),
        namespace: NAMESPACE.to_owned(),
    };
    // Element names the reader took may not be XML names, nor text be XML characters;
    // the writer refuses those, which json_to_soap checks.
    let Ok(xml) = writer.write(&params) else {
        return;
    };
    if let Some(expected) = read_back(&params) {
        assert_eq!(
            read(&xml, TextOptions::default()).ok(),
            Some(Outcome::Body(expected))
        );
    }
});

/// `typed` is `text` with some strings read as numbers or booleans, and nothing else changed.
fn same_but_typed(text: &Json, typed: &Json) {
    match (text, typed) {
        (Json::String(a), Json::String(b)) => assert_eq!(a, b),
        (Json::String(a), Json::Bool(b)) => assert_eq!(a, &b.to_string()),
        (Json::String(a), Json::Number(n)) => {
            assert_eq!(a.trim(), a, "a number from padded text");
            match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => assert_eq!(a.parse::<i64>().ok(), Some(i), "{a}"),
                (_, Some(u), _) => assert_eq!(a.parse::<u64>().ok(), Some(u), "{a}"),
                (_, _, f) => assert_eq!(a.parse::<f64>().ok(), f, "{a}"),
            }
        }
        (Json::Null, Json::Null) => {}
        (Json::Array(a), Json::Array(b)) => {
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).for_each(|(a, b)| same_but_typed(a, b));
        }
        (Json::Object(a), Json::Object(b)) => {
            assert_eq!(a.len(), b.len());
            for ((ka, va), (kb, vb)) in a.iter().zip(b) {
                assert_eq!(ka, kb);
                same_but_typed(va, vb);
            }
        }
        (a, b) => panic!("{a:?} typed as {b:?}"),
    }
}
