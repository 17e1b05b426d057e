//! `cargo xtask fuzz [TARGET] [--seconds N] [--merge]`: the libFuzzer targets in `fuzz/`, run
//! with cargo-fuzz on the stable toolchain (`RUSTC_BOOTSTRAP=1` lets it use the sanitizer and
//! coverage flags that are nightly-only by name).
//!
//! The targets are the files in `fuzz/fuzz_targets/`, so a new one is picked up as soon as it
//! is there (and has its `[[bin]]` in `fuzz/Cargo.toml`). Each run reads the committed corpus,
//! `fuzz/corpus/TARGET/`, and writes what it finds to `fuzz/target/corpus/TARGET/`, so the
//! work tree stays clean; `--merge` then folds the finds into the committed corpus, minimised.
//! `fuzz/dict/TARGET.dict`, when there is one, is handed to libFuzzer as its dictionary.
//!
//! A crash, a panic (every failed assertion in a target is one), a leak or a hang fails the
//! run, naming the input libFuzzer saved under `fuzz/artifacts/TARGET/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::{exec, root};

/// A short run: enough to show that a target builds and runs, and to catch a shallow bug.
pub const DEFAULT_SECONDS: u64 = 30;
/// Inputs past this are not generated. The parsers' own limits are tested by unit tests; what
/// fuzzing is for is structure, which small inputs reach faster.
const MAX_LEN: usize = 4096;

pub struct Args {
    pub target: Option<String>,
    pub seconds: u64,
    pub merge: bool,
}

impl Args {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut parsed = Args {
            target: None,
            seconds: DEFAULT_SECONDS,
            merge: false,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--seconds" => {
                    let n = it.next().context("--seconds needs a number")?;
                    parsed.seconds = n
                        .parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .with_context(|| format!("--seconds {n}: not a positive number"))?;
                }
                "--merge" => parsed.merge = true,
                flag if flag.starts_with('-') => bail!("unknown option {flag}"),
                name if parsed.target.is_none() => parsed.target = Some(name.to_owned()),
                extra => bail!("one target at most (got {extra} too)"),
            }
        }
        Ok(parsed)
    }
}

/// What one target's run did, from libFuzzer's output.
struct Summary {
    target: String,
    /// libFuzzer's last status line (`#N DONE cov: … ft: … corp: … exec/s: …`).
    status: Option<String>,
    failure: Option<String>,
}

/// Builds the fuzz project once, then runs the chosen target (or every one, in turn) for
/// `seconds` each. Fails when any target found a crash, after running the rest.
pub fn run(args: &Args) -> Result<()> {
    let fuzz_dir = root().join("fuzz");
    let all = targets(&fuzz_dir)?;
    let chosen = match &args.target {
        Some(t) if all.contains(t) => vec![t.clone()],
        Some(t) => bail!("no fuzz target {t}; there are: {}", all.join(", ")),
        None => all,
    };
    ensure_cargo_fuzz()?;
    // One build for every target; each run below then finds it up to date.
    exec(cargo_fuzz().args(["build", "--debug-assertions"]))?;
    let mut summaries = Vec::new();
    for target in &chosen {
        summaries.push(run_one(&fuzz_dir, target, args.seconds)?);
        if args.merge && summaries.last().is_some_and(|s| s.failure.is_none()) {
            merge(&fuzz_dir, target)?;
        }
    }
    eprintln!("xtask: fuzzing, {} s per target:", args.seconds);
    for s in &summaries {
        let status = s.status.as_deref().unwrap_or("(no status line)");
        eprintln!("  {:<16} {status}", s.target);
    }
    let failures: Vec<&str> = summaries
        .iter()
        .filter_map(|s| s.failure.as_deref())
        .collect();
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("xtask: {f}");
        }
        bail!("{} fuzz target(s) failed", failures.len());
    }
    Ok(())
}

/// The targets: every `fuzz/fuzz_targets/*.rs`, by name.
fn targets(fuzz_dir: &Path) -> Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        bail!("no fuzz targets in {}", dir.display());
    }
    Ok(names)
}

/// cargo-fuzz, with the fuzz project's own target directory (`fuzz/target`): its builds are
/// instrumented, and must not replace the workspace's.
fn cargo_fuzz() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.arg("fuzz")
        .current_dir(root())
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("CARGO_TARGET_DIR");
    c
}

/// Installs cargo-fuzz (into cargo's usual bin directory) when `cargo fuzz` is not there.
fn ensure_cargo_fuzz() -> Result<()> {
    let found = cargo_fuzz()
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Ok(());
    }
    let mut install = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    install
        .args(["install", "cargo-fuzz", "--locked"])
        .env_remove("CARGO_TARGET_DIR");
    exec(&mut install).context("installing cargo-fuzz")
}

fn run_one(fuzz_dir: &Path, target: &str, seconds: u64) -> Result<Summary> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let found = fuzz_dir.join("target/corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&found)?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    let before = files(&artifacts);

    let mut cmd = cargo_fuzz();
    // New inputs go to the first directory; the committed corpus is only read.
    cmd.args(["run", "--debug-assertions", target])
        .arg(&found)
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .arg("-timeout=10")
        .arg("-print_final_stats=1");
    // CI's short runs take the same mutation path every time, so a submission that passed
    // here passes there; runs by hand explore anew.
    if std::env::var_os("CI").is_some() {
        cmd.arg("-seed=1");
    }
    let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
    if dict.exists() {
        cmd.arg(format!("-dict={}", dict.display()));
    }
    eprintln!("xtask: running {cmd:?}");
    // libFuzzer reports on stderr: pass it through, keeping the last status line.
    let mut child = cmd
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let mut status_line = None;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap_or_default();
            eprintln!("{line}");
            if line.starts_with('#') && line.contains(" cov: ") {
                status_line = Some(line);
            }
        }
    }
    let status = child.wait()?;
    let failure = (!status.success()).then(|| {
        let new: Vec<PathBuf> = files(&artifacts)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        match new.as_slice() {
            [] => format!("fuzz target {target} failed ({status}) without saving an input"),
            inputs => {
                let list: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
                format!(
                    "fuzz target {target} failed on {}; reproduce with `RUSTC_BOOTSTRAP=1 cargo fuzz run {target} {}`",
                    list.join(", "),
                    list[0]
                )
            }
        }
    });
    Ok(Summary {
        target: target.to_owned(),
        status: status_line,
        failure,
    })
}

/// Replaces the committed corpus with a minimal one that covers what it and this run's finds
/// cover (libFuzzer's `-merge=1`, what `cargo fuzz cmin` does).
fn merge(fuzz_dir: &Path, target: &str) -> Result<()> {
    let corpus = fuzz_dir.join("corpus").join(target);
    let found = fuzz_dir.join("target/corpus").join(target);
    let merged = fuzz_dir.join("target/merged").join(target);
    if merged.exists() {
        std::fs::remove_dir_all(&merged)?;
    }
    std::fs::create_dir_all(&merged)?;
    exec(
        cargo_fuzz()
            .args(["run", "--debug-assertions", target])
            .arg(&merged)
            .arg(&corpus)
            .arg(&found)
            .arg("--")
            .arg("-merge=1")
            .arg(format!("-max_len={MAX_LEN}")),
    )?;
    for old in files(&corpus) {
        std::fs::remove_file(old)?;
    }
    for new in files(&merged) {
        let name = new.file_name().context("a corpus file has a name")?;
        std::fs::rename(&new, corpus.join(name))?;
    }
    eprintln!(
        "xtask: {} now holds {} inputs",
        corpus.display(),
        files(&corpus).len()
    );
    Ok(())
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}
