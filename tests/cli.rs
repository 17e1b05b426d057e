//! `wasmgate check`: it validates as far as a run would, and every error says where.

mod support;

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
