//! Socket helpers shared by the client and backend sides.

use std::io;
use std::task::Poll;

use tokio::io::ReadBuf;
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
