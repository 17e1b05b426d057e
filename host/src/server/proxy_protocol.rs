//! The PROXY protocol (v1 text, v2 binary), for a gateway behind a TCP load balancer: the
//! balancer opens each connection with a header that names the client it carries. Parsing is
//! the `ppp` crate's; this reads the header off the socket and hands on what came after it.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ppp::{HeaderResult, PartialResult, v1, v2};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A v1 header is at most 107 bytes; a v2 header's TLVs are bounded here, well past what
/// balancers send (an address block and a few TLVs).
const MAX_HEADER: usize = 1024;

/// Why a connection that had to open with a PROXY header was closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no complete PROXY header within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the connection closed before its PROXY header ended")]
    Closed,
    #[error("not a PROXY protocol header")]
    Invalid,
    #[error("a PROXY header longer than {MAX_HEADER} bytes")]
    TooLong,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What a PROXY header said, and the bytes that came after it in the same reads (the start of
/// the first request, for hyper to read first).
#[derive(Debug)]
pub struct Opened {
    /// The client's address, or `None` for a header that carries none (v1 `UNKNOWN`, v2
    /// `LOCAL`, as a balancer's health check sends): the connection's own peer stands then.
    pub client: Option<IpAddr>,
    pub rest: Bytes,
}

/// Reads the PROXY header that opens `stream`, within `timeout`.
pub async fn read_header(stream: &mut TcpStream, timeout: Duration) -> Result<Opened, Error> {
    tokio::time::timeout(timeout, read(stream))
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

async fn read(stream: &mut TcpStream) -> Result<Opened, Error> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Error::Closed);
        }
        let (len, client) = match HeaderResult::parse(&buf) {
            HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
            HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h)),
            r if r.is_incomplete() => {
                if buf.len() >= MAX_HEADER {
                    return Err(Error::TooLong);
                }
                continue;
            }
            _ => return Err(Error::Invalid),
        };
        let rest = buf.split_off(len).freeze();
        return Ok(Opened { client, rest });
    }
}

fn v1_source(a: &v1::Addresses) -> Option<IpAddr> {
    match a {
        v1::Addresses::Tcp4(ip) => Some(ip.source_address.into()),
        v1::Addresses::Tcp6(ip) => Some(ip.source_address.into()),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(h: &v2::Header<'_>) -> Option<IpAddr> {
    if h.command == v2::Command::Local {
        return None;
    }
    match &h.addresses {
        v2::Addresses::IPv4(ip) => Some(ip.source_address.into()),
        v2::Addresses::IPv6(ip) => Some(ip.source_address.into()),
        _ => None,
    }
}
