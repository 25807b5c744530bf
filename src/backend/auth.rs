//! Logging in to a backend as the route's database user: SCRAM-SHA-256 (with -PLUS channel
//! binding whenever the backend offers it over TLS), MD5 and cleartext.

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256,
};
use postgres_protocol::message::frontend;

use crate::protocol::backend::AuthRequest;

/// Why a login step failed.
pub enum StepError {
    /// The backend asked for a method a proxy cannot perform.
    Unsupported(String),
    /// The conversation went wrong.
    Protocol(String),
    /// The backend asked for a password, and the login has none (a client certificate login).
    NoPassword,
}

impl From<String> for StepError {
    fn from(s: String) -> Self {
        StepError::Protocol(s)
    }
}

impl From<&str> for StepError {
    fn from(s: &str) -> Self {
        StepError::Protocol(s.to_owned())
    }
}

/// One step of the login conversation: what to send back, if anything.
pub enum Step {
    Send(BytesMut),
    Wait,
    Done,
}

/// The client half of a backend login, driven by the backend's `R` messages.
pub struct Login<'a> {
    user: &'a str,
    /// `None` when the client certificate is the whole login.
    password: Option<&'a str>,
    /// `tls-server-end-point` data of the backend certificate, when on TLS.
    channel_binding: Option<Vec<u8>>,
    scram: Option<ScramSha256>,
}

impl<'a> Login<'a> {
    pub fn new(user: &'a str, password: Option<&'a str>, channel_binding: Option<Vec<u8>>) -> Self {
        Login {
            user,
            password,
            channel_binding,
            scram: None,
        }
    }

    /// Whether the SCRAM exchange used channel binding (for the log line).
    pub fn bound(&self) -> bool {
        self.channel_binding.is_some()
    }

    /// Answers one authentication request. Errors name what went wrong, never the password.
    pub fn step(&mut self, request: AuthRequest<'_>) -> Result<Step, StepError> {
        let mut out = BytesMut::new();
        let password = match (&request, self.password) {
            (AuthRequest::Ok | AuthRequest::Other(_), _) => "",
            (_, None) => return Err(StepError::NoPassword),
            (_, Some(password)) => password,
        };
        match request {
            AuthRequest::Ok => return Ok(Step::Done),
            AuthRequest::Cleartext => {
                frontend::password_message(password.as_bytes(), &mut out).map_err(io_text)?;
            }
            AuthRequest::Md5(salt) => {
                let hash = md5_hash(self.user.as_bytes(), password.as_bytes(), salt);
                frontend::password_message(hash.as_bytes(), &mut out).map_err(io_text)?;
            }
            AuthRequest::Sasl(mechanisms) => {
                let plus = mechanisms.contains(&SCRAM_SHA_256_PLUS);
                let (mechanism, binding) = match (&self.channel_binding, plus) {
                    (Some(data), true) => (
                        SCRAM_SHA_256_PLUS,
                        ChannelBinding::tls_server_end_point(data.clone()),
                    ),
                    (Some(_), false) => {
                        self.channel_binding = None;
                        (SCRAM_SHA_256, ChannelBinding::unrequested())
                    }
                    (None, _) => (SCRAM_SHA_256, ChannelBinding::unsupported()),
                };
                if !mechanisms.contains(&SCRAM_SHA_256) && mechanism == SCRAM_SHA_256 {
                    return Err(StepError::Unsupported(format!(
                        "SASL mechanisms {mechanisms:?}"
                    )));
                }
                let scram = ScramSha256::new(password.as_bytes(), binding);
                frontend::sasl_initial_response(mechanism, scram.message(), &mut out)
                    .map_err(io_text)?;
                self.scram = Some(scram);
            }
            AuthRequest::SaslContinue(data) => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or("SASL continue before SASL start")?;
                scram.update(data).map_err(io_text)?;
                frontend::sasl_response(scram.message(), &mut out).map_err(io_text)?;
            }
            AuthRequest::SaslFinal(data) => {
                let scram = self.scram.as_mut().ok_or("SASL final before SASL start")?;
                scram
                    .finish(data)
                    .map_err(|e| format!("the backend's SCRAM signature did not verify: {e}"))?;
                return Ok(Step::Wait);
            }
            AuthRequest::Other(code) => {
                return Err(StepError::Unsupported(format!(
                    "authentication method {code}"
                )));
            }
        }
        Ok(Step::Send(out))
    }
}

fn io_text(e: std::io::Error) -> String {
    e.to_string()
}
