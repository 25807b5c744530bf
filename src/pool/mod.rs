//! Backend connection pools, one per (route, database). A pool hands out logged-in
//! connections, takes them back clean (reset in session mode) or discards them, retires them by
//! age and idleness, checks a connection that sat idle before reusing it, and keeps `min_idle`
//! warm.
//!
//! Slots: a FIFO semaphore of permits, one per connection the pool may have, counts connections
//! checked out or being made; idle connections hold none, so in use + idle never exceeds the
//! pool's size, waiting clients are served first come first served, and a connection that is
//! dropped anywhere (client gone mid-query, backend crash) gives its slot back through the permit
//! it carries.
//!
//! Size: a route's fixed `max_size`, or a share of the backend's connection slots. In the second
//! case the pool starts with one permit; its first connection reads the backend's
//! `max_connections` (less the superuser reserve) and the pool grows to its share.

mod connect;
mod dns;

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::backend::{ClientSettings, Connection, Target};
use crate::config::{PoolMode, PoolSize, RouteConfig};
use crate::credentials::Store;
use crate::error::{BackendError, ClientError};

pub use connect::{Login, login_through_rotation};

/// A connection idle longer than this is checked with an empty query before it is handed out.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(30);
/// Prepared statements pgvalet lets pile up on one connection (transaction mode) before it
/// deallocates them all.
const MAX_PREPARED_PER_CONNECTION: usize = 1000;
/// How long the check (and a reset) may take.
const HOUSEKEEPING_TIMEOUT: Duration = Duration::from_secs(5);
/// The connection slots a backend has for ordinary users.
const BACKEND_SLOTS: &str = "SELECT current_setting('max_connections')::int \
    - current_setting('superuser_reserved_connections')::int \
    - coalesce(current_setting('reserved_connections', true)::int, 0)";

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("timed out waiting to acquire a database connection")]
    Timeout,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl ClientError for PoolError {
    fn sqlstate(&self) -> Option<&str> {
        match self {
            PoolError::Timeout => Some("53300"),
            PoolError::Backend(e) => e.sqlstate(),
        }
    }
    fn client_message(&self) -> String {
        match self {
            PoolError::Timeout => self.to_string(),
            PoolError::Backend(e) => e.client_message(),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            PoolError::Timeout => "pool_timeout",
            PoolError::Backend(e) => e.kind(),
        }
    }
}

/// A pool's counts, for tests, logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub idle: usize,
    /// Checked out, or being made.
    pub active: usize,
    pub waiting: usize,
}

struct Idle {
    conn: Box<Connection>,
    born: Instant,
    since: Instant,
}

/// The settings a pool takes from its route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: PoolMode,
    pub size: PoolSize,
    pub min_idle: usize,
    pub borrow_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub reset_query: String,
    /// The share of the pool's size kept open while idle.
    pub idle_percent: u8,
    /// Run on each new connection, and again after each reset.
    pub init_query: String,
}

impl Settings {
    pub fn from_route(route: &RouteConfig) -> Settings {
        Settings {
            mode: route.pool_mode,
            size: route.pool_size(),
            min_idle: route.min_idle,
            borrow_timeout: route.borrow_timeout,
            idle_timeout: route.idle_timeout,
            max_lifetime: route.max_lifetime,
            reset_query: route.reset_query.clone(),
            idle_percent: route.idle_percent(),
            init_query: route.init_query.clone(),
        }
    }
}

pub struct Pool {
    name: String,
    route: String,
    settings: Settings,
    /// Swapped by a reload that rebuilt the backend (a renewed CA) but kept the pool.
    target: arc_swap::ArcSwap<Target>,
    credentials: Option<String>,
    use_secret_address: bool,
    database: String,
    store: Arc<Store>,
    slots: Arc<Semaphore>,
    /// The permits `slots` was given: the pool's size.
    limit: AtomicUsize,
    /// A share-of-the-backend pool has read the backend's slots and grown to its size.
    sized: AtomicBool,
    /// What the idle share is a share of: the backend's connection slots once read (for a
    /// share-sized pool), else the pool's size.
    idle_base: AtomicUsize,
    idle: Mutex<Vec<Idle>>,
    /// Where the backend's host name points, as far as the pool knows.
    dns: Mutex<dns::Dns>,
    waiting: AtomicUsize,
    pins: AtomicUsize,
    borrow_wait: metrics::Histogram,
}

impl Pool {
    /// Sessions pinned to their backend connection so far (transaction mode).
    pub fn pins(&self) -> usize {
        self.pins.load(Ordering::Relaxed)
    }

