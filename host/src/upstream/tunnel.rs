//! A tunnel: once an upstream has switched protocols (a WebSocket), bytes are copied both
//! ways, unread, until either side closes, or until nothing has moved either way for the
//! idle timeout. A side that closes its half is followed by a shutdown of the other's write
//! half, so a clean close on one side is seen as one on the other.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use super::stream::Stream;

/// An upstream connection that has switched protocols, with the bytes of the new protocol
/// that were read along with the 101.
pub struct UpstreamSide {
    pub(super) io: Stream,
    pub(super) early: BytesMut,
    /// A tunnel counts as a request in flight to its target until it closes.
    pub(super) _in_flight: Option<super::endpoint::InFlight>,
}

/// How a tunnel ended.
#[derive(Debug, thiserror::Error)]
pub enum TunnelEnd {
    #[error("closed after {up} bytes up and {down} bytes down")]
    Closed { up: u64, down: u64 },
    #[error("nothing moved either way for {} ms", .0.as_millis())]
    Idle(Duration),
    #[error("{0}")]
    Failed(#[from] io::Error),
}

/// Copies between `client` and `upstream` until the tunnel ends.
pub async fn run<C>(mut client: C, upstream: UpstreamSide, idle: Duration) -> TunnelEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let UpstreamSide {
        io,
        early,
        _in_flight,
    } = upstream;
    if !early.is_empty()
        && let Err(e) = client.write_all(&early).await
    {
        return e.into();
    }
    let start = Instant::now();
    // Milliseconds from `start` to the last byte moved, either way.
    let last = AtomicU64::new(0);
    let mut client = Active {
        io: client,
        start,
        last: &last,
    };
    let mut upstream = Active {
        io,
        start,
        last: &last,
    };
    let watchdog = async {
        loop {
            let quiet_until = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    };
    tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
            Ok((up, down)) => TunnelEnd::Closed { up, down },
            Err(e) => e.into(),
        },
        () = watchdog => TunnelEnd::Idle(idle),
    }
}

/// One side of a tunnel, noting when bytes last moved through it.
struct Active<'a, T> {
    io: T,
    start: Instant,
    last: &'a AtomicU64,
}

impl<T> Active<'_, T> {
    fn moved(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Active<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.moved();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Active<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn early_bytes_go_first_and_a_quiet_tunnel_is_closed() {
        let (client_far, client_near) = pair().await;
        let (up_near, mut up_far) = pair().await;
        let upstream = UpstreamSide {
            io: Stream::Plain(up_near),
            early: BytesMut::from(&b"early"[..]),
            _in_flight: None,
        };
        let tunnel = tokio::spawn(run(client_near, upstream, Duration::from_millis(300)));
        let mut client_far = client_far;
        let mut got = [0u8; 5];
        client_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"early");
        client_far.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        up_far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        // Traffic keeps it open past one idle period; silence then closes it.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            up_far.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            client_far.read_exact(&mut one).await.unwrap();
        }
        let end = tunnel.await.unwrap();
        assert!(matches!(end, TunnelEnd::Idle(_)), "{end:?}");
        // Both sockets were closed with the tunnel.
        let mut rest = Vec::new();
        assert_eq!(client_far.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
