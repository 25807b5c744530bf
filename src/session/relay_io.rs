//! The relay's socket work: passing what the backend sent on to the client, and writing one way
//! while reading the other, so that neither peer can block the other through pgvalet.

use std::future::pending;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::pool::Pooled;

/// How much one direction buffers while the relay is busy writing the other way.
const BUFFER_CAP: usize = 256 * 1024;

/// Writes the first `n` bytes of what the backend sent to the client, reading the backend
/// meanwhile, and counts them.
pub(super) async fn pass_to_client(
    client: &mut TlsStream<TcpStream>,
    from_backend: &mut BytesMut,
    n: usize,
    backend: &mut Pooled,
    sent: &mut u64,
) -> Result<(), &'static str> {
    let data = from_backend.split_to(n);
    *sent += n as u64;
    write_draining(client, &data, &mut backend.stream, from_backend)
        .await
        .map_err(|_| "client_gone")
}

/// Passes the `at` bytes the backend sent before a message of `len` bytes that answers
/// pgvalet itself, then drops that message: `at` and `len` as `(at, len)`.
pub(super) async fn hide_from_client(
    client: &mut TlsStream<TcpStream>,
    from_backend: &mut BytesMut,
    (at, len): (usize, usize),
    backend: &mut Pooled,
    sent: &mut u64,
) -> Result<(), &'static str> {
    pass_to_client(client, from_backend, at, backend, sent).await?;
    from_backend.advance(len);
    Ok(())
}

pub(super) async fn read_backend(
    backend: &mut Option<Pooled>,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    match backend {
        Some(backend) => backend.stream.read_buf(buf).await,
        None => pending().await,
    }
}

/// Writes all of `data` to `dst`, reading `src` into `src_buf` (up to [`BUFFER_CAP`]) while the
/// write waits, so that neither peer can block the other through pgvalet.
pub(super) async fn write_draining<W, R>(
    dst: &mut W,
    data: &[u8],
    src: &mut R,
    src_buf: &mut BytesMut,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let mut data = data;
    let mut src_open = true;
    loop {
        let room = src_open && src_buf.len() < BUFFER_CAP;
        let done_writing = data.is_empty();
        // Once everything is written, flush: a TLS stream may hold records until the socket
        // takes them.
        let io = async {
            if done_writing {
                dst.flush().await.map(|()| None)
            } else {
                dst.write(data).await.map(Some)
            }
        };
        tokio::select! {
            done = io => match done? {
                None => return Ok(()),
                Some(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Some(n) => data.advance(n),
            },
            read = src.read_buf(src_buf), if room => {
                // End of input is noticed by the relay's next read; stop draining it here.
                if !matches!(read, Ok(n) if n > 0) {
                    src_open = false;
                }
            }
        }
    }
}
