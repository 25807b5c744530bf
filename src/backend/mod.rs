//! Connecting to a Postgres backend: TCP, TLS (SSLRequest, then rustls), the StartupMessage,
//! login as the route's credentials, and the greeting up to the first ReadyForQuery.

mod address;
mod auth;
pub mod settings;
mod stream;
mod targets;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::BackendConfig;
use crate::credentials::Credentials;
use crate::error::{BackendError, ConfigError};
use crate::protocol::backend as msg;
use crate::protocol::frame;
use crate::tls::backend::{ClientCert, ClientCertFiles};

pub use address::Answer;
pub use auth::{Login, Step, StepError};
pub use settings::ClientSettings;
pub use stream::BackendStream;
pub use targets::Targets;

/// Largest message pgvalet accepts from a backend during login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

/// A backend, ready to connect to: the config resolved into what a connection needs.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub connect_timeout: Duration,
    /// How often a pool resolves `host` again while it holds connections.
    pub dns_refresh_interval: Duration,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    /// Whether `server_name` was configured, or follows `host`.
    explicit_server_name: bool,
    /// The client certificate presented in the TLS handshake, if any.
    pub client_cert: Option<ClientCert>,
}

impl Target {
    /// The backend `name` as configured, presenting `client_cert` when given.
    pub fn from_config(
        name: &str,
        config: &BackendConfig,
        client_cert: Option<ClientCertFiles<'_>>,
    ) -> Result<Target, ConfigError> {
        let mut loaded_cert = None;
        let tls =
            match crate::tls::backend::client_config(name, config, client_cert)? {
                None => None,
                Some(crate::tls::backend::Client {
                    config: client,
                    cert,
                }) => {
                    loaded_cert = cert;
                    let server_name = ServerName::try_from(config.server_name().to_owned())
                        .map_err(|e| ConfigError::Invalid {
                            path: "-".into(),
                            key: format!("backends.{name}.server_name"),
                            message: format!(
                                "\"{}\" is not a DNS name or IP address: {e}",
                                config.server_name()
                            ),
                        })?;
                    Some((client, server_name))
                }
            };
        Ok(Target {
            name: name.to_owned(),
            host: config.host.clone(),
            port: config.port,
            connect_timeout: config.connect_timeout,
            dns_refresh_interval: config.dns_refresh_interval,
            tls,
            explicit_server_name: config.server_name.is_some(),
            client_cert: loaded_cert,
        })
    }

    /// The same backend settings at another address (a secret's `host` and `port`). Unless
    /// `server_name` was configured, the certificate is checked against the new host.
    pub fn at(&self, host: &str, port: Option<u16>) -> Result<Target, BackendError> {
        let tls = match &self.tls {
            Some((client, _)) if !self.explicit_server_name => {
                let name =
                    ServerName::try_from(host.to_owned()).map_err(|e| BackendError::Protocol {
                        backend: self.name.clone(),
                        what: format!(
                            "the secret's host \"{host}\" is not a DNS name or IP address: {e}"
                        ),
                    })?;
                Some((client.clone(), name))
            }
            other => other.clone(),
        };
        Ok(Target {
            name: self.name.clone(),
            host: host.to_owned(),
            port: port.unwrap_or(self.port),
            connect_timeout: self.connect_timeout,
            dns_refresh_interval: self.dns_refresh_interval,
            tls,
            explicit_server_name: self.explicit_server_name,
            client_cert: self.client_cert.clone(),
        })
    }

    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Opens the transport to the host's address as the resolver gives it now: TCP, then TLS
    /// unless `tls = "disable"`.
    pub async fn open(&self) -> Result<BackendStream, BackendError> {
        let answer = self.resolve().await?;
        Ok(self.open_at(&answer.addrs).await?.0)
    }

    /// The host's addresses, asked of the resolver now.
    pub async fn resolve(&self) -> Result<Answer, BackendError> {
        Answer::resolve(&self.host, self.port)
            .await
            .map_err(|source| BackendError::Connect {
                backend: self.name.clone(),
                addr: self.addr(),
                source,
            })
    }

