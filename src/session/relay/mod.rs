//! The relay: messages both ways between a client and the backend connection serving it, read
//! only as far as pooling needs. The relay knows where each message starts, holds back the few
//! it must read whole (ReadyForQuery, ParameterStatus, Terminate), and counts the requests that
//! still owe a ReadyForQuery. That tells it when a backend connection is at a clean boundary:
//! in transaction mode it goes back to the pool at every ReadyForQuery 'I' with nothing in
//! flight, and is borrowed again at the client's next message.
//!
//! Both directions move at once (see `relay_io`): while the client is still writing, what the
//! backend answers reaches it, so a client that pipelines (JDBC batches, libpq's pipeline mode,
//! asyncpg's executemany) sees an early error as soon as it would direct and cannot wedge
//! pgvalet between itself and the backend.

mod lease;

use crate::server::Lifecycle;
use bytes::{Buf, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::backend::ClientSettings;
use crate::backend::settings::is_followed;
use crate::cancel::Ticket;
use crate::config::PoolMode;
use crate::metrics::{ClientState, Traffic};
use crate::pool::{Pool, Pooled, Pools};
use crate::protocol::messages::{self, Severity};
use crate::protocol::scan::{Item, Scanner};
use crate::session::in_flight::InFlight;
use crate::session::pinning::{Effect, PinReason};
use crate::session::relay_io::{Buffers, Io};
use crate::session::relay_sql::{apply, effect_of, free_databases, query_text};
use crate::session::statements::{self, Expect, Expected, Statements};
use std::sync::Arc;

/// Largest message either side may send (Postgres' own limit is 1 GiB).
const MAX_MESSAGE: usize = 1 << 30;
/// Largest message the relay reads whole (ParameterStatus, ReadyForQuery, Terminate, and
/// NotificationResponse, whose payload Postgres keeps under 8000 bytes).
const MAX_HELD: usize = 8192;
/// Largest Parse, Bind, Describe or Close in transaction mode, where they are read whole to
/// rename statements.
const MAX_STATEMENT_MESSAGE: usize = 64 << 20;
/// How many times per `idle_client_timeout` the relay looks whether its client is idle.
const IDLE_SAMPLES: u32 = 4;

/// How a relay ended.
#[derive(Debug)]
pub struct Outcome {
    pub from_client: u64,
    pub to_client: u64,
    pub reason: &'static str,
}

/// Everything the relay needs.
pub struct Relay<'a> {
    pub client: TlsStream<TcpStream>,
    pub pool: Arc<Pool>,
    /// Every pool, for statements that need another database's idle connections closed.
    pub pools: Arc<Pools>,
    /// The connection the greeting came from.
    pub backend: Pooled,
    /// The client's settings, applied to each connection it borrows.
    pub settings: ClientSettings,
    pub ticket: &'a Ticket,
    pub client_state: &'a mut ClientState,
    pub traffic: Traffic,
    /// A client that sends nothing for this long after its last answer is closed.
    pub idle_timeout: std::time::Duration,
}

struct State<'a> {
    client: TlsStream<TcpStream>,
    pool: Arc<Pool>,
    pools: Arc<Pools>,
    backend: Option<Pooled>,
    settings: ClientSettings,
    ticket: &'a Ticket,
    client_state: &'a mut ClientState,
    traffic: Traffic,
    idle_timeout: std::time::Duration,
    bufs: Buffers,
    client_scan: Scanner,
    backend_scan: Scanner,
    in_flight: InFlight,
    statements: Statements,
    expected: Expected,
    /// Transaction mode: the session made state that cannot move, so it keeps its backend.
    pinned: Option<PinReason>,
    /// Transaction mode: a plain SET forwarded, to carry with the client once it has taken.
    pending_set: Option<(String, String)>,
    /// pgvalet is stopping: end the session at the next idle moment.
    draining: bool,
    sent_by_client: u64,
    sent_to_client: u64,
}

