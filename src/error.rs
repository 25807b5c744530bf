//! Error types, one enum per layer. Errors that end a client connection implement [`ClientError`],
//! so the text the client sees, the log line and the outcome label come from one place.
//!
//! No error here ever carries a password or a secret's value.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// An error that ends a client's connection attempt.
pub trait ClientError: std::error::Error {
    /// The SQLSTATE sent to the client, or `None` when nothing can be sent (a TLS failure,
    /// where rustls has already sent its alert, or a peer that is gone).
    fn sqlstate(&self) -> Option<&str>;
    /// The message the client sees. Defaults to the error's Display, which never holds a secret.
    fn client_message(&self) -> String {
        self.to_string()
    }
    /// A short stable label for logs and metrics: `tls_failed`, `route_denied`, …
    fn kind(&self) -> &'static str;
}

/// The configuration file is unreadable or wrong. Every variant names the file; `Invalid` and
/// `Parse` also name the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{}: {key} {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{key}: {}: {message}", path.display())]
    File {
        key: String,
        path: PathBuf,
        message: String,
    },
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        key: &'static str,
        addr: std::net::SocketAddr,
        source: io::Error,
    },
    #[error("credentials.{name}: cannot start without them (require_at_start = true): {source}")]
    Credentials {
        name: String,
        source: CredentialsError,
    },
}

/// Failures of the client side of the handshake: before, during and right after TLS.
#[derive(Debug, Error)]
pub enum FrontError {
    #[error("timed out {phase}")]
    Timeout { phase: &'static str },
    #[error("bad PROXY protocol header: {0}")]
    ProxyHeader(&'static str),
    #[error("PROXY protocol header from {0}, which is not in proxy_protocol_trusted")]
    ProxyUntrusted(std::net::IpAddr),
    #[error("no PROXY protocol header, and proxy_protocol = \"required\"")]
    ProxyMissing,
    #[error("source address {0} is not in allow_cidrs")]
    SourceDenied(std::net::IpAddr),
    #[error("connection lost {phase}: {source}")]
    Io {
        phase: &'static str,
        source: io::Error,
    },
    #[error(
        "This pgvalet proxy requires TLS connections. Connect with sslmode=verify-full, and sslcert/sslkey where the route asks for a client certificate."
    )]
    TlsRequired,
    #[error("invalid startup packet length {0} (must be 8 to {max})", max = crate::protocol::startup::MAX_STARTUP_LEN)]
    StartupLength(u32),
    #[error("invalid startup packet: {0}")]
    StartupLayout(&'static str),
    #[error("received unencrypted data after SSL request")]
    BytesAfterSslRequest,
    #[error(
        "Feature not supported: pgvalet supports only version 3 (3.0 to 3.2) of the PostgreSQL messaging protocol (the client asked for {major}.{minor})."
    )]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("unexpected {0} inside TLS")]
    UnexpectedInsideTls(&'static str),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    #[error("direct TLS connection without the ALPN protocol \"postgresql\"")]
    NoAlpn,
    #[error("client certificate could not be read: {0}")]
    Certificate(String),
    #[error(
        "A user name is missing from the connection startup packet. Provide a user name for this connection."
    )]
    NoUser,
    #[error("Feature not supported: pgvalet doesn't support streaming replication mode.")]
    Replication,
}

impl ClientError for FrontError {
    fn sqlstate(&self) -> Option<&str> {
        match self {
            FrontError::Timeout { .. } | FrontError::Io { .. } | FrontError::Tls(_) => None,
            FrontError::NoAlpn => None,
            // Refused before a Postgres conversation starts: closed without a word.
            FrontError::ProxyHeader(_)
            | FrontError::ProxyUntrusted(_)
            | FrontError::ProxyMissing
            | FrontError::SourceDenied(_) => None,
            // A length word out of range is not a Postgres client speaking, or is one that has
            // given up (node-postgres ending a client while it connects writes its Terminate
            // ahead of its SSLRequest): Postgres logs it and closes without a word, and a
            // driver that is told anything reports an error for a client it has already ended.
            FrontError::StartupLength(_) => None,
            FrontError::TlsRequired | FrontError::Certificate(_) => Some("28000"),
            FrontError::UnsupportedProtocol { .. } | FrontError::Replication => Some("0A000"),
            FrontError::StartupLayout(_)
            | FrontError::BytesAfterSslRequest
            | FrontError::UnexpectedInsideTls(_) => Some("08P01"),
            FrontError::NoUser => Some("28000"),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            FrontError::Timeout { .. } => "timeout",
            FrontError::Io { .. } => "client_gone",
            FrontError::ProxyHeader(_)
            | FrontError::ProxyUntrusted(_)
            | FrontError::ProxyMissing => "proxy_protocol",
            FrontError::SourceDenied(_) => "cidr_denied",
            FrontError::TlsRequired => "tls_required",
            FrontError::Tls(_) | FrontError::NoAlpn => "tls_failed",
            FrontError::Certificate(_) => "no_cert",
            _ => "protocol_error",
        }
    }
}

