//! The relay's socket work: one wait that serves both directions at once. Every wait writes
//! what is ready for either peer and reads from both, so a backend answering while its client
//! is still writing (a pipeline, asyncpg's executemany, a COPY) never waits for that client's
//! writes to end: its output, an early error included, reaches the client as it would direct,
//! and neither side can fill its socket while pgvalet waits on the other.
//!
//! Bytes are written straight from the buffers they were read into (the client's bytes after
//! the relay has rewritten what it must), and a read stops only when what it feeds is full.
//!
//! A buffer holds memory only while bytes pass through it: a read into an empty buffer goes to
//! the stack first, and the relay sheds every empty buffer before it waits. An idle session
//! (thousands of them, most of the time) holds no buffer at all.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::backend::BackendStream;
use crate::net::{Answering, TlsPending};

/// How much one direction holds ready to write before the relay stops reading its source.
const BUFFER_CAP: usize = 256 * 1024;
/// How much one wait writes each way at most before it reports: a round of the relay stays
/// short, so what the backend says (an error in the middle of a client's long pipeline) is read
/// and passed on between two such writes, not after all of them.
const WRITE_PER_WAIT: usize = 64 * 1024;
/// How much one read takes at most, and how much room a buffer is given when bytes come.
const READ_CHUNK: usize = 8 * 1024;

/// What is buffered between the client and the backend.
#[derive(Debug)]
pub(super) struct Buffers {
    /// Read from the client, not yet looked at: at most the start of one message.
    pub from_client: BytesMut,
    /// Ready for the backend.
    pub to_backend: BytesMut,
    /// Read from the backend: the first `to_client` bytes ready for the client, the rest not
    /// yet looked at.
    pub from_backend: BytesMut,
    pub to_client: usize,
    /// Bytes the client's stream has taken, for the session's life.
    pub taken_by_client: u64,
    client_unflushed: bool,
    backend_unflushed: bool,
}

/// What a wait ended with.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Io {
    /// Bytes moved: there may be messages to look at, or room to read again.
    Moved,
    /// The client closed, or a read from it or a write to it failed.
    ClientGone,
    /// The backend closed, or a read from it or a write to it failed.
    BackendGone,
}

impl Buffers {
    pub fn new() -> Buffers {
        Buffers {
            from_client: BytesMut::new(),
            to_backend: BytesMut::new(),
            from_backend: BytesMut::new(),
            to_client: 0,
            taken_by_client: 0,
            client_unflushed: false,
            backend_unflushed: false,
        }
    }

    /// Nothing read and not looked at, nothing left to write either way.
    pub fn empty(&self) -> bool {
        self.from_client.is_empty()
            && self.to_backend.is_empty()
            && self.from_backend.is_empty()
            && !self.backend_unflushed
            && !self.client_unflushed
    }

    /// Frees the memory of every buffer that holds nothing: what a session keeps while it waits
    /// is then only what is still on its way.
    pub fn shed(&mut self) {
        for buf in [
            &mut self.from_client,
            &mut self.to_backend,
            &mut self.from_backend,
        ] {
            if buf.is_empty() && buf.capacity() > 0 {
                *buf = BytesMut::new();
            }
        }
    }

    /// Bytes are ready for the client that it has not taken yet.
    pub fn owes_client(&self) -> bool {
        self.to_client > 0 || self.client_unflushed
    }

    /// Everything ready for the backend is written.
    pub fn backend_written(&self) -> bool {
        self.to_backend.is_empty() && !self.backend_unflushed
    }

    /// Drops the message of `len` bytes at `at` in `from_backend` (after the bytes ready for the
    /// client), putting `instead` in its place.
    pub fn replace_from_backend(&mut self, at: usize, len: usize, instead: &[u8]) {
        if instead.is_empty() && at == 0 {
            self.from_backend.advance(len);
        } else if instead.is_empty() {
            // Only the bytes before the message move.
            self.from_backend.copy_within(0..at, len);
            self.from_backend.advance(len);
        } else {
            let tail = self.from_backend.split_off(at + len);
            self.from_backend.truncate(at);
            self.from_backend.extend_from_slice(instead);
            self.from_backend.extend_from_slice(&tail);
        }
    }

