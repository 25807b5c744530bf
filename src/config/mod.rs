//! The configuration: one TOML document (a file, or `PGVALET_CONFIG_TOML`) with `PGVALET_…`
//! overrides from the environment ([`env`](mod@env)), read at start and on each reload, and checked as a
//! whole by [`Config::validate`] before it is used. Every error names the file and the key.

mod credentials;
pub mod duration;
pub mod env;
mod route;
mod validate;

pub(crate) use credentials::parse_endpoint;
pub use credentials::{CredentialsConfig, IamConfig, IamKey, IamVerify, SourceKind};
pub use route::{AuthMode, PoolMode, PoolSize, RouteConfig};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::error::ConfigError;

/// The whole configuration, as read from `--config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect, e.g. `127.0.0.1:6432`.
    pub listen_addr: SocketAddr,
    /// Source networks allowed to open a connection at all; checked before TLS.
    pub allow_cidrs: Vec<IpNet>,
    /// Deadline for everything before the session is handed its backend.
    #[serde(default = "defaults::handshake_timeout", with = "duration_serde")]
    pub handshake_timeout: Duration,
    /// On SIGTERM/SIGINT, how long transactions under way may run before pgvalet closes them.
    #[serde(default = "defaults::shutdown_timeout", with = "duration_serde")]
    pub shutdown_timeout: Duration,
    /// Client connections open at once; the next one is closed at accept.
    #[serde(default = "defaults::max_clients")]
    pub max_clients: usize,
    /// Whether connections start with a PROXY protocol header from a load balancer.
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    /// Addresses whose PROXY headers are believed (the load balancers). A header from any
    /// other address is refused.
    #[serde(default)]
    pub proxy_protocol_trusted: Vec<IpNet>,
    /// Written into the secret of the cancel keys this instance hands out.
    #[serde(default)]
    pub instance_id: u8,
    /// Other pgvalet instances behind the same load balancer: a cancel request whose key
    /// carries a peer's instance id is forwarded there.
    #[serde(default)]
    pub peers: Vec<Peer>,
    /// `text` (default) or `json`: one JSON object per line, for log collectors.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Also reload when the certificate, key, CA or CRL files (or this file) change, as a
    /// renewing agent (step-ca, cert-manager) rewrites them. SIGHUP always reloads.
    #[serde(default)]
    pub watch: bool,
    /// A client that sends nothing for this long after its last request was answered is closed
    /// (FATAL 57P05, as Postgres' idle_session_timeout), as RDS Proxy's `IdleClientTimeout`.
    #[serde(default = "defaults::idle_client_timeout", with = "duration_serde")]
    pub idle_client_timeout: Duration,
    /// RDS Proxy's `RequireTLS`. pgvalet always requires TLS, so only `true` is accepted.
    #[serde(default = "defaults::yes")]
    pub require_tls: bool,
    /// The metrics and health endpoint; without it pgvalet serves neither.
    pub metrics: Option<MetricsConfig>,
    /// How RDS IAM auth tokens from clients of `auth = "iam"` routes are checked.
    pub iam: Option<IamConfig>,
    pub tls: TlsConfig,
    #[serde(default)]
    pub backends: BTreeMap<String, BackendConfig>,
    #[serde(default)]
    pub credentials: BTreeMap<String, CredentialsConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// More listeners beside `listen_addr` (which is the endpoint named `default`, read/write,
    /// serving every route), as an RDS Proxy has endpoints.
    #[serde(default)]
    pub endpoints: Vec<EndpointConfig>,
}

/// The name of the endpoint `listen_addr` serves.
pub const DEFAULT_ENDPOINT: &str = "default";

/// An `[[endpoints]]` table: a listener of its own with a role and the routes it serves.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Named in logs and metrics.
    pub name: String,
    pub listen_addr: SocketAddr,
    /// `read-write` (default): sessions go to the route's backend. `read-only`: to one of its
    /// `readers`, or, when none is in rotation, to the backend with every transaction read-only.
    #[serde(default)]
    pub role: EndpointRole,
    /// Names of the routes served here; default: every route.
    pub routes: Option<Vec<String>>,
    /// `host:port` that IAM tokens sent here are made for (as an RDS Proxy endpoint's own
    /// name); default: `[iam] endpoint`'s host with this endpoint's port.
    pub iam_endpoint: Option<String>,
}

impl EndpointConfig {
    /// Whether this endpoint serves `route`.
    pub fn serves(&self, route: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == route))
    }
}

/// What an endpoint's sessions may do, as RDS Proxy's endpoint target roles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointRole {
    #[default]
    ReadWrite,
    ReadOnly,
}

