//! Every metric pgvalet exports: the names, their help text, the histogram buckets, and the
//! Prometheus recorder behind them. Code elsewhere records through the small helpers here, so a
//! name is spelled once.
//!
//! Gauges that describe a state someone else owns (pool sizes, secret ages, certificate
//! expiry) are not kept up to date on every change; [`crate::admin`] sets them from the live
//! state just before it renders a scrape.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Unit, counter, describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Client connections by `state`: handshake, waiting (for a backend connection), active
/// (holding one), idle (transaction mode, between transactions).
pub const CLIENT_CONNECTIONS: &str = "pgvalet_client_connections";
/// Handshakes by `outcome` (`ok`, or the refusal kind: tls_failed, no_cert, cidr_denied,
/// route_denied, auth_failed, timeout, protocol_error, …) and `endpoint`.
pub const HANDSHAKES: &str = "pgvalet_handshakes_total";
pub const HANDSHAKE_SECONDS: &str = "pgvalet_handshake_duration_seconds";
/// Backend logins by `backend` and `outcome` (ok, failed).
pub const BACKEND_CONNECTS: &str = "pgvalet_backend_connects_total";
/// Backend connections closed because their backend's host name no longer resolves to the
/// address they went to (a failover moved it), by `backend`.
pub const BACKEND_MOVED: &str = "pgvalet_backend_moved_total";
/// Whether the last reachability check of each `backend` connected (1) or not (0).
pub const BACKEND_REACHABLE: &str = "pgvalet_backend_reachable";
/// Pool connections by `route`, `database`, `backend` and `state` (idle, active).
pub const POOL_CONNECTIONS: &str = "pgvalet_pool_connections";
pub const POOL_WAITERS: &str = "pgvalet_pool_waiters";
pub const POOL_BORROW_SECONDS: &str = "pgvalet_pool_borrow_wait_seconds";
/// Sessions pinned to their backend connection, by `route` and `reason`.
pub const PINS: &str = "pgvalet_pins_total";
/// ReadyForQuery messages relayed (one per simple query or Sync), by `route`.
pub const QUERIES: &str = "pgvalet_queries_total";
/// ReadyForQuery 'I' messages relayed: transactions ended, explicit or implicit, by `route`.
pub const TRANSACTIONS: &str = "pgvalet_transactions_total";
/// Bytes relayed, by `direction` (client_to_backend, backend_to_client).
pub const BYTES: &str = "pgvalet_bytes_total";
/// Cancel requests by `outcome`.
pub const CANCELS: &str = "pgvalet_cancel_requests_total";
/// Reads of a credentials source by `credentials` and `outcome` (ok, error).
pub const SECRET_FETCHES: &str = "pgvalet_secret_fetches_total";
/// Seconds since the cached value of each `credentials` entry was last read successfully.
pub const SECRET_AGE: &str = "pgvalet_secret_age_seconds";
/// Rotations seen, by `credentials`: the current version changed, or a backend refused it and
/// another version was tried.
pub const ROTATIONS: &str = "pgvalet_secret_rotations_total";
/// Seconds until the `certificate` expires (server, client_ca, and each backend client
/// certificate by its key, `backends.NAME.client_cert`); negative once it has.
pub const CERT_EXPIRY: &str = "pgvalet_certificate_expiry_seconds";
/// Configuration reloads by `outcome` (ok, failed).
pub const CONFIG_RELOADS: &str = "pgvalet_config_reloads_total";
/// Sessions started, by `endpoint`, `route` and the `backend` that serves them.
pub const ENDPOINT_SESSIONS: &str = "pgvalet_endpoint_sessions_total";
/// Sessions of a read-only endpoint served by the writer (no reader in rotation), read-only,
/// by `endpoint` and `route`.
pub const READ_ONLY_FALLBACKS: &str = "pgvalet_read_only_fallbacks_total";
/// Whether each reader `backend` is in the rotation (1) or out of it (0).
pub const READER_UP: &str = "pgvalet_reader_in_rotation";
/// Sessions on each reader `backend` now.
pub const READER_SESSIONS: &str = "pgvalet_reader_sessions";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it.
#[allow(
    clippy::expect_used,
    reason = "at start-up: a fixed, non-empty bucket list is accepted"
)]
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first (an embedding program's); pgvalet
        // then records into that one and /metrics shows what this handle saw.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

/// Folds the histogram samples recorded since the last call into their buckets. The recorder
/// holds every sample until then, so this must run every few seconds whether or not anyone
/// scrapes `/metrics` (a scrape does the same).
pub fn upkeep() {
    if let Some(handle) = HANDLE.get() {
        handle.run_upkeep();
    }
}

fn describe() {
    describe_gauge!(CLIENT_CONNECTIONS, "Client connections by state.");
    describe_counter!(HANDSHAKES, "Client handshakes by outcome.");
    describe_histogram!(
        HANDSHAKE_SECONDS,
        Unit::Seconds,
        "From accept to the session's start or refusal."
    );
    describe_counter!(BACKEND_CONNECTS, "Backend logins by backend and outcome.");
    describe_counter!(
        BACKEND_MOVED,
        "Backend connections closed because the backend's host name left their address."
    );
    describe_gauge!(
        BACKEND_REACHABLE,
        "1 if the last reachability check of the backend connected."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Pool connections by route, database and state."
    );
    describe_gauge!(POOL_WAITERS, "Clients waiting for a pool's connection.");
    describe_histogram!(
        POOL_BORROW_SECONDS,
        Unit::Seconds,
        "Time to get a backend connection from a pool."
    );
    describe_counter!(
        PINS,
        "Sessions pinned to their backend connection, by reason."
    );
    describe_counter!(QUERIES, "Requests answered (ReadyForQuery relayed).");
    describe_counter!(
        TRANSACTIONS,
        "Transactions ended (ReadyForQuery 'I' relayed)."
    );
    describe_counter!(BYTES, Unit::Bytes, "Bytes relayed, by direction.");
    describe_counter!(CANCELS, "Cancel requests by outcome.");
    describe_counter!(SECRET_FETCHES, "Credential source reads by outcome.");
    describe_gauge!(SECRET_AGE, Unit::Seconds, "Age of the cached credentials.");
    describe_counter!(ROTATIONS, "Credential rotations seen.");
    describe_gauge!(
        CERT_EXPIRY,
        Unit::Seconds,
        "Seconds until the certificate expires."
    );
    describe_counter!(CONFIG_RELOADS, "Configuration reloads by outcome.");
    describe_counter!(
        ENDPOINT_SESSIONS,
        "Sessions started by endpoint, route and backend."
    );
    describe_counter!(
        READ_ONLY_FALLBACKS,
        "Read-only endpoint sessions served read-only by the writer."
    );
    describe_gauge!(READER_UP, "1 while the reader is in the rotation.");
    describe_gauge!(READER_SESSIONS, "Sessions on the reader now.");
}

/// Counts a handshake's end, `ok` or a refusal kind, and how long it took.
pub fn handshake(endpoint: &'static str, outcome: &'static str, took: Duration) {
    counter!(HANDSHAKES, "outcome" => outcome, "endpoint" => endpoint).increment(1);
    metrics::histogram!(HANDSHAKE_SECONDS).record(took.as_secs_f64());
}

pub fn backend_connect(backend: &str, ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!(BACKEND_CONNECTS, "backend" => backend.to_owned(), "outcome" => outcome).increment(1);
}

pub fn backend_moved(backend: &str) {
    counter!(BACKEND_MOVED, "backend" => backend.to_owned()).increment(1);
}

pub fn secret_fetch(credentials: &str, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    counter!(SECRET_FETCHES, "credentials" => credentials.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub fn rotation(credentials: &str) {
    counter!(ROTATIONS, "credentials" => credentials.to_owned()).increment(1);
}

pub fn cancel(outcome: &'static str) {
    counter!(CANCELS, "outcome" => outcome).increment(1);
}

pub fn endpoint_session(endpoint: &'static str, route: &str, backend: &str) {
    counter!(ENDPOINT_SESSIONS, "endpoint" => endpoint, "route" => route.to_owned(), "backend" => backend.to_owned())
        .increment(1);
}

pub fn read_only_fallback(endpoint: &'static str, route: &str) {
    counter!(READ_ONLY_FALLBACKS, "endpoint" => endpoint, "route" => route.to_owned()).increment(1);
}

pub fn reader_up(backend: &str, up: bool) {
    metrics::gauge!(READER_UP, "backend" => backend.to_owned()).set(if up { 1.0 } else { 0.0 });
}

pub fn reader_sessions(backend: &str, sessions: usize) {
    metrics::gauge!(READER_SESSIONS, "backend" => backend.to_owned()).set(sessions as f64);
}

pub fn config_reload(ok: bool) {
    let outcome = if ok { "ok" } else { "failed" };
    counter!(CONFIG_RELOADS, "outcome" => outcome).increment(1);
}

pub fn pin(route: &str, reason: &'static str) {
    counter!(PINS, "route" => route.to_owned(), "reason" => reason).increment(1);
}

/// A pool's borrow-wait histogram, looked up once per pool.
pub fn borrow_wait(route: &str) -> metrics::Histogram {
    metrics::histogram!(POOL_BORROW_SECONDS, "route" => route.to_owned())
}

/// A client connection's place in [`CLIENT_CONNECTIONS`]: it counts in one state at a time,
/// and in none once dropped.
pub struct ClientState {
    now: ClientPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPhase {
    Handshake,
    Waiting,
    Active,
    Idle,
}

impl ClientPhase {
    /// The phase's gauge, looked up once: in transaction mode a client changes phase three
    /// times per transaction. (Sessions start after [`install`], so the handles are live.)
    fn gauge(self) -> &'static Gauge {
        static GAUGES: OnceLock<[Gauge; 4]> = OnceLock::new();
        let gauges = GAUGES.get_or_init(|| {
            ["handshake", "waiting", "active", "idle"]
                .map(|state| metrics::gauge!(CLIENT_CONNECTIONS, "state" => state))
        });
        &gauges[self as usize]
    }
}

impl ClientState {
    pub fn new() -> ClientState {
        ClientPhase::Handshake.gauge().increment(1.0);
        ClientState {
            now: ClientPhase::Handshake,
        }
    }

    pub fn set(&mut self, phase: ClientPhase) {
        if phase != self.now {
            self.now.gauge().decrement(1.0);
            phase.gauge().increment(1.0);
            self.now = phase;
        }
    }
}

impl Default for ClientState {
    fn default() -> Self {
        ClientState::new()
    }
}

impl Drop for ClientState {
    fn drop(&mut self) {
        self.now.gauge().decrement(1.0);
    }
}

/// One session's traffic counters, resolved once so the relay only adds.
pub struct Traffic {
    queries: Counter,
    transactions: Counter,
    to_backend: Counter,
    to_client: Counter,
    reported: (u64, u64),
}

impl Traffic {
    /// Handles made once per route and shared: registering them anew cost every session
    /// memory of its own for as long as it lived.
    pub fn new(route: &str) -> Traffic {
        static ROUTES: Mutex<Vec<(String, [Counter; 2])>> = Mutex::new(Vec::new());
        static BYTE_COUNTERS: OnceLock<[Counter; 2]> = OnceLock::new();
        let [queries, transactions] = {
            let mut routes = ROUTES.lock().unwrap_or_else(|e| e.into_inner());
            match routes.iter().find(|(name, _)| name == route) {
                Some((_, counters)) => counters.clone(),
                None => {
                    let counters = [
                        counter!(QUERIES, "route" => route.to_owned()),
                        counter!(TRANSACTIONS, "route" => route.to_owned()),
                    ];
                    routes.push((route.to_owned(), counters.clone()));
                    counters
                }
            }
        };
        let [to_backend, to_client] = BYTE_COUNTERS
            .get_or_init(|| {
                [
                    counter!(BYTES, "direction" => "client_to_backend"),
                    counter!(BYTES, "direction" => "backend_to_client"),
                ]
            })
            .clone();
        Traffic {
            queries,
            transactions,
            to_backend,
            to_client,
            reported: (0, 0),
        }
    }

    /// A ReadyForQuery with this transaction status went to the client.
    pub fn ready(&self, status: u8) {
        self.queries.increment(1);
        if status == b'I' {
            self.transactions.increment(1);
        }
    }

    /// Brings the byte counters up to the session's running totals.
    pub fn bytes(&mut self, to_backend: u64, to_client: u64) {
        self.to_backend
            .increment(to_backend.saturating_sub(self.reported.0));
        self.to_client
            .increment(to_client.saturating_sub(self.reported.1));
        self.reported = (to_backend, to_client);
    }
}
