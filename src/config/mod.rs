//! The configuration: one TOML document (a file, or `PGVALET_CONFIG_TOML`) with `PGVALET_…`
//! overrides from the environment ([`env`](mod@env)), read at start and on each reload, and checked as a
//! whole by [`Config::validate`] before it is used. Every error names the file and the key.

pub mod duration;
pub mod env;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::authz::Identity;
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

/// How a route's clients authenticate to pgvalet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum AuthMode {
    #[default]
    #[serde(rename = "cert")]
    Cert,
    #[serde(rename = "password")]
    Password,
    #[serde(rename = "cert+password")]
    CertPassword,
    /// An RDS IAM auth token as the password, checked as `[iam]` says.
    #[serde(rename = "iam")]
    Iam,
}

impl AuthMode {
    pub fn needs_cert(self) -> bool {
        matches!(self, AuthMode::Cert | AuthMode::CertPassword)
    }
    /// The client proves it knows the route's secret (SCRAM).
    pub fn needs_password(self) -> bool {
        matches!(self, AuthMode::Password | AuthMode::CertPassword)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Cert => "cert",
            AuthMode::Password => "password",
            AuthMode::CertPassword => "cert+password",
            AuthMode::Iam => "iam",
        }
    }
}

/// Who may connect (a certificate identity, from where, as which user, to which databases) and
/// what pgvalet connects to for them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    /// How the client proves who it is: `cert` (default), `password` (the secret's password,
    /// as apps configured for RDS Proxy send it) or `cert+password` (both).
    #[serde(default)]
    pub auth: AuthMode,
    /// `uri:…`, `dns:…` or `cn:…`, matched exactly against the client certificate. Required
    /// unless `auth = "password"`.
    pub identity: Option<Identity>,
    /// User names the client may put in its startup packet; defaults to the route's name.
    pub users: Option<Vec<String>>,
    /// Databases the client may ask for; `"*"` allows any.
    pub databases: Vec<String>,
    /// Source networks for this route, on top of the global `allow_cidrs`; default: no extra limit.
    pub allow_cidrs: Option<Vec<IpNet>>,
    /// Key of a `[backends.…]` table.
    pub backend: String,
    /// Key of a `[credentials.…]` table; optional when a client certificate is the login.
    pub credentials: Option<String>,
    /// A client certificate and key for this route's backend logins, in place of the
    /// backend's (the certificate's CN is the database user).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Connect to the `host` and `port` the secret names (as RDS secrets carry them) instead of
    /// the backend table's; the backend table still gives TLS settings.
    #[serde(default)]
    pub use_secret_address: bool,
    /// `session`: a backend connection per client session; `transaction`: per transaction.
    #[serde(default)]
    pub pool_mode: PoolMode,
    /// Backend connections of this route's pool (per database), in use and idle together: a
    /// fixed number. Leave it out to size the pool from the backend instead
    /// (`max_connections_percent`).
    pub max_size: Option<usize>,
    /// Without `max_size`: the pool may use this share (1-100) of the backend's connection
    /// slots, `max_connections` less the slots Postgres reserves for superusers, read from the
    /// backend at the pool's first connection. Default 100, as RDS Proxy's
    /// `MaxConnectionsPercent`.
    pub max_connections_percent: Option<u8>,
    /// Idle connections kept open, made at start and after each one is retired.
    #[serde(default)]
    pub min_idle: usize,
    /// How long a client waits for a backend connection before SQLSTATE 53300. RDS Proxy's
    /// name for it, `connection_borrow_timeout`, is the same setting.
    #[serde(
        default = "defaults::borrow_timeout",
        with = "duration_serde",
        alias = "connection_borrow_timeout"
    )]
    pub borrow_timeout: Duration,
    /// How many idle connections the pool keeps (beyond `min_idle`): with
    /// `max_connections_percent`, this share (0-100) of the backend's connection slots, as RDS
    /// Proxy's `MaxIdleConnectionsPercent` (default 50); with a fixed `max_size`, this share of it
    /// (default 100).
    pub max_idle_connections_percent: Option<u8>,
    /// SQL run on every new backend connection after login (and again after each reset), as
    /// RDS Proxy's `InitQuery`: `SET` statements, say.
    #[serde(default)]
    pub init_query: String,
    /// An idle connection unused this long is closed (down to `min_idle`).
    #[serde(default = "defaults::idle_timeout", with = "duration_serde")]
    pub idle_timeout: Duration,
    /// A connection this old is closed when it is next returned or found idle.
    #[serde(default = "defaults::max_lifetime", with = "duration_serde")]
    pub max_lifetime: Duration,
    /// Sent before a session-mode connection goes back to the pool; `""` sends nothing.
    #[serde(default = "defaults::reset_query")]
    pub reset_query: String,
    /// Client sessions at once on this route (default: no limit but `max_clients`).
    pub max_client_conn: Option<usize>,
}

/// When a client's backend connection goes back to the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    #[default]
    Session,
    Transaction,
}

/// How big a route's pool may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolSize {
    /// `max_size` connections.
    Fixed(usize),
    /// This percentage of the backend's connection slots.
    Percent(u8),
}

impl RouteConfig {
    /// The share of the pool's size kept open while idle (see `max_idle_connections_percent`).
    pub fn idle_percent(&self) -> u8 {
        self.max_idle_connections_percent
            .unwrap_or(match self.pool_size() {
                PoolSize::Fixed(_) => 100,
                PoolSize::Percent(_) => 50,
            })
    }

    /// The pool size the route asks for.
    pub fn pool_size(&self) -> PoolSize {
        match self.max_size {
            Some(n) => PoolSize::Fixed(n),
            None => PoolSize::Percent(
                self.max_connections_percent
                    .unwrap_or_else(defaults::max_connections_percent),
            ),
        }
    }

    /// The user names a client may present on this route.
    pub fn users(&self) -> Vec<&str> {
        match &self.users {
            Some(users) => users.iter().map(String::as_str).collect(),
            None => vec![self.name.as_str()],
        }
    }

    pub fn allows_database(&self, database: &str) -> bool {
        self.databases.iter().any(|d| d == "*" || d == database)
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
