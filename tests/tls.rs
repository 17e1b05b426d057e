//! TLS and HTTP/2 from the client side: certificates chosen by SNI, ALPN, the HTTPS redirect,
//! mutual TLS, certificate checks and rotation, h2c, and the HTTP/2 limits. Certificates are
//! made in the tests (rcgen); the clients are curl, openssl s_client, rustls, and HTTP/2 frames
//! written by hand.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::config::GatewayConfig;
use support::h2raw::{self, Conn};
use support::pki::{Ca, Files, cert_entry};
use support::upstream::{Behaviour, Upstream};
use support::{Gateway, check};
use tokio::net::TcpStream;

/// Runs curl; returns its exit code and what it wrote to stdout.
fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `--resolve NAME:PORT:127.0.0.1`, so curl sends NAME as SNI and Host.
fn resolve(name: &str, addr: SocketAddr) -> String {
    format!("{name}:{}:127.0.0.1", addr.port())
}

/// The subject line `openssl s_client` prints for the certificate it was given.
fn served_subject(addr: SocketAddr, sni: Option<&str>) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-alpn", "h2"]);
    match sni {
        Some(n) => cmd.args(["-servername", n]),
        None => cmd.arg("-noservername"),
    };
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let subject = text
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no certificate in s_client's output:\n{text}"))
        .to_owned();
    assert!(
        text.contains("ALPN protocol: h2"),
        "h2 is chosen by ALPN:\n{text}"
    );
    subject
}

