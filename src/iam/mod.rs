//! RDS IAM database authentication, as RDS Proxy offers it: on an `auth = "iam"` route the
//! client sends an RDS auth token (what `generate_db_auth_token` makes) as a cleartext password
//! over TLS, and pgvalet checks it without calling AWS — the endpoint it was made for, the user,
//! the region and service, its time, and its SigV4 signature under a configured key.

pub mod token;

use std::path::Path;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use thiserror::Error;

use crate::config::{IamConfig, IamVerify};
use crate::credentials::Secret;
use crate::error::{ClientError, ConfigError};
use token::Token;

/// The longest an RDS token is honoured, whatever its X-Amz-Expires says.
const MAX_LIFETIME: Duration = Duration::from_secs(900);
/// The service RDS tokens are signed for.
const SERVICE: &str = "rds-db";

/// A signing key pgvalet checks tokens with.
struct Key {
    access_key_id: String,
    secret: Secret,
}

/// Checks tokens for one endpoint.
pub struct Verifier {
    host: String,
    port: u16,
    region: String,
    mode: IamVerify,
    clock_skew: Duration,
    keys: Vec<Key>,
}

/// Why a token was refused. Every variant is one a person can act on.
#[derive(Debug, Error)]
pub enum IamError {
    #[error("The IAM authentication token is malformed: {0}.")]
    Malformed(&'static str),
    #[error(
        "The password packet is longer than an IAM authentication token can be ({} bytes).",
        token::MAX_TOKEN_LEN
    )]
    TooLong,
    #[error(
        "The IAM authentication token has expired: it was signed {age} s ago and was valid for {lifetime} s. Generate a new token for each connection."
    )]
    Expired { age: u64, lifetime: u64 },
    #[error(
        "The IAM authentication token was signed {ahead} s in the future; check the clock of the machine that made it."
    )]
    Future { ahead: u64 },
    #[error(
        "The IAM authentication token was generated for {got}, not for this endpoint ({want}). Generate it with the host name and port the application connects to."
    )]
    WrongHost { got: String, want: String },
    #[error(
        "The IAM authentication token was generated for the user \"{got}\", but the connection is for \"{user}\"."
    )]
    WrongUser { got: String, user: String },
    #[error(
        "The IAM authentication token is signed for region {region} and service {service}; this endpoint takes region {want} and service rds-db."
    )]
    WrongScope {
        region: String,
        service: String,
        want: String,
    },
    #[error(
        "The IAM authentication token is signed with access key {0}, which this pgvalet does not know."
    )]
    UnknownKey(String),
    #[error("The IAM authentication token's signature is wrong.")]
    BadSignature,
    #[error("connection lost during IAM authentication: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError for IamError {
    fn sqlstate(&self) -> Option<&str> {
        match self {
            IamError::Io(_) => None,
            IamError::TooLong => Some("08P01"),
            _ => Some("28P01"),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            IamError::Malformed(_) => "iam_malformed",
            IamError::TooLong => "iam_too_long",
            IamError::Expired { .. } | IamError::Future { .. } => "iam_expired",
            IamError::WrongHost { .. } => "iam_wrong_host",
            IamError::WrongUser { .. } => "iam_wrong_user",
            IamError::WrongScope { .. } => "iam_wrong_scope",
            IamError::UnknownKey(_) => "iam_unknown_key",
            IamError::BadSignature => "iam_bad_signature",
            IamError::Io(_) => "client_gone",
        }
    }
}

/// A token that passed: who signed it, and whether the signature was checked.
#[derive(Debug)]
pub struct Checked {
    pub access_key_id: String,
    pub signature_checked: bool,
    /// When the token was signed.
    pub signed_at: SystemTime,
}

