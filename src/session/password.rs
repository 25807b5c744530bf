//! Password mode: the client proves it knows the route's secret with SCRAM-SHA-256 (and
//! -PLUS channel binding when it can), as apps configured for RDS Proxy do. The proof is
//! checked against the current secret and, for `previous_grace` after a rotation, the previous
//! one. pgvalet then logs in to the backend itself as usual.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

use bytes::{Buf, BytesMut};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::credentials::Cache;
use crate::error::{ClientError, CredentialsError};
use crate::protocol::frame;
use crate::protocol::scram::{self, Exchange, Keys, ScramError};

/// Largest SASL message accepted from a client that has not authenticated yet.
const MAX_SASL_MESSAGE: usize = 2048;

/// Server-wide SCRAM state: the salt pgvalet derives keys with, the channel binding data of its
/// certificate, and the keys already derived (4096 HMAC rounds each), by password digest.
pub struct Scram {
    salt: [u8; 16],
    end_point: Option<Vec<u8>>,
    keys: Mutex<HashMap<[u8; 32], Keys>>,
}

impl Scram {
    pub fn new(end_point: Option<Vec<u8>>) -> Scram {
        Scram {
            salt: rand::random(),
            end_point,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn keys(&self, password: &str) -> Keys {
        let digest: [u8; 32] = Sha256::digest(password.as_bytes()).into();
        let mut memo = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if memo.len() > 64 {
            memo.clear();
        }
        memo.entry(digest)
            .or_insert_with(|| scram::derive_keys(password, &self.salt))
            .clone()
    }
}

#[derive(Debug, Error)]
pub enum PasswordError {
    /// RDS Proxy's words.
    #[error("The password that was provided for the role {role} is wrong.")]
    Wrong { role: String },
    #[error("SCRAM channel binding failed: {0}")]
    ChannelBinding(&'static str),
    #[error("invalid SASL authentication message: {0}")]
    Protocol(&'static str),
    #[error("connection lost during password authentication: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl ClientError for PasswordError {
    fn sqlstate(&self) -> Option<&str> {
        match self {
            PasswordError::Wrong { .. } => Some("28P01"),
            PasswordError::ChannelBinding(_) => Some("28000"),
            PasswordError::Protocol(_) => Some("08P01"),
            PasswordError::Io(_) => None,
            PasswordError::Credentials(_) => Some("08006"),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            PasswordError::Io(_) => "client_gone",
            PasswordError::Credentials(_) => "credentials_failed",
            _ => "auth_failed",
        }
    }
}

impl From<ScramError> for PasswordError {
    fn from(e: ScramError) -> Self {
        match e {
            ScramError::Malformed(what) => PasswordError::Protocol(what),
            ScramError::ChannelBinding(what) => PasswordError::ChannelBinding(what),
            // Answered by the caller, which knows the role.
            ScramError::WrongPassword => PasswordError::Protocol("wrong password"),
        }
    }
}

/// Runs the SASL exchange with the client and checks its proof against the passwords `cache`
/// allows. Leaves the stream right after AuthenticationSASLFinal; AuthenticationOk comes with
/// the greeting.
pub async fn authenticate<S>(
    stream: &mut S,
    role: &str,
    cache: &Cache,
    grace: std::time::Duration,
    scram: &Scram,
) -> Result<(), PasswordError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut mechanisms = Vec::new();
    if scram.end_point.is_some() {
        mechanisms.extend_from_slice(scram::SCRAM_SHA_256_PLUS.as_bytes());
        mechanisms.push(0);
    }
    mechanisms.extend_from_slice(scram::SCRAM_SHA_256.as_bytes());
    mechanisms.extend_from_slice(&[0, 0]);
    send_auth(stream, 10, &mechanisms).await?;

    let mut buf = BytesMut::new();
    let initial = read_sasl(stream, &mut buf).await?;
    let (mechanism, data) = parse_initial_response(&initial)?;
    // Passed for plain SCRAM too, so that a client claiming the server cannot bind ('y') while
    // -PLUS was offered is caught as a downgrade.
    let (exchange, server_first) =
        Exchange::start(mechanism, data, &scram.salt, scram.end_point.as_deref())?;
    send_auth(stream, 11, server_first.as_bytes()).await?;
    let client_final = read_sasl(stream, &mut buf).await?;

    let mut checked = Vec::new();
    for attempt in 0..2 {
        if attempt == 1 {
            // The client may hold a password newer than the cache: read the secret again.
            cache.refresh_if_stale().await;
        }
        let passwords = cache.client_passwords(grace).await?;
        if passwords == checked {
            break;
        }
        let keys: Vec<Keys> = passwords
            .iter()
            .map(|c| scram.keys(c.password.expose()))
            .collect();
        match exchange.finish(&client_final, &keys) {
            Ok((_, server_final)) => {
                send_auth(stream, 12, server_final.as_bytes()).await?;
                return Ok(());
            }
            Err(ScramError::WrongPassword) => checked = passwords,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PasswordError::Wrong {
        role: role.to_owned(),
    })
}

async fn send_auth<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: i32,
    data: &[u8],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(9 + data.len());
    out.push(b'R');
    out.extend_from_slice(&((8 + data.len()) as u32).to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(data);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Reads one `p` message (SASLInitialResponse or SASLResponse) and returns its body.
async fn read_sasl<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Vec<u8>, PasswordError> {
    loop {
        match frame::split(buf, MAX_SASL_MESSAGE) {
            Ok(Some(f)) if f.tag == b'p' => return Ok(f.body().to_vec()),
            Ok(Some(_)) => return Err(PasswordError::Protocol("expected a SASL response")),
            Ok(None) => {
                if stream.read_buf(buf).await? == 0 {
                    return Err(PasswordError::Io(io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Err(_) => return Err(PasswordError::Protocol("message length out of bounds")),
        }
    }
}

/// SASLInitialResponse: mechanism name, then the length of the data (-1 for none) and the data.
pub fn parse_initial_response(body: &[u8]) -> Result<(&str, &[u8]), PasswordError> {
    let nul = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(PasswordError::Protocol("no mechanism name"))?;
    let mechanism = std::str::from_utf8(&body[..nul])
        .map_err(|_| PasswordError::Protocol("mechanism name is not UTF-8"))?;
    let mut rest = &body[nul + 1..];
    if rest.len() < 4 {
        return Err(PasswordError::Protocol("no data length"));
    }
    let len = rest.get_i32();
    if len < 0 || len as usize != rest.len() {
        return Err(PasswordError::Protocol(
            "data length does not match the message",
        ));
    }
    Ok((mechanism, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_response_layout() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(
            parse_initial_response(&body).unwrap(),
            ("SCRAM-SHA-256", &b"abc"[..])
        );
        let mut short = b"SCRAM-SHA-256\0".to_vec();
        short.extend_from_slice(&9i32.to_be_bytes());
        assert!(parse_initial_response(&short).is_err());
        assert!(parse_initial_response(b"SCRAM").is_err());
        assert!(parse_initial_response(b"SCRAM\0\xff\xff\xff\xff").is_err());
    }
}
