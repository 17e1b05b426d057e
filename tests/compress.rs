//! Response compression on a route with `compress = true`, seen by curl `--compressed` (which
//! decodes brotli and gzip itself): the coding follows `Accept-Encoding`, only textual
//! responses long enough are compressed, the upstream is asked for identity, and a response
//! phase that reads the body (redact) sees it uncompressed.

mod support;

use serde_json::Value;
use support::config::GatewayConfig;
use support::curl::{curl, header};
use support::upstream::{Behaviour, Upstream};
use support::{Gateway, plugin};

/// A JSON document of some 20 KiB, with a field for redact to mask.
fn document() -> &'static str {
    let items: Vec<String> = (0..300)
        .map(|i| format!(r#"{{"id":{i},"name":"item number {i}","email":"user{i}@example.com"}}"#))
        .collect();
    Box::leak(format!(r#"{{"items":[{}]}}"#, items.join(",")).into_boxed_str())
}

#[tokio::test(flavor = "multi_thread")]
async fn textual_responses_are_compressed_by_accept_encoding() {
    let doc = document();
    let json = Upstream::start("json", Behaviour::Fixed("application/json", doc)).await;
    let png = Upstream::start("png", Behaviour::Fixed("image/png", doc)).await;
    let small = Upstream::start("small", Behaviour::Fixed("text/plain", "short")).await;
    let echo = Upstream::start("echo", Behaviour::Echo).await;
    let cfg = GatewayConfig::new()
        .upstream("json", &json.url())
        .upstream("png", &png.url())
        .upstream("small", &small.url())
        .upstream("echo", &echo.url())
        .upstream("plain", &json.url())
        .route("json", "/json", "json")
        .with("compress = true")
        .route("png", "/png", "png")
        .with("compress = true")
        .route("small", "/small", "small")
        .with("compress = true")
        .route("echo", "/echo", "echo")
        .with("compress = true")
        .with("compress_min_bytes = 10")
        .route("plain", "/plain", "plain");
    let gw = Gateway::start(&cfg.to_string());

    // curl offers every coding it decodes; brotli is preferred, and the body decodes to the
    // upstream's, byte for byte.
    let (h, body) = curl(&["--compressed", &gw.url("/json")]);
    assert_eq!(header(&h, "content-encoding"), Some("br"), "{h}");
    assert_eq!(header(&h, "vary"), Some("accept-encoding"));
    assert!(header(&h, "content-length").is_none(), "{h}");
    assert_eq!(body, doc.as_bytes());
    for (accept, coding) in [("gzip", "gzip"), ("br;q=0.5, gzip", "gzip"), ("br", "br")] {
        let (h, body) = curl(&[
            "--compressed",
            "-H",
            &format!("accept-encoding: {accept}"),
            &gw.url("/json"),
        ]);
        assert_eq!(header(&h, "content-encoding"), Some(coding), "{accept}");
        assert_eq!(body, doc.as_bytes(), "{accept}");
    }
    // What went over the wire is much shorter than the document.
    let (_, raw) = curl(&["-H", "accept-encoding: gzip", &gw.url("/json")]);
    assert!(raw.len() * 5 < doc.len(), "{} bytes compressed", raw.len());
    assert_eq!(&raw[..2], b"\x1f\x8b", "a gzip stream");

    // No coding accepted: identity, with its length, and the Vary that tells caches why.
    let (h, body) = curl(&["-H", "accept-encoding: identity", &gw.url("/json")]);
    assert!(header(&h, "content-encoding").is_none());
    assert_eq!(
        header(&h, "content-length"),
        Some(doc.len().to_string().as_str())
    );
    assert_eq!(header(&h, "vary"), Some("accept-encoding"));
    assert_eq!(body, doc.as_bytes());
    // A HEAD gets the headers a GET would.
    let (h, _) = curl(&["-I", "-H", "accept-encoding: gzip", &gw.url("/json")]);
    assert_eq!(header(&h, "content-encoding"), Some("gzip"), "{h}");
    assert!(header(&h, "content-length").is_none(), "{h}");

    // Not textual, too short, or a route without compression: as the upstream sent it.
    for path in ["/png", "/small", "/plain"] {
        let (h, _) = curl(&["--compressed", &gw.url(path)]);
        assert!(header(&h, "content-encoding").is_none(), "{path}: {h}");
        assert!(header(&h, "content-length").is_some(), "{path}");
    }

    // The upstream was asked for identity: the client's Accept-Encoding never reached it.
    let (h, body) = curl(&["--compressed", &gw.url("/echo")]);
    assert_eq!(header(&h, "content-encoding"), Some("br"), "{h}");
    let echoed: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        echoed["headers"].get("accept-encoding").is_none(),
        "{echoed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_phase_that_reads_the_body_sees_it_uncompressed() {
    let doc = document();
    let up = Upstream::start("json", Behaviour::Fixed("application/json", doc)).await;
    let cfg = GatewayConfig::new()
        .plugin("redact", &plugin("redact"))
        .upstream("json", &up.url())
        .route("json", "/", "json")
        .with("compress = true")
        .stage("redact", r#"{ fields = ["items.email"] }"#);
    let gw = Gateway::start(&cfg.to_string());
    let (h, body) = curl(&["--compressed", "-H", "accept-encoding: gzip", &gw.url("/")]);
    assert_eq!(header(&h, "content-encoding"), Some("gzip"), "{h}");
    let masked: Value = serde_json::from_slice(&body).unwrap();
    let items = masked["items"].as_array().unwrap();
    assert_eq!(items.len(), 300);
    assert!(items.iter().all(|i| i["email"] == "***"), "{}", items[0]);
    assert_eq!(items[7]["name"], "item number 7");
}