/// Sends the greeting, then relays until the client leaves, the backend goes, or pgvalet stops.
///
/// The relay's state is built before the future that runs it, so that the session task holds
/// it once (an async fn would keep its arguments beside the state made of them).
pub fn run<'a>(
    relay: Relay<'a>,
    greeting: BytesMut,
    life: &'a Lifecycle,
) -> impl Future<Output = Outcome> + 'a {
    let mut state = State {
        client: relay.client,
        pool: relay.pool,
        pools: relay.pools,
        backend: Some(relay.backend),
        settings: relay.settings,
        ticket: relay.ticket,
        client_state: relay.client_state,
        traffic: relay.traffic,
        idle_timeout: relay.idle_timeout,
        bufs: Buffers::new(),
        client_scan: Scanner::default(),
        backend_scan: Scanner::default(),
        in_flight: InFlight::default(),
        statements: Statements::default(),
        expected: Expected::default(),
        pinned: None,
        pending_set: None,
        draining: false,
        sent_by_client: 0,
        sent_to_client: 0,
    };
    async move {
        let greeted = state.write_client(&greeting).await;
        drop(greeting);
        let reason = match greeted {
            Ok(()) => state.relay(life).await,
            Err(_) => "client_gone",
        };
        let clean = state.at_clean_boundary();
        if let Some(backend) = state.backend.take() {
            state.ticket.serve(None);
            Box::pin(backend.release(clean)).await;
        }
        state
            .traffic
            .bytes(state.sent_by_client, state.sent_to_client);
        Outcome {
            from_client: state.sent_by_client,
            to_client: state.sent_to_client,
            reason,
        }
    }
}

