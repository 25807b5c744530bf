//! The server: everything built from a configuration ([`State`]), the background work
//! (credential refreshers, pool housekeeping), and the accept loop with its global CIDR gate,
//! client limit and stop that waits for every session.

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
use crate::config::{Config, ProxyProtocol};
use crate::credentials::Store;
use crate::error::ConfigError;
use crate::pool::Pools;

/// Everything built from one configuration. Sessions take a snapshot at accept and keep it.
pub struct State {
    pub config: Config,
    pub tls: TlsAcceptor,
    /// Password mode: the server certificate's channel binding data and the SCRAM secrets.
    pub scram: crate::session::password::Scram,
    pub targets: HashMap<String, Arc<Target>>,
    pub credentials: Arc<Store>,
    pub pools: Arc<Pools>,
    /// Per-route client limits (`max_client_conn`).
    pub route_clients: HashMap<String, Arc<Semaphore>>,
}

impl State {
    /// Loads certificates and keys and builds the backends, credential caches and pools named
    /// in `config`. Reads no credentials and opens no connection yet.
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
        let route_clients = config
            .routes
            .iter()
            .filter_map(|r| {
                r.max_client_conn
                    .map(|n| (r.name.clone(), Arc::new(Semaphore::new(n))))
            })
            .collect();
        Ok(State {
            tls,
            scram,
            targets,
            pools: Arc::new(Pools::new(credentials.clone())),
            credentials,
            route_clients,
            config,
        })
    }

    /// Creates the pools of routes with `min_idle` (for each database they name explicitly),
    /// so the housekeeping warms them.
    fn declare_warm_pools(&self) {
        for route in self.config.routes.iter().filter(|r| r.min_idle > 0) {
            let Some(target) = self.targets.get(&route.backend) else {
                continue;
            };
            for database in route.databases.iter().filter(|d| *d != "*") {
                self.pools.get(route, target, database);
            }
        }
    }
}

/// How sessions learn that pgvalet is stopping: `drain` asks them to end at the next moment
/// their client is idle (telling it FATAL 57P01); `stop` ends them at once.
#[derive(Clone, Default)]
pub struct Lifecycle {
    pub drain: CancellationToken,
    pub stop: CancellationToken,
}

/// A started server: credentials read, background work running, not yet accepting.
pub struct Server {
    state: Arc<State>,
    cancels: Arc<Registry>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Builds the state, reads the credentials (failing on a required one that cannot be
    /// read), and starts the refreshers and pool housekeeping.
    pub async fn start(config: Config) -> Result<Server, ConfigError> {
        let state = State::build(config).await?;
        state.credentials.prime(&state.config.credentials).await?;
        state.declare_warm_pools();
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        state.credentials.spawn_refreshers(&tasks, &stop);
        tasks.spawn(state.pools.clone().maintain_forever(stop.clone()));
        Ok(Server {
            cancels: Registry::new(state.config.instance_id),
            state: Arc::new(state),
            stop,
            tasks,
        })
    }

    /// The pools, for their counts.
    pub fn pools(&self) -> Arc<Pools> {
        self.state.pools.clone()
    }

    /// The cancel keys in use.
    pub fn cancels(&self) -> Arc<Registry> {
        self.cancels.clone()
    }

    /// Serves clients from `listener` until `shutdown` completes, then closes every session
    /// and stops the background work.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let Server {
            state,
            cancels,
            stop,
            tasks: background,
        } = self;
        let life = Lifecycle {
            drain: CancellationToken::new(),
            stop: stop.clone(),
        };
        let tasks = TaskTracker::new();
        let max_clients = state.config.max_clients;
        let shutdown_timeout = state.config.shutdown_timeout;
        let state = ArcSwap::new(state);
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
            // Behind a load balancer sending PROXY headers the socket's address is the
            // balancer's; the client's own address is checked once the header is read.
            let from_proxy = snapshot.config.proxy_protocol != ProxyProtocol::Off;
            if !from_proxy && !cidr_allows(&snapshot.config.allow_cidrs, peer.ip()) {
                tracing::info!(%peer, reason = "cidr_denied", "connection refused");
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, reason = "max_clients", max_clients, "connection refused");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let cancels = cancels.clone();
            let life = life.clone();
            tasks.spawn(async move {
                crate::session::serve(tcp, peer, snapshot, cancels, life).await;
                drop(permit);
            });
        }
        let sessions = max_clients - permits.available_permits();
        tracing::info!(
            sessions,
            timeout_s = shutdown_timeout.as_secs(),
            "pgvalet stopping: no new connections; idle clients are told, transactions may finish"
        );
        drop(listener);
        life.drain.cancel();
        tasks.close();
        if tokio::time::timeout(shutdown_timeout, tasks.wait())
            .await
            .is_err()
        {
            let left = max_clients - permits.available_permits();
            tracing::warn!(
                sessions = left,
                "shutdown_timeout reached; closing the sessions still running"
            );
        }
        stop.cancel();
        tasks.wait().await;
        background.close();
        background.wait().await;
        tracing::info!("pgvalet stopped");
    }
}

/// Serves clients from `listener` with `config` until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    Server::start(config).await?.serve(listener, shutdown).await;
    Ok(())
}
