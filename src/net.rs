//! Socket helpers shared by the client and backend sides.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Peeks at a socket once, without waiting: `None` when nothing has arrived, otherwise what a
/// peek returned (`Ok(0)` is the end of the stream).
pub async fn peek_now(tcp: &TcpStream) -> Option<io::Result<usize>> {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    std::future::poll_fn(|cx| {
        Poll::Ready(match tcp.poll_peek(cx, &mut buf) {
            Poll::Ready(result) => Some(result),
            Poll::Pending => None,
        })
    })
    .await
}

/// The next connection on `listener`. An accept that fails (out of file descriptors and the
/// like) is logged and retried after a pause rather than in a spin; `what` names the listener.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    what: &'static str,
) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A stream whose TLS layer may hold records of its own to send.
pub trait TlsPending {
    fn wants_write(&self) -> bool;
}

impl TlsPending for tokio_rustls::server::TlsStream<TcpStream> {
    fn wants_write(&self) -> bool {
        self.get_ref().1.wants_write()
    }
}

/// Reads a TLS stream and sends at once what TLS queued of its own while reading: the warning
/// alert that refuses a TLS 1.2 renegotiation. tokio-rustls sends such records only with the
/// next write or flush, and a peer that waits for them says nothing more meanwhile, so both
/// sides would wait until a timeout. Writes pass through.
pub struct Answering<'a, S>(pub &'a mut S);

impl<S: AsyncRead + AsyncWrite + TlsPending + Unpin> AsyncRead for Answering<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = &mut *self.get_mut().0;
        let read = Pin::new(&mut *stream).poll_read(cx, buf);
        // A flush that is pending wakes this task when the socket has room.
        if stream.wants_write()
            && let Poll::Ready(Err(e)) = Pin::new(&mut *stream).poll_flush(cx)
        {
            return Poll::Ready(Err(e));
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Answering<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().0).poll_shutdown(cx)
    }
}
