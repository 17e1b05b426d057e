//! The dnslib peer (`tests/peers/dns_peer.py`): a name server whose records a test sets.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// The dnslib peer: records set line by line on its stdin.
pub struct Dns {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    pub port: u16,
}

impl Dns {
    pub fn start() -> Dns {
        let mut child = Command::new(super::python())
            .arg(super::workspace_root().join("tests/peers/dns_peer.py"))
            .arg("serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap();
        Dns { child, out, port }
    }

    /// Sets every record: a JSON object of name to IPv4 addresses.
    pub fn set(&mut self, records: serde_json::Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{records}").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
