//! What the load sends and the upstream answers: the JSON and SOAP bodies, S4's JWT and S9's
//! API key.

use std::io::Read as _;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The HS256 secret of S4's jwt-auth and of the reload test's routes.
pub(super) const JWT_SECRET: &str = "bench-secret-0123456789abcdef0123456789abcdef";

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The API key S9 sends, in `X-API-Key`; the gateway's config holds its digest.
pub(super) const API_KEY: &str = "bench-key-0123456789abcdef";

/// [`API_KEY`]'s SHA-256, in hex, as api-key's `key_sha256` takes it.
pub(super) fn api_key_sha256() -> Result<String> {
    Ok(sha256(API_KEY.as_bytes(), None)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// SHA-256 of `input`, or its HMAC under `hmac_key`, by openssl (present wherever curl is).
fn sha256(input: &[u8], hmac_key: Option<&str>) -> Result<Vec<u8>> {
    let mut c = Command::new("openssl");
    c.args(["dgst", "-sha256", "-binary"]);
    if let Some(key) = hmac_key {
        c.args(["-hmac", key]);
    }
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running openssl dgst")?;
    {
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("openssl stdin")?
            .write_all(input)?;
    }
    let mut digest = Vec::new();
    child
        .stdout
        .take()
        .context("openssl stdout")?
        .read_to_end(&mut digest)?;
    if !child.wait()?.success() || digest.len() != 32 {
        bail!("openssl dgst -sha256 failed");
    }
    Ok(digest)
}

/// An HS256 token valid for a day, signed with openssl's HMAC.
pub(super) fn hs256_token() -> Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64url(
        format!(
            r#"{{"sub":"bench-user","iss":"bench","iat":{now},"exp":{},"roles":["bench"]}}"#,
            now + 86_400
        )
        .as_bytes(),
    );
    let input = format!("{header}.{claims}");
    let mac = sha256(input.as_bytes(), Some(JWT_SECRET))?;
    Ok(format!("{input}.{}", b64url(&mac)))
}

/// Twelve order lines, as a JSON array's elements.
fn order_items() -> String {
    (0..12)
        .map(|i| {
            format!(
                r#"{{"sku":"SKU-{i:04}","quantity":{},"price":{}.50}}"#,
                i + 1,
                10 + i
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A JSON order of about 1 KiB.
pub(super) fn json_body() -> String {
    let mut body = format!(
        r#"{{"customer":{{"name":"Ann Example","email":"ann@example.com","address":{{"street":"1 Main Street","city":"Springfield","zip":"12345"}}}},"items":[{}],"note":""#,
        order_items()
    );
    while body.len() < 1022 {
        body.push('x');
    }
    body.push_str("\"}");
    body
}

/// A JSON document with personal data, about 1 KiB, for the redaction plugin.
pub(super) fn json_answer() -> String {
    format!(
        r#"{{"customer":{{"name":"Ann Example","email":"ann@example.com","ssn":"078-05-1120","address":{{"street":"1 Main Street","city":"Springfield","zip":"12345"}}}},"card":{{"number":"4111111111111111","expiry":"12/30"}},"items":[{}],"note":"leave at the door"}}"#,
        order_items()
    )
}

/// The SOAP service's answer, about 1 KiB.
pub(super) fn soap_answer() -> String {
    let items: String = (0..12)
        .map(|i| format!("<line><sku>SKU-{i:04}</sku><status>accepted</status></line>"))
        .collect();
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><soap:Envelope \
         xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>\
         <CreateOrderResponse xmlns=\"http://example.com/orders\"><CreateOrderResult>\
         <id>42</id><total>1234.50</total><paid>true</paid>{items}<note>"
    );
    let tail = "</note></CreateOrderResult></CreateOrderResponse></soap:Body></soap:Envelope>";
    while s.len() + tail.len() < 1024 {
        s.push('x');
    }
    s.push_str(tail);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_api_key_digest_is_its_sha256() {
        // `printf %s bench-key-0123456789abcdef | sha256sum`
        assert_eq!(
            super::api_key_sha256().unwrap(),
            "95ab1ab43a1c769ff93ba02eec3f4f81c077398c1691a00ae8628abd43901779"
        );
    }
}
