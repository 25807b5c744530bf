//! The server: everything built from a configuration ([`State`]), the background work
//! (credential refreshers, pool housekeeping, reader checks), the endpoints' listeners
//! ([`accept`]), reload, and the stop that waits for every session.

mod accept;
mod reload;

pub use reload::Reloader;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Health;
use crate::backend::Targets;
use crate::cancel::Registry;
use crate::config::{Config, DEFAULT_ENDPOINT, EndpointRole, RouteConfig};
use crate::credentials::Store;
use crate::error::ConfigError;
use crate::pool::{Pools, Settings};
use crate::readers::Readers;

/// Everything built from one configuration. Sessions take a snapshot at accept and keep it,
/// so a reload changes what new sessions see and nothing else.
pub struct State {
    pub config: Config,
    pub tls: TlsAcceptor,
    /// Password mode: the server certificate's channel binding data and the SCRAM secrets.
    pub scram: crate::session::password::Scram,
    /// IAM mode: how client tokens are checked (`[iam]`).
    pub iam: Option<crate::iam::Verifier>,
    pub targets: Targets,
    pub credentials: Arc<Store>,
    pub pools: Arc<Pools>,
    /// Per-route client limits (`max_client_conn`).
    pub route_clients: HashMap<String, Arc<Semaphore>>,
    /// The backends' readers and their standing in the rotation.
    pub readers: Readers,
    /// The routes of each endpoint that serves only some of them.
    endpoint_routes: HashMap<String, Vec<RouteConfig>>,
    /// When the server certificate, the client CA and the backend client certificates expire
    /// (Unix seconds), by name, for the metrics.
    pub expiry: Vec<(String, i64)>,
    /// Stops the refreshers of `credentials` once a reload replaces them.
    refreshers: CancellationToken,
}

impl State {
    /// Loads certificates and keys and builds the backends, credential caches and pools named
    /// in `config`. Reads no credentials and opens no connection yet.
    pub async fn build(config: Config) -> Result<State, ConfigError> {
        State::next(config, None).await
    }

