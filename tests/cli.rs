//! `wasmgate check`: it validates as far as a run would, and every error says where.

mod support;

use support::config::GatewayConfig;
use support::{check, plugin};

const BASE: &str = r#"
[server]
listen = "127.0.0.1:0"
[upstreams.up]
targets = ["http://127.0.0.1:9"]
"#;

#[test]
fn a_good_config_passes() {
    let cfg = format!(
        "{BASE}[plugins.fixture]\npath = \"{}\"\n[[routes]]\nname = \"r\"\npath_prefix = \"/\"\nupstream = \"up\"\n[[routes.pipeline]]\nplugin = \"fixture\"\nconfig = {{ request_set = {{ \"x-a\" = \"1\" }} }}\n",
        plugin("fixture").display()
    );
    let (ok, out) = check(&cfg);
    assert!(ok, "{out}");
    assert!(out.contains("ok (1 routes, 1 plugins)"), "{out}");
}

#[test]
fn toml_errors_give_file_line_and_column() {
    let (ok, out) = check(&format!(
        "{BASE}[[routes]]\nname = \"r\"\npath_prefx = \"/\"\n"
    ));
    assert!(!ok);
    assert!(out.contains("gateway.toml:8:1: "), "{out}");
    assert!(out.contains("path_prefx"), "{out}");
}

#[test]
fn unknown_upstreams_and_plugins_are_named() {
    let (ok, out) = check(&format!(
        "{BASE}[[routes]]\nname = \"users\"\npath_prefix = \"/u\"\nupstream = \"nowhere\"\n[[routes.pipeline]]\nplugin = \"ghost\"\n"
    ));
    assert!(!ok);
    assert!(
        out.contains("routes[0] (\"users\").upstream: unknown upstream `nowhere` (defined: up)"),
        "{out}"
    );
    assert!(
        out.contains("routes[0] (\"users\").pipeline[0].plugin: unknown plugin `ghost`"),
        "{out}"
    );
}

#[test]
fn plugin_config_errors_name_route_plugin_and_key() {
    let cfg = format!(
        "{BASE}[plugins.fixture]\npath = \"{}\"\n[[routes]]\nname = \"r1\"\npath_prefix = \"/\"\nupstream = \"up\"\n[[routes.pipeline]]\nplugin = \"fixture\"\nconfig = {{ respond = {{ status = \"four hundred\" }} }}\n",
        plugin("fixture").display()
    );
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(
        out.contains("route `r1`, pipeline[0], plugin `fixture`: config key `respond.status`"),
        "{out}"
    );
}

#[test]
fn missing_and_invalid_components_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all").unwrap();
    let cfg = format!(
        "{BASE}[plugins.gone]\npath = \"/nonexistent/gone.wasm\"\n[plugins.junk]\npath = \"{}\"\n",
        junk.display()
    );
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(
        out.contains("plugin `gone`: cannot read /nonexistent/gone.wasm"),
        "{out}"
    );
    assert!(
        out.contains("plugin `junk`") && out.contains("not a valid component"),
        "{out}"
    );
}

#[test]
fn config_files_are_read_into_the_plugin_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("status.txt"), "not a number").unwrap();
    let cfg = format!(
        "{BASE}[plugins.fixture]\npath = \"{}\"\n[[routes]]\nname = \"r1\"\npath_prefix = \"/\"\nupstream = \"up\"\n[[routes.pipeline]]\nplugin = \"fixture\"\nconfig_files = {{ respond = \"{}\" }}\n",
        plugin("fixture").display(),
        dir.path().join("status.txt").display()
    );
    // The fixture expects `respond` to be a table: the file's text reached its init.
    let (ok, out) = check(&cfg);
    assert!(!ok);
    assert!(out.contains("config key `respond`"), "{out}");

    let missing = cfg.replace("status.txt", "absent.txt");
    let (ok, out) = check(&missing);
    assert!(!ok);
    assert!(out.contains("config_files.respond: cannot read"), "{out}");
}

#[test]
fn a_second_gateway_on_a_port_in_use_refuses_to_start() {
    let port = support::closed_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[upstreams.up]\ntargets = [\"http://127.0.0.1:9\"]\n"
    );
    let first = support::Gateway::start(&config);
    assert_eq!(first.addr.port(), port);
    let err = match support::Gateway::try_start(&config) {
        Ok(_) => panic!("a second gateway started on {port}"),
        Err(out) => out,
    };
    assert!(
        err.contains(&format!("127.0.0.1:{port} is already in use")),
        "{err}"
    );
}

#[test]
fn an_admin_api_off_loopback_needs_a_token_and_then_checks_it() {
    let (ok, out) = check(&format!("{BASE}[admin]\nlisten = \"0.0.0.0:0\"\n"));
    assert!(!ok);
    assert!(
        out.contains("admin.listen: 0.0.0.0:0 is not a loopback address; set admin.token_file"),
        "{out}"
    );

    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-admin-token-of-some-length";
    std::fs::write(dir.path().join("admin.token"), format!("{token}\n")).unwrap();
    let config = format!(
        "{BASE}[admin]\nlisten = \"0.0.0.0:0\"\ntoken_file = \"{}\"\n",
        dir.path().join("admin.token").display()
    );
    let gw = support::Gateway::start(&config);
    let port = gw.admin.unwrap().port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = support::Client::new();
        let url = format!("http://127.0.0.1:{port}/health");
        let r = c.get(&url).await;
        assert_eq!(r.status, http::StatusCode::UNAUTHORIZED);
        assert_eq!(r.json()["error"], "unauthorized");
        let r = c
            .get_with(&url, &[("authorization", "Bearer not-the-token-at-all-no")])
            .await;
        assert_eq!(r.status, http::StatusCode::UNAUTHORIZED);
        let bearer = format!("Bearer {token}");
        let r = c.get_with(&url, &[("authorization", &bearer)]).await;
        assert_eq!(r.status, http::StatusCode::OK);
    });

    std::fs::write(dir.path().join("admin.token"), "short").unwrap();
    let (ok, out) = check(&config);
    assert!(!ok);
    assert!(
        out.contains("must hold one token of at least 16 characters"),
        "{out}"
    );
}

#[test]
fn a_body_reading_plugin_whose_memory_cannot_hold_the_body_limit_is_warned_about() {
    let cfg = GatewayConfig::new()
        .plugin_with("fixture", &plugin("fixture"), &["memory_limit_mib = 4"])
        .upstream("up", "http://127.0.0.1:9")
        .route("big", "/big", "up")
        .with("max_body_bytes = 8388608")
        .stage("fixture", r#"{ request_body = "append:x" }"#)
        .route("small", "/small", "up")
        .with("max_body_bytes = 1024")
        .stage("fixture", r#"{ request_body = "append:x" }"#)
        .route("headers-only", "/h", "up")
        .with("max_body_bytes = 8388608")
        .stage("fixture", r#"{ request_set = { "x-a" = "1" } }"#)
        .to_string();
    let (ok, out) = check(&cfg);
    assert!(ok, "a warning, not an error: {out}");
    let warnings: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("memory limit leaves less than that"))
        .collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(warnings[0].contains("big"), "{out}");
}
