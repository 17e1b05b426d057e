//! Project automation, so that two commands do everything on a fresh machine:
//!
//! - `cargo xtask build`: the release gateway (`target/release/wasmgate`) and every plugin, in
//!   Rust, Python or JavaScript (`target/wasm32-wasip2/release/*.wasm`; see `plugins.rs`).
//! - `cargo xtask run`: builds, starts a demo upstream and the gateway on
//!   `config/gateway.toml`, and prints requests to try.
//! - `cargo xtask test`: formatting, lints, the plugins' native tests, and every test, as CI
//!   runs them.
//! - `cargo xtask bench`: the Criterion microbenchmarks, then the end-to-end suite against nginx
//!   and HAProxy, which writes BENCHMARKS.md (`--quick` for a regression check under a minute;
//!   `--install` installs the tools it needs).
//! - `cargo xtask fuzz [TARGET] [--seconds N] [--merge]`: the libFuzzer targets in `fuzz/`, each
//!   for N seconds (see `fuzz.rs`).

mod bench;
mod demo;
mod fuzz;
mod packages;
mod plugins;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("build") => build(),
        Some("run") => run(),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz::Args::parse(&args[1..]).and_then(|a| fuzz::run(&a)),
        _ => {
            eprintln!(
                "usage: cargo xtask <build | run | test \
                 | bench [--quick] [--only e2e|micro|noisy] [--install] [options] \
                 | fuzz [TARGET] [--seconds N] [--merge]>"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Cargo, building into the workspace's own `target/` even when `CARGO_TARGET_DIR` points
/// elsewhere: the gateway, the plugins' components, the example configs and the tests all
/// look for their artifacts there.
fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root())
        .env("CARGO_TARGET_DIR", root().join("target"));
    c
}

fn exec(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Installs the Wasm target plugins build for, when it is missing.
fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("running rustup (plugins need the wasm32-wasip2 target)")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        return Ok(());
    }
    exec(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

/// The Python test peers (a SOAP service, a JWT issuer, gRPC and WebSocket peers) in a local venv, `target/pyenv`,
/// reinstalled only when `tests/requirements.txt` changes.
fn ensure_python_env() -> Result<()> {
    let root = root();
    let venv = root.join("target/pyenv");
    let requirements = std::fs::read_to_string(root.join("tests/requirements.txt"))
        .context("reading tests/requirements.txt")?;
    let stamp = venv.join(".installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == requirements) {
        return Ok(());
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    exec(Command::new(&python).arg("-m").arg("venv").arg(&venv))
        .context("creating the test venv (needs python3 with the venv module)")?;
    exec(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(root.join("tests/requirements.txt")),
    )?;
    std::fs::write(stamp, requirements)?;
    Ok(())
}

fn build() -> Result<()> {
    plugins::build_all()?;
    // `--workspace` resolves features as `cargo xtask test` does, so the gateway built here
    // shares its dependencies' artifacts (wasmtime's above all) with the tests'.
    exec(cargo().args(["build", "--release", "--workspace", "--bin", "wasmgate"]))
}

fn test() -> Result<()> {
    exec(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The fuzz project is a workspace of its own, which `--all` does not reach.
    exec(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
    plugins::build_all()?;
    exec(cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    ensure_python_env()?;
    packages::install(packages::TEST_TOOLS)?;
    // The scaffold tests build Python and JavaScript plugins with these, from target/tools.
    plugins::ensure_python_tools()?;
    plugins::ensure_js_tools()?;
    plugins::native_tests()?;
    exec(cargo().args(["test", "--release", "--workspace"]))?;
    // Every fuzz target, briefly: the harnesses stay built and their properties hold on the
    // corpus and a little more. Locally as in CI, so a green run here means a green run there;
    // it adds a build of the parsers alone (no wasmtime) and 30 s per target.
    fuzz::run(&fuzz::Args {
        target: None,
        seconds: fuzz::DEFAULT_SECONDS,
        merge: false,
    })
}

/// The Criterion microbenchmarks of the plugin machinery and routing (`host/benches/`), then the
/// end-to-end suite against nginx and HAProxy (`bench/`). `--quick` runs a short end-to-end
/// check only; `--only e2e|micro|noisy` picks one; `--install` installs the tools the
/// end-to-end suite needs; arguments after `--` go to Criterion.
fn bench(args: &[String]) -> Result<()> {
    let args = bench::Args::parse(args);
    // Before anything starts: a missing tool fails here, not after minutes of building and
    // microbenchmarks.
    if args.run_e2e() || args.install {
        bench::tools(&args)?;
    }
    if args.run_micro() {
        plugins::build_all()?;
        let mut cmd = cargo();
        cmd.args(["bench", "--workspace", "--bench", "plugins", "--"]);
        cmd.args(&args.criterion);
        exec(&mut cmd)?;
    }
    if args.run_e2e() {
        build()?;
        bench::e2e(&args)?;
    }
    Ok(())
}

fn run() -> Result<()> {
    build()?;
    let upstream = demo::start(demo::ADDR).context("starting the demo upstream")?;
    let gateway = "127.0.0.1:8080";
    println!();
    println!(
        "demo upstream on http://{upstream}; gateway on http://{gateway} (admin on 127.0.0.1:9901)"
    );
    println!("try:");
    println!(
        "  curl -i http://{gateway}/echo/hello            # headers plugin adds X-Request-ID and X-Served-By"
    );
    println!("  curl -i -H 'X-Request-ID: my-id-1' http://{gateway}/echo/hello");
    println!("  curl -i http://{gateway}/plain/hello           # no plugins: the fast path");
    println!("  curl -i http://{gateway}/nowhere               # 404 as JSON");
    println!("  curl -s http://127.0.0.1:9901/admin/routes     # routes, pipelines, plugin hashes");
    println!("  curl -s http://127.0.0.1:9901/metrics");
    println!("Ctrl-C stops both.");
    println!();
    let status = Command::new(root().join("target/release/wasmgate"))
        .args(["run", "--config", "config/gateway.toml"])
        .current_dir(root())
        .status()
        .context("starting target/release/wasmgate")?;
    if !status.success() && status.code().is_some() {
        bail!("wasmgate exited with {status}");
    }
    Ok(())
}