    /// Opens the transport to the first of `addrs` that takes a TCP connection, and says which
    /// one that was. TLS checks the certificate against the configured name, whatever the
    /// address.
    pub async fn open_at(
        &self,
        addrs: &[SocketAddr],
    ) -> Result<(BackendStream, SocketAddr), BackendError> {
        let mut failed = io::Error::new(io::ErrorKind::NotFound, "no address to connect to");
        for &addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok((self.start_tls(tcp).await?, addr)),
                Err(e) => failed = e,
            }
        }
        Err(BackendError::Connect {
            backend: self.name.clone(),
            addr: self.addr(),
            source: failed,
        })
    }

    async fn start_tls(&self, tcp: TcpStream) -> Result<BackendStream, BackendError> {
        let _ = tcp.set_nodelay(true);
        let Some((client, server_name)) = &self.tls else {
            return Ok(BackendStream::Plain(tcp));
        };
        let mut tcp = tcp;
        let mut request = BytesMut::new();
        frontend::ssl_request(&mut request);
        let tls_error = |source| BackendError::Tls {
            backend: self.name.clone(),
            source,
        };
        tcp.write_all(&request).await.map_err(tls_error)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(tls_error)?;
        match answer[0] {
            b'S' => {}
            b'N' => {
                return Err(BackendError::TlsRefused {
                    backend: self.name.clone(),
                });
            }
            other => {
                return Err(BackendError::Protocol {
                    backend: self.name.clone(),
                    what: format!("answered the SSL request with byte {other:#04x}"),
                });
            }
        }
        let connector = TlsConnector::from(client.clone());
        let tls = connector
            .connect(server_name.clone(), tcp)
            .await
            .map_err(tls_error)?;
        Ok(BackendStream::Tls(Box::new(tls)))
    }
}

/// Whom to log in as, where. A client's other startup parameters are not part of a login: they
/// are its [`ClientSettings`], applied after.
pub struct Request<'a> {
    /// The `[credentials.…]` table the password comes from; `None` when the client certificate
    /// is the whole login (`credentials` then holds only the user name, its CN).
    pub credentials_name: Option<&'a str>,
    pub credentials: &'a Credentials,
    pub database: &'a str,
}

/// A logged-in backend connection, as it stood at its first ReadyForQuery.
#[derive(Debug)]
pub struct Connection {
    pub stream: BackendStream,
    pub target: Arc<Target>,
    /// The address it went to, and what the target's host resolved to then.
    pub peer: SocketAddr,
    pub resolved: Answer,
    /// ParameterStatus values the backend reported, in order.
    pub params: Vec<(String, String)>,
    /// The backend's own cancel key (process id, secret).
    pub key: Option<(i32, i32)>,
    /// NoticeResponse frames sent during login, to pass on to the client.
    pub notices: Vec<BytesMut>,
    /// Transaction status of the first ReadyForQuery.
    pub status: u8,
    /// Bytes read past that ReadyForQuery; they belong to the client.
    pub pending: BytesMut,
    /// The client settings this connection was last set up with.
    pub applied: ClientSettings,
    /// Server-side names of the prepared statements pgvalet made on this connection
    /// (transaction mode).
    pub prepared: std::collections::HashSet<String>,
}

/// Connects and logs in, all within the target's `connect_timeout`.
pub async fn connect(
    target: Arc<Target>,
    request: &Request<'_>,
) -> Result<Connection, BackendError> {
    let limit = target.connect_timeout;
    match tokio::time::timeout(limit, connect_inner(target.clone(), request)).await {
        Ok(result) => result.map_err(|e| certificate_alert(&target, e)),
        Err(_) => Err(BackendError::ConnectTimeout {
            backend: target.name.clone(),
            addr: target.addr(),
        }),
    }
}

/// A TLS alert about pgvalet's client certificate, received during the handshake or (TLS 1.3)
/// at the first read after it, named as such; any other error as it is.
fn certificate_alert(target: &Target, e: BackendError) -> BackendError {
    use rustls::AlertDescription as A;
    let (BackendError::Tls { source, .. } | BackendError::Lost { source, .. }) = &e else {
        return e;
    };
    let alert = match source
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => *alert,
        _ => return e,
    };
    let about_certificate = matches!(
        alert,
        A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateRequired
    );
    if !about_certificate {
        return e;
    }
    let backend = target.name.clone();
    let alert = format!("{alert:?}");
    match &target.client_cert {
        Some(cert) => BackendError::CertificateRefused {
            backend,
            cert: match &cert.cn {
                Some(cn) => format!("{}, CN {cn}", cert.key),
                None => cert.key.clone(),
            },
            alert,
        },
        None => BackendError::CertificateRequired { backend, alert },
    }
}

