//! `docs/plugins.md` shows only code the tests build or check. Every fenced block carries a
//! marker comment right above it:
//! - `<!-- sample: PATH -->`: the block is a verbatim excerpt of PATH, either `wit/plugin.wit`,
//!   a template file (`host/src/scaffold/templates/...`) as `wasmgate plugin new hello`
//!   writes it (`tests/scaffold.rs` builds and tests those plugins), or a file of one of the
//!   repository's plugins (`plugins/...` or `tests/plugins/...`, which `cargo xtask build`
//!   builds and the end-to-end tests run);
//! - `<!-- run: wasmgate -->`: every line is a `wasmgate plugin new` command, run here for real;
//! - `<!-- check -->`: a complete gateway config, which `wasmgate check` must accept with the
//!   Rust template's component as `hello.wasm`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::workspace_root;
use wasmgate::scaffold::{Lang, templates};

/// The plugin name the guide's samples use.
const NAME: &str = "hello";

#[derive(Debug)]
struct Block {
    line: usize,
    marker: String,
    text: String,
}

/// Every fenced block of a Markdown text, with the line above it (blank lines skipped).
fn blocks(markdown: &str) -> Vec<Block> {
    let lines: Vec<&str> = markdown.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(fence) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        assert!(
            !fence.starts_with('`'),
            "line {}: use ``` fences only",
            i + 1
        );
        let marker = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_owned())
            .unwrap_or_default();
        let start = i + 1;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("line {}: unclosed fence", i + 1));
        let mut text = lines[start..end].join("\n");
        text.push('\n');
        out.push(Block {
            line: i + 1,
            marker,
            text,
        });
        i = end + 1;
    }
    out
}

fn wasmgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A temp dir that looks like a wasmgate checkout as far as `plugin new` cares: it has the SDK's
/// manifest in `plugin-sdk/`.
fn checkout() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("plugin-sdk")).unwrap();
    std::fs::copy(
        workspace_root().join("plugin-sdk/Cargo.toml"),
        tmp.path().join("plugin-sdk/Cargo.toml"),
    )
    .unwrap();
    tmp
}

