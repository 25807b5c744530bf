//! One client connection from accept to close: the front door, routing, a backend connection
//! from the connector, the greeting, and the relay. Every outcome ends in one log line.

mod database_ddl;
pub mod frontdoor;
#[doc(hidden)]
pub mod fuzzing;
mod iam;
mod in_flight;
mod lexer;
pub mod password;
mod pinning;
mod placement;
mod relay;
mod relay_io;
mod relay_sql;
mod statements;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;

use crate::authz;
use crate::backend::{ClientSettings, Connection};
use crate::cancel::{self, Registry};
use crate::config::{AuthMode, PoolMode, RouteConfig};
use crate::error::{ClientError, FrontError};
use crate::metrics::{ClientPhase, ClientState, Traffic};
use crate::net::Answering;
use crate::pool::{Pool, PoolError, Pooled};
use crate::protocol::messages;
use crate::protocol::startup::CancelKey;
use crate::readers::Lease;
use crate::server::{Lifecycle, State};
use frontdoor::{Arrival, Client};

/// How long closing a cancel connection's TLS session may take.
const CANCEL_CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves one connection accepted on `endpoint` until it ends.
pub async fn serve(
    mut tcp: TcpStream,
    peer: SocketAddr,
    endpoint: &'static str,
    state: Arc<State>,
    cancels: Arc<Registry>,
    life: Lifecycle,
) {
    let started = Instant::now();
    let mut client_state = ClientState::new();
    let local = tcp.local_addr().ok().map(|a| a.ip());
    let deadline = started + state.config.handshake_timeout;
    // The client's own address: the socket's, or what a trusted load balancer says it is.
    let peer = match client_address(&mut tcp, peer, &state.config, deadline).await {
        Ok(addr) => addr,
        Err(e) => return log_refusal(started, endpoint, peer, None, &e),
    };
    // Boxed: the TLS handshake is the largest state of all and the shortest lived; a task is
    // as large as its largest state for its whole life.
    let arrival = tokio::select! {
        arrival = Box::pin(frontdoor::accept(tcp, &state.tls, deadline)) => arrival,
        () = life.drain.cancelled() => return,
    };
    match arrival {
        Err(e) => log_refusal(started, endpoint, peer, None, &e),
        Ok(Arrival::Cancel(key, tls)) => cancel_request(key, tls, peer, &state, &cancels).await,
        Ok(Arrival::Client(client)) => {
            let at = Start {
                endpoint,
                peer,
                local,
                deadline,
                started,
            };
            session(client, at, state, cancels, life, &mut client_state).await
        }
    }
}

/// Passes a CancelRequest to the backend its key points at (or to the peer instance that issued
/// it), then closes the client's cancel connection: only now that the request was acted on (a
/// driver's next query waits for this close), with a close_notify when it came inside TLS.
async fn cancel_request(
    key: CancelKey,
    tls: Option<Box<TlsStream<TcpStream>>>,
    peer: SocketAddr,
    state: &State,
    cancels: &Registry,
) {
    let instance = cancel::instance_of(&key.secret).unwrap_or(state.config.instance_id);
    if cancels.is_own(&key) {
        let outcome = cancels.cancel(&key).await;
        crate::metrics::cancel(outcome.as_str());
        tracing::info!(%peer, pid = key.pid, outcome = outcome.as_str(), "cancel request");
    } else if let Some(to) = state
        .config
        .peers
        .iter()
        .find(|p| p.instance_id == instance)
    {
        let forwarded = cancel::forward_to_peer(to.addr, &key).await;
        crate::metrics::cancel(if forwarded.is_ok() {
            "to_peer"
        } else {
            "to_peer_failed"
        });
        tracing::info!(%peer, pid = key.pid, instance, to = %to.addr, ok = forwarded.is_ok(), "cancel request forwarded to a peer");
    } else {
        crate::metrics::cancel("unknown_instance");
        tracing::info!(%peer, pid = key.pid, instance, "cancel request for an instance with no peer entry; ignored");
    }
    if let Some(mut tls) = tls {
        use tokio::io::AsyncWriteExt;
        let _ = tokio::time::timeout(CANCEL_CLOSE_TIMEOUT, tls.shutdown()).await;
    }
}

