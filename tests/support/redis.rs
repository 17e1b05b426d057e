//! A real `redis-server` (Debian's package) on a free port, with no persistence, that a test
//! can kill, stop, restart on the same port, and talk to with `redis-cli`.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// TLS: the directory with the server's certificate and its CA.
    tls: Option<PathBuf>,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn redis_server() -> &'static str {
    if std::path::Path::new("/usr/bin/redis-server").exists() {
        "/usr/bin/redis-server"
    } else {
        "redis-server"
    }
}

impl RedisServer {
    pub fn start() -> Self {
        let mut r = Self {
            child: None,
            port: free_port(),
            tls: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        r
    }

    /// A server speaking TLS only, with a certificate for 127.0.0.1 from a test CA; the CA is
    /// at [`RedisServer::ca`].
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = super::pki::Ca::new("test redis CA");
        ca.write(dir.path(), "ca");
        ca.server(&["127.0.0.1"], 1).write(dir.path(), "server");
        let mut r = Self {
            child: None,
            port: free_port(),
            tls: Some(dir.path().to_owned()),
            dir,
        };
        r.spawn();
        r
    }

    pub fn ca(&self) -> PathBuf {
        self.tls.as_ref().expect("a TLS server").join("ca.pem")
    }

    pub fn url(&self) -> String {
        match self.tls {
            Some(_) => format!("rediss://127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    fn spawn(&mut self) {
        let mut c = Command::new(redis_server());
        c.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        match &self.tls {
            Some(d) => {
                c.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(d.join("server.pem"))
                    .arg("--tls-key-file")
                    .arg(d.join("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(d.join("ca.pem"))
                    .args(["--tls-auth-clients", "no"]);
            }
            None => {
                c.args(["--port", &self.port.to_string()]);
            }
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's redis-server package; `cargo xtask test` installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.tls.is_none() {
            while !self.cli(&["PING"]).contains("PONG") {
                assert!(
                    Instant::now() < deadline,
                    "redis-server did not answer PING"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `redis-cli` against the server; its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn cli_output(&self, args: &[&str]) -> Output {
        let mut c = Command::new("redis-cli");
        c.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(d) = &self.tls {
            c.arg("--tls").arg("--cacert").arg(d.join("ca.pem"));
        }
        c.args(args).output().expect("redis-cli")
    }

    /// Kills the server (SIGKILL): its connections drop, and its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: the server keeps its connections open and answers nothing, as a hung one.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // A paused server does not die of SIGKILL until it is continued on some kernels.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}
