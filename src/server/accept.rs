//! One endpoint's accept loop: the global CIDR gate and the client limit (shared by every
//! endpoint), then a session task per connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Inner, Lifecycle};
use crate::authz::cidr_allows;
use crate::config::ProxyProtocol;

/// What every endpoint's accept loop shares.
#[derive(Clone)]
pub(super) struct Accepting {
    pub inner: Arc<Inner>,
    pub life: Lifecycle,
    /// Every session of every endpoint, waited for at stop.
    pub sessions: TaskTracker,
    /// `max_clients`, across endpoints.
    pub permits: Arc<Semaphore>,
    /// Ends the accept loops (the listeners close with them).
    pub closing: CancellationToken,
}

impl Accepting {
    /// Accepts on `listener` until `closing`, serving each connection as `endpoint`'s.
    pub async fn run(self, endpoint: &'static str, listener: TcpListener) {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, endpoint, "pgvalet listening");
        }
        loop {
            let (tcp, peer) = tokio::select! {
                () = self.closing.cancelled() => return,
                accepted = crate::net::accept(&listener, "clients") => accepted,
            };
            let snapshot = self.inner.state.load_full();
            // Behind a load balancer sending PROXY headers the socket's address is the
            // balancer's; the client's own address is checked once the header is read.
            let from_proxy = snapshot.config.proxy_protocol != ProxyProtocol::Off;
            if !from_proxy && !cidr_allows(&snapshot.config.allow_cidrs, peer.ip()) {
                tracing::info!(%peer, endpoint, reason = "cidr_denied", "connection refused");
                crate::metrics::handshake(endpoint, "cidr_denied", Duration::ZERO);
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                let max_clients = snapshot.config.max_clients;
                tracing::warn!(%peer, endpoint, reason = "max_clients", max_clients, "connection refused");
                crate::metrics::handshake(endpoint, "max_clients", Duration::ZERO);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let cancels = self.inner.cancels.clone();
            let life = self.life.clone();
            self.sessions.spawn(async move {
                crate::session::serve(tcp, peer, endpoint, snapshot, cancels, life).await;
                drop(permit);
            });
        }
    }
}
