//! Building every plugin in the repository into a component in `target/wasm32-wasip2/release/`,
//! whatever its language, and running the plugins' own native tests.
//!
//! A plugin directory under `plugins/` or `tests/plugins/` is:
//! - Rust when it has a `Cargo.toml` (built with cargo for `wasm32-wasip2`);
//! - Python when it has an `app.py` (built with componentize-py, module `app`);
//! - JavaScript when it has a `package.json` whose `main` is the module (built with
//!   componentize-js).
//!
//! A plugin that makes outbound calls (`wasi:http/outgoing-handler`) says so: a Python one in its
//! `pyproject.toml` (`[tool.wasmgate]` `outbound = true`), a JavaScript one in its `package.json`
//! (`"wasmgate": { "outbound": true }`). The others are built without wasi:http, which would
//! otherwise be among their imports whether or not their code calls it (componentize-py imports
//! every interface of the world it is given; componentize-js imports it with its `http` feature),
//! and a plugin importing it must be granted `"outbound"`. Rust plugins import it only when they
//! call the SDK's `outbound`.
//!
//! The Python and JavaScript tools are pinned in `xtask/tools/` and installed on first use into
//! `target/tools/` (a venv and a `node_modules`), so nothing global is assumed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{WASM_TARGET, cargo, exec, root};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// One plugin directory.
#[derive(Debug)]
pub struct PluginDir {
    pub dir: PathBuf,
    pub lang: Lang,
    /// The component's file stem (the Rust package's lib name, or the directory name).
    pub name: String,
    /// A Python or JavaScript plugin built with wasi:http, for outbound calls.
    pub outbound: bool,
}

/// Every plugin directory, in a stable order.
pub fn discover() -> Result<Vec<PluginDir>> {
    let mut found = Vec::new();
    for parent in ["plugins", "tests/plugins"] {
        let Ok(entries) = std::fs::read_dir(root().join(parent)) else {
            continue;
        };
        for e in entries {
            let dir = e?.path();
            let dir_name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            if dir.join("Cargo.toml").exists() {
                let name = rust_package_name(&dir.join("Cargo.toml"))?;
                found.push(PluginDir {
                    dir,
                    lang: Lang::Rust,
                    name,
                    outbound: false,
                });
            } else if dir.join("app.py").exists() {
                let outbound = python_outbound(&dir)?;
                found.push(PluginDir {
                    dir,
                    lang: Lang::Python,
                    name: dir_name,
                    outbound,
                });
            } else if dir.join("package.json").exists() {
                let outbound = js_outbound(&js_manifest(&dir)?);
                found.push(PluginDir {
                    dir,
                    lang: Lang::Js,
                    name: dir_name,
                    outbound,
                });
            }
        }
    }
    found.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(found)
}

/// Whether a Python plugin's `pyproject.toml`, if it has one, sets `[tool.wasmgate]`
/// `outbound = true`.
fn python_outbound(dir: &Path) -> Result<bool> {
    let path = dir.join("pyproject.toml");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(false);
    };
    let project: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let flag = project
        .get("tool")
        .and_then(|t| t.get("wasmgate"))
        .and_then(|w| w.get("outbound"));
    match flag {
        None => Ok(false),
        Some(toml::Value::Boolean(b)) => Ok(*b),
        Some(_) => bail!(
            "{}: tool.wasmgate.outbound must be true or false",
            path.display()
        ),
    }
}