async fn connect_inner(
    target: Arc<Target>,
    request: &Request<'_>,
) -> Result<Connection, BackendError> {
    let resolved = target.resolve().await?;
    let (mut stream, peer) = target.open_at(&resolved.addrs).await?;
    let backend = target.name.clone();
    let protocol = |what: String| BackendError::Protocol {
        backend: backend.clone(),
        what,
    };
    let closed = || BackendError::Closed {
        backend: target.name.clone(),
    };

    let channel_binding = match &stream {
        BackendStream::Tls(tls) => tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(crate::tls::backend::tls_server_end_point),
        BackendStream::Plain(_) => None,
    };

    let user = request.credentials.username.as_str();
    // Nothing else: what a startup packet sets becomes the connection's reset value, and a pooled
    // connection must reset to the server's defaults, not to its first client's (see
    // `apply_settings`).
    let params = [("user", user), ("database", request.database)];
    let mut out = BytesMut::new();
    frontend::startup_message(params.iter().copied(), &mut out)
        .map_err(|e| protocol(e.to_string()))?;
    write(&mut stream, &out, &target.name).await?;

    let password = request
        .credentials_name
        .map(|_| request.credentials.password.expose());
    let mut login = Login::new(user, password, channel_binding);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut connection = Connection {
        stream,
        target: target.clone(),
        peer,
        resolved,
        params: Vec::new(),
        key: None,
        notices: Vec::new(),
        status: b'I',
        pending: BytesMut::new(),
        applied: ClientSettings::default(),
        prepared: Default::default(),
    };
    let mut authenticated = false;
    loop {
        let frame = match frame::split(&mut buf, MAX_LOGIN_MESSAGE) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                let n = connection
                    .stream
                    .read_buf(&mut buf)
                    .await
                    .map_err(|source| BackendError::Lost {
                        backend: target.name.clone(),
                        source,
                    })?;
                if n == 0 {
                    return Err(closed());
                }
                continue;
            }
            Err(e) => return Err(protocol(format!("{e:?}"))),
        };
        match frame.tag {
            b'R' if !authenticated => {
                let request =
                    msg::auth_request(frame.body()).map_err(|e| protocol(e.to_owned()))?;
                match login.step(request) {
                    Ok(Step::Send(bytes)) => {
                        write(&mut connection.stream, &bytes, &target.name).await?
                    }
                    Ok(Step::Wait) => {}
                    Ok(Step::Done) => {
                        authenticated = true;
                        tracing::debug!(backend = %target.name, user, channel_binding = login.bound(), "backend login ok");
                    }
                    Err(StepError::Unsupported(what)) => {
                        return Err(BackendError::UnsupportedAuth {
                            backend: target.name.clone(),
                            what,
                        });
                    }
                    Err(StepError::Protocol(what)) => return Err(protocol(what)),
                    Err(StepError::NoPassword) => {
                        return Err(BackendError::NoLogin {
                            backend: target.name.clone(),
                            what: format!(
                                "it asked for a password for user \"{user}\", and the route has no credentials, only a client certificate (a `cert` line in the backend's pg_hba.conf makes the certificate the login)"
                            ),
                        });
                    }
                }
            }
            b'E' => {
                let fields = msg::error_fields(frame.body());
                return Err(BackendError::Login {
                    backend: target.name.clone(),
                    user: user.to_owned(),
                    with: match request.credentials_name {
                        Some(name) => format!("credentials \"{name}\""),
                        None => "its client certificate".to_owned(),
                    },
                    code: msg::field(&fields, b'C').to_owned(),
                    message: msg::field(&fields, b'M').to_owned(),
                });
            }
            b'N' => connection.notices.push(frame.bytes),
            b'S' if authenticated => {
                let (name, value) = msg::parameter_status(frame.body())
                    .ok_or_else(|| protocol("malformed ParameterStatus".into()))?;
                connection.params.push((name.to_owned(), value.to_owned()));
            }
            b'K' if authenticated => {
                connection.key = msg::backend_key_data(frame.body());
            }
            b'v' => {} // NegotiateProtocolVersion: the backend speaks an older 3.x; pgvalet asks for 3.0.
            b'Z' if authenticated => {
                connection.status = frame.body().first().copied().unwrap_or(b'I');
                connection.pending = buf;
                return Ok(connection);
            }
            tag => {
                return Err(protocol(format!(
                    "unexpected message '{}' during login",
                    tag as char
                )));
            }
        }
    }
}

