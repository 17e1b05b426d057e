//! curl as the client: the answer's headers and body, for tests that check what a real client
//! sees.

use std::process::Command;

/// curl (`-sS --max-time 20`) with these arguments: the response headers, lower-cased, and
/// the body.
pub fn curl(args: &[&str]) -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "-D"])
        .arg(&headers)
        .args(args)
        .output()
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let headers = std::fs::read_to_string(headers)
        .unwrap()
        .to_ascii_lowercase();
    (headers, out.stdout)
}

/// The value of a header in curl's lower-cased headers.
pub fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .map(str::trim)
    })
}