/// Where and when a client arrived.
struct Start {
    endpoint: &'static str,
    peer: SocketAddr,
    /// This instance's address as the client reached it.
    local: Option<std::net::IpAddr>,
    deadline: Instant,
    started: Instant,
}

/// Serves a client past the front door: admission, then the relay until it ends.
///
/// The admission runs as a future of its own, so that what it needs (the startup packet, the
/// routing, a password exchange, the first borrow) shares the task's memory with the relay
/// instead of adding to it: a session task is as large as its largest phase, for its whole life.
async fn session(
    client: Box<Client>,
    at: Start,
    state: Arc<State>,
    cancels: Arc<Registry>,
    life: Lifecycle,
    client_state: &mut ClientState,
) {
    let Some(Admitted {
        tls,
        route,
        pool,
        backend,
        settings,
        ticket,
        greeting,
        identity,
        _on_reader,
        _route_slot,
    }) = admit(client, &at, &state, &cancels, client_state).await
    else {
        return;
    };
    let relay = relay::Relay {
        client: tls,
        pool,
        pools: state.pools.clone(),
        backend,
        settings,
        ticket: &ticket,
        client_state,
        traffic: Traffic::new(&route.name),
        idle_timeout: state.config.idle_client_timeout,
    };
    let outcome = relay::run(relay, greeting, &life).await;
    drop(ticket);
    tracing::info!(
        peer = %at.peer, endpoint = at.endpoint, identity, route = %route.name,
        duration_ms = at.started.elapsed().as_millis() as u64,
        bytes_from_client = outcome.from_client, bytes_to_client = outcome.to_client,
        reason = outcome.reason,
        "session ended"
    );
}

/// A client let in: the pieces the relay takes.
struct Admitted<'s> {
    tls: TlsStream<TcpStream>,
    route: &'s RouteConfig,
    pool: Arc<Pool>,
    backend: Pooled,
    settings: ClientSettings,
    ticket: cancel::Ticket,
    /// What the client hears first (see [`greeting`]).
    greeting: BytesMut,
    identity: String,
    /// Held for the session's life when it runs on a reader.
    _on_reader: Option<Lease>,
    /// The session's place under the route's `max_client_conn`.
    _route_slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Routes the client, checks its password or token if the route asks for one, borrows its
