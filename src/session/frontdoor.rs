//! The client side of the handshake, one phase after another, all under one deadline:
//! first packet (SSLRequest, direct TLS, GSSENCRequest, CancelRequest or a refused plaintext
//! startup), the TLS handshake with a required client certificate, then the startup packet.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::authz::Identity;
use crate::error::{ClientError, FrontError};
use crate::net::Answering;
use crate::protocol::messages::{self, Severity};
use crate::protocol::startup::{self, CancelKey, FirstPacket, Startup, StartupError};
use crate::tls::ALPN_POSTGRESQL;

/// The first byte of a TLS handshake record: a client starting TLS without an SSLRequest.
const TLS_HANDSHAKE: u8 = 0x16;

/// How long pgvalet keeps trying to tell a refused client why, before it just closes.
const REJECT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// What came through the front door.
pub enum Arrival {
    /// A CancelRequest, and the TLS session it came in, if it came inside TLS (to be closed
    /// with a close_notify once the cancel is done, as Postgres closes it).
    Cancel(CancelKey, Option<Box<TlsStream<TcpStream>>>),
    Client(Box<Client>),
}

/// A client past TLS with a verified certificate and a well-formed startup packet.
pub struct Client {
    pub tls: TlsStream<TcpStream>,
    pub startup: Startup,
    pub identities: Vec<Identity>,
    pub user: String,
    pub database: String,
}

/// What the unencrypted first packet asked for.
enum Opening {
    Tls { direct: bool },
    Cancel(CancelKey),
}

/// What the first packet inside TLS asked for.
enum Request {
    Cancel(CancelKey),
    Session {
        startup: Startup,
        user: String,
        database: String,
    },
}

/// Runs the client handshake up to a routable request. Errors the client can be told about are
/// sent to it (in plaintext before TLS, inside TLS after) before this returns them.
pub async fn accept(
    mut tcp: TcpStream,
    acceptor: &TlsAcceptor,
    deadline: Instant,
) -> Result<Arrival, FrontError> {
    let direct = match within(deadline, "waiting for the first packet", open(&mut tcp)).await {
        Ok(Opening::Tls { direct }) => direct,
        Ok(Opening::Cancel(key)) => return Ok(Arrival::Cancel(key, None)),
        Err(e) => return Err(reject(&mut tcp, e).await),
    };

    let mut tls = within(deadline, "in the TLS handshake", async {
        acceptor.accept(tcp).await.map_err(FrontError::Tls)
    })
    .await?;
    let session = tls.get_ref().1;
    if direct && session.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err(FrontError::NoAlpn);
    }
    // No certificate gets this far only when some route takes passwords alone.
    let identities = match session.peer_certificates().and_then(|chain| chain.first()) {
        Some(leaf) => crate::tls::identity::identities(leaf).map_err(FrontError::Certificate),
        None => Ok(Vec::new()),
    };
    let identities = match identities {
        Ok(ids) => ids,
        Err(e) => return Err(reject(&mut tls, e).await),
    };

    match within(
        deadline,
        "waiting for the startup packet",
        read_startup(&mut tls),
    )
    .await
    {
        Ok(Request::Cancel(key)) => Ok(Arrival::Cancel(key, Some(Box::new(tls)))),
        Ok(Request::Session {
            startup,
            user,
            database,
        }) => Ok(Arrival::Client(Box::new(Client {
            tls,
            startup,
            identities,
            user,
            database,
        }))),
        Err(e) => Err(reject(&mut tls, e).await),
    }
}