impl Verifier {
    /// Reads the keys the configuration names (`env:NAME` or a file).
    pub fn from_config(config: &IamConfig) -> Result<Verifier, ConfigError> {
        let (host, port) = config.host_port();
        let keys = config
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let name = format!("iam.keys[{i}].secret_access_key");
                let text = crate::tls::read_pem(&name, Path::new(&key.secret_access_key))?;
                let text = String::from_utf8(text).map_err(|_| ConfigError::File {
                    key: name.clone(),
                    path: key.secret_access_key.clone().into(),
                    message: "is not UTF-8".into(),
                })?;
                Ok(Key {
                    access_key_id: key.access_key_id.clone(),
                    secret: Secret::new(text.trim().to_owned()),
                })
            })
            .collect::<Result<_, ConfigError>>()?;
        Ok(Verifier {
            host,
            port,
            region: config.region.clone(),
            mode: config.verify,
            clock_skew: config.clock_skew,
            keys,
        })
    }

    /// Whether signatures are checked (`verify = "signature"`), or only the claims.
    pub fn checks_signatures(&self) -> bool {
        self.mode == IamVerify::Signature
    }

    /// Checks a token `user` sent, at `now`, to the configured endpoint.
    pub fn check(&self, text: &str, user: &str, now: SystemTime) -> Result<Checked, IamError> {
        self.check_at(text, user, now, (&self.host, self.port))
    }

    /// The host and port tokens are made for.
    pub fn endpoint(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// Checks a token `user` sent, at `now`, to the endpoint named `(host, port)`.
    pub fn check_at(
        &self,
        text: &str,
        user: &str,
        now: SystemTime,
        (host, port): (&str, u16),
    ) -> Result<Checked, IamError> {
        let token = Token::parse(text).map_err(|e| IamError::Malformed(e.0))?;
        if !token.host.eq_ignore_ascii_case(host) || token.port != port {
            return Err(IamError::WrongHost {
                got: format!("{}:{}", token.host, token.port),
                want: format!("{host}:{port}"),
            });
        }
        if token.db_user != user {
            return Err(IamError::WrongUser {
                got: token.db_user,
                user: user.to_owned(),
            });
        }
        if token.service != SERVICE || token.region != self.region {
            return Err(IamError::WrongScope {
                region: token.region,
                service: token.service,
                want: self.region.clone(),
            });
        }
        let lifetime = token.expires.min(MAX_LIFETIME);
        match now.duration_since(token.signed_at) {
            Ok(age) if age > lifetime + self.clock_skew => {
                return Err(IamError::Expired {
                    age: age.as_secs(),
                    lifetime: lifetime.as_secs(),
                });
            }
            Ok(_) => {}
            Err(ahead) if ahead.duration() > self.clock_skew => {
                return Err(IamError::Future {
                    ahead: ahead.duration().as_secs(),
                });
            }
            Err(_) => {}
        }
        if self.mode == IamVerify::Claims {
            return Ok(Checked {
                access_key_id: token.access_key_id,
                signature_checked: false,
                signed_at: token.signed_at,
            });
        }
        let Some(key) = self
            .keys
            .iter()
            .find(|k| k.access_key_id == token.access_key_id)
        else {
            return Err(IamError::UnknownKey(token.access_key_id));
        };
        let expected = signature(key, &token).ok_or(IamError::BadSignature)?;
        if !crate::crypto::constant_time_eq(expected.as_bytes(), token.signature.as_bytes()) {
            return Err(IamError::BadSignature);
        }
        Ok(Checked {
            access_key_id: token.access_key_id,
            signature_checked: true,
            signed_at: token.signed_at,
        })
    }
}

/// The signature `key` gives the request the token stands for, computed by the AWS SDK's own
/// SigV4 signer as it signs tokens.
fn signature(key: &Key, token: &Token) -> Option<String> {
    let credentials = Credentials::new(
        &key.access_key_id,
        key.secret.expose(),
        token.security_token.clone(),
        None,
        "pgvalet",
    );
    let url = format!(
        "https://{}:{}/?{}",
        token.host,
        token.port,
        token
            .other_params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    );
    let signed = presign(
        &credentials,
        &token.region,
        token.signed_at,
        token.expires,
        &url,
    )?;
    Some(signed.1)
}

/// Presigns `url` for `rds-db` as an RDS auth token: the query parameters to add and the
/// signature.
fn presign(
    credentials: &Credentials,
    region: &str,
    at: SystemTime,
    expires: Duration,
    url: &str,
) -> Option<(Vec<(String, String)>, String)> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.expires_in = Some(expires);
    settings.signature_location = SignatureLocation::QueryParams;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(at)
        .settings(settings)
        .build()
        .ok()?;
    let request =
        SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[])).ok()?;
    let (instructions, signature) = sign(request, &params.into()).ok()?.into_parts();
    let added = instructions
        .params()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Some((added, signature))
}

/// Makes an RDS auth token for `user` at `host:port` with `credentials`, as
/// `generate_db_auth_token` does.
pub fn make_token(
    credentials: &Credentials,
    region: &str,
    host: &str,
    port: u16,
    user: &str,
    at: SystemTime,
) -> Option<String> {
    let base = format!("{host}:{port}/?Action=connect&DBUser={}", encode(user));
    let (added, _) = presign(
        credentials,
        region,
        at,
        MAX_LIFETIME,
        &format!("https://{base}"),
    )?;
    let mut token = base;
    for (k, v) in added {
        token += &format!("&{}={}", encode(&k), encode(&v));
    }
    Some(token)
}

/// Percent-encoding of a query component as SigV4 writes it: unreserved characters as they
/// are, everything else as `%XX`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests;