impl State<'_> {
    async fn relay(&mut self, life: &Lifecycle) -> &'static str {
        self.release_if_idle().await;
        // Made once: each new one would register with its token again at every wait. Until
        // `drain` fires only it is watched (it also fires when `stop` does).
        let (drain, stop) = (life.drain.cancelled(), life.stop.cancelled());
        tokio::pin!(drain, stop);
        // Idleness is sampled four times per timeout: a client is closed once five samples in a
        // row found it idle with nothing sent (the first may cover only part of a period), so
        // between 1 and 1.25 timeouts after the last word either way. A client that has taken
        // none of what is waiting for it is as idle as one that says nothing: it would hold its
        // backend connection, stopped mid-answer, for as long as it stays connected.
        let sample = self.idle_timeout / IDLE_SAMPLES;
        let mut idle_check = tokio::time::interval_at(tokio::time::Instant::now() + sample, sample);
        idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut quiet, mut heard, mut taken) = (0, self.sent_by_client, self.bufs.taken_by_client);
        let mut reported = (self.sent_by_client, self.sent_to_client);
        loop {
            // Pass on what has come whole or passable each way (in transaction mode borrowing
            // a backend connection first), and give the backend back if it is done.
            match self.forward_client().await {
                Ok(true) => {}
                Ok(false) => {
                    self.finish_for_client().await;
                    return "terminated";
                }
                Err(reason) => return reason,
            }
            if let Err(reason) = self.forward_backend() {
                return reason;
            }
            self.release_if_idle().await;
            if reported != (self.sent_by_client, self.sent_to_client) {
                reported = (self.sent_by_client, self.sent_to_client);
                self.traffic.bytes(reported.0, reported.1);
            }
            // Stopping: a client with nothing under way is told, as Postgres tells it, and let go.
            if self.draining && self.idle_for_drain() {
                let mut out = BytesMut::new();
                messages::error_response(
                    &mut out,
                    Severity::Fatal,
                    "57P01",
                    "terminating connection due to administrator command",
                );
                let _ = self.write_client(&out).await;
                return "shutdown";
            }
            self.bufs.shed();
            let backend = self.backend.as_mut().map(|b| &mut b.stream);
            tokio::select! {
                io = self.bufs.wait(&mut self.client, backend, true) => match io {
                    Io::Moved => {}
                    Io::ClientGone => {
                        self.finish_for_client().await;
                        return "client_gone";
                    }
                    Io::BackendGone => {
                        // Its last words (a FATAL, say) still reach the client.
                        let _ = self.forward_backend();
                        self.bufs.write_out_to_client(&mut self.client).await;
                        self.drop_backend();
                        return "backend_gone";
                    }
                },
                () = &mut drain, if !self.draining => self.draining = true,
                () = &mut stop, if self.draining => return "shutdown",
                _ = idle_check.tick() => {
                    let stalled = self.bufs.owes_client();
                    if heard == self.sent_by_client
                        && taken == self.bufs.taken_by_client
                        && (stalled || self.waiting_for_client())
                    {
                        quiet += 1;
                    } else {
                        (quiet, heard, taken) = (0, self.sent_by_client, self.bufs.taken_by_client);
                    }
                    if quiet > IDLE_SAMPLES {
                        if stalled {
                            // Nothing more can reach it; its backend connection, mid-answer, is
                            // closed when the session ends.
                            return "client_stalled";
                        }
                        let mut out = BytesMut::new();
                        messages::error_response(
                            &mut out,
                            Severity::Fatal,
                            "57P05",
                            "terminating connection due to idle-session timeout",
                        );
                        let _ = self.write_client(&out).await;
                        return "idle_timeout";
                    }
                }
            }
        }
    }

    /// The client said goodbye or went: what it sent before that still reaches the backend,
    /// as it would direct. What the backend answers is dropped, so the connection is closed.
    async fn finish_for_client(&mut self) {
        if self.bufs.backend_written() {
            return;
        }
        if let Some(backend) = self.backend.as_mut() {
            let _ = self.bufs.write_out_to_backend(&mut backend.stream).await;
        }
        self.drop_backend();
    }

    /// Every request answered and nothing buffered: the next word is the client's.
    fn waiting_for_client(&self) -> bool {
        self.at_clean_boundary() && self.bufs.empty()
    }

    /// Not in a transaction and nothing in flight either way.
    fn idle_for_drain(&self) -> bool {
        self.at_clean_boundary()
            && self.bufs.empty()
            && self.backend.as_ref().is_none_or(|b| b.status == b'I')
    }

    fn at_clean_boundary(&self) -> bool {
        self.in_flight.idle() && self.client_scan.at_boundary() && self.backend_scan.at_boundary()
    }

    /// Forwards every complete or passable client message to the backend, borrowing one first
    /// in transaction mode, where statement names are also rewritten. `Ok(false)`: the client
    /// sent Terminate.
    async fn forward_client(&mut self) -> Result<bool, &'static str> {
        let transaction = self.pool.mode() == PoolMode::Transaction;
        while transaction && self.backend.is_none() {
            let mut reply = BytesMut::new();
            let Some(used) = self.statements.answer_parse_batch(
                &self.bufs.from_client,
                MAX_STATEMENT_MESSAGE,
                &mut reply,
            ) else {
                break;
            };
            self.bufs.from_client.advance(used);
            self.sent_by_client += used as u64;
            self.sent_to_client += reply.len() as u64;
            self.write_client(&reply).await.map_err(|_| "client_gone")?;
        }
        // Queries and Parses are read whole in both modes (to see statements that need a
        // database without sessions); in transaction mode also what renames statements.
        let whole =
            |tag: u8| matches!(tag, b'X' | b'Q' | b'P') || (transaction && statements::wanted(tag));
        let out_before = self.bufs.to_backend.len();
        let mut used = 0;
        let mut terminate = false;
        loop {
            let item = self
                .client_scan
                .next(
                    &self.bufs.from_client[used..],
                    whole,
                    MAX_STATEMENT_MESSAGE,
                    MAX_MESSAGE,
                )
                .map_err(|_| "client_protocol_error")?;
            match item {
                Item::NeedMore => break,
                Item::Whole { tag: b'X', .. } => {
                    terminate = true;
                    break;
                }
                Item::Begin { tag, .. } | Item::Whole { tag, .. }
                    if transaction && !is_frontend_message(tag) =>
                {
                    // Postgres would end the session; a pooled backend must not see it.
                    let mut fatal = BytesMut::new();
                    let text = format!("invalid frontend message type {tag}");
                    messages::error_response(&mut fatal, Severity::Fatal, "08P01", &text);
                    let _ = self.write_client(&fatal).await;
                    return Err("client_protocol_error");
                }
                _ => {}
            }
            self.attach().await?;
            let Some(backend) = self.backend.as_mut() else {
                return Err("backend_gone");
            };
            match item {
                Item::Begin { tag, n } => {
                    let owed = self.in_flight.client_message(tag);
                    for _ in 0..owed.voided {
                        self.expected.void_last_ready();
                    }
                    if owed.ready {
                        self.expected.push(Expect::Ready);
                    }
                    self.bufs
                        .to_backend
                        .extend_from_slice(&self.bufs.from_client[used..used + n]);
                    used += n;
                }
                Item::Pass(n) => {
                    self.bufs
                        .to_backend
                        .extend_from_slice(&self.bufs.from_client[used..used + n]);
                    used += n;
                }
                Item::Whole { tag, len } if !transaction => {
                    let message = &self.bufs.from_client[used..used + len];
                    if let Some(sql) = query_text(message) {
                        free_databases(&self.pools, sql);
                    }
                    if self.in_flight.client_message(tag).ready {
                        self.expected.push(Expect::Ready);
                    }
                    self.bufs.to_backend.extend_from_slice(message);
                    used += len;
                }
                Item::Whole { tag: b'Q', len } => {
                    let message = &self.bufs.from_client[used..used + len];
                    let sql = query_text(message);
                    let carry = self.in_flight.idle() && backend.status == b'I';
                    if let Some(sql) = sql {
                        free_databases(&self.pools, sql);
                        let effect = effect_of(sql, carry, &mut self.pending_set);
                        apply(effect, &mut self.pinned, &self.pool, backend);
                    }
                    let rewritten = sql.and_then(|sql| {
                        self.statements.rewrite_sql(
                            sql,
                            &mut backend.prepared,
                            &mut self.expected,
                            &mut self.bufs.to_backend,
                        )
                    });
                    match rewritten {
                        Some((sql, sent_parse)) => {
                            if sent_parse {
                                // The Parse gets a Sync of its own, so that a failure cannot
                                // make the backend skip the query; its ReadyForQuery is hidden.
                                self.bufs.to_backend.extend_from_slice(&[b'S', 0, 0, 0, 4]);
                                self.in_flight.client_message(b'S');
                                self.expected.push(Expect::HiddenReady);
                            }
                            self.bufs
                                .to_backend
                                .extend_from_slice(&statements::query_message(&sql));
                        }
                        None => self.bufs.to_backend.extend_from_slice(message),
                    }
                    self.in_flight.client_message(b'Q');
                    self.expected.push(Expect::Ready);
                    used += len;
                }
                Item::Whole { tag, len } => {
                    let carry = self.in_flight.idle() && backend.status == b'I';
                    self.in_flight.client_message(tag);
                    let message = &self.bufs.from_client[used..used + len];
                    if let Some(sql) = query_text(message) {
                        free_databases(&self.pools, sql);
                        let effect = effect_of(sql, carry, &mut self.pending_set);
                        apply(effect, &mut self.pinned, &self.pool, backend);
                    }
                    self.statements
                        .rewrite(
                            message,
                            &mut backend.prepared,
                            &mut self.expected,
                            &mut self.bufs.to_backend,
                        )
                        .map_err(|_| "client_protocol_error")?;
                    used += len;
                }
                Item::NeedMore => unreachable!("handled above"),
            }
        }
        self.bufs.from_client.advance(used);
        let added = self.bufs.to_backend.len() - out_before;
        if added > 0 {
            tracing::trace!(bytes = added, "client -> backend");
            self.sent_by_client += added as u64;
        }
        Ok(!terminate)
    }

    /// Makes every complete or passable backend message ready for the client, noting
    /// ReadyForQuery and ParameterStatus, and taking out or replacing what answers pgvalet
    /// itself.
    fn forward_backend(&mut self) -> Result<(), &'static str> {
        let Some(backend) = self.backend.as_mut() else {
            return Ok(());
        };
        let mut end = self.bufs.to_client;
        loop {
            // The error that stands for a refused Parse is read whole, to be replaced.
            let refusal = self.expected.refusal_next();
            let item = self
                .backend_scan
                .next(
                    &self.bufs.from_backend[end..],
                    |tag| matches!(tag, b'Z' | b'S' | b'1' | b'A') || (refusal && tag == b'E'),
                    MAX_HELD,
                    MAX_MESSAGE,
                )
                .map_err(|_| "backend_protocol_error")?;
            match item {
                Item::Begin { tag, n } => {
                    if tag == b'E' {
                        self.statements
                            .error(&mut self.expected, &mut backend.prepared);
                        // A carried SET that failed (or was rolled back with its batch).
                        self.pending_set = None;
                    }
                    end += n;
                }
                Item::Pass(n) => end += n,
                Item::Whole { tag: b'E', len } => {
                    // The backend refused pgvalet's stand-in for a Parse of a statement name
                    // the client already uses: the client gets Postgres' refusal of it.
                    self.pending_set = None;
                    let name = self
                        .statements
                        .error(&mut self.expected, &mut backend.prepared)
                        .unwrap_or_default();
                    let mut refusal = BytesMut::new();
                    messages::error_response(
                        &mut refusal,
                        Severity::Error,
                        "42P05",
                        &format!("prepared statement \"{name}\" already exists"),
                    );
                    self.bufs.replace_from_backend(end, len, &refusal);
                    end += refusal.len();
                }
                Item::Whole { tag: b'Z', len } => {
                    backend.status = self.bufs.from_backend.get(end + 5).copied().unwrap_or(b'I');
                    self.in_flight.ready();
                    if self.expected.ready() {
                        // The answer to a Sync pgvalet sent itself.
                        self.bufs.replace_from_backend(end, len, &[]);
                    } else {
                        self.traffic.ready(backend.status);
                        if let Some((name, value)) = self.pending_set.take() {
                            if backend.status == b'I' {
                                // The SET took: it goes with the client from now on.
                                self.settings.set(&name, &value);
                                backend.applied.set(&name, &value);
                            } else {
                                apply(
                                    Some(Effect::Pin(PinReason::Set)),
                                    &mut self.pinned,
                                    &self.pool,
                                    backend,
                                );
                            }
                        }
                        end += len;
                    }
                }
                Item::Whole { tag: b'1', len } => {
                    if self.expected.parse_complete() {
                        // The answer to a Parse pgvalet sent itself.
                        self.bufs.replace_from_backend(end, len, &[]);
                    } else {
                        end += len;
                    }
                }
                Item::Whole { tag: b'A', len } => {
                    // A notification from the client's own backend names the process id the
                    // client was given, so a driver can tell its own notifications apart.
                    let pid_at = end + 5..end + 9;
                    let pid = self
                        .bufs
                        .from_backend
                        .get(pid_at.clone())
                        .map(|b| i32::from_be_bytes(b.try_into().unwrap_or_default()));
                    if pid.is_some() && pid == backend.key.map(|(pid, _)| pid) {
                        self.bufs.from_backend[pid_at]
                            .copy_from_slice(&self.ticket.pid().to_be_bytes());
                    }
                    end += len;
                }
                Item::Whole { len, .. } => {
                    if let Some((name, value)) = crate::protocol::backend::parameter_status(
                        &self.bufs.from_backend[end + 5..end + len],
                    ) {
                        backend.set_param(name, value);
                        // The client changed a setting the server reports: it goes with the
                        // client to its next connection, and this one is known to have it.
                        if self.pool.mode() == PoolMode::Transaction && is_followed(name) {
                            self.settings.set(name, value);
                            backend.applied.set(name, value);
                        }
                    }
                    end += len;
                }
                Item::NeedMore => break,
            }
        }
        if end > self.bufs.to_client {
            tracing::trace!(bytes = end - self.bufs.to_client, "backend -> client");
            self.sent_to_client += (end - self.bufs.to_client) as u64;
            self.bufs.to_client = end;
        }
        Ok(())
    }

    async fn write_client(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.client.write_all(data).await?;
        self.client.flush().await
    }
}

/// The message types a client may send once logged in, as Postgres reads them.
fn is_frontend_message(tag: u8) -> bool {
    matches!(
        tag,
        b'B' | b'C' | b'c' | b'd' | b'D' | b'E' | b'f' | b'F' | b'H' | b'P' | b'Q' | b'S' | b'X'
    )
}
