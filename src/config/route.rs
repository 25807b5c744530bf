//! A route (`[[routes]]`): who may connect, how they prove it, and the pool that serves them.

use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{defaults, duration_serde};
use crate::authz::Identity;

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
