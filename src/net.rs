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