    /// Builds the state for `config`, taking over from `old` what did not change: the
    /// credential caches when every `[credentials]` table is the same, and with them each pool
    /// whose route still exists with the same backend and pool settings (it gets the newly
    /// built backend, so a renewed backend CA applies to its next connections), and the
    /// per-route client counts.
    async fn next(config: Config, old: Option<&State>) -> Result<State, ConfigError> {
        let tls = TlsAcceptor::from(crate::tls::server_config(
            &config.tls,
            config.has_password_only_routes(),
        )?);
        let scram =
            crate::session::password::Scram::new(crate::tls::server_end_point(&config.tls)?);
        let iam = config
            .iam
            .as_ref()
            .map(crate::iam::Verifier::from_config)
            .transpose()?;
        if iam.as_ref().is_some_and(|v| !v.checks_signatures()) {
            tracing::warn!(
                "iam.verify = \"claims\": IAM tokens are accepted WITHOUT checking their signatures; anyone who can reach pgvalet can claim any user of an iam route"
            );
        }
        let targets = Targets::build(&config)?;
        let mut expiry = vec![
            (
                "server".to_owned(),
                crate::tls::not_after("tls.cert", &config.tls.cert)?,
            ),
            (
                "client_ca".to_owned(),
                crate::tls::not_after("tls.client_ca", &config.tls.client_ca)?,
            ),
        ];
        expiry.extend(
            targets
                .client_certs()
                .into_iter()
                .map(|c| (c.key.clone(), c.not_after)),
        );
        let kept = old.filter(|old| old.config.credentials == config.credentials);
        let (credentials, refreshers) = match kept {
            Some(old) => (old.credentials.clone(), old.refreshers.clone()),
            None => (
                Arc::new(Store::build(&config.credentials).await),
                CancellationToken::new(),
            ),
        };
        let pools = Arc::new(Pools::new(credentials.clone()));
        if let Some(old) = kept {
            pools.adopt(&old.pools, |route, database, backend| {
                let now = config.routes.iter().find(|r| r.name == route)?;
                let then = old.config.routes.iter().find(|r| r.name == route)?;
                let same = now.backend == then.backend
                    && now.credentials == then.credentials
                    && now.client_cert == then.client_cert
                    && now.use_secret_address == then.use_secret_address
                    && Settings::from_route(now) == Settings::from_route(then)
                    && now.allows_database(database)
                    && config.backends.get(&now.backend) == old.config.backends.get(&then.backend)
                    && config.backends.get(backend) == old.config.backends.get(backend);
                // A pool on one of the backend's readers is kept while it is still one.
                let on = backend == now.backend
                    || config.backends[&now.backend]
                        .readers
                        .iter()
                        .any(|r| r == backend);
                (same && on)
                    .then(|| targets.on(now, backend).cloned())
                    .flatten()
            });
        }
        let route_clients = config
            .routes
            .iter()
            .filter_map(|r| {
                let limit = r.max_client_conn?;
                let unchanged = old
                    .and_then(|old| old.config.routes.iter().find(|o| o.name == r.name))
                    .is_some_and(|o| o.max_client_conn == Some(limit));
                let semaphore = old
                    .filter(|_| unchanged)
                    .and_then(|old| old.route_clients.get(&r.name).cloned())
                    .unwrap_or_else(|| Arc::new(Semaphore::new(limit)));
                Some((r.name.clone(), semaphore))
            })
            .collect();
        let readers = Readers::build(&config, old.map(|o| &o.readers));
        let endpoint_routes = config
            .endpoints
            .iter()
            .filter(|e| e.routes.is_some())
            .map(|e| {
                let routes = config
                    .routes
                    .iter()
                    .filter(|r| e.serves(&r.name))
                    .cloned()
                    .collect();
                (e.name.clone(), routes)
            })
            .collect();
        Ok(State {
            readers,
            endpoint_routes,
            tls,
            scram,
            iam,
            targets,
            pools,
            credentials,
            route_clients,
            expiry,
            refreshers,
            config,
        })
    }

    /// The routes clients of `endpoint` may use.
    pub fn routes_of(&self, endpoint: &str) -> &[RouteConfig] {
        self.endpoint_routes
            .get(endpoint)
            .map_or(&self.config.routes, Vec::as_slice)
    }

    /// The host and port IAM tokens sent to `endpoint` are made for: `[iam] endpoint` for the
    /// default one; for another, its `iam_endpoint`, or `[iam]`'s host with its own port.
    pub fn iam_endpoint_of<'a>(
        &'a self,
        endpoint: &str,
        verifier: &'a crate::iam::Verifier,
    ) -> (&'a str, u16) {
        let (host, port) = verifier.endpoint();
        match self.config.endpoints.iter().find(|e| e.name == endpoint) {
            None => (host, port),
            Some(e) => match e.iam_endpoint.as_deref().and_then(|s| s.rsplit_once(':')) {
                Some((h, p)) => (h, p.parse().unwrap_or(port)),
                None => (host, e.listen_addr.port()),
            },
        }
    }

    /// What `endpoint`'s sessions may do.
    pub fn role_of(&self, endpoint: &str) -> EndpointRole {
        self.config
            .endpoints
            .iter()
            .find(|e| e.name == endpoint)
            .map_or(EndpointRole::ReadWrite, |e| e.role)
    }

    /// Creates the pools of routes with `min_idle` (for each database they name explicitly),
    /// so the housekeeping warms them.
    fn declare_warm_pools(&self) {
        for route in self.config.routes.iter().filter(|r| r.min_idle > 0) {
            let Some(target) = self.targets.for_route(route) else {
                continue;
            };
            for database in route.databases.iter().filter(|d| *d != "*") {
                self.pools.get(route, target, database);
            }
        }
    }

    /// The files a reload reads, for `watch`: certificates, keys, CAs and CRLs (not `env:`).
    fn watched_files(&self) -> Vec<std::path::PathBuf> {
        let tls = &self.config.tls;
        let backends = self.config.backends.values();
        let client_certs = backends
            .clone()
            .flat_map(|b| [&b.client_cert, &b.client_key])
            .chain(
                self.config
                    .routes
                    .iter()
                    .flat_map(|r| [&r.client_cert, &r.client_key]),
            )
            .flatten();
        [&tls.cert, &tls.key, &tls.client_ca]
            .into_iter()
            .chain(&tls.crls)
            .chain(backends.filter_map(|b| b.ca.as_ref()))
            .chain(client_certs)
            .filter(|p| !p.to_string_lossy().starts_with("env:"))
            .cloned()
            .collect()
    }
}

