#![forbid(unsafe_code)]
// Nothing that reads the network or a file may panic on what it reads: errors instead. The few
// `expect`s left state an invariant at start-up, each allowed where it stands with the reason.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
//! pgvalet: an mTLS-terminating PostgreSQL proxy. A client proves who it is with a certificate;
//! pgvalet maps that identity to a route, logs in to the backend with the route's credentials,
//! and relays the session. The client never holds a database password.
//!
//! # Layout
//!
//! The path of one connection, in module order:
//!
//! - [`server`]: the endpoints' accept loops, global CIDR gate, client limit, reload (SIGHUP,
//!   `watch`), stop; [`readers`]: read replicas in rotation for read-only endpoints.
//! - [`session`]: one connection from accept to close; `session::frontdoor` is the client
//!   handshake (first packet, TLS, startup packet), `session::password` password mode,
//!   `session::iam` IAM token mode, `session::placement` which backend (or reader) serves the
//!   session, `session::relay` moves messages and returns connections to
//!   the pool, with `in_flight` (what the backend still owes), `statements` (prepared
//!   statements across backends, SQL EXECUTE/DEALLOCATE of them), `pinning` (session state
//!   that cannot move, SETs that can be carried) and `database_ddl` (statements that need a
//!   database without sessions), all reading SQL with `lexer`; `session::fuzzing` names these
//!   sans-IO parts for the fuzz targets in `fuzz/`.
//! - [`proxy_protocol`]: the PROXY v1/v2 header of a load balancer, sans-IO.
//! - [`protocol`]: sans-IO wire protocol: first packets, frames, the relay's scanner, SCRAM,
//!   messages pgvalet sends.
//! - [`tls`]: client-facing TLS config, certificate identity, backend TLS.
//! - [`authz`]: identities, CIDR checks, route lookup (deny by default).
//! - [`credentials`]: where database logins come from (Secrets Manager, file, env, RDS IAM
//!   tokens made on the spot), cached through rotation, with secret values hidden.
//! - [`pool`]: backend connection pools per (route, database, backend); session and
//!   transaction mode; `pool::dns` closes connections to addresses the backend's host name left.
//! - [`backend`]: connecting and logging in to Postgres (TLS with an optional client
//!   certificate, SCRAM with channel binding, MD5), where a host name points
//!   (`backend::address`), the targets of a configuration (`backend::targets`), and the client
//!   settings applied to each borrowed connection (`backend::settings`).
//! - [`iam`]: RDS IAM auth tokens: reading and checking them (SigV4), and making them.
//! - [`cancel`]: pgvalet's own cancel keys (3.0 and 3.2 layouts), their forwarding.
//! - [`crypto`]: HMAC-SHA-256 and constant-time comparison, shared by SCRAM and cancel keys.
//! - [`net`]: socket helpers shared by both sides.
//! - [`config`]: the TOML file, `PGVALET_…` overrides and validation; [`error`]: error types
//!   per layer.
//! - [`metrics`]: every metric's name and the recorder; [`admin`]: `/metrics`, `/healthz`,
//!   `/readyz` and the backend reachability checks behind them.
//! - [`check`]: `pgvalet check`, every item a start needs, tried without serving.

pub mod admin;
pub mod authz;
pub mod backend;
pub mod cancel;
pub mod check;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod error;
pub mod iam;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod proxy_protocol;
pub mod readers;
pub mod server;
pub mod session;
pub mod tls;

pub use config::Config;