/// first backend connection and issues its cancel key. A client that is refused is told why
/// and logged here (`None`). The client's box is freed when this returns.
async fn admit<'s>(
    mut client: Box<Client>,
    at: &Start,
    state: &'s State,
    cancels: &Arc<Registry>,
    client_state: &mut ClientState,
) -> Option<Admitted<'s>> {
    let &Start {
        endpoint,
        peer,
        local,
        deadline,
        started,
    } = at;
    let identity = client
        .identities
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let refused = |e: &dyn ClientError| {
        log_refusal(started, endpoint, peer, Some(&identity), e);
        None
    };
    let request = authz::Request {
        identities: &client.identities,
        user: &client.user,
        database: &client.database,
        source: peer.ip(),
    };
    let route = match authz::route(state.routes_of(endpoint), &request) {
        Ok(route) => route,
        Err(denied) => return refused(&frontdoor::reject(&mut client.tls, denied).await),
    };
    if route.auth.needs_password() {
        let credentials = route.credentials.as_deref().unwrap_or_default();
        let Some(cache) = state.credentials.get(credentials) else {
            tracing::error!(route = %route.name, "route names credentials that were not built");
            return None;
        };
        let grace = state
            .config
            .credentials
            .get(credentials)
            .map(|c| c.previous_grace)
            .unwrap_or_default();
        let mut tls = Answering(&mut client.tls);
        let checked = password::authenticate(&mut tls, &client.user, cache, grace, &state.scram);
        let outcome = match tokio::time::timeout_at(deadline, checked).await {
            Ok(outcome) => outcome,
            Err(_) => Err(password::PasswordError::Io(
                std::io::ErrorKind::TimedOut.into(),
            )),
        };
        if let Err(e) = outcome {
            return refused(&frontdoor::reject(&mut client.tls, e).await);
        }
    }
    if route.auth == AuthMode::Iam {
        let Some(verifier) = &state.iam else {
            tracing::error!(route = %route.name, "an iam route without an [iam] verifier");
            return None;
        };
        let (host, port) = state.iam_endpoint_of(endpoint, verifier);
        let mut tls = Answering(&mut client.tls);
        let checked = iam::authenticate(&mut tls, &client.user, verifier, (host, port));
        let outcome = match tokio::time::timeout_at(deadline, checked).await {
            Ok(outcome) => outcome,
            Err(_) => Err(crate::iam::IamError::Io(
                std::io::ErrorKind::TimedOut.into(),
            )),
        };
        match outcome {
            Ok(checked) if !checked.signature_checked => tracing::warn!(
                %peer, user = %client.user, key = %checked.access_key_id,
                "IAM token accepted WITHOUT checking its signature (iam.verify = \"claims\")"
            ),
            Ok(checked) => {
                let age = std::time::SystemTime::now().duration_since(checked.signed_at);
                tracing::debug!(
                    %peer, user = %client.user, key = %checked.access_key_id,
                    token_age_s = age.map_or(0, |a| a.as_secs()),
                    "IAM token accepted"
                );
            }
            Err(e) => return refused(&frontdoor::reject(&mut client.tls, e).await),
        }
    }
    let Some(target) = state.targets.for_route(route).cloned() else {
        // validate() makes every route name a backend; a missing one is a bug, not input.
        tracing::error!(route = %route.name, "route names a backend that was not built");
        return None;
    };
    let route_slot = match state
        .route_clients
        .get(&route.name)
        .map(|s| s.clone().try_acquire_owned())
    {
        Some(Err(_)) => {
            let e = RouteFull {
                route: route.name.clone(),
                limit: route.max_client_conn.unwrap_or(0),
            };
            return refused(&frontdoor::reject(&mut client.tls, e).await);
        }
        Some(Ok(slot)) => Some(slot),
        None => None,
    };
    let mut settings = match ClientSettings::from_startup(&client.startup.params) {
        Ok(settings) => settings,
        Err(bad) => return refused(&frontdoor::reject(&mut client.tls, bad).await),
    };
    client_state.set(ClientPhase::Waiting);
    let placing = placement::place(
        state,
        endpoint,
        route,
        &target,
        &client.database,
        &mut settings,
    );
    let placement::Placed {
        pool,
        mut backend,
        lease,
    } = match tokio::time::timeout_at(deadline, placing).await {
        Ok(Ok(placed)) => placed,
        Ok(Err(e)) => return refused(&frontdoor::reject(&mut client.tls, e).await),
        Err(_) => return refused(&frontdoor::reject(&mut client.tls, PoolError::Timeout).await),
    };
    client_state.set(ClientPhase::Active);
    crate::metrics::handshake(endpoint, "ok", started.elapsed());
    crate::metrics::endpoint_session(endpoint, &route.name, &backend.target.name);
    // In session mode the client sees its backend's own process id, as it would direct; in
    // transaction mode its backend changes, so the id is pgvalet's.
    let ticket = cancels.issue(cancel::Wanted {
        pid: match pool.mode() {
            PoolMode::Session => backend.key.map(|(pid, _)| pid),
            PoolMode::Transaction => None,
        },
        long: client.startup.served_minor() >= 2,
        issuer: local,
    });
    ticket.serve(
        backend
            .key
            .map(|key| (backend.target.clone(), backend.peer, key)),
    );
    let greeting = greeting(&client, &mut backend, &ticket);
    tracing::info!(
        %peer, endpoint, identity, route = %route.name, user = %client.user,
        database = %client.database, backend = %backend.target.name, setup_ms = started.elapsed().as_millis() as u64,
        "session started"
    );
    Some(Admitted {
        tls: client.tls,
        route,
        pool,
        backend,
        settings,
        ticket,
        greeting,
        identity,
        _on_reader: lease,
        _route_slot: route_slot,
    })
}