/// A CA with two server certificates (api.test, and admin.test with a wildcard) in `dir`.
fn two_certs(dir: &Path) -> (Ca, Files, Files) {
    let ca = Ca::new("wasmgate test CA");
    ca.write(dir, "ca");
    let api = ca.server(&["api.test"], 1).write(dir, "api");
    let admin = ca
        .server(&["admin.test", "*.internal.test"], 2)
        .write(dir, "admin");
    (ca, api, admin)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_speaks_h2_and_http11_by_alpn_with_the_certificate_sni_chose() {
    let certs = tempfile::tempdir().unwrap();
    let (_ca, api, admin) = two_certs(certs.path());
    let ca_pem = certs.path().join("ca.pem");
    let ca_pem = ca_pem.to_str().unwrap();
    let up = Upstream::start("app", Behaviour::Echo).await;
    let cfg = GatewayConfig::new()
        .server(&format!(
            "tls = {{ certs = [{}, {}] }}",
            cert_entry(&api),
            cert_entry(&admin)
        ))
        .server(r#"redirect = { listen = "127.0.0.1:0" }"#)
        .upstream("app", &up.url())
        .route("all", "/", "app");
    let gw = Gateway::start(&cfg.to_string());
    let url = |host: &str| format!("https://{host}:{}/echo?q=1", gw.addr.port());

    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let (code, out) = curl(&[
            flag,
            "--cacert",
            ca_pem,
            "--resolve",
            &resolve("api.test", gw.addr),
            "-w",
            "\n%{http_code} %{http_version}",
            &url("api.test"),
        ]);
        assert_eq!(code, 0, "curl {flag} succeeds: {out}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, format!("200 {version}"), "{flag}");
        let echoed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(echoed["path"], "/echo");
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
        assert_eq!(
            echoed["headers"]["x-forwarded-host"],
            format!("api.test:{}", gw.addr.port())
        );
    }
    // curl checks the certificate against the name: each name gets its own.
    for host in ["admin.test", "db.internal.test"] {
        let (code, out) = curl(&[
            "--cacert",
            ca_pem,
            "--resolve",
            &resolve(host, gw.addr),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url(host),
        ]);
        assert_eq!((code, out.as_str()), (0, "200"), "{host}");
    }
    assert!(served_subject(gw.addr, Some("api.test")).contains("CN = api.test"));
    assert!(served_subject(gw.addr, Some("ADMIN.test")).contains("CN = admin.test"));
    assert!(served_subject(gw.addr, Some("x.internal.test")).contains("CN = admin.test"));
    // No SNI, or a name no certificate has: the first certificate.
    assert!(served_subject(gw.addr, None).contains("CN = api.test"));
    assert!(served_subject(gw.addr, Some("other.test")).contains("CN = api.test"));

    // A second connection resumes the first one's session (a TLS 1.3 ticket).
    let session = certs.path().join("session");
    let session = session.to_str().unwrap();
    for (flag, expect) in [
        ("-sess_out", "New, TLSv1.3"),
        ("-sess_in", "Reused, TLSv1.3"),
    ] {
        // A whole request, read to the end, so the ticket (sent after the handshake) arrives.
        let mut child = Command::new("openssl")
            .args(["s_client", "-ign_eof", "-connect", &gw.addr.to_string()])
            .args(["-servername", "api.test", flag, session])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"GET /echo HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(expect), "{flag}: {text}");
    }

    // Plain HTTP on the redirect listener goes to the same host and target on HTTPS.
    let logs = gw.logs_containing(&["redirecting to https"]);
    let line = logs
        .lines()
        .find(|l| l.contains("redirecting to https"))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let redirect: SocketAddr = v["addr"].as_str().unwrap().parse().unwrap();
    let (code, out) = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "-H",
        "Host: api.test",
        &format!("http://{redirect}/a/../b?x=%41"),
    ]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("301 https://api.test:{}/b?x=%41", gw.addr.port())
    );
    // Following it lands on the HTTPS listener.
    let (code, out) = curl(&[
        "-L",
        "--cacert",
        ca_pem,
        "--resolve",
        &resolve("api.test", redirect),
        "--resolve",
        &resolve("api.test", gw.addr),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{num_redirects}",
        &format!("http://api.test:{}/echo", redirect.port()),
    ]);
    assert_eq!((code, out.as_str()), (0, "200 1"));
    assert_eq!(up.hits(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_refuses_a_client_without_a_certificate_from_the_client_ca() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let (_ca, api, _) = two_certs(dir);
    let clients = Ca::new("clients CA");
    let client_ca = clients.write(dir, "clients");
    let alice = clients
        .client("alice", &["alice.example.com"])
        .write(dir, "alice");
    let stranger = Ca::new("another CA")
        .client("mallory", &[])
        .write(dir, "mallory");
    let up = Upstream::start("app", Behaviour::Echo).await;
    let start = |auth: &str| {
        Gateway::start(
            &GatewayConfig::new()
                .server(&format!(
                    "tls = {{ certs = [{}], client_ca = {:?}, client_auth = {auth:?} }}",
                    cert_entry(&api),
                    client_ca.display().to_string()
                ))
                .plugin("fixture", &support::plugin("fixture"))
                .upstream("app", &up.url())
                .route("all", "/", "app")
                .stage("fixture", "{ tls_to_headers = true }")
                .to_string(),
        )
    };
    let ca_pem = dir.join("ca.pem").display().to_string();
    let echo = |gw: &Gateway, who: Option<&Files>| {
        let mut args = vec![
            "--cacert".to_owned(),
            ca_pem.clone(),
            "--resolve".into(),
            resolve("api.test", gw.addr),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        if let Some(f) = who {
            args.extend([
                "--cert".into(),
                f.cert.display().to_string(),
                "--key".into(),
                f.key.display().to_string(),
            ]);
        }
        args.push(format!("https://api.test:{}/", gw.addr.port()));
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // The status alone (curl's exit code, and the code after the body).
    let get = |gw: &Gateway, who: Option<&Files>| {
        let (code, out) = echo(gw, who);
        let status = out
            .rsplit_once('\n')
            .map_or(out.as_str(), |(_, s)| s)
            .to_owned();
        (code, status)
    };

    let required = start("required");
    let (code, _) = get(&required, None);
    assert_ne!(code, 0, "no client certificate: the handshake fails");
    let (code, _) = get(&required, Some(&stranger));
    assert_ne!(
        code, 0,
        "a certificate from another CA: the handshake fails"
    );
    assert_eq!(get(&required, Some(&alice)), (0, "200".into()));
    assert_eq!(
        up.hits(),
        1,
        "only the authenticated request reached the upstream"
    );

    // The plugin saw the SNI and the client's certificate.
    let seen = |gw: &Gateway, who: Option<&Files>| -> serde_json::Value {
        let (code, out) = echo(gw, who);
        assert_eq!(code, 0);
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, "200");
        serde_json::from_str::<serde_json::Value>(body).unwrap()["headers"].clone()
    };
    let h = seen(&required, Some(&alice));
    assert_eq!(h["x-tls"], "yes");
    assert_eq!(h["x-tls-sni"], "api.test");
    assert_eq!(h["x-tls-subject"], "CN=alice");
    assert_eq!(h["x-tls-sans"], "alice.example.com");

    let optional = start("optional");
    assert_eq!(get(&optional, None), (0, "200".into()));
    let h = seen(&optional, None);
    assert_eq!(h["x-tls"], "yes");
    assert_eq!(h["x-tls-subject"], serde_json::Value::Null);
    assert_eq!(get(&optional, Some(&alice)), (0, "200".into()));
    let (code, _) = get(&optional, Some(&stranger));
    assert_ne!(code, 0, "a certificate that is presented must still verify");
}

#[test]
fn check_names_each_bad_certificate_and_key() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = Ca::new("wasmgate test CA");
    let good = ca.server(&["api.test"], 1).write(dir, "good");
    let other = ca.server(&["other.test"], 2).write(dir, "other");
    let expired = ca
        .leaf(&["old.test"], "old.test", 3, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
        .write(dir, "expired");
    let no_san = ca.leaf(&[], "bare", 4, |_| {}).write(dir, "bare");
    let soon = ca
        .leaf(&["soon.test"], "soon.test", 5, |p| {
            let in_five_days = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
                + 5 * 86_400;
            p.not_after = x509_parser::time::ASN1Time::from_timestamp(in_five_days)
                .unwrap()
                .to_datetime();
        })
        .write(dir, "soon");
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    let config = |tls: &str| {
        GatewayConfig::new()
            .server(&format!("tls = {tls}"))
            .upstream("app", "http://127.0.0.1:9")
            .route("all", "/", "app")
            .to_string()
    };
    let path = |p: &Path| p.display().to_string();

    let (ok, out) = check(&config(&format!("{{ certs = [{}] }}", cert_entry(&good))));
    assert!(ok, "{out}");
    // One about to expire loads, with a warning.
    let (ok, out) = check(&config(&format!("{{ certs = [{}] }}", cert_entry(&soon))));
    assert!(ok, "{out}");
    assert!(
        out.contains("a TLS certificate expires soon") && out.contains("days_left"),
        "{out}"
    );
    // A certificate without SANs is fine as the default, which SNI need not choose.
    let (ok, out) = check(&config(&format!("{{ certs = [{}] }}", cert_entry(&no_san))));
    assert!(ok, "{out}");

    for (tls, expect) in [
        (
            format!(
                "{{ certs = [{{ cert = {:?}, key = {:?} }}] }}",
                path(&dir.join("missing.pem")),
                path(&good.key)
            ),
            "server.tls.certs[0].cert: ".to_owned()
                + &path(&dir.join("missing.pem"))
                + ": cannot read it",
        ),
        (
            format!(
                "{{ certs = [{{ cert = {:?}, key = {:?} }}] }}",
                path(&dir.join("junk.pem")),
                path(&good.key)
            ),
            "holds no PEM certificate".to_owned(),
        ),
        (
            format!(
                "{{ certs = [{{ cert = {:?}, key = {:?} }}] }}",
                path(&good.cert),
                path(&other.key)
            ),
            format!(
                "server.tls.certs[0].key: {} is not the key of the certificate in {}",
                path(&other.key),
                path(&good.cert)
            ),
        ),
        (
            format!("{{ certs = [{}] }}", cert_entry(&expired)),
            "expired on Jan  1 00:00:00 2021".to_owned(),
        ),
        (
            format!(
                "{{ certs = [{}, {}] }}",
                cert_entry(&good),
                cert_entry(&no_san)
            ),
            "server.tls.certs[1].cert: ".to_owned()
                + &path(&no_san.cert)
                + " has no DNS name in its subjectAltName, so SNI can never choose it",
        ),
        (
            format!(
                "{{ certs = [{}], client_auth = \"optional\" }}",
                cert_entry(&good)
            ),
            "server.tls.client_auth: needs server.tls.client_ca".to_owned(),
        ),
        (
            format!(
                "{{ certs = [{}], client_ca = {:?} }}",
                cert_entry(&good),
                path(&dir.join("junk.pem"))
            ),
            "server.tls.client_ca: ".to_owned()
                + &path(&dir.join("junk.pem"))
                + ": holds no PEM certificate",
        ),
        (
            "{ certs = [] }".to_owned(),
            "server.tls.certs: at least one certificate is required".to_owned(),
        ),
        (
            format!(
                "{{ certs = [{}], min_version = \"1.1\" }}",
                cert_entry(&good)
            ),
            "unknown variant `1.1`".to_owned(),
        ),
    ] {
        let (ok, out) = check(&config(&tls));
        assert!(!ok, "{tls} is refused");
        assert!(
            out.contains(&expect),
            "for {tls}\nexpected: {expect}\ngot: {out}"
        );
    }
    let (ok, out) = check(
        &GatewayConfig::new()
            .server(r#"redirect = { listen = "127.0.0.1:0" }"#)
            .upstream("app", "http://127.0.0.1:9")
            .route("all", "/", "app")
            .to_string(),
    );
    assert!(
        !ok && out.contains("server.redirect: redirects to HTTPS, so it needs server.tls"),
        "{out}"
    );
}

/// Requests over rustls: each over a new connection (`fresh`) or all over one.
struct TlsClient {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl TlsClient {
    async fn connect(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("api.test").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())
    }

    /// GET / on a new connection (a full handshake: the client resumes no session): the status
    /// and the serial number of the server's certificate.
    async fn get_fresh(&self) -> Result<(u16, Vec<u8>), String> {
        let tls = self.connect().await?;
        let serial = {
            let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
            cert.raw_serial().to_vec()
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let status = get(&mut send).await?;
        Ok((status, serial))
    }
}

async fn get(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
) -> Result<u16, String> {
    let req = http::Request::get("/")
        .header("host", "api.test")
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    resp.into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_certificate_goes_live_with_no_failed_request() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = Ca::new("wasmgate test CA");
    let api = ca.server(&["api.test"], 1).write(dir, "api");
    let up = Upstream::start("app", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .server(&format!("tls = {{ certs = [{}] }}", cert_entry(&api)))
            .server("keepalive_timeout_ms = 60000")
            .upstream("app", &up.url())
            .route("all", "/", "app")
            .to_string(),
    );
    let mut config = (*ca.client_config(&[b"http/1.1"])).clone();
    config.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(TlsClient {
        addr: gw.addr,
        config: Arc::new(config),
    });
    assert_eq!(client.get_fresh().await.unwrap(), (200, vec![1]));
    // A keep-alive connection made before the rotation.
    let (mut kept, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(client.connect().await.unwrap()))
            .await
            .unwrap();
    tokio::spawn(conn);
    assert_eq!(get(&mut kept).await, Ok(200));

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, stop, ok, failed) = (client.clone(), stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match client.get_fresh().await {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        errors.push(format!("{other:?}"));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            errors
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The new pair replaces the old one, file by file, as a deploy tool would.
    ca.server(&["api.test"], 2).write(dir, "api");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, serial) = client.get_fresh().await.unwrap();
        assert_eq!(status, 200);
        if serial == [2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate never went live:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for l in load {
        errors.extend(l.await.unwrap());
    }
    assert!(
        errors.is_empty(),
        "failed requests during the rotation: {errors:?}"
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(get(&mut kept).await, Ok(200), "an open connection lives on");

    // A broken certificate file is refused; the last good one stays live.
    std::fs::write(dir.join("api.pem"), "garbage").unwrap();
    gw.logs_containing(&["reload refused", "holds no PEM certificate"]);
    assert_eq!(client.get_fresh().await.unwrap(), (200, vec![2]));
}

#[tokio::test(flavor = "multi_thread")]
async fn h2c_with_prior_knowledge_beside_http11_on_a_plain_listener() {
    let up = Upstream::start("app", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .server("h2c = true")
            .plugin("fixture", &support::plugin("fixture"))
            .upstream("app", &up.url())
            .route("all", "/", "app")
            .stage("fixture", "{ tls_to_headers = true }")
            .to_string(),
    );
    for (flag, version) in [("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")] {
        let (code, out) = curl(&[flag, "-w", "\n%{http_code} %{http_version}", &gw.url("/x")]);
        assert_eq!(code, 0, "{flag}: {out}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, format!("200 {version}"));
        let echoed: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "http");
        assert_eq!(echoed["headers"]["host"], up.addr.to_string());
        // The plugin sees the same request whatever the protocol, and no TLS session.
        assert_eq!(echoed["headers"]["x-tls"], "none");
        assert_eq!(echoed["path"], "/x");
    }
    // Without `h2c`, a prior-knowledge client gets nowhere.
    let plain = Gateway::start(
        &GatewayConfig::new()
            .upstream("app", &up.url())
            .route("all", "/", "app")
            .to_string(),
    );
    let (code, _) = curl(&["--http2-prior-knowledge", &plain.url("/x")]);
    assert_ne!(code, 0);
}

/// A TLS connection offering only h2, made to speak frames by hand.
async fn h2_over_tls(
    addr: SocketAddr,
    ca: &Ca,
) -> Conn<tokio_rustls::client::TlsStream<TcpStream>> {
    let tls = TlsClient {
        addr,
        config: ca.client_config(&[b"h2"]),
    }
    .connect()
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (conn, settings) = Conn::open(tls).await;
    assert!(
        settings
            .settings()
            .contains(&(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS, 2))
    );
    conn
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_limits_streams_and_header_lists_and_closes_on_rapid_reset() {
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("wasmgate test CA");
    let api = ca.server(&["api.test"], 1).write(certs.path(), "api");
    let up = Upstream::start("app", Behaviour::Slow(Duration::from_millis(500))).await;
    let limits = r#"http2 = { max_concurrent_streams = 2, max_pending_resets = 10 }"#;
    let config = |tls: bool| {
        let cfg = GatewayConfig::new()
            .server(limits)
            .server("max_header_bytes = 4096");
        let cfg = if tls {
            cfg.server(&format!("tls = {{ certs = [{}] }}", cert_entry(&api)))
        } else {
            cfg.server("h2c = true")
        };
        cfg.upstream("app", &up.url())
            .route("all", "/", "app")
            .to_string()
    };
    let tls_gw = Gateway::start(&config(true));
    let h2c_gw = Gateway::start(&config(false));

    // The server's SETTINGS say what it allows.
    let (_, settings) = Conn::open(TcpStream::connect(h2c_gw.addr).await.unwrap()).await;
    let settings = settings.settings();
    assert!(
        settings.contains(&(h2raw::SETTINGS_MAX_CONCURRENT_STREAMS, 2)),
        "{settings:?}"
    );
    assert!(
        settings.contains(&(h2raw::SETTINGS_MAX_HEADER_LIST_SIZE, 4096)),
        "{settings:?}"
    );

    // A third stream while two are open is refused; the two are answered.
    let mut c = h2_over_tls(tls_gw.addr, &ca).await;
    for id in [1, 3, 5] {
        let block = h2raw::get_headers(true, "api.test", "/slow");
        c.send(&h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &block,
        ))
        .await;
    }
    let mut answered = Vec::new();
    let mut refused = Vec::new();
    while answered.len() + refused.len() < 3 {
        let f = c.next().await.expect("a frame for each stream");
        match f.kind {
            h2raw::HEADERS => answered.push(f.stream),
            h2raw::RST_STREAM => {
                assert_eq!(f.error_code(), h2raw::REFUSED_STREAM);
                refused.push(f.stream);
            }
            _ => {}
        }
    }
    answered.sort();
    assert_eq!((answered, refused), (vec![1, 3], vec![5]));

    // A header list past max_header_bytes never reaches the upstream.
    let hits = up.hits();
    let mut block = h2raw::get_headers(true, "api.test", "/big");
    h2raw::header(&mut block, "x-big", &"a".repeat(5000));
    c.send(&h2raw::frame(
        h2raw::HEADERS,
        h2raw::END_HEADERS | h2raw::END_STREAM,
        7,
        &block,
    ))
    .await;
    let f = loop {
        let f = c.next().await.expect("an answer to the big header list");
        if f.stream == 7 && (f.kind == h2raw::HEADERS || f.kind == h2raw::RST_STREAM) {
            break f;
        }
    };
    // `:status: 431`: the `:status` name from the static table, and "431" in HPACK's Huffman
    // code (011010 011001 00001, padded with ones).
    assert_eq!(f.kind, h2raw::HEADERS, "{f:?}");
    assert!(
        f.payload.windows(3).any(|w| w == [0x69, 0x90, 0xff]),
        "431: {f:?}"
    );
    assert_eq!(up.hits(), hits, "the oversized request went nowhere");

    // Rapid reset: streams opened and cancelled at once, over and over. The connection is
    // closed with ENHANCE_YOUR_CALM, long before the upstream sees them all.
    for gw in [&tls_gw, &h2c_gw] {
        let hits = up.hits();
        let mut burst = Vec::new();
        for i in 0..500u32 {
            let id = 2 * i + 1;
            let block = h2raw::get_headers(gw.addr == tls_gw.addr, "api.test", "/reset");
            burst.extend(h2raw::frame(
                h2raw::HEADERS,
                h2raw::END_HEADERS | h2raw::END_STREAM,
                id,
                &block,
            ));
            burst.extend(h2raw::frame(
                h2raw::RST_STREAM,
                0,
                id,
                &h2raw::CANCEL.to_be_bytes(),
            ));
        }
        let goaway = if gw.addr == tls_gw.addr {
            let mut c = h2_over_tls(gw.addr, &ca).await;
            c.try_send(&burst).await;
            c.until(h2raw::GOAWAY).await
        } else {
            let (mut c, _) = Conn::open(TcpStream::connect(gw.addr).await.unwrap()).await;
            c.try_send(&burst).await;
            c.until(h2raw::GOAWAY).await
        };
        let goaway = goaway.expect("a GOAWAY before the connection closes");
        assert_eq!(goaway.error_code(), h2raw::ENHANCE_YOUR_CALM);
        tokio::time::sleep(Duration::from_millis(700)).await;
        let reached = up.hits() - hits;
        assert!(
            reached < 50,
            "{reached} of 500 reset streams reached the upstream"
        );
    }
    // The gateway serves on.
    let (code, out) = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &h2c_gw.url("/after"),
    ]);
    assert_eq!((code, out.as_str()), (0, "200"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_is_closed_with_goaway_when_idle_or_used_up() {
    let up = Upstream::start("app", Behaviour::Echo).await;
    let gw = Gateway::start(
        &GatewayConfig::new()
            .server("h2c = true")
            .server("keepalive_timeout_ms = 400")
            .server("max_requests_per_connection = 3")
            .upstream("app", &up.url())
            .route("all", "/", "app")
            .to_string(),
    );
    let request = |id: u32| {
        h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &h2raw::get_headers(false, "localhost", "/"),
        )
    };
    // Idle: one request, then silence. GOAWAY(NO_ERROR) comes after the keep-alive timeout.
    let (mut c, _) = Conn::open(TcpStream::connect(gw.addr).await.unwrap()).await;
    c.send(&request(1)).await;
    let started = Instant::now();
    let goaway = c.until(h2raw::GOAWAY).await.expect("GOAWAY");
    assert_eq!(goaway.error_code(), h2raw::NO_ERROR);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "closed after {waited:?}"
    );

    // Used up: the third request is answered, then GOAWAY.
    let (mut c, _) = Conn::open(TcpStream::connect(gw.addr).await.unwrap()).await;
    let mut ends = 0;
    for id in [1, 3, 5] {
        c.send(&request(id)).await;
    }
    let mut saw_goaway = false;
    while let Some(f) = c.next_within(Duration::from_secs(2)).await {
        if f.kind == h2raw::DATA && f.flags & h2raw::END_STREAM != 0 {
            ends += 1;
        }
        if f.kind == h2raw::GOAWAY {
            assert_eq!(f.error_code(), h2raw::NO_ERROR);
            saw_goaway = true;
        }
        if saw_goaway && ends == 3 {
            break;
        }
    }
    assert_eq!((ends, saw_goaway), (3, true));
}

/// An HTTPS upstream: each answer says the SNI it was reached by and the client certificate's
/// subject (or `none`); `accepted` counts its connections (handshakes).
struct TlsUpstream {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsUpstream {
    async fn start(config: rustls::ServerConfig) -> TlsUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    let conn = tls.get_ref().1;
                    let sni = conn.server_name().unwrap_or("none").to_owned();
                    let subject = conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|der| {
                            let (_, c) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
                            c.subject().to_string()
                        })
                        .unwrap_or_else(|| "none".into());
                    let svc = hyper::service::service_fn(move |_req| {
                        let body = serde_json::json!({ "sni": sni, "client": subject }).to_string();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from(body)),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsUpstream {
            addr,
            accepted,
            task,
        }
    }
}

/// A server config for `leaf`, asking for client certificates from `clients` when given.
fn upstream_config(leaf: &support::pki::Leaf, clients: Option<&Ca>) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(leaf.cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        }
    };
    builder.with_single_cert(chain, key).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn https_targets_are_checked_against_their_ca_and_name() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = Ca::new("upstream CA");
    let ca_file = ca.write(dir, "upstream-ca").display().to_string();
    let up = TlsUpstream::start(upstream_config(&ca.server(&["app.internal"], 1), None)).await;
    let target = format!("https://127.0.0.1:{}", up.addr.port());
    let start = |lines: &[&str]| {
        Gateway::start(
            &GatewayConfig::new()
                .upstream_with("app", &[&target], lines)
                .route("all", "/", "app")
                .to_string(),
        )
    };
    let client = support::Client::new();

    // The right CA and name: answered, with the name sent as SNI, over one kept-alive
    // connection (the session tickets that arrive on it do not make it unfit).
    let ca_line = format!("ca_file = {ca_file:?}");
    let gw = start(&[&ca_line, r#"tls_server_name = "app.internal""#]);
    for _ in 0..5 {
        let r = client.get(&gw.url("/x")).await;
        assert_eq!(r.status, 200, "{}", gw.logs());
        assert_eq!(r.json()["sni"], "app.internal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );

    // The target's own address is not a name the certificate has: 502, and the log says why.
    let gw = start(&[&ca_line]);
    assert_eq!(client.get(&gw.url("/x")).await.status, 502);
    assert!(
        gw.logs_containing(&["TLS handshake"])
            .contains("certificate not valid for name"),
        "{}",
        gw.logs()
    );
    // The system's roots do not know the test CA.
    let gw = start(&[r#"tls_server_name = "app.internal""#]);
    assert_eq!(client.get(&gw.url("/x")).await.status, 502);
    assert!(
        gw.logs_containing(&["TLS handshake"])
            .contains("invalid peer certificate"),
        "{}",
        gw.logs()
    );
    // tls_verify = false takes anything, and says so.
    let gw = start(&["tls_verify = false"]);
    assert_eq!(client.get(&gw.url("/x")).await.status, 200);
    assert!(
        gw.logs_containing(&["tls_verify = false"])
            .contains("are not checked")
    );

    // Hostile targets: one that accepts and never answers the handshake is bounded by
    // connect_timeout_ms; one that answers in plain HTTP fails the handshake. Both: 502.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain = Upstream::start("plain", Behaviour::Echo).await;
    for (addr, why) in [
        (
            silent.local_addr().unwrap(),
            "connect timed out after 300 ms",
        ),
        (plain.addr, "TLS handshake failed"),
    ] {
        let gw = Gateway::start(
            &GatewayConfig::new()
                .upstream_with(
                    "app",
                    &[&format!("https://{addr}")],
                    &["connect_timeout_ms = 300", "tls_verify = false"],
                )
                .route("all", "/", "app")
                .to_string(),
        );
        let started = Instant::now();
        assert_eq!(client.get(&gw.url("/x")).await.status, 502);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(gw.logs_containing(&[why]).contains(why), "{}", gw.logs());
    }

    // TLS settings on an upstream without https:// targets are a config error.
    let (ok, out) = check(
        &GatewayConfig::new()
            .upstream_with("app", &["http://127.0.0.1:9"], &["tls_verify = false"])
            .route("all", "/", "app")
            .to_string(),
    );
    assert!(
        !ok && out.contains("are for https:// targets, and it has none"),
        "{out}"
    );
    let (ok, out) = check(
        &GatewayConfig::new()
            .upstream_with("app", &[&target], &[r#"ca_file = "missing.pem""#])
            .route("all", "/", "app")
            .to_string(),
    );
    assert!(
        !ok && out.contains("upstreams.app: ca_file: ")
            && out.contains("missing.pem: cannot read it"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_presents_its_client_certificate_to_an_upstream_that_asks() {
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let ca = Ca::new("upstream CA");
    let ca_file = ca.write(dir, "upstream-ca").display().to_string();
    let clients = Ca::new("gateway clients CA");
    let mine = clients.client("gateway", &[]).write(dir, "gateway");
    let up = TlsUpstream::start(upstream_config(
        &ca.server(&["app.internal"], 1),
        Some(&clients),
    ))
    .await;
    let target = format!("https://127.0.0.1:{}", up.addr.port());
    let base = [
        format!("ca_file = {ca_file:?}"),
        r#"tls_server_name = "app.internal""#.to_owned(),
    ];
    let start = |more: Option<String>| {
        let mut lines: Vec<&str> = base.iter().map(String::as_str).collect();
        if let Some(m) = &more {
            lines.push(m);
        }
        Gateway::start(
            &GatewayConfig::new()
                .upstream_with("app", &[&target], &lines)
                .route("all", "/", "app")
                .to_string(),
        )
    };
    let client = support::Client::new();
    let without = start(None);
    assert_eq!(client.get(&without.url("/x")).await.status, 502);
    let with = start(Some(format!("client_cert = {}", cert_entry(&mine))));
    let r = client.get(&with.url("/x")).await;
    assert_eq!(r.status, 200, "{}", with.logs());
    assert_eq!(r.json()["client"], "CN=gateway");
}
