//! Where routes' database credentials come from (`[credentials.NAME]`), and how clients' RDS
//! IAM auth tokens are checked (`[iam]`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{defaults, duration_serde};

/// Where the database user name and password for a route come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A JSON file in the shape of an RDS secret.
    File,
    /// Two environment variables.
    Env,
    /// AWS Secrets Manager.
    Aws,
    /// RDS IAM auth tokens, made with pgvalet's own AWS credentials.
    Iam,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Env => "env",
            SourceKind::Aws => "aws",
            SourceKind::Iam => "iam",
        }
    }
}

/// A `[credentials.NAME]` table. Which keys apply depends on `source`; `validate` checks that
/// the right ones are there and no others.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    pub source: SourceKind,
    /// `file`: path of the JSON file.
    pub path: Option<PathBuf>,
    /// `env`: names of the variables holding the user name and the password.
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    /// `aws`: secret name or ARN.
    pub secret_id: Option<String>,
    /// `aws`, `iam`: region; default from the environment (AWS_REGION) or the profile.
    pub region: Option<String>,
    /// `iam`: the database user the tokens are for.
    pub username: Option<String>,
    /// `iam`: the backend's `host:port` as the tokens are signed for it.
    pub endpoint: Option<String>,
    /// `iam`: the oldest a token may be when pgvalet sends it (at most 15 minutes, RDS's limit).
    #[serde(default, with = "duration_serde::option")]
    pub token_lifetime: Option<Duration>,
    /// `aws`: endpoint override, for a local Secrets Manager (moto, LocalStack).
    pub endpoint_url: Option<String>,
    /// How often the cached value is refreshed in the background.
    #[serde(default = "defaults::refresh_interval", with = "duration_serde")]
    pub refresh_interval: Duration,
    /// Refuse to start when the credentials cannot be read at start.
    #[serde(default = "defaults::yes")]
    pub require_at_start: bool,
    /// In password mode, how long after pgvalet sees the current version change the previous
    /// password (AWSPREVIOUS) is still accepted from clients.
    #[serde(default = "defaults::previous_grace", with = "duration_serde")]
    pub previous_grace: Duration,
}

impl CredentialsConfig {
    /// `iam`: how old a token may be when it is sent.
    pub fn token_lifetime(&self) -> Duration {
        self.token_lifetime.unwrap_or_else(defaults::token_lifetime)
    }
}

/// RDS IAM authentication of clients: the endpoint name they sign for, and the keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamConfig {
    /// `host:port` as the applications connect to it, which their tokens are made for (an RDS
    /// Proxy endpoint's name, say, when pgvalet stands in for one).
    pub endpoint: String,
    /// The region the tokens are signed for.
    pub region: String,
    /// `signature` (default): a token must be signed with one of `keys`. `claims`: every check
    /// but the signature, for a laptop where apps sign with keys pgvalet cannot know.
    #[serde(default)]
    pub verify: IamVerify,
    /// How far the token's signing time may be from this machine's clock, either way, beyond its
    /// 15 minutes of validity.
    #[serde(default = "defaults::clock_skew", with = "duration_serde")]
    pub clock_skew: Duration,
    /// The access keys tokens may be signed with.
    #[serde(default)]
    pub keys: Vec<IamKey>,
}

impl IamConfig {
    /// `endpoint` split into host and port (validated).
    pub fn host_port(&self) -> (String, u16) {
        parse_endpoint(&self.endpoint).unwrap_or_default()
    }
}

/// `host:port` with a non-empty host and a numeric port.
pub(crate) fn parse_endpoint(endpoint: &str) -> Option<(String, u16)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let port = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// An access key whose tokens are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IamKey {
    pub access_key_id: String,
    /// The secret key: `env:NAME` for an environment variable, or a file's path.
    pub secret_access_key: String,
}

/// What an IAM token must prove.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IamVerify {
    #[default]
    Signature,
    Claims,
}