/// The route's `max_client_conn` is reached.
#[derive(Debug, thiserror::Error)]
#[error("The maximum number of client connections to route \"{route}\" exceeded {limit}.")]
struct RouteFull {
    route: String,
    limit: usize,
}

impl ClientError for RouteFull {
    fn sqlstate(&self) -> Option<&str> {
        Some("53300")
    }
    fn kind(&self) -> &'static str {
        "route_full"
    }
}

/// Reads the PROXY protocol header, if the config asks for one and the sender may send it, and
/// applies the global CIDR check to the address that results.
async fn client_address(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    config: &crate::config::Config,
    deadline: Instant,
) -> Result<SocketAddr, FrontError> {
    use crate::config::ProxyProtocol;
    let addr = match config.proxy_protocol {
        ProxyProtocol::Off => peer,
        mode => {
            let trusted = authz::cidr_allows(&config.proxy_protocol_trusted, peer.ip());
            if mode == ProxyProtocol::Required && !trusted {
                return Err(FrontError::ProxyUntrusted(peer.ip()));
            }
            let read = frontdoor::proxy_header(tcp);
            match tokio::time::timeout_at(deadline, read).await {
                Err(_) => {
                    return Err(FrontError::Timeout {
                        phase: "waiting for the PROXY header",
                    });
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) if mode == ProxyProtocol::Required => {
                    return Err(FrontError::ProxyMissing);
                }
                Ok(Ok(None)) => peer,
                Ok(Ok(Some(_))) if !trusted => return Err(FrontError::ProxyUntrusted(peer.ip())),
                Ok(Ok(Some(source))) => source.unwrap_or(peer),
            }
        }
    };
    if !authz::cidr_allows(&config.allow_cidrs, addr.ip()) {
        return Err(FrontError::SourceDenied(addr.ip()));
    }
    Ok(addr)
}

/// What the client hears after its startup packet: the protocol answer if it asked for more than
/// pgvalet serves or for protocol options, AuthenticationOk, the backend's ParameterStatus values, pgvalet's own cancel key, any
/// login notices, ReadyForQuery, and whatever the backend already sent beyond it.
fn greeting(client: &Client, backend: &mut Connection, ticket: &cancel::Ticket) -> BytesMut {
    let mut out = BytesMut::with_capacity(1024);
    let options = client.startup.protocol_options();
    let minor = client.startup.served_minor();
    if client.startup.minor > minor || !options.is_empty() {
        messages::negotiate_protocol_version(&mut out, minor, options);
    }
    messages::authentication_ok(&mut out);
    for (name, value) in &backend.params {
        messages::parameter_status(&mut out, name, value);
    }
    messages::backend_key_data(&mut out, ticket.pid(), ticket.secret());
    for notice in backend.notices.drain(..) {
        out.extend_from_slice(&notice);
    }
    messages::ready_for_query(&mut out, backend.status);
    out.extend_from_slice(&backend.pending.split());
    out
}

fn log_refusal(
    started: Instant,
    endpoint: &'static str,
    peer: SocketAddr,
    identity: Option<&str>,
    error: &dyn ClientError,
) {
    crate::metrics::handshake(endpoint, error.kind(), started.elapsed());
    if error.kind() == "client_gone" {
        // Load balancer health checks and port scans open and close without a word.
        tracing::debug!(%peer, error = %error, "connection closed before the handshake");
        return;
    }
    tracing::info!(
        %peer,
        endpoint,
        identity = identity.unwrap_or(""),
        reason = error.kind(),
        sqlstate = error.sqlstate().unwrap_or(""),
        error = %error,
        "connection refused"
    );
}