    /// Waits until bytes can move, and moves all that can: writes what is ready for each peer,
    /// reads the client while what it feeds has room (and `read_client`), reads the backend
    /// likewise.
    pub fn wait<'a>(
        &'a mut self,
        client: &'a mut TlsStream<TcpStream>,
        mut backend: Option<&'a mut BackendStream>,
        read_client: bool,
    ) -> impl Future<Output = Io> + 'a {
        poll_fn(move |cx| self.poll(cx, client, backend.as_deref_mut(), read_client))
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        client: &mut TlsStream<TcpStream>,
        backend: Option<&mut BackendStream>,
        read_client: bool,
    ) -> Poll<Io> {
        let mut moved = false;
        // The backend's side first: what it says goes to the client before more of the
        // client's bytes go to it. A write frees room that lets a read go on.
        let ready = &self.from_backend[..self.to_client.min(WRITE_PER_WAIT)];
        match send(cx, client, ready, &mut self.client_unflushed) {
            Ok((n, progress)) => {
                self.from_backend.advance(n);
                self.to_client -= n;
                self.taken_by_client += n as u64;
                moved |= progress;
            }
            Err(_) => return Poll::Ready(Io::ClientGone),
        }
        if let Some(backend) = backend {
            if self.to_client < BUFFER_CAP {
                match receive(cx, backend, &mut self.from_backend) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Io::BackendGone),
                    Poll::Ready(Ok(_)) => moved = true,
                    Poll::Pending => {}
                }
            }
            let ready = &self.to_backend[..self.to_backend.len().min(WRITE_PER_WAIT)];
            match send(cx, backend, ready, &mut self.backend_unflushed) {
                Ok((n, progress)) => {
                    self.to_backend.advance(n);
                    moved |= progress;
                }
                Err(_) => return Poll::Ready(Io::BackendGone),
            }
        }
        if read_client && self.to_backend.len() < BUFFER_CAP {
            match receive(cx, client, &mut self.from_client) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(Io::ClientGone),
                Poll::Ready(Ok(_)) => moved = true,
                Poll::Pending => {}
            }
        }
        if moved {
            Poll::Ready(Io::Moved)
        } else {
            Poll::Pending
        }
    }

    /// Writes what is ready for the client, all of it, reading nothing meanwhile: for the last
    /// words before the session ends.
    pub async fn write_out_to_client(&mut self, client: &mut TlsStream<TcpStream>) {
        let ready = &self.from_backend[..self.to_client];
        if client.write_all(ready).await.is_ok() {
            let _ = client.flush().await;
        }
        self.from_backend.advance(self.to_client);
        self.to_client = 0;
    }

    /// Writes what is ready for the backend, all of it, reading and dropping what the backend
    /// sends meanwhile (so that it cannot block on pgvalet): for a client that has gone or said
    /// goodbye, whose last messages reach the backend as they would direct. Returns false when
    /// the backend is gone.
    pub async fn write_out_to_backend(&mut self, backend: &mut BackendStream) -> bool {
        let mut dropped = BytesMut::new();
        poll_fn(|cx| {
            loop {
                match send(cx, backend, &self.to_backend, &mut self.backend_unflushed) {
                    Ok((n, _)) => self.to_backend.advance(n),
                    Err(_) => return Poll::Ready(false),
                }
                if self.backend_written() {
                    return Poll::Ready(true);
                }
                dropped.clear();
                match receive(cx, backend, &mut dropped) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(false),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    }
}

/// Writes as much of `data` as `w` takes now, then flushes once all of it is written. Returns
/// how many bytes were written and whether anything was done.
fn send<W: AsyncWrite + Unpin>(
    cx: &mut Context<'_>,
    w: &mut W,
    data: &[u8],
    unflushed: &mut bool,
) -> io::Result<(usize, bool)> {
    let mut written = 0;
    while written < data.len() {
        match Pin::new(&mut *w).poll_write(cx, &data[written..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => {
                written += n;
                *unflushed = true;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok((written, written > 0)),
        }
    }
    // A TLS stream may hold records until the socket takes them.
    if *unflushed {
        match Pin::new(&mut *w).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                *unflushed = false;
                return Ok((written, true));
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => {}
        }
    }
    Ok((written, written > 0))
}

/// Reads what `r` has into `buf`, sending what its TLS layer has to say of its own meanwhile
/// (see [`Answering`]). A buffer with no memory is given some only once bytes have come: the
/// read goes to the stack, so a wait that finds nothing holds nothing.
fn receive<R: AsyncRead + AsyncWrite + TlsPending + Unpin>(
    cx: &mut Context<'_>,
    r: &mut R,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() > 0 {
        if buf.capacity() - buf.len() < READ_CHUNK / 8 {
            buf.reserve(READ_CHUNK);
        }
        return pin!(Answering(r).read_buf(buf)).poll(cx);
    }
    let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
    let mut read = ReadBuf::uninit(&mut chunk);
    match Pin::new(&mut Answering(r)).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => {
            let filled = read.filled();
            if !filled.is_empty() {
                buf.reserve(READ_CHUNK.max(filled.len()));
                buf.extend_from_slice(filled);
            }
            Poll::Ready(Ok(filled.len()))
        }
        other => other.map_ok(|()| 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(from_backend: &[u8], to_client: usize) -> Buffers {
        let mut b = Buffers::new();
        b.from_backend.extend_from_slice(from_backend);
        b.to_client = to_client;
        b
    }

    impl TlsPending for tokio::io::DuplexStream {
        fn wants_write(&self) -> bool {
            false
        }
    }

    fn poll_receive(
        r: &mut tokio::io::DuplexStream,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        receive(&mut cx, r, buf)
    }

    #[tokio::test]
    async fn a_buffer_holds_memory_only_while_bytes_pass() {
        let (mut near, mut far) = tokio::io::duplex(64 * 1024);
        let mut bufs = Buffers::new();
        // Nothing has come: the wait holds nothing.
        assert!(poll_receive(&mut near, &mut bufs.from_client).is_pending());
        assert_eq!(bufs.from_client.capacity(), 0);
        // What comes is read whole, into memory given for it.
        far.write_all(b"hello").await.unwrap();
        assert!(matches!(
            poll_receive(&mut near, &mut bufs.from_client),
            Poll::Ready(Ok(5))
        ));
        assert_eq!(&bufs.from_client[..], b"hello");
        // More than one read's worth arrives in order, the buffer growing to hold it.
        let long: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        far.write_all(&long).await.unwrap();
        while bufs.from_client.len() < 5 + long.len() {
            assert!(poll_receive(&mut near, &mut bufs.from_client).is_ready());
        }
        assert_eq!(&bufs.from_client[5..], &long[..]);
        // Taken by the relay: shed gives the memory back; a buffer still holding bytes keeps them.
        bufs.to_backend.extend_from_slice(b"partial");
        bufs.from_client.advance(5 + long.len());
        bufs.shed();
        assert_eq!(bufs.from_client.capacity(), 0);
        assert_eq!(&bufs.to_backend[..], b"partial");
        // The end of the stream reads as 0 with nothing held.
        drop(far);
        assert!(matches!(
            poll_receive(&mut near, &mut bufs.from_client),
            Poll::Ready(Ok(0))
        ));
        assert_eq!(bufs.from_client.capacity(), 0);
    }

    #[test]
    fn a_message_is_taken_out_or_replaced_where_it_stands() {
        // Taken out at the start, and after bytes ready for the client.
        let mut b = with(b"HIDEtail", 0);
        b.replace_from_backend(0, 4, &[]);
        assert_eq!(&b.from_backend[..], b"tail");
        let mut b = with(b"readyHIDEtail", 5);
        b.replace_from_backend(5, 4, &[]);
        assert_eq!(&b.from_backend[..], b"readytail");
        // Replaced by something longer or shorter.
        let mut b = with(b"readyOLDtail", 5);
        b.replace_from_backend(5, 3, b"LONGER");
        assert_eq!(&b.from_backend[..], b"readyLONGERtail");
        b.replace_from_backend(5, 6, b"S");
        assert_eq!(&b.from_backend[..], b"readyStail");
    }
}