    /// Counts a session pinned for `reason`, here and in `pgvalet_pins_total`.
    pub fn count_pin(&self, reason: &'static str) {
        self.pins.fetch_add(1, Ordering::Relaxed);
        crate::metrics::pin(&self.route, reason);
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn route(&self) -> &str {
        &self.route
    }

    /// The backend this pool's connections go to (the route's, or one of its readers).
    pub fn backend(&self) -> String {
        self.target.load().name.clone()
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    pub fn mode(&self) -> PoolMode {
        self.settings.mode
    }

    /// The most connections the pool may have (1 until a share-of-the-backend pool has read the
    /// backend's slots).
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Idle>> {
        // Critical sections are single pushes, pops and retains.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> Stats {
        Stats {
            idle: self.idle().len(),
            active: self.limit() - self.slots.available_permits(),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// A logged-in connection: an idle one (checked if it sat long), or a new one. Waits up to
    /// `borrow_timeout` for a slot, in arrival order.
    pub async fn borrow(self: &Arc<Self>, settings: &ClientSettings) -> Result<Pooled, PoolError> {
        let started = Instant::now();
        let borrowed = self.borrow_inner(settings).await;
        self.borrow_wait.record(started.elapsed().as_secs_f64());
        borrowed
    }

    async fn borrow_inner(
        self: &Arc<Self>,
        settings: &ClientSettings,
    ) -> Result<Pooled, PoolError> {
        // A free slot is taken at once (it cannot be one a waiter is owed: the semaphore
        // hands released permits to its queue first); otherwise wait in line, with a timer.
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let permit = tokio::time::timeout(
                    self.settings.borrow_timeout,
                    self.slots.clone().acquire_owned(),
                )
                .await;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                match permit {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed; a timeout is the only way out.
                    _ => return Err(PoolError::Timeout),
                }
            }
        };
        loop {
            let candidate = self.idle().pop();
            let Some(mut idle) = candidate else { break };
            let now = Instant::now();
            if self.expired(&idle, now) || self.retire_if_moved(&idle.conn, "idle") {
                continue;
            }
            if idle.conn.stream.has_unread_input().await || !idle.conn.pending.is_empty() {
                tracing::info!(pool = %self.name, "an idle backend connection was closed or spoke unasked; discarded");
                continue;
            }
            if now.duration_since(idle.since) >= CHECK_AFTER_IDLE {
                let check =
                    tokio::time::timeout(HOUSEKEEPING_TIMEOUT, idle.conn.simple_query("")).await;
                if !matches!(check, Ok(Ok(()))) {
                    tracing::info!(pool = %self.name, "an idle backend connection failed its check; discarded");
                    continue;
                }
            }
            let applied = idle.conn.applied == *settings
                || matches!(
                    tokio::time::timeout(HOUSEKEEPING_TIMEOUT, idle.conn.apply_settings(settings))
                        .await,
                    Ok(Ok(()))
                );
            if !applied {
                tracing::info!(pool = %self.name, "could not apply a client's settings to an idle connection; discarded");
                continue;
            }
            return Ok(Pooled {
                dirty: false,
                conn: idle.conn,
                born: idle.born,
                pool: self.clone(),
                _permit: permit,
            });
        }
        // Boxed: a login (TCP, TLS, SCRAM) is a large future, and the borrow is part of every
        // session task (a transaction-mode session borrows in its relay), which is as large as
        // its largest state for its whole life, idle or not.
        let mut conn = Box::pin(self.connect()).await?;
        conn.apply_settings(settings).await?;
        Ok(Pooled {
            dirty: false,
            conn,
            born: Instant::now(),
            pool: self.clone(),
            _permit: permit,
        })
    }

    async fn connect(&self) -> Result<Box<Connection>, BackendError> {
        let login = Login {
            target: self.target.load_full(),
            credentials: self.credentials.as_deref(),
            use_secret_address: self.use_secret_address,
            database: &self.database,
        };
        let target = login.target.name.clone();
        let mut conn = login_through_rotation(&self.store, login).await;
        crate::metrics::backend_connect(&target, conn.is_ok());
        if let (Ok(conn), PoolSize::Percent(percent)) = (&mut conn, self.settings.size)
            && !self.sized.swap(true, Ordering::AcqRel)
        {
            self.grow_to_share(conn, percent).await;
        }
        let mut conn = conn?;
        self.learn_address(&conn);
        self.run_init_query(&mut conn).await?;
        Ok(Box::new(conn))
    }

    /// Runs the route's `init_query`, if it has one.
    async fn run_init_query(&self, conn: &mut Connection) -> Result<(), BackendError> {
        if self.settings.init_query.is_empty() {
            return Ok(());
        }
        let ran = tokio::time::timeout(
            HOUSEKEEPING_TIMEOUT,
            conn.simple_query(&self.settings.init_query),
        )
        .await;
        match ran {
            Ok(result) => result,
            Err(_) => Err(BackendError::Protocol {
                backend: conn.target.name.clone(),
                what: format!("init_query took longer than {HOUSEKEEPING_TIMEOUT:?}"),
            }),
        }
        .map_err(|e| {
            tracing::warn!(pool = %self.name, error = %e, "init_query failed; connection closed");
            e
        })
    }

    /// Reads the backend's connection slots on `conn` and grows the pool to `percent` of them.
    /// On failure the next new connection tries again.
    async fn grow_to_share(&self, conn: &mut Connection, percent: u8) {
        let read =
            tokio::time::timeout(HOUSEKEEPING_TIMEOUT, conn.query_value(BACKEND_SLOTS)).await;
        let slots = match read {
            Ok(Ok(Some(value))) => value.parse::<usize>().ok(),
            _ => None,
        };
        let Some(slots) = slots else {
            tracing::warn!(pool = %self.name, "could not read the backend's max_connections; the pool stays at one connection until it can");
            self.sized.store(false, Ordering::Release);
            return;
        };
        let size = (slots * usize::from(percent) / 100).max(1);
        self.idle_base.store(slots, Ordering::Relaxed);
        self.slots.add_permits(size.saturating_sub(self.limit()));
        self.limit.store(size.max(self.limit()), Ordering::Relaxed);
        tracing::info!(
            pool = %self.name, backend_slots = slots, percent, size,
            "pool sized from the backend's max_connections"
        );
    }

    fn expired(&self, idle: &Idle, now: Instant) -> bool {
        now.duration_since(idle.born) >= self.settings.max_lifetime
            || now.duration_since(idle.since) >= self.settings.idle_timeout
    }

    /// Closes idle connections past their idle time or lifetime (keeping `min_idle` of those
    /// merely idle) or to an address the backend's host name no longer gives (resolved again
    /// when it is due), then opens connections up to `min_idle`.
    pub async fn maintain(self: &Arc<Self>) {
        self.refresh_address().await;
        {
            // Connections are pushed as they come back, so the list runs from the longest idle
            // to the most recently used; borrowing pops the most recent.
            let settings = &self.settings;
            let mut idle = self.idle();
            idle.retain(|c| {
                c.born.elapsed() < settings.max_lifetime && !self.retire_if_moved(&c.conn, "idle")
            });
            while idle.len() > settings.min_idle
                && idle
                    .first()
                    .is_some_and(|c| c.since.elapsed() >= settings.idle_timeout)
            {
                idle.remove(0);
            }
            // No more idle than the route's share of the pool, longest idle closed first.
            let base = self.idle_base.load(Ordering::Relaxed).max(self.limit());
            let keep = (base * usize::from(settings.idle_percent) / 100)
                .min(self.limit())
                .max(settings.min_idle);
            if idle.len() > keep {
                let surplus = idle.len() - keep;
                idle.drain(..surplus);
            }
        }
        while self.idle().len() < self.settings.min_idle {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else {
                return;
            };
            match self.connect().await {
                Ok(conn) => {
                    let now = Instant::now();
                    self.idle().push(Idle {
                        conn,
                        born: now,
                        since: now,
                    });
                    drop(permit);
                }
                Err(e) => {
                    tracing::warn!(pool = %self.name, error = %e, "could not open a connection for min_idle");
                    return;
                }
            }
        }
    }
}

/// A connection out of its pool. Give it back with [`Pooled::release`]; dropped any other way,
/// it is closed and its slot freed.
pub struct Pooled {
    /// Boxed: a transaction-mode session holds an `Option<Pooled>` for its whole life, most of
    /// it with nothing in it.
    conn: Box<Connection>,
    /// The client left session state on it (transaction mode, pinned): reset before reuse.
    dirty: bool,
    born: Instant,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled {
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Marks the connection as carrying a client's session state: it is reset before it
    /// goes back to the pool, whatever the pool mode.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Returns the connection to its pool if it is at a clean boundary (idle, nothing in
    /// flight) and young enough; in session mode the reset query runs first. Otherwise closes it.
    pub async fn release(self, clean: bool) {
        // The slot (the permit) is held until the connection is back in the pool or closed.
        let Pooled {
            mut conn,
            dirty,
            born,
            pool,
            _permit: permit,
        } = self;
        let now = Instant::now();
        if !clean
            || conn.status != b'I'
            || now.duration_since(born) >= pool.settings.max_lifetime
            || pool.retire_if_moved(&conn, "released")
        {
            return;
        }
        if (pool.settings.mode == PoolMode::Session || dirty)
            && !pool.settings.reset_query.is_empty()
        {
            let reset = tokio::time::timeout(
                HOUSEKEEPING_TIMEOUT,
                conn.simple_query(&pool.settings.reset_query),
            )
            .await;
            if !matches!(reset, Ok(Ok(()))) {
                tracing::info!(pool = %pool.name, "reset failed; connection discarded");
                return;
            }
            // Back at the server's defaults, with no prepared statements.
            conn.applied = ClientSettings::default();
            conn.prepared.clear();
            if pool.run_init_query(&mut conn).await.is_err() {
                return;
            }
        } else if conn.prepared.len() > MAX_PREPARED_PER_CONNECTION {
            // Statements of sessions long gone pile up on a busy connection; drop them all.
            // Live sessions prepare theirs again when they next use them here.
            let dropped =
                tokio::time::timeout(HOUSEKEEPING_TIMEOUT, conn.simple_query("DEALLOCATE ALL"))
                    .await;
            if !matches!(dropped, Ok(Ok(()))) {
                return;
            }
            conn.prepared.clear();
        }
        pool.idle().push(Idle {
            conn,
            born,
            since: now,
        });
        drop(permit);
    }
}

impl Deref for Pooled {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Pooled {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// Every pool, made on first use per (route, database, backend): a route's pools are on its
/// backend, and on the backend's readers for read-only endpoints.
pub struct Pools {
    store: Arc<Store>,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

/// (route, database, backend).
type PoolKey = (String, String, String);

impl Pools {
    pub fn new(store: Arc<Store>) -> Pools {
        Pools {
            store,
            pools: Mutex::new(HashMap::new()),
        }
    }

    fn pools(&self) -> MutexGuard<'_, HashMap<PoolKey, Arc<Pool>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pool of `route` for `database` on `target`: the route's backend, or one of its
    /// readers (named `route/database@reader`, and always at the reader's own address).
    pub fn get(&self, route: &RouteConfig, target: &Arc<Target>, database: &str) -> Arc<Pool> {
        let on_reader = target.name != route.backend;
        let key = (route.name.clone(), database.to_owned(), target.name.clone());
        let initial = match route.pool_size() {
            PoolSize::Fixed(n) => n,
            PoolSize::Percent(_) => 1,
        };
        self.pools()
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Pool {
                    name: if on_reader {
                        format!("{}/{}@{}", route.name, database, target.name)
                    } else {
                        format!("{}/{}", route.name, database)
                    },
                    route: route.name.clone(),
                    settings: Settings::from_route(route),
                    target: arc_swap::ArcSwap::new(target.clone()),
                    credentials: route.credentials.clone(),
                    use_secret_address: route.use_secret_address && !on_reader,
                    database: database.to_owned(),
                    store: self.store.clone(),
                    slots: Arc::new(Semaphore::new(initial)),
                    limit: AtomicUsize::new(initial),
                    sized: AtomicBool::new(false),
                    idle_base: AtomicUsize::new(initial),
                    idle: Mutex::new(Vec::new()),
                    dns: Mutex::default(),
                    waiting: AtomicUsize::new(0),
                    pins: AtomicUsize::new(0),
                    borrow_wait: crate::metrics::borrow_wait(&route.name),
                })
            })
            .clone()
    }

    /// Closes the idle connections of every pool for `database`; returns how many.
    pub fn close_idle(&self, database: &str) -> usize {
        self.pools()
            .values()
            .filter(|p| p.database == database)
            .map(|p| std::mem::take(&mut *p.idle()).len())
            .sum()
    }

    /// Every pool made so far.
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.pools().values().cloned().collect()
    }

    /// Takes over the pools of `old` for which `keep(route, database, backend)` gives the
    /// backend to use from now on; the others stay with the sessions that hold them and close
    /// with them.
    pub fn adopt(&self, old: &Pools, keep: impl Fn(&str, &str, &str) -> Option<Arc<Target>>) {
        let mut pools = self.pools();
        for (key, pool) in old.pools().iter() {
            let (route, database, backend) = key;
            if let Some(target) = keep(route, database, backend) {
                pool.target.store(target);
                pools.insert(key.clone(), pool.clone());
            }
        }
    }
}
