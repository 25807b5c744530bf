//! Clients as users run them: psql (libpq), tokio-postgres with rustls, and a raw wire client
//! for what no driver will send.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::pki;

/// What psql did.
pub struct Psql {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `psql -c SQL` through pgvalet with `sslmode=verify-full` and the named client cert.
pub async fn psql(port: u16, cert: &str, user: &str, db: &str, sql: &str) -> Psql {
    let p = |f: &str| pki().join(f).display().to_string();
    let conn = format!(
        "host=127.0.0.1 port={port} dbname={db} user={user} sslmode=verify-full sslrootcert={} sslcert={} sslkey={} connect_timeout=10",
        p("ca.crt"),
        p(&format!("{cert}.crt")),
        p(&format!("{cert}.key")),
    );
    psql_conninfo(&conn, sql).await
}

/// Runs `psql -c SQL` with a connection string of the caller's.
pub async fn psql_conninfo(conn: &str, sql: &str) -> Psql {
    let out: Output = tokio::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, conn])
        .env_remove("PGPASSWORD")
        .env("PGAPPNAME", "pgvalet-test")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("psql is not installed: run `make test`, which installs it");
    Psql {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    }
}

/// A rustls client config that trusts `ca` and, if named, presents the client cert `cert`.
pub fn client_tls(ca: &str, cert: Option<&str>, alpn: Option<&[u8]>) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki().join(ca)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match cert {
        Some(cert) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(pki().join(format!("{cert}.crt")))
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki().join(format!("{cert}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    if let Some(alpn) = alpn {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    Arc::new(config)
}

/// Connects tokio-postgres through pgvalet with the named client certificate.
pub async fn pg_connect(
    port: u16,
    cert: &str,
    user: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect(port, user, db, Some(cert), None).await
}

/// Connects tokio-postgres through pgvalet with a password and no client certificate, as an
/// app configured for RDS Proxy does.
pub async fn pg_connect_password(
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect(port, user, db, None, Some(password)).await
}

async fn connect(
    port: u16,
    user: &str,
    db: &str,
    cert: Option<&str>,
    password: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls =
        tokio_postgres_rustls::MakeRustlsConnect::new((*client_tls("ca.crt", cert, None)).clone());
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .hostaddr("127.0.0.1".parse().unwrap())
        .port(port)
        .user(user)
        .dbname(db)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    if let Some(password) = password {
        config.password(password);
    }
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// The SQLSTATE of a tokio-postgres error, if the server sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|db| db.code().code().to_owned())
}

/// A message read off the wire.
#[derive(Debug)]
pub struct Msg {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Msg {
    /// A field of an ErrorResponse (`b'C'` for the code, `b'M'` for the message).
    pub fn field(&self, code: u8) -> Option<String> {
        let mut rest = &self.body[..];
        while let Some((&c, tail)) = rest.split_first() {
            if c == 0 {
                break;
            }
            let nul = tail.iter().position(|&b| b == 0)?;
            if c == code {
                return Some(String::from_utf8_lossy(&tail[..nul]).into_owned());
            }
            rest = &tail[nul + 1..];
        }
        None
    }
}

/// A hand-driven wire client.
pub struct Raw<S> {
    pub stream: S,
    buf: BytesMut,
}

pub fn startup_packet(version: u32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u32(version);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A simple Query message.
pub fn query_message(sql: &str) -> Vec<u8> {
    let mut out = vec![b'Q'];
    out.extend(((sql.len() + 5) as u32).to_be_bytes());
    out.extend(sql.as_bytes());
    out.push(0);
    out
}

pub const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
pub const GSSENC_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30];

impl Raw<TcpStream> {
    pub async fn connect(port: u16) -> Raw<TcpStream> {
        Raw {
            stream: TcpStream::connect(("127.0.0.1", port)).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Connects from a chosen loopback source address, e.g. 127.0.0.2.
    pub async fn connect_from(source: &str, port: u16) -> Raw<TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// TLS with the `orders` client certificate, then a protocol 3.0 startup packet of `params`;
    /// what pgvalet answers is left to read.
    pub async fn startup(
        port: u16,
        params: &[(&str, &str)],
    ) -> Raw<tokio_rustls::client::TlsStream<TcpStream>> {
        let mut raw = Raw::connect(port)
            .await
            .start_tls(Some("orders"))
            .await
            .unwrap();
        raw.send(&startup_packet(196_608, params)).await;
        raw
    }

    /// SSLRequest, expect 'S', then a TLS handshake with `cert`.
    pub async fn start_tls(
        mut self,
        cert: Option<&str>,
    ) -> std::io::Result<Raw<tokio_rustls::client::TlsStream<TcpStream>>> {
        self.send(&SSL_REQUEST).await;
        assert_eq!(self.read_byte().await, Some(b'S'));
        self.tls(cert, None).await
    }

    /// A TLS handshake straight away (PG17 direct TLS when `alpn` is `postgresql`).
    pub async fn tls(
        self,
        cert: Option<&str>,
        alpn: Option<&[u8]>,
    ) -> std::io::Result<Raw<tokio_rustls::client::TlsStream<TcpStream>>> {
        let connector = tokio_rustls::TlsConnector::from(client_tls("ca.crt", cert, alpn));
        let mut tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), self.stream)
            .await?;
        // With TLS 1.3 the server judges the client certificate after the client's handshake is
        // done; a read makes a refusal (an alert) visible here.
        tls.flush().await?;
        Ok(Raw {
            stream: tls,
            buf: BytesMut::new(),
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    /// A client on a stream already past its login.
    pub fn on(stream: S) -> Raw<S> {
        Raw {
            stream,
            buf: BytesMut::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    pub async fn read_byte(&mut self) -> Option<u8> {
        if !self.buf.is_empty() {
            return Some(self.buf.get_u8());
        }
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(20), self.stream.read(&mut b)).await {
            Ok(Ok(1)) => Some(b[0]),
            _ => None,
        }
    }

    /// The next message, or `None` at EOF or error.
    pub async fn read_msg(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                let len = u32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
                if self.buf.len() > len {
                    let tag = self.buf.get_u8();
                    self.buf.advance(4);
                    let body = self.buf.split_to(len - 4).to_vec();
                    return Some(Msg { tag, body });
                }
            }
            let read =
                tokio::time::timeout(Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                    .await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                _ => return None,
            }
        }
    }

    /// Reads until an ErrorResponse or ReadyForQuery; returns the messages read.
    pub async fn read_until_ready_or_error(&mut self) -> Vec<Msg> {
        let mut out = Vec::new();
        while let Some(m) = self.read_msg().await {
            let done = m.tag == b'Z' || m.tag == b'E';
            out.push(m);
            if done {
                break;
            }
        }
        out
    }

    /// Runs a simple query and returns its rows as text (NULL as "NULL"), or the error's code.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<String>>, String> {
        self.send(&query_message(sql)).await;
        let msgs = self.read_until_ready_or_error().await;
        if let Some(code) = error_code(&msgs) {
            return Err(code);
        }
        let rows = msgs
            .iter()
            .filter(|m| m.tag == b'D')
            .map(|m| {
                let mut cols = Vec::new();
                let mut rest = &m.body[2..];
                while rest.len() >= 4 {
                    let len = i32::from_be_bytes(rest[..4].try_into().unwrap());
                    rest = &rest[4..];
                    if len < 0 {
                        cols.push("NULL".to_owned());
                    } else {
                        cols.push(String::from_utf8_lossy(&rest[..len as usize]).into_owned());
                        rest = &rest[len as usize..];
                    }
                }
                cols
            })
            .collect();
        Ok(rows)
    }

    /// True when the peer closes (EOF or reset) within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut b = [0u8; 64];
        matches!(
            tokio::time::timeout(within, self.stream.read(&mut b)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// The code of the first ErrorResponse among `msgs`.
pub fn error_code(msgs: &[Msg]) -> Option<String> {
    msgs.iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.field(b'C'))
}

pub fn error_message(msgs: &[Msg]) -> Option<String> {
    msgs.iter()
        .find(|m| m.tag == b'E')
        .and_then(|m| m.field(b'M'))
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}