impl Connection {
    /// Runs one simple query pgvalet itself needs (a reset, a health check, a SET), reading
    /// up to its ReadyForQuery. ParameterStatus changes are recorded; an ErrorResponse or
    /// anything unexpected fails it, and the connection should then be discarded.
    pub async fn simple_query(&mut self, sql: &str) -> Result<(), BackendError> {
        self.query_value(sql).await.map(drop)
    }

    /// Like [`Connection::simple_query`], and returns the first column of the first row, if the
    /// query returned one that is not NULL.
    pub async fn query_value(&mut self, sql: &str) -> Result<Option<String>, BackendError> {
        let name = self.target.name.clone();
        let protocol = |what: String| BackendError::Protocol {
            backend: name.clone(),
            what,
        };
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| protocol(e.to_string()))?;
        write(&mut self.stream, &out, &self.target.name).await?;
        let mut buf = std::mem::take(&mut self.pending);
        let mut failed = None;
        let mut value = None;
        loop {
            let frame = match frame::split(&mut buf, MAX_LOGIN_MESSAGE) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    let n = self.stream.read_buf(&mut buf).await.map_err(|source| {
                        BackendError::Lost {
                            backend: name.clone(),
                            source,
                        }
                    })?;
                    if n == 0 {
                        return Err(BackendError::Closed {
                            backend: name.clone(),
                        });
                    }
                    continue;
                }
                Err(e) => return Err(protocol(format!("{e:?}"))),
            };
            match frame.tag {
                b'Z' => {
                    self.status = frame.body().first().copied().unwrap_or(b'I');
                    self.pending = buf;
                    return match failed {
                        None => Ok(value),
                        Some(message) => Err(protocol(format!("\"{sql}\" failed: {message}"))),
                    };
                }
                b'E' => {
                    failed = Some(msg::field(&msg::error_fields(frame.body()), b'M').to_owned())
                }
                b'S' => {
                    if let Some((k, v)) = msg::parameter_status(frame.body()) {
                        self.set_param(k, v);
                    }
                }
                b'D' if value.is_none() => value = msg::first_column(frame.body()),
                // CommandComplete, EmptyQueryResponse, NoticeResponse, other rows.
                _ => {}
            }
        }
    }

    /// Brings the connection's settings in line with a client's: sets the ones it asked for
    /// that differ, resets the ones it did not ask for.
    pub async fn apply_settings(&mut self, want: &ClientSettings) -> Result<(), BackendError> {
        let sql = self.applied.change_to(want);
        if !sql.is_empty() {
            self.simple_query(&sql).await?;
        }
        self.applied = want.clone();
        Ok(())
    }

    /// Records a ParameterStatus value, replacing an earlier one of the same name.
    pub fn set_param(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == name) {
            Some((_, v)) => *v = value.to_owned(),
            None => self.params.push((name.to_owned(), value.to_owned())),
        }
    }
}

async fn write(
    stream: &mut BackendStream,
    bytes: &[u8],
    backend: &str,
) -> Result<(), BackendError> {
    stream
        .write_all(bytes)
        .await
        .map_err(|source| BackendError::Lost {
            backend: backend.to_owned(),
            source,
        })
}

/// Sends a CancelRequest for the backend process `key` over a fresh connection to `addr`, the
/// target's address that process runs at (the host name may point elsewhere by now), as
/// Postgres expects, and waits until Postgres closes that connection: it does so once it has
/// signalled the backend, and a driver that waits for its own cancel connection to close before
/// its next query (libpq, asyncpg) relies on that order.
pub async fn cancel(
    target: &Target,
    addr: SocketAddr,
    key: (i32, i32),
) -> Result<(), BackendError> {
    let send = async {
        let (mut stream, _) = target.open_at(&[addr]).await?;
        let mut out = BytesMut::new();
        frontend::cancel_request(key.0, key.1, &mut out);
        write(&mut stream, &out, &target.name).await?;
        let mut rest = [0u8; 64];
        while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        let _ = stream.shutdown().await;
        Ok(())
    };
    match tokio::time::timeout(target.connect_timeout, send).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::ConnectTimeout {
            backend: target.name.clone(),
            addr: target.addr(),
        }),
    }
}
