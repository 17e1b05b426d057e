//! The Python peers in `tests/peers/` (gRPC, WebSocket, JWT issuer), run with the test venv's
//! Python: as a server that prints its port and runs until dropped, or as a one-shot command
//! that prints JSON.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::{python, workspace_root};

fn script(name: &str) -> std::path::PathBuf {
    workspace_root().join("tests/peers").join(name)
}

/// `SCRIPT serve`: a server on the port it prints first, until dropped.
pub struct PeerServer {
    child: Child,
    pub port: u16,
}

impl PeerServer {
    pub fn start(name: &str) -> PeerServer {
        let mut child = Command::new(python())
            .arg(script(name))
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} printed its port, not {line:?}"));
        PeerServer { child, port }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `SCRIPT ARGS...`, with `input` on its stdin; returns the JSON it printed.
pub fn run(name: &str, args: &[&str], input: &str) -> Value {
    let mut child = Command::new(python())
        .arg(script(name))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{name}: {e}: {stdout}"))
}