impl EndpointRole {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointRole::ReadWrite => "read-write",
            EndpointRole::ReadOnly => "read-only",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `[metrics]`: Prometheus text on `/metrics`, liveness on `/healthz`, readiness on `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// e.g. `127.0.0.1:9930`, or `0.0.0.0:9930` for a scraper in another container.
    pub addr: SocketAddr,
}

/// PROXY protocol (v1 and v2) on the client listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    #[default]
    Off,
    /// A trusted sender may send a header; connections without one are direct.
    Optional,
    /// Every connection must come from a trusted sender with a header.
    Required,
}

/// Another pgvalet instance, for cancel requests that reach the wrong one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub instance_id: u8,
    /// Its client listener (it must allow this instance's address in `allow_cidrs`).
    pub addr: SocketAddr,
}

/// The client-facing TLS endpoint. A client certificate is always required.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM chain presented to clients, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub client_ca: PathBuf,
    /// PEM CRLs; a client certificate they revoke fails the handshake.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    #[serde(default)]
    pub min_version: TlsVersion,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// How pgvalet protects its connection to a backend, named as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    Disable,
    Require,
    VerifyCa,
    #[default]
    VerifyFull,
}

/// A Postgres server pgvalet connects to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub host: String,
    #[serde(default = "defaults::pg_port")]
    pub port: u16,
    #[serde(default)]
    pub tls: BackendTls,
    /// PEM bundle that signs the backend's certificate (verify-ca, verify-full).
    pub ca: Option<PathBuf>,
    /// Name checked against the backend certificate and sent as SNI; defaults to `host`.
    pub server_name: Option<String>,
    #[serde(default = "defaults::connect_timeout", with = "duration_serde")]
    pub connect_timeout: Duration,
    /// Other `[backends]` tables that are this one's read replicas (Aurora readers), where
    /// read-only endpoints send sessions, least connections first.
    #[serde(default)]
    pub readers: Vec<String>,
    /// While this backend is some backend's reader: how often it is checked (a TCP connect and
    /// TLS handshake). One that fails leaves the rotation until a check passes again.
    #[serde(default = "defaults::check_interval", with = "duration_serde")]
    pub check_interval: Duration,
    /// How often `host` is resolved again while pgvalet holds connections to it (it is also
    /// resolved at each new connection). Pooled connections to an address the name no longer
    /// gives are closed: idle ones at once, busy ones when their client gives them back.
    #[serde(default = "defaults::dns_refresh_interval", with = "duration_serde")]
    pub dns_refresh_interval: Duration,
    /// PEM client certificate (chain) pgvalet presents in the TLS handshake, for backends whose
    /// pg_hba says `cert` (or `clientcert=verify-full`); a file or `env:NAME`.
    pub client_cert: Option<PathBuf>,
    /// Its PEM private key.
    pub client_key: Option<PathBuf>,
}

impl BackendConfig {
    pub fn server_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }
}

mod defaults {
    use std::time::Duration;
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn shutdown_timeout() -> Duration {
        // Under the 30 s ECS gives between SIGTERM and SIGKILL.
        Duration::from_secs(25)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn check_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn dns_refresh_interval() -> Duration {
        // PgBouncer's dns_max_ttl.
        Duration::from_secs(15)
    }
    pub fn max_clients() -> usize {
        10_000
    }
    pub fn pg_port() -> u16 {
        5432
    }
    pub fn refresh_interval() -> Duration {
        Duration::from_secs(300)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn previous_grace() -> Duration {
        Duration::from_secs(900)
    }
    pub fn token_lifetime() -> Duration {
        // A minute short of the 15 minutes RDS accepts a token for.
        Duration::from_secs(14 * 60)
    }
    pub fn clock_skew() -> Duration {
        Duration::from_secs(300)
    }
    pub fn max_connections_percent() -> u8 {
        100
    }
    pub fn borrow_timeout() -> Duration {
        // RDS Proxy's ConnectionBorrowTimeout.
        Duration::from_secs(120)
    }
    pub fn idle_client_timeout() -> Duration {
        // RDS Proxy's IdleClientTimeout.
        Duration::from_secs(1800)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(600)
    }
    pub fn max_lifetime() -> Duration {
        Duration::from_secs(3600)
    }
    pub fn reset_query() -> String {
        "DISCARD ALL".into()
    }
}

mod duration_serde {
    pub use super::duration::deserialize;
    pub mod option {
        pub use super::super::duration::deserialize_option as deserialize;
    }
}

impl Config {
    /// Whether some route lets clients in without a certificate (password or IAM token
    /// routes), so that TLS must not demand one.
    pub fn has_password_only_routes(&self) -> bool {
        self.routes.iter().any(|r| !r.auth.needs_cert())
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Ok(Config::load_with_env(path, &[])?.0)
    }

    /// Reads the configuration as the `pgvalet` command does: the whole TOML from
    /// `PGVALET_CONFIG_TOML` if `vars` has it, else the file at `path`; then the `PGVALET_…`
    /// overrides in `vars`. Returns the config and the names of the overrides applied.
    pub fn load_with_env(
        path: &Path,
        vars: &[(String, String)],
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let whole = vars.iter().find(|(k, _)| k == env::WHOLE);
        let (text, origin) = match whole {
            Some((_, text)) => (text.clone(), PathBuf::from(env::WHOLE)),
            None => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (text, path.to_owned())
            }
        };
        let overrides = env::overrides(vars);
        if overrides.is_empty() {
            return Ok((Config::parse(&text, &origin)?, Vec::new()));
        }
        let parse_error = |source| ConfigError::Parse {
            path: origin.clone(),
            source: Box::new(source),
        };
        let mut doc: toml::Table = toml::from_str(&text).map_err(parse_error)?;
        env::apply(&mut doc, &overrides).map_err(|(var, message)| ConfigError::Invalid {
            path: origin.clone(),
            key: var,
            message,
        })?;
        let names: Vec<String> = overrides.into_iter().map(|o| o.var).collect();
        let config: Config =
            toml::Value::Table(doc)
                .try_into()
                .map_err(|source| ConfigError::Invalid {
                    path: origin.clone(),
                    key: format!("(with {})", names.join(", ")),
                    message: format!("{source}").trim().to_owned(),
                })?;
        Ok((config.validated(&origin)?, names))
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: origin.to_owned(),
            source: Box::new(source),
        })?;
        config.validated(origin)
    }

    fn validated(self, origin: &Path) -> Result<Config, ConfigError> {
        let config = self;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                path: origin.to_owned(),
                key,
                message,
            })?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
