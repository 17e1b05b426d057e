//! The cors plugin through the real gateway: the exact headers of preflights and responses, seen
//! by an HTTP client; then headless Chromium, on pages of two other origins, fetching through
//! the gateway as a web app would: the allowed origin's preflighted and simple requests work,
//! the other origin's fail in the browser, and no preflight ever reaches the upstream.

mod support;

use http::{Method, StatusCode};
use serde_json::Value;
use support::browser::{Page, PageServer, run_page};
use support::config::GatewayConfig;
use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, Resp, plugin};

const A: &str = "https://app.example.com";
const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

fn cors_headers(r: &Resp) -> Vec<(String, String)> {
    r.headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("access-control-"))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect()
}

fn vary(r: &Resp) -> Vec<&str> {
    r.headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

async fn preflight(c: &Client, url: &str, origin: &str, method: &str, headers: &str) -> Resp {
    let mut h = vec![
        ("origin", origin),
        ("access-control-request-method", method),
    ];
    if !headers.is_empty() {
        h.push(("access-control-request-headers", headers));
    }
    c.request(Method::OPTIONS, url, &h, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflights_are_answered_at_the_gateway_and_responses_carry_exact_headers() {
    let up = Upstream::start("up", Behaviour::Echo).await;
    // An upstream that does CORS of its own, which the plugin's policy replaces.
    let own = PageServer::start(vec![
        Page::new("/own/x", "text/plain", "own")
            .header("access-control-allow-origin", "*")
            .header("access-control-expose-headers", "x-secret")
            .header("vary", "Accept-Encoding"),
    ])
    .await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin_with("cors", &plugin("cors"), &["capabilities = []"])
            .upstream("up", &up.url())
            .upstream("own", &own.origin())
            .route("api", "/api", "up")
            .stage(
                "cors",
                &format!(
                    r#"{{ origins = ["{A}"], methods = ["GET", "PUT"], allowed_headers = ["X-Custom", "content-type"], exposed_headers = ["x-upstream"], max_age_seconds = 600 }}"#
                ),
            )
            .route("own", "/own", "own")
            .stage("cors", &format!(r#"{{ origins = ["{A}"] }}"#))
            .route("zone", "/zone", "up")
            .stage(
                "cors",
                r#"{ origins = ["https://*.example.com"], credentials = true }"#,
            )
            .to_string(),
    );
    let c = Client::new();
    let api = gw.url("/api/items");

    // An allowed preflight: 204, the policy, and nothing upstream.
    let r = preflight(&c, &api, A, "PUT", "x-custom,content-type").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert_eq!(
        cors_headers(&r),
        pairs(&[
            ("access-control-allow-origin", A),
            ("access-control-allow-methods", "GET, PUT"),
            ("access-control-allow-headers", "x-custom, content-type"),
            ("access-control-max-age", "600"),
        ])
    );
    assert_eq!(vary(&r), [PREFLIGHT_VARY]);
    assert!(r.body.is_empty());

    // Refused preflights: another origin, no origin, a method or a header not allowed.
    for (origin, method, headers, why) in [
        ("https://evil.example.org", "PUT", "", "origin"),
        ("", "PUT", "", "origin"),
        (A, "DELETE", "", "method"),
        (A, "PUT", "x-custom, x-other", "header"),
    ] {
        let r = if origin.is_empty() {
            let h = [("access-control-request-method", method)];
            c.request(Method::OPTIONS, &api, &h, "").await
        } else {
            preflight(&c, &api, origin, method, headers).await
        };
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{why}");
        assert!(
            r.text().contains(&format!("{why} not allowed")),
            "{}",
            r.text()
        );
        assert_eq!(cors_headers(&r), [], "{why}");
        assert_eq!(vary(&r), [PREFLIGHT_VARY]);
    }
    assert_eq!(up.hits(), 0, "a preflight reached the upstream");

    // An actual request from the allowed origin, from another one, and from no browser.
    let r = c.get_with(&api, &[("origin", A)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        cors_headers(&r),
        pairs(&[
            ("access-control-allow-origin", A),
            ("access-control-expose-headers", "x-upstream"),
        ])
    );
    assert_eq!(vary(&r), ["Origin"]);
    assert_eq!(r.json()["headers"]["origin"], A);
    for headers in [&[("origin", "https://evil.example.org")][..], &[]] {
        let r = c.get_with(&api, headers).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(cors_headers(&r), [], "{headers:?}");
        assert_eq!(vary(&r), ["Origin"]);
    }
    // An OPTIONS request that is no preflight goes upstream like any other.
    let r = c.request(Method::OPTIONS, &api, &[("origin", A)], "").await;
    assert_eq!(r.json()["method"], "OPTIONS");
    assert_eq!(r.header("access-control-allow-origin"), Some(A));
    assert_eq!(up.hits(), 4);

    // The upstream's own CORS headers give way to the plugin's; its `Vary` stays.
    let r = c.get_with(&gw.url("/own/x"), &[("origin", A)]).await;
    assert_eq!(r.text(), "own");
    assert_eq!(
        cors_headers(&r),
        pairs(&[("access-control-allow-origin", A)])
    );
    assert_eq!(vary(&r), ["Accept-Encoding", "Origin"]);
    let r = c
        .get_with(&gw.url("/own/x"), &[("origin", "https://evil.example.org")])
        .await;
    assert_eq!(cors_headers(&r), []);

    // A pattern, with credentials: subdomains at any depth, echoed; look-alikes get nothing.
    let zone = gw.url("/zone/x");
    for origin in ["https://a.example.com", "https://a.b.example.com"] {
        let r = c.get_with(&zone, &[("origin", origin)]).await;
        assert_eq!(
            cors_headers(&r),
            pairs(&[
                ("access-control-allow-origin", origin),
                ("access-control-allow-credentials", "true"),
            ])
        );
    }
    for origin in [
        "https://example.com",
        "https://evil-example.com",
        "https://example.com.evil.org",
        "http://a.example.com",
        "null",
    ] {
        let r = c.get_with(&zone, &[("origin", origin)]).await;
        assert_eq!(cors_headers(&r), [], "{origin}");
        let r = preflight(&c, &zone, origin, "GET", "").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{origin}");
    }
}

#[test]
fn a_bad_config_is_refused_at_load_naming_the_key() {
    for (config, key) in [
        (r#"{ origins = ["*"], credentials = true }"#, "origins[0]"),
        (r#"{ origins = ["https://a.example.com/"] }"#, "origins[0]"),
        (
            r#"{ origins = ["https://a.example.com", "https://*.com"] }"#,
            "origins[1]",
        ),
        (
            r#"{ origins = ["https://a.example.com"], allowed_headers = ["*"], credentials = true }"#,
            "allowed_headers[0]",
        ),
        (r#"{ methods = ["GET"] }"#, "origins"),
    ] {
        let (ok, out) = support::check(
            &GatewayConfig::new()
                .plugin("cors", &plugin("cors"))
                .upstream("up", "http://127.0.0.1:1")
                .route("r", "/", "up")
                .stage("cors", config)
                .to_string(),
        );
        assert!(!ok, "{config} was accepted");
        assert!(out.contains(key), "{config}: {out}");
    }
}

/// The test page: it fetches, through the gateway named in its query (`?gateway=URL`), a
/// preflighted `PUT` (a custom header and a JSON body), a simple `GET`, and a `GET` with
/// credentials; each outcome is what the page could see: status, body and two headers, or the
/// error the browser gave it.
const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>running</title></head>
<body><pre id="result"></pre>
<script>
const gateway = new URLSearchParams(location.search).get("gateway");
async function attempt(path, init) {
  try {
    const r = await fetch(gateway + path, init);
    return {
      ok: r.ok, status: r.status, body: await r.text(),
      exposed: r.headers.get("x-upstream"), hidden: r.headers.get("x-internal"),
    };
  } catch (e) {
    return { error: e.name + ": " + e.message };
  }
}
(async () => {
  const out = {
    put: await attempt("/api/items", {
      method: "PUT",
      headers: { "X-Custom": "1", "Content-Type": "application/json" },
      body: '{"n":1}',
    }),
    get: await attempt("/api/items?simple=1", {}),
    credentialed: await attempt("/cred/me", { credentials: "include" }),
  };
  document.getElementById("result").textContent = encodeURIComponent(JSON.stringify(out));
  document.title = "done";
})();
</script></body></html>
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_on_an_allowed_origin_gets_through_and_one_on_another_origin_is_refused() {
    let allowed = PageServer::start(vec![Page::html("/", PAGE)]).await;
    let refused = PageServer::start(vec![Page::html("/", PAGE)]).await;
    let api_up = Upstream::start("up", Behaviour::Echo).await;
    let cred_up = Upstream::start("cred", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .plugin_with("cors", &plugin("cors"), &["capabilities = []"])
            .plugin("headers", &plugin("headers"))
            .upstream("up", &api_up.url())
            .upstream("cred", &cred_up.url())
            .route("api", "/api", "up")
            .stage(
                "cors",
                &format!(
                    r#"{{ origins = ["{}"], methods = ["GET", "PUT"], allowed_headers = ["x-custom", "content-type"], exposed_headers = ["x-upstream"] }}"#,
                    allowed.origin()
                ),
            )
            .stage("headers", r#"{ response = { set = { "x-internal" = "1" } } }"#)
            .route("cred", "/cred", "cred")
            .stage(
                "cors",
                &format!(
                    r#"{{ origins = ["{}"], credentials = true }}"#,
                    allowed.origin()
                ),
            )
            .to_string(),
    );
    let query = format!("/?gateway=http://{}", gw.addr);

    // The allowed origin: the browser preflights the PUT, the gateway answers, and the PUT
    // itself goes through; the page reads the exposed header and not the other one.
    let out = run_page(&allowed.url(&query)).await;
    let put = &out["put"];
    assert_eq!(put["status"], 200, "{out:#}");
    let echoed: Value = serde_json::from_str(put["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "PUT");
    assert_eq!(echoed["headers"]["x-custom"], "1");
    assert_eq!(echoed["headers"]["origin"], allowed.origin());
    assert_eq!(echoed["body"], r#"{"n":1}"#);
    assert_eq!(put["exposed"], "up");
    assert_eq!(put["hidden"], Value::Null, "{out:#}");
    let get = &out["get"];
    assert_eq!(get["status"], 200, "{out:#}");
    assert_eq!(get["exposed"], "up");
    assert_eq!(out["credentialed"]["status"], 200, "{out:#}");
    // The PUT and the GET, and not the preflight.
    assert_eq!(api_up.hits(), 2, "{out:#}");
    assert_eq!(cred_up.hits(), 1);

    // Another origin: the preflight is refused, so the PUT is never sent; the simple GETs reach
    // the upstream (a browser sends them without asking), but the page cannot read them.
    let out = run_page(&refused.url(&query)).await;
    for fetch in ["put", "get", "credentialed"] {
        let error = out[fetch]["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("TypeError"), "{fetch}: {out:#}");
    }
    assert_eq!(api_up.hits(), 3, "only the GET: {out:#}");
    assert_eq!(cred_up.hits(), 2);

    // What the allowed page could not read was there: only the exposed header was readable.
    let r = Client::new()
        .get_with(&gw.url("/api/items"), &[("origin", &allowed.origin())])
        .await;
    assert_eq!(r.header("x-internal"), Some("1"));
    assert_eq!(
        r.header("access-control-expose-headers"),
        Some("x-upstream")
    );
}
