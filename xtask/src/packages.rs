//! The machine's own tools the tests and benchmarks run (curl, openssl, nginx, …): which are
//! missing, and installing them from Debian's packages with apt-get.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

/// A tool and the Debian package that brings it: a command on `PATH` (or in `/usr/sbin`), or
/// a file that must exist (a module).
#[derive(Debug, Clone, Copy)]
pub enum Tool {
    Command(&'static str, &'static str),
    File(&'static str, &'static str),
}

impl Tool {
    fn present(self) -> bool {
        match self {
            Tool::Command(cmd, _) => have(cmd),
            Tool::File(path, _) => Path::new(path).exists(),
        }
    }

    fn package(self) -> &'static str {
        match self {
            Tool::Command(_, p) | Tool::File(_, p) => p,
        }
    }
}

/// What the end-to-end tests run: curl and openssl s_client, the clients of the TLS tests;
/// headless Chromium, the browser of the CORS test; and redis-server (with redis-cli), the
/// shared state of the `[state]` tests.
pub const TEST_TOOLS: &[Tool] = &[
    Tool::Command("curl", "curl"),
    Tool::Command("openssl", "openssl"),
    Tool::Command("chromium", "chromium"),
    Tool::Command("redis-server", "redis-server"),
];

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {cmd} >/dev/null 2>&1 || test -x /usr/sbin/{cmd}"),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// The packages of the tools that are missing, each once.
pub fn missing(tools: &[Tool]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for t in tools {
        if !t.present() && !out.contains(&t.package()) {
            out.push(t.package());
        }
    }
    out
}

/// Installs the packages of the missing tools with apt-get, and checks they are there after.
pub fn install(tools: &[Tool]) -> Result<()> {
    let missing = missing(tools);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {}", missing.join(", "));
    crate::exec(Command::new("apt-get").arg("update"))?;
    crate::exec(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    let still = self::missing(tools);
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}