/// How sessions learn that pgvalet is stopping: `drain` asks them to end at the next moment
/// their client is idle (telling it FATAL 57P01); `stop` ends them at once. `drain` is a child
/// of `stop`, so a session need only watch `stop` once `drain` has fired.
#[derive(Clone)]
pub struct Lifecycle {
    pub drain: CancellationToken,
    pub stop: CancellationToken,
}

/// Reads the configuration again, for a reload (SIGHUP, `watch`).
pub type Loader = Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// What the accept loop, the reloads and the admin endpoint share.
struct Inner {
    state: ArcSwap<State>,
    health: Arc<Health>,
    cancels: Arc<Registry>,
    /// Ends the background work, after the sessions.
    stop: CancellationToken,
    background: TaskTracker,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    loader: std::sync::OnceLock<Loader>,
}

/// A started server: credentials read, background work running, not yet accepting.
pub struct Server {
    inner: Arc<Inner>,
    admin: Option<TcpListener>,
    /// The listeners of `[[endpoints]]`, bound at start (`listen_addr`'s is given to `serve`).
    endpoints: Vec<(&'static str, TcpListener)>,
}

impl Server {
    /// Builds the state, reads the credentials (failing on a required one that cannot be
    /// read), binds the admin endpoint, and starts the refreshers and pool housekeeping.
    pub async fn start(config: Config) -> Result<Server, ConfigError> {
        crate::metrics::install();
        let state = State::next(config, None).await?;
        state.credentials.prime(&state.config.credentials).await?;
        state.declare_warm_pools();
        let admin = match &state.config.metrics {
            None => None,
            Some(m) => {
                Some(
                    TcpListener::bind(m.addr)
                        .await
                        .map_err(|source| ConfigError::Listen {
                            key: "metrics.addr",
                            addr: m.addr,
                            source,
                        })?,
                )
            }
        };
        let mut endpoints = Vec::new();
        for endpoint in &state.config.endpoints {
            let listener = TcpListener::bind(endpoint.listen_addr)
                .await
                .map_err(|source| ConfigError::Listen {
                    key: "endpoints.listen_addr",
                    addr: endpoint.listen_addr,
                    source,
                })?;
            // Named in every log line and metric of its sessions; endpoints are made once per
            // start, so their names live as long as the process.
            let name: &'static str = Box::leak(endpoint.name.clone().into_boxed_str());
            endpoints.push((name, listener));
        }
        let stop = CancellationToken::new();
        let background = TaskTracker::new();
        spawn_refreshers(&state, &background, &stop);
        let inner = Arc::new(Inner {
            cancels: Registry::new(state.config.instance_id),
            state: ArcSwap::from_pointee(state),
            health: Arc::new(Health::default()),
            stop,
            background,
            reloading: tokio::sync::Mutex::new(()),
            loader: std::sync::OnceLock::new(),
        });
        let tasks = &inner.background;
        tasks.spawn(maintain_pools(inner.clone()));
        tasks.spawn(check_backends(inner.clone()));
        tasks.spawn(check_readers(inner.clone()));
        tasks.spawn(metrics_upkeep(inner.stop.clone()));
        Ok(Server {
            inner,
            admin,
            endpoints,
        })
    }

    /// Each `[[endpoints]]` listener's name and address.
    pub fn endpoint_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.endpoints
            .iter()
            .filter_map(|(name, l)| Some(((*name).to_owned(), l.local_addr().ok()?)))
            .collect()
    }