/// Reads the unencrypted first packet(s): at most one GSSENCRequest (answered 'N'), then an
/// SSLRequest (answered 'S'), a direct TLS ClientHello, or a CancelRequest. A plaintext startup
/// packet is refused: pgvalet requires TLS.
async fn open(tcp: &mut TcpStream) -> Result<Opening, FrontError> {
    let phase = "before TLS";
    let io = |source| FrontError::Io { phase, source };
    let mut declined_gss = false;
    loop {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await.map_err(io)? == 0 {
            return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if first[0] == TLS_HANDSHAKE {
            return Ok(Opening::Tls { direct: true });
        }
        match read_first_packet(tcp, phase).await? {
            FirstPacket::SslRequest => {
                // Anything sent after the SSLRequest and before the TLS handshake would be
                // read as if it had come over TLS (CVE-2021-23214): refuse it.
                if has_buffered_bytes(tcp).await {
                    return Err(FrontError::BytesAfterSslRequest);
                }
                tcp.write_all(b"S").await.map_err(io)?;
                return Ok(Opening::Tls { direct: false });
            }
            FirstPacket::GssEncRequest if !declined_gss => {
                declined_gss = true;
                tcp.write_all(b"N").await.map_err(io)?;
            }
            FirstPacket::GssEncRequest => {
                return Err(FrontError::StartupLayout("a second GSSENC request"));
            }
            FirstPacket::Cancel(key) => return Ok(Opening::Cancel(key)),
            FirstPacket::Startup(s) if s.major != 3 => {
                return Err(FrontError::UnsupportedProtocol {
                    major: s.major,
                    minor: s.minor,
                });
            }
            FirstPacket::Startup(_) => return Err(FrontError::TlsRequired),
        }
    }
}

/// Consumes a PROXY protocol header at the start of the connection, if there is one:
/// `Some(source)` when there was (`source` is `None` for LOCAL and UNKNOWN headers), `None`
/// when the connection starts with something else, which is left unread.
pub async fn proxy_header(
    tcp: &mut TcpStream,
) -> Result<Option<Option<std::net::SocketAddr>>, FrontError> {
    use crate::proxy_protocol::{self, Peek};
    let io = |source| FrontError::Io {
        phase: "reading the PROXY header",
        source,
    };
    let mut buf = [0u8; 1100];
    loop {
        let n = tcp.peek(&mut buf).await.map_err(io)?;
        if n == 0 {
            return Err(io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match proxy_protocol::peek(&buf[..n]).map_err(|e| FrontError::ProxyHeader(e.0))? {
            Peek::Absent => return Ok(None),
            Peek::Header { len, source } => {
                let mut header = vec![0u8; len];
                tcp.read_exact(&mut header).await.map_err(io)?;
                return Ok(Some(source));
            }
            // Part of a header has arrived: peek again once more has (bounded by the caller's
            // handshake deadline).
            Peek::Incomplete => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Reads the first packet inside TLS: a StartupMessage, or a CancelRequest.
async fn read_startup(tls: &mut TlsStream<TcpStream>) -> Result<Request, FrontError> {
    let startup = match read_first_packet(&mut Answering(tls), "reading the startup packet").await?
    {
        FirstPacket::Startup(s) => s,
        FirstPacket::Cancel(key) => return Ok(Request::Cancel(key)),
        FirstPacket::SslRequest => return Err(FrontError::UnexpectedInsideTls("SSL request")),
        FirstPacket::GssEncRequest => {
            return Err(FrontError::UnexpectedInsideTls("GSSENC request"));
        }
    };
    if startup.major != 3 {
        return Err(FrontError::UnsupportedProtocol {
            major: startup.major,
            minor: startup.minor,
        });
    }
    let user = match startup.param("user") {
        Some(user) if !user.is_empty() => user.to_owned(),
        _ => return Err(FrontError::NoUser),
    };
    if startup
        .param("replication")
        .is_some_and(|v| !matches!(v, "false" | "off" | "no" | "0"))
    {
        return Err(FrontError::Replication);
    }
    let database = match startup.param("database") {
        Some(db) if !db.is_empty() => db.to_owned(),
        _ => user.clone(),
    };
    Ok(Request::Session {
        startup,
        user,
        database,
    })
}

/// Reads one length-prefixed first packet, checking the length before reading the body.
async fn read_first_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    phase: &'static str,
) -> Result<FirstPacket, FrontError> {
    let io = |source| FrontError::Io { phase, source };
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.map_err(io)?;
    let len = startup::body_len(header).map_err(startup_error)?;
    let mut body = BytesMut::zeroed(len);
    stream.read_exact(&mut body).await.map_err(io)?;
    startup::decode(&body).map_err(startup_error)
}

fn startup_error(e: StartupError) -> FrontError {
    match e {
        StartupError::Length(len) => FrontError::StartupLength(len),
        StartupError::Layout(what) => FrontError::StartupLayout(what),
    }
}

/// True when the client has already sent more bytes than were read.
async fn has_buffered_bytes(tcp: &TcpStream) -> bool {
    matches!(crate::net::peek_now(tcp).await, Some(Ok(n)) if n > 0)
}

/// Runs one phase under the handshake deadline; running out names the phase.
async fn within<T>(
    deadline: Instant,
    phase: &'static str,
    work: impl Future<Output = Result<T, FrontError>>,
) -> Result<T, FrontError> {
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or(Err(FrontError::Timeout { phase }))
}

/// Tells the client why it is refused, if the error is one a client can be told, and hands the
/// error back for the log.
pub async fn reject<S, E>(stream: &mut S, error: E) -> E
where
    S: AsyncWrite + Unpin,
    E: ClientError,
{
    if let Some(code) = error.sqlstate() {
        let mut buf = BytesMut::new();
        messages::error_response(&mut buf, Severity::Fatal, code, &error.client_message());
        let _ = tokio::time::timeout(REJECT_WRITE_TIMEOUT, async {
            stream.write_all(&buf).await?;
            stream.shutdown().await
        })
        .await;
    }
    error
}
