//! IAM mode: the client sends an RDS IAM auth token as a cleartext password (over TLS: pgvalet
//! takes nothing else), and pgvalet checks it as [`crate::iam::Verifier`] says.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::iam::{Checked, IamError, Verifier, token::MAX_TOKEN_LEN};
use crate::protocol::frame;

/// AuthenticationCleartextPassword.
const ASK_PASSWORD: [u8; 9] = [b'R', 0, 0, 0, 8, 0, 0, 0, 3];

/// Asks for the token, reads it and checks it for `user` at `endpoint` (host, port).
/// AuthenticationOk comes with the greeting.
pub async fn authenticate<S>(
    stream: &mut S,
    user: &str,
    verifier: &Verifier,
    endpoint: (&str, u16),
) -> Result<Checked, IamError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&ASK_PASSWORD).await?;
    stream.flush().await?;
    let mut buf = bytes::BytesMut::new();
    let body = loop {
        // The token, its terminator and the length word.
        match frame::split(&mut buf, MAX_TOKEN_LEN + 5) {
            Ok(Some(f)) if f.tag == b'p' => break f.body().to_vec(),
            Ok(Some(_)) => return Err(IamError::Malformed("the client did not send a password")),
            Ok(None) => {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(IamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                }
            }
            Err(frame::FrameError::Length { len, .. }) if len < 4 => {
                return Err(IamError::Malformed("its message length is below 4"));
            }
            Err(_) => return Err(IamError::TooLong),
        }
    };
    let text = body.strip_suffix(&[0]).unwrap_or(&body);
    let text = std::str::from_utf8(text).map_err(|_| IamError::Malformed("it is not UTF-8"))?;
    verifier.check_at(text, user, std::time::SystemTime::now(), endpoint)
}