/// The client is who it says, but no route lets it in.
#[derive(Debug, Error)]
#[error("pgvalet: {identity} may not connect: {reason}")]
pub struct Denied {
    pub identity: String,
    pub reason: String,
}

impl ClientError for Denied {
    fn sqlstate(&self) -> Option<&str> {
        Some("28000")
    }
    fn kind(&self) -> &'static str {
        "route_denied"
    }
}

/// The credentials for a route could not be had. Names the credentials entry and where it
/// comes from (a file, a secret's name), never its value.
#[derive(Debug, Error, Clone)]
pub enum CredentialsError {
    #[error("credentials \"{name}\" could not be read from {location}: {detail}")]
    Unreadable {
        name: String,
        location: String,
        detail: String,
    },
    #[error("credentials \"{name}\" from {location} are malformed: {detail}")]
    Malformed {
        name: String,
        location: String,
        detail: String,
    },
    #[error("credentials \"{name}\": {location} does not exist (or has no AWSCURRENT version)")]
    NotFound { name: String, location: String },
}

/// Connecting or logging in to a backend failed.
#[derive(Debug, Error)]
pub enum BackendError {
    #[error("pgvalet could not connect to backend \"{backend}\" at {addr}: {source}")]
    Connect {
        backend: String,
        addr: String,
        source: io::Error,
    },
    #[error("pgvalet timed out connecting to backend \"{backend}\" at {addr}")]
    ConnectTimeout { backend: String, addr: String },
    #[error("backend \"{backend}\" refused TLS (it answered the SSL request with 'N')")]
    TlsRefused { backend: String },
    #[error("TLS to backend \"{backend}\" failed: {source}")]
    Tls { backend: String, source: io::Error },
    #[error(
        "backend \"{backend}\" refused the login of user \"{user}\" with {with}: {message} (SQLSTATE {code})"
    )]
    Login {
        backend: String,
        user: String,
        /// What pgvalet logged in with: `credentials "orders"`, or its client certificate.
        with: String,
        code: String,
        message: String,
    },
    #[error(
        "backend \"{backend}\" refused pgvalet's client certificate ({cert}) with TLS alert {alert}: check that the backend's ssl_ca_file trusts its issuer and that it is within its validity dates"
    )]
    CertificateRefused {
        backend: String,
        /// The key and CN of the certificate.
        cert: String,
        alert: String,
    },
    #[error(
        "backend \"{backend}\" asked for a client certificate (TLS alert {alert}), and pgvalet has none for it: set client_cert and client_key on the backend or the route"
    )]
    CertificateRequired { backend: String, alert: String },
    #[error("pgvalet has nothing to log in to backend \"{backend}\" with: {what}")]
    NoLogin { backend: String, what: String },
    #[error("backend \"{backend}\" asked for authentication pgvalet does not do: {what}")]
    UnsupportedAuth { backend: String, what: String },
    #[error("backend \"{backend}\" broke the protocol: {what}")]
    Protocol { backend: String, what: String },
    #[error("connection to backend \"{backend}\" lost during login: {source}")]
    Lost { backend: String, source: io::Error },
    #[error("backend \"{backend}\" closed the connection during startup")]
    Closed { backend: String },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
}

impl BackendError {
    /// True when the backend refused the login's credentials (so another version of the
    /// secret may work).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, BackendError::Login { code, .. } if is_auth_failure(code))
    }
}

impl ClientError for BackendError {
    /// A backend's refusal that the client can act on (no such database, no privilege) reaches
    /// it with the backend's own SQLSTATE and text; a failed login with the route's credentials
    /// is pgvalet's problem, not the client's, and becomes 08006.
    fn sqlstate(&self) -> Option<&str> {
        match self {
            BackendError::Login { code, .. } if !is_auth_failure(code) => Some(code),
            _ => Some("08006"),
        }
    }
    fn client_message(&self) -> String {
        match self {
            BackendError::Login { code, message, .. } if !is_auth_failure(code) => message.clone(),
            _ => self.to_string(),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            BackendError::Login { .. } | BackendError::NoLogin { .. } => "backend_auth_failed",
            BackendError::CertificateRefused { .. } | BackendError::CertificateRequired { .. } => {
                "backend_cert_refused"
            }
            BackendError::Credentials(_) => "credentials_failed",
            _ => "backend_failed",
        }
    }
}

/// SQLSTATEs with which Postgres refuses a login's credentials.
pub fn is_auth_failure(code: &str) -> bool {
    code == "28P01" || code == "28000"
}