    /// The cancel keys in use.
    pub fn cancels(&self) -> Arc<Registry> {
        self.inner.cancels.clone()
    }

    /// The admin endpoint's address, when `[metrics]` is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// A handle that reloads this server's configuration.
    pub fn reloader(&self) -> Reloader {
        Reloader(self.inner.clone())
    }

    /// Serves clients from `listener` (the `default` endpoint) and the `[[endpoints]]`
    /// listeners until `shutdown` completes, then closes every session and stops the
    /// background work.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        let Server {
            inner,
            admin,
            endpoints,
        } = self;
        if let Some(admin) = admin {
            if let Ok(addr) = admin.local_addr() {
                tracing::info!(%addr, "metrics and health endpoint listening");
            }
            let current = inner.clone();
            inner.background.spawn(crate::admin::serve(
                admin,
                move || current.state.load_full(),
                inner.health.clone(),
                inner.stop.clone(),
            ));
        }
        let (max_clients, shutdown_timeout) = {
            let state = inner.state.load();
            (state.config.max_clients, state.config.shutdown_timeout)
        };
        let accepting = accept::Accepting {
            inner: inner.clone(),
            life: Lifecycle {
                drain: inner.stop.child_token(),
                stop: inner.stop.clone(),
            },
            sessions: TaskTracker::new(),
            permits: Arc::new(Semaphore::new(max_clients)),
            closing: CancellationToken::new(),
        };
        let loops = TaskTracker::new();
        let all = std::iter::once((DEFAULT_ENDPOINT, listener)).chain(endpoints);
        for (endpoint, listener) in all {
            loops.spawn(accepting.clone().run(endpoint, listener));
        }
        loops.close();
        inner.health.set_serving(true);
        shutdown.await;
        accepting.closing.cancel();
        loops.wait().await;
        inner.health.set_serving(false);
        let accept::Accepting {
            life,
            sessions: tasks,
            permits,
            ..
        } = accepting;
        let sessions = max_clients - permits.available_permits();
        tracing::info!(
            sessions,
            timeout_s = shutdown_timeout.as_secs(),
            "pgvalet stopping: no new connections; idle clients are told, transactions may finish"
        );
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
        inner.stop.cancel();
        tasks.wait().await;
        inner.background.close();
        inner.background.wait().await;
        tracing::info!("pgvalet stopped");
    }
}

fn spawn_refreshers(state: &State, tasks: &TaskTracker, stop: &CancellationToken) {
    let refreshers = state.refreshers.clone();
    let stop = stop.clone();
    // Either token ends them: the server stopping, or a reload replacing these caches.
    tasks.spawn(async move {
        tokio::select! {
            () = stop.cancelled() => refreshers.cancel(),
            () = refreshers.cancelled() => {}
        }
    });
    state.credentials.spawn_refreshers(tasks, &state.refreshers);
}

/// Runs the housekeeping of the pools in force once a second until the server stops.
async fn maintain_pools(inner: Arc<Inner>) {
    loop {
        let pools = inner.state.load().pools.clone();
        for pool in pools.all() {
            pool.maintain().await;
        }
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Checks the readers in force, each every `check_interval`, until the server stops.
async fn check_readers(inner: Arc<Inner>) {
    loop {
        let state = inner.state.load_full();
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = state.readers.check_due(&state.config, &state.targets) => {}
        }
        drop(state);
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(crate::readers::CHECK_TICK) => {}
        }
    }
}

/// Keeps the metrics' histogram samples from piling up between scrapes.
async fn metrics_upkeep(stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => crate::metrics::upkeep(),
        }
    }
}

/// Checks the backends' reachability for `/readyz` every [`crate::admin::CHECK_EVERY`].
async fn check_backends(inner: Arc<Inner>) {
    loop {
        let state = inner.state.load_full();
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = inner.health.check_backends(&state) => {}
        }
        drop(state);
        tokio::select! {
            () = inner.stop.cancelled() => return,
            () = tokio::time::sleep(crate::admin::CHECK_EVERY) => {}
        }
    }
}