/// A JavaScript plugin's `package.json`.
fn js_manifest(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("package.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Whether a `package.json` sets `"wasmgate": { "outbound": true }`.
fn js_outbound(manifest: &serde_json::Value) -> bool {
    manifest["wasmgate"]["outbound"] == true
}

fn rust_package_name(manifest: &Path) -> Result<String> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("name = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .with_context(|| format!("no package name in {}", manifest.display()))
}

/// Where every plugin's component lands.
pub fn out_dir() -> PathBuf {
    root().join("target").join(WASM_TARGET).join("release")
}

/// Builds every plugin. Python and JavaScript plugins are rebuilt only when their inputs (the
/// plugin's files, the WIT contract, the pinned build tool) changed: each build takes seconds,
/// and their tools do not build reproducibly, so a rebuild of the same source would give the
/// gateway a new component to compile and reload.
pub fn build_all() -> Result<()> {
    let plugins = discover()?;
    crate::ensure_wasm_target()?;
    let mut cmd = cargo();
    // Plugins ship without debug info: it is most of a component's size.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .args(["build", "--release", "--target", WASM_TARGET]);
    for p in plugins.iter().filter(|p| p.lang == Lang::Rust) {
        cmd.args(["--package", &p.name]);
    }
    exec(&mut cmd)?;

    std::fs::create_dir_all(out_dir())?;
    for p in &plugins {
        let out = out_dir().join(format!("{}.wasm", p.name));
        if p.lang == Lang::Rust {
            continue;
        }
        let stamp = out.with_extension("wasm.inputs");
        let inputs = inputs_digest(p)?;
        if out.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&inputs) {
            continue;
        }
        match p.lang {
            Lang::Python => build_python(p, &out)?,
            Lang::Js => build_js(p, &out)?,
            Lang::Rust => unreachable!(),
        }
        std::fs::write(&stamp, &inputs)?;
    }
    Ok(())
}

/// Runs the native unit tests of the Python and JavaScript plugins (CPython's unittest and
/// Node's test runner); the Rust plugins' tests run with the workspace's.
pub fn native_tests() -> Result<()> {
    for p in discover()? {
        match p.lang {
            // Python 3.12's unittest fails a run that finds no tests.
            Lang::Python if !has_python_tests(&p.dir)? => {}
            Lang::Python => {
                let bindings = python_bindings(p.outbound)?;
                exec(
                    Command::new(python())
                        .args(["-m", "unittest", "discover", "--start-directory"])
                        .arg(&p.dir)
                        .args(["--pattern", "test_*.py"])
                        .env("PYTHONPATH", &bindings)
                        .env("PYTHONDONTWRITEBYTECODE", "1")
                        .current_dir(&p.dir),
                )?
            }
            Lang::Js => exec(Command::new("node").arg("--test").current_dir(&p.dir))?,
            Lang::Rust => {}
        }
    }
    Ok(())
}

/// The Python bindings of the WIT world (`wit_world`, plain Python), which a Python plugin's
/// native tests import; the host's resources are stood in for by the tests' own fakes.
pub fn python_bindings(outbound: bool) -> Result<PathBuf> {
    let tool = ensure_python_tools()?;
    let dir = tools_dir().join("py-bindings");
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = Command::new(tool);
    python_world(&mut cmd, outbound)?;
    exec(cmd.arg("bindings").arg(&dir))?;
    Ok(dir)
}

/// Whether a directory has a `test_*.py`.
fn has_python_tests(dir: &Path) -> Result<bool> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("test_") && name.ends_with(".py") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// componentize-py's `--wit-path` and `--world` arguments: the world `plugin`, or for a plugin
/// that calls out, the world [`OutboundWorld`] writes.
fn python_world(cmd: &mut Command, outbound: bool) -> Result<()> {
    cmd.arg("--wit-path").arg(root().join("wit"));
    if outbound {
        let world = OutboundWorld::find()?;
        world.write()?;
        cmd.arg("--wit-path")
            .arg(&world.wasi_http)
            .arg("--wit-path")
            .arg(OutboundWorld::dir())
            .args(["--world", OutboundWorld::NAME]);
    } else {
        cmd.args(["--world", "plugin"]);
    }
    Ok(())
}

/// The world a Python plugin that calls out is built for: `plugin`, and
/// `wasi:http/outgoing-handler` in the version the gateway implements (wasmtime-wasi-http's,
/// whose WIT, with its WASI dependencies, comes from the crate's source).
///
/// (componentize-py can merge two worlds given as two `--world`s, but 0.25.1 panics on the
/// union of `plugin` and `wasi:http/imports`; one world that includes `plugin` builds.)
struct OutboundWorld {
    /// wasmtime-wasi-http's `wit/` directory.
    wasi_http: PathBuf,
    text: String,
}

impl OutboundWorld {
    const NAME: &str = "wasmgate:outbound/plugin";

    fn find() -> Result<Self> {
        let out = cargo()
            .args(["metadata", "--format-version", "1"])
            .output()
            .context("running cargo metadata")?;
        if !out.status.success() {
            bail!(
                "cargo metadata failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let metadata: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
        let manifest = metadata["packages"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "wasmtime-wasi-http")
            .and_then(|p| p["manifest_path"].as_str())
            .context("wasmtime-wasi-http is not among the workspace's packages")?;
        let wasi_http = Path::new(manifest)
            .parent()
            .context("wasmtime-wasi-http's manifest has no directory")?
            .join("wit");
        let plugin = package_version(&root().join("wit/plugin.wit"), "wasmgate:plugin")?;
        let http = package_version(&wasi_http.join("deps/http.wit"), "wasi:http")?;
        let text = format!(
            "// Written by `cargo xtask build` (xtask/src/plugins.rs).\n\
             package wasmgate:outbound;\n\n\
             /// `plugin`, with the standard `wasi:http/outgoing-handler` for outbound calls.\n\
             world plugin {{\n    \
             include wasmgate:plugin/plugin@{plugin};\n    \
             import wasi:http/outgoing-handler@{http};\n\
             }}\n"
        );
        Ok(Self { wasi_http, text })
    }

    fn dir() -> PathBuf {
        tools_dir().join("wit-outbound")
    }

    fn write(&self) -> Result<()> {
        std::fs::create_dir_all(Self::dir())?;
        std::fs::write(Self::dir().join("world.wit"), &self.text)?;
        Ok(())
    }
}

/// The version in a WIT file's `package NAME@VERSION;` line.
fn package_version(file: &Path, name: &str) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let prefix = format!("package {name}@");
    text.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .and_then(|rest| rest.strip_suffix(';'))
        .map(str::to_owned)
        .with_context(|| format!("no `package {name}@...;` in {}", file.display()))
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The SHA-256 of what a Python or JavaScript plugin's component is built from: whether it
/// calls out, its files (paths and contents), the WIT contract and the build tool's pin.
fn inputs_digest(p: &PluginDir) -> Result<String> {
    use sha2::{Digest, Sha256};
    let pin = match p.lang {
        Lang::Python => "xtask/tools/requirements.txt",
        _ => "xtask/tools/package-lock.json",
    };
    let mut files = vec![root().join(pin)];
    collect_files(&p.dir, &mut files)?;
    collect_files(&root().join("wit"), &mut files)?;
    let mut hash = Sha256::new();
    // How it is built: with or without wasi:http (and for Python, against which world).
    let world = match (p.lang, p.outbound) {
        (Lang::Python, true) => OutboundWorld::find()?.text,
        (_, outbound) => format!("outbound: {outbound}"),
    };
    hash.update(world.as_bytes());
    hash.update([0]);
    for f in &files {
        let rel = f.strip_prefix(root()).unwrap_or(f);
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        hash.update(rel.to_string_lossy().as_bytes());
        hash.update([0]);
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Every file under `dir`, in a stable order, leaving out installed packages, caches and
/// hidden files.
fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name == "node_modules" || name == "__pycache__" || name.starts_with('.') {
            continue;
        }
        if e.file_type()?.is_dir() {
            collect_files(&e.path(), files)?;
        } else {
            files.push(e.path());
        }
    }
    Ok(())
}

fn tools_dir() -> PathBuf {
    root().join("target/tools")
}

/// componentize-py in `target/tools/py`, reinstalled when `xtask/tools/requirements.txt`
/// changes.
pub fn ensure_python_tools() -> Result<PathBuf> {
    let venv = tools_dir().join("py");
    let requirements = root().join("xtask/tools/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = venv.join(".installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        exec(Command::new(python()).arg("-m").arg("venv").arg(&venv))
            .context("creating target/tools/py (needs python3 with the venv module)")?;
        exec(
            Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
        )?;
        std::fs::write(&stamp, &wanted)?;
    }
    Ok(venv.join("bin/componentize-py"))
}

/// componentize-js in `target/tools/js`, installed from the lockfile in `xtask/tools/`, again
/// when the lockfile changes. (`preview2-shim` is listed beside it because componentize-js
/// imports it at run time without declaring it; 0.26 no longer lets it read the WIT folder.)
pub fn ensure_js_tools() -> Result<PathBuf> {
    let dir = tools_dir().join("js");
    let src = root().join("xtask/tools");
    let lock = std::fs::read_to_string(src.join("package-lock.json"))
        .context("reading xtask/tools/package-lock.json")?;
    let stamp = dir.join(".installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(src.join("package.json"), dir.join("package.json"))?;
        std::fs::write(dir.join("package-lock.json"), &lock)?;
        // `npm install` against the lockfile rather than `npm ci`: npm 11's `ci` refuses a lockfile
        // that leaves out other platforms' optional binaries, which `install` itself writes.
        exec(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
        )
        .context("installing componentize-js (needs Node.js and npm)")?;
        std::fs::write(&stamp, &lock)?;
    }
    Ok(dir.join("node_modules/.bin/componentize-js"))
}

fn build_python(p: &PluginDir, out: &Path) -> Result<()> {
    let tool = ensure_python_tools()?;
    let mut cmd = Command::new(tool);
    python_world(&mut cmd, p.outbound)?;
    exec(
        cmd.args(["componentize", "app", "--python-path"])
            .arg(&p.dir)
            .arg("--output")
            .arg(out)
            .current_dir(&p.dir),
    )
    .with_context(|| format!("building the Python plugin {}", p.dir.display()))
}

fn build_js(p: &PluginDir, out: &Path) -> Result<()> {
    let tool = ensure_js_tools()?;
    let manifest = js_manifest(&p.dir)?;
    let Some(main) = manifest["main"].as_str() else {
        bail!(
            "{}/package.json has no \"main\" naming the plugin's module",
            p.dir.display()
        );
    };
    exec(
        Command::new(tool)
            .arg(p.dir.join(main))
            .arg("--wit")
            .arg(root().join("wit"))
            .args(["--world-name", "plugin"])
            // `fetch-event` would export wasi:http's incoming handler, which a plugin does not
            // have; `http` is `fetch`, through wasi:http/outgoing-handler, for plugins that
            // call out.
            .arg("--disable")
            .args(if p.outbound {
                &["fetch-event"][..]
            } else {
                &["http", "fetch-event"][..]
            })
            .arg("--out")
            .arg(out)
            .current_dir(&p.dir),
    )
    .with_context(|| format!("building the JavaScript plugin {}", p.dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inputs_digest_follows_contents_not_times() {
        let dir = root().join("target/xtask-test-digest");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("__pycache__")).unwrap();
        std::fs::write(dir.join("app.py"), "x = 1\n").unwrap();
        let p = PluginDir {
            dir: dir.clone(),
            lang: Lang::Python,
            name: "digest".into(),
            outbound: false,
        };
        let first = inputs_digest(&p).unwrap();
        // Written again with the same bytes (a new mtime), and a cache file beside it.
        std::fs::write(dir.join("app.py"), "x = 1\n").unwrap();
        std::fs::write(dir.join("__pycache__/app.pyc"), "cache").unwrap();
        assert_eq!(inputs_digest(&p).unwrap(), first);
        std::fs::write(dir.join("app.py"), "x = 2\n").unwrap();
        assert_ne!(inputs_digest(&p).unwrap(), first);
        std::fs::write(dir.join("app.py"), "x = 1\n").unwrap();
        std::fs::write(dir.join("helper.py"), "").unwrap();
        assert_ne!(inputs_digest(&p).unwrap(), first, "a new file is an input");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
