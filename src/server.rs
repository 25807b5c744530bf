//! The accept loop: the global CIDR gate, the client limit, one task per connection, and the
//! stop that waits for those tasks.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::authz::cidr_allows;
use crate::backend::Target;
use crate::cancel::Registry;
use crate::config::Config;
use crate::credentials::Store;
use crate::error::ConfigError;
use crate::pool::{BackendConnector, Direct};

/// Everything built from one configuration. Sessions take a snapshot at accept and keep it,
/// so a reload never changes a session under way.
pub struct State {
    pub config: Config,
    pub tls: TlsAcceptor,
    /// Password mode: the server certificate's channel binding data and the SCRAM secrets.
    pub scram: crate::session::password::Scram,
    pub targets: HashMap<String, Arc<Target>>,
    pub credentials: Arc<Store>,
    pub connector: Arc<dyn BackendConnector>,
}

impl State {
    /// Loads certificates and keys and builds the backends and credential caches named in
    /// `config`. Reads no credentials yet.
    pub async fn build(config: Config) -> Result<State, ConfigError> {
        let tls = TlsAcceptor::from(crate::tls::server_config(
            &config.tls,
            config.has_password_only_routes(),
        )?);
        let scram =
            crate::session::password::Scram::new(crate::tls::server_end_point(&config.tls)?);
        let targets = config
            .backends
            .iter()
            .map(|(name, backend)| {
                Ok((name.clone(), Arc::new(Target::from_config(name, backend)?)))
            })
            .collect::<Result<HashMap<_, _>, ConfigError>>()?;
        let credentials = Arc::new(Store::build(&config.credentials).await);
        Ok(State {
            config,
            tls,
            scram,
            targets,
            connector: Arc::new(Direct::new(credentials.clone())),
            credentials,
        })
    }
}

/// Serves clients from `listener` with `config` until `shutdown` completes, then closes every
/// session and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    let state = State::build(config).await?;
    state.credentials.prime(&state.config.credentials).await?;
    let max_clients = state.config.max_clients;
    let cancels = Registry::new(state.config.instance_id);
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    state.credentials.spawn_refreshers(&tasks, &stop);
    let state = ArcSwap::from_pointee(state);
    let permits = Arc::new(Semaphore::new(max_clients));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "pgvalet listening");
    }
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let snapshot = state.load_full();
        if !cidr_allows(&snapshot.config.allow_cidrs, peer.ip()) {
            tracing::info!(%peer, reason = "cidr_denied", "connection refused");
            continue;
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, reason = "max_clients", max_clients, "connection refused");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let cancels = cancels.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            crate::session::serve(tcp, peer, snapshot, cancels, stop).await;
            drop(permit);
        });
    }
    let sessions = max_clients - permits.available_permits();
    tracing::info!(sessions, "pgvalet stopping");
    drop(listener);
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}