/// The files `wasmgate plugin new hello --lang LANG --dir plugins/hello` writes, in a
/// checkout, keyed by the template they come from.
fn rendered(lang: Lang) -> Vec<(&'static str, String)> {
    let tmp = checkout();
    let out = wasmgate()
        .args(["plugin", "new", NAME, "--lang", lang.as_str()])
        .args(["--dir", "plugins/hello"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let dir = tmp.path().join("plugins/hello");
    templates(lang)
        .iter()
        .map(|t| {
            let text = std::fs::read_to_string(dir.join(t.path))
                .unwrap_or_else(|e| panic!("{}: {e}", t.path));
            (t.source, text)
        })
        .collect()
}

fn guide() -> String {
    std::fs::read_to_string(workspace_root().join("docs/plugins.md")).unwrap()
}

#[test]
fn every_block_has_a_known_marker() {
    let blocks = blocks(&guide());
    assert!(blocks.len() >= 20, "{} blocks", blocks.len());
    for b in &blocks {
        let known = b.marker.starts_with("<!-- sample: ")
            || b.marker == "<!-- run: wasmgate -->"
            || b.marker == "<!-- check -->";
        assert!(
            known && b.marker.ends_with(" -->"),
            "docs/plugins.md:{}: a block needs a marker right above it, not {:?}",
            b.line,
            b.marker
        );
    }
}

#[test]
fn samples_are_verbatim_excerpts_of_their_files() {
    let mut sources: Vec<(&str, String)> = vec![(
        "wit/plugin.wit",
        std::fs::read_to_string(workspace_root().join("wit/plugin.wit")).unwrap(),
    )];
    for lang in [Lang::Rust, Lang::Python, Lang::Js] {
        sources.extend(rendered(lang));
    }
    let mut used = Vec::new();
    for b in blocks(&guide()) {
        let Some(path) = b
            .marker
            .strip_prefix("<!-- sample: ")
            .and_then(|m| m.strip_suffix(" -->"))
        else {
            continue;
        };
        let plugin_file = (path.starts_with("plugins/") || path.starts_with("tests/plugins/"))
            .then(|| std::fs::read_to_string(workspace_root().join(path)).ok())
            .flatten();
        let text = sources
            .iter()
            .find(|(source, _)| *source == path)
            .map(|(_, text)| text)
            .or(plugin_file.as_ref())
            .unwrap_or_else(|| {
                panic!(
                    "docs/plugins.md:{}: {path} is neither wit/plugin.wit, a template nor a \
                     plugin's file",
                    b.line
                )
            });
        assert!(
            text.contains(&b.text),
            "docs/plugins.md:{}: not a verbatim excerpt of {path}:\n{}",
            b.line,
            b.text
        );
        used.push(path.to_owned());
    }
    // The guide walks through all three templates and the contract.
    for prefix in [
        "wit/plugin.wit",
        "host/src/scaffold/templates/rust/src/lib.rs",
        "host/src/scaffold/templates/python/app.py",
        "host/src/scaffold/templates/js/app.js",
    ] {
        assert!(used.iter().any(|u| u == prefix), "no sample of {prefix}");
    }
}

#[test]
fn commands_run() {
    let mut ran = 0;
    for b in blocks(&guide()) {
        if b.marker != "<!-- run: wasmgate -->" {
            continue;
        }
        // Each block starts from a fresh checkout, as a reader following one section would.
        let tmp = checkout();
        for line in b.text.lines().filter(|l| !l.trim().is_empty()) {
            let args: Vec<&str> = line.split_whitespace().collect();
            assert!(
                args.starts_with(&["wasmgate", "plugin", "new"])
                    && !line.contains(['"', '\'', '$', '`', ';', '|', '&']),
                "docs/plugins.md:{}: only plain `wasmgate plugin new` lines run: {line}",
                b.line
            );
            let out = wasmgate()
                .args(&args[1..])
                .current_dir(tmp.path())
                .output()
                .unwrap();
            let text = output_text(&out);
            assert!(
                out.status.success(),
                "docs/plugins.md:{}: `{line}` failed:\n{text}",
                b.line
            );
            assert!(text.contains("created"), "{text}");
            ran += 1;
        }
    }
    assert!(ran >= 3, "{ran} commands");
}

/// Builds the Rust template as `hello` (sharing `target/scaffold` with tests/scaffold.rs) and
/// returns its component.
fn hello_component(tmp: &Path) -> PathBuf {
    let dir = tmp.join("hello");
    let sdk = workspace_root().join("plugin-sdk");
    let out = wasmgate()
        .args(["plugin", "new", NAME, "--lang", "rust", "--dir"])
        .arg(&dir)
        .arg("--sdk")
        .arg(&sdk)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    let target = workspace_root().join("target/scaffold");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target);
    support::without_cargo_package_env(&mut cargo);
    let out = cargo.output().unwrap();
    assert!(out.status.success(), "{}", output_text(&out));
    target.join("wasm32-wasip2/release/hello.wasm")
}

#[test]
fn configs_pass_wasmgate_check() {
    let configs: Vec<Block> = blocks(&guide())
        .into_iter()
        .filter(|b| b.marker == "<!-- check -->")
        .collect();
    assert!(!configs.is_empty());
    let tmp = tempfile::tempdir().unwrap();
    let component = hello_component(tmp.path());
    std::fs::copy(&component, tmp.path().join("hello.wasm")).unwrap();
    for b in configs {
        let path = tmp.path().join("gateway.toml");
        std::fs::write(&path, &b.text).unwrap();
        let out = wasmgate()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let text = output_text(&out);
        assert!(
            out.status.success() && text.contains(": ok ("),
            "docs/plugins.md:{}: wasmgate check refused it:\n{text}",
            b.line
        );
    }
}

#[test]
fn the_block_reader_sees_markers_and_contents() {
    let md = "text\n<!-- sample: a -->\n\n```toml\nx = 1\n```\n```\nno marker\n```\n";
    let b = blocks(md);
    assert_eq!(b.len(), 2);
    assert_eq!((b[0].line, b[0].marker.as_str()), (4, "<!-- sample: a -->"));
    assert_eq!(b[0].text, "x = 1\n");
    assert_eq!(b[1].marker, "```");
    assert_eq!(b[1].text, "no marker\n");
}
