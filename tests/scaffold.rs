//! `wasmgate plugin new`: for each language, the real command writes a plugin into a temp dir,
//! the plugin's own build and test commands (as its README gives them) run, and the real
//! gateway loads the component with the generated config, in front of a real upstream. Also
//! the refusals: bad names, non-empty directories, unknown languages, no SDK.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::upstream::{Behaviour, Upstream};
use support::{Client, Gateway, workspace_root};

fn wasmgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wasmgate"))
}

/// PATH with the pinned componentize-py and componentize-js (installed by `cargo xtask test`)
/// first, so the plugins' scripts use them rather than installing their own.
fn tool_path() -> String {
    let root = workspace_root();
    let py = root.join("target/tools/py/bin");
    let js = root.join("target/tools/js/node_modules/.bin");
    for (dir, tool) in [(&py, "componentize-py"), (&js, "componentize-js")] {
        assert!(
            dir.join(tool).exists(),
            "{} is missing: run `cargo xtask test` once to install the plugin tools",
            dir.join(tool).display()
        );
    }
    format!(
        "{}:{}:{}",
        py.display(),
        js.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs a command to completion (killing it past `limit`), with its output captured.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {what}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn succeed(cmd: &mut Command, limit: Duration) -> String {
    let what = format!("{cmd:?}");
    let out = run(cmd, limit);
    let text = text(&out);
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// The lines of the `sh` block under a README heading: the plugin's own build or test command.
fn readme_commands(readme: &str, heading: &str) -> Vec<String> {
    let after = readme
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no `{heading}`:\n{readme}"))
        .1;
    let block = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no sh block under `{heading}`"))
        .0;
    block.lines().map(str::to_owned).collect()
}

/// Runs a README command in the plugin's directory, as a reader would.
fn readme_command(dir: &Path, line: &str, lang: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", line])
        .current_dir(dir)
        .env("PATH", tool_path());
    if lang == "rust" {
        // Repeat runs reuse one build of the dependencies.
        cmd.env("CARGO_TARGET_DIR", workspace_root().join("target/scaffold"));
        support::without_cargo_package_env(&mut cmd);
    }
    cmd
}

/// Replaces the one occurrence of `from`, so a template change that breaks the adjustment fails
/// here rather than testing something else.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "`{from}` in:\n{text}");
    text.replace(from, to)
}

struct Plugin {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    wasm: PathBuf,
}

/// `wasmgate plugin new`, then the README's test and build commands.
fn scaffold_build_and_test(lang: &str, name: &str) -> Plugin {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    let mut cmd = wasmgate();
    cmd.args(["plugin", "new", name, "--lang", lang, "--dir"])
        .arg(&dir);
    if lang == "rust" {
        cmd.arg("--sdk").arg(workspace_root().join("plugin-sdk"));
    }
    let printed = succeed(&mut cmd, Duration::from_secs(30));
    assert!(
        printed.contains(&format!("created {lang} plugin `{name}`")),
        "{printed}"
    );
    assert!(printed.contains("gateway.toml"), "{printed}");
    assert!(printed.contains("README.md"), "{printed}");

    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let test = readme_commands(&readme, "## Test");
    let build = readme_commands(&readme, "## Build");
    assert_eq!(
        (test.len(), build.len()),
        (1, 1),
        "one command each:\n{readme}"
    );
    for line in [&test[0], &build[0]] {
        assert!(
            printed.contains(line.as_str()),
            "`{line}` not among the next steps:\n{printed}"
        );
    }

    let tested = succeed(
        &mut readme_command(&dir, &test[0], lang),
        Duration::from_secs(600),
    );
    let passed = match lang {
        "rust" => "test result: ok. 3 passed",
        "python" => "Ran 4 tests",
        _ => "# pass 4",
    };
    assert!(tested.contains(passed), "{tested}");
    succeed(
        &mut readme_command(&dir, &build[0], lang),
        Duration::from_secs(900),
    );

    let wasm = match lang {
        "rust" => workspace_root().join(format!(
            "target/scaffold/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        )),
        _ => dir.join(format!("{name}.wasm")),
    };
    assert!(wasm.exists(), "{} was not built", wasm.display());
    if lang == "rust" {
        // Where the generated config expects it, as a build without CARGO_TARGET_DIR puts it.
        let expected = dir.join("target/wasm32-wasip2/release");
        std::fs::create_dir_all(&expected).unwrap();
        std::fs::copy(&wasm, expected.join(wasm.file_name().unwrap())).unwrap();
    }
    Plugin {
        _tmp: tmp,
        dir,
        wasm,
    }
}

/// The generated `gateway.toml`, adjusted to run here: a free port, the component's absolute
/// path (the harness writes the config elsewhere) and the real upstream.
fn adjusted_config(p: &Plugin, up: &Upstream, lang: &str, name: &str) -> String {
    let config = std::fs::read_to_string(p.dir.join("gateway.toml")).unwrap();
    let path = match lang {
        "rust" => format!(
            "target/wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ),
        _ => format!("{name}.wasm"),
    };
    let config = replace_once(
        &config,
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:0\"",
    );
    let config = replace_once(
        &config,
        &format!("path = \"{path}\""),
        &format!("path = \"{}\"", p.wasm.display()),
    );
    replace_once(
        &config,
        "targets = [\"http://127.0.0.1:9000\"]",
        &format!("targets = [\"{}\"]", up.url()),
    )
}

async fn plugin_works_end_to_end(lang: &str, name: &str) {
    let p = tokio::task::spawn_blocking({
        let (lang, name) = (lang.to_owned(), name.to_owned());
        move || scaffold_build_and_test(&lang, &name)
    })
    .await
    .unwrap();

    // The generated config, untouched, passes `wasmgate check` beside the built plugin.
    let checked = succeed(
        wasmgate()
            .args(["check", "--config"])
            .arg(p.dir.join("gateway.toml")),
        Duration::from_secs(120),
    );
    assert!(checked.contains("ok (1 routes, 1 plugins)"), "{checked}");

    let up = Upstream::start("backend", Behaviour::Echo).await;
    let config = adjusted_config(&p, &up, lang, name);
    let gw = Gateway::start(&config);
    let c = Client::new();

    // Set both ways, replacing what the client sent.
    let r = c
        .get_with(&gw.url("/any/path?q=1"), &[("x-hello", "from the client")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["headers"]["x-hello"], "world");
    assert_eq!(r.json()["path"], "/any/path");
    assert_eq!(r.header("x-hello"), Some("world"));
    assert_eq!(r.header("x-upstream"), Some("backend"));

    // Hostile requests change nothing about it: odd methods, long and odd headers, bodies.
    let long = "v".repeat(8 * 1024);
    for (method, header) in [
        (http::Method::POST, long.as_str()),
        (http::Method::DELETE, "world, x-hello: injected"),
        (http::Method::OPTIONS, "\t"),
    ] {
        let r = c
            .request(
                method.clone(),
                &gw.url("/a%20b/%01?x=%0d%0a"),
                &[("x-hello", header), ("x-other", header)],
                "body",
            )
            .await;
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert_eq!(r.json()["headers"]["x-hello"], "world", "{method}");
        assert_eq!(r.header("x-hello"), Some("world"), "{method}");
    }
    assert_eq!(up.hits(), 4);
    drop(gw);

    // A config the plugin refuses stops the gateway at load, naming the key.
    for (bad, key) in [
        ("config = { header = \"x-hello\" }", "value"),
        (
            "config = { header = \"content-length\", value = \"1\" }",
            "header",
        ),
        ("config = { value = \"a\\r\\nb\" }", "value"),
        ("config = { value = \"world\", extra = true }", "extra"),
    ] {
        let config = replace_once(
            &config,
            "config = { header = \"x-hello\", value = \"world\" }",
            bad,
        );
        let err = Gateway::try_start(&config)
            .err()
            .unwrap_or_else(|| panic!("{bad} loaded"));
        assert!(
            err.contains(&format!("config key `{key}`")),
            "{bad}:\n{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_plugin_builds_tests_and_runs() {
    plugin_works_end_to_end("rust", "hello-rust").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_plugin_builds_tests_and_runs() {
    plugin_works_end_to_end("python", "hello-python").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_plugin_builds_tests_and_runs() {
    plugin_works_end_to_end("js", "hello-js").await;
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn fails(cmd: &mut Command) -> String {
    let out = run(cmd, Duration::from_secs(30));
    assert!(!out.status.success(), "{cmd:?} succeeded:\n{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn refuses_bad_names_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for name in [
        "Hello",
        "1st",
        "-x",
        "hello_world",
        "../escape",
        "a/b",
        "",
        "naïve",
    ] {
        let err = fails(
            wasmgate()
                .args(["plugin", "new", "--lang", "python", "--", name])
                .current_dir(tmp.path()),
        );
        assert!(err.contains("invalid plugin name"), "{name:?}: {err}");
    }
    let err = fails(
        wasmgate()
            .args(["plugin", "new", "fn", "--lang", "rust"])
            .current_dir(tmp.path()),
    );
    assert!(err.contains("reserved in Rust"), "{err}");
    assert!(entries(tmp.path()).is_empty(), "{:?}", entries(tmp.path()));
    assert!(!tmp.path().parent().unwrap().join("escape").exists());
}

#[test]
fn refuses_a_non_empty_directory_and_leaves_it_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mine");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("app.js"), "precious").unwrap();
    for lang in ["rust", "python", "js"] {
        let err = fails(
            wasmgate()
                .args(["plugin", "new", "mine", "--lang", lang, "--dir"])
                .arg(&dir)
                .arg("--sdk")
                .arg(workspace_root().join("plugin-sdk")),
        );
        assert!(err.contains("not an empty directory"), "{lang}: {err}");
    }
    assert_eq!(entries(&dir), ["app.js"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("app.js")).unwrap(),
        "precious"
    );

    // A file in the way is refused too.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = fails(
        wasmgate()
            .args(["plugin", "new", "x", "--lang", "js", "--dir"])
            .arg(&file),
    );
    assert!(err.contains("not an empty directory"), "{err}");
}

#[test]
fn refuses_unknown_or_missing_languages() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(
        wasmgate()
            .args(["plugin", "new", "hello", "--lang", "cobol"])
            .current_dir(tmp.path()),
    );
    assert!(err.contains("cobol"), "{err}");
    assert!(
        err.contains("rust") && err.contains("python") && err.contains("js"),
        "{err}"
    );
    let err = fails(
        wasmgate()
            .args(["plugin", "new", "hello"])
            .current_dir(tmp.path()),
    );
    assert!(err.contains("--lang"), "{err}");
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn rust_needs_the_sdk() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fails(
        wasmgate()
            .args(["plugin", "new", "hello", "--lang", "rust"])
            .current_dir(tmp.path()),
    );
    assert!(err.contains("--sdk"), "{err}");
    let err = fails(
        wasmgate()
            .args(["plugin", "new", "hello", "--lang", "rust", "--sdk"])
            .arg(tmp.path())
            .current_dir(tmp.path()),
    );
    assert!(err.contains("not the wasmgate SDK"), "{err}");
    assert!(entries(tmp.path()).is_empty());
}

#[test]
fn writes_to_name_by_default_and_into_an_empty_directory() {
    let tmp = tempfile::tempdir().unwrap();
    succeed(
        wasmgate()
            .args(["plugin", "new", "greeter", "--lang", "python"])
            .current_dir(tmp.path()),
        Duration::from_secs(30),
    );
    let dir = tmp.path().join("greeter");
    assert_eq!(
        entries(&dir),
        [
            ".gitignore",
            "README.md",
            "app.py",
            "build.sh",
            "gateway.toml",
            "test.sh",
            "test_app.py",
            "wit"
        ]
    );
    let wit = std::fs::read_to_string(dir.join("wit/plugin.wit")).unwrap();
    let contract = std::fs::read_to_string(workspace_root().join("wit/plugin.wit")).unwrap();
    assert_eq!(wit, contract);
    let gateway = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
    assert!(gateway.contains("[plugins.greeter]"), "{gateway}");
    assert!(gateway.contains("path = \"greeter.wasm\""), "{gateway}");

    // Inside the repository, the SDK is found and named relatively.
    let empty = tmp.path().join("plugins/greeter");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::create_dir_all(tmp.path().join("plugin-sdk")).unwrap();
    std::fs::copy(
        workspace_root().join("plugin-sdk/Cargo.toml"),
        tmp.path().join("plugin-sdk/Cargo.toml"),
    )
    .unwrap();
    succeed(
        wasmgate()
            .args([
                "plugin",
                "new",
                "greeter",
                "--lang",
                "rust",
                "--dir",
                "plugins/greeter",
            ])
            .current_dir(tmp.path()),
        Duration::from_secs(30),
    );
    let manifest = std::fs::read_to_string(empty.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("wasmgate-sdk = { path = \"../../plugin-sdk\" }"),
        "{manifest}"
    );
}
