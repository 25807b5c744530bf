//! The admin endpoint on `metrics.addr`: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (pgvalet can serve: listening, configuration and every credentials
//! entry loaded, every backend reachable at the last check). Also the backend reachability
//! checks behind `/readyz`, and the client `pgvalet health` uses.
//!
//! The HTTP here is the least a scraper and a load balancer need: one GET per connection,
//! a head of at most 8 KiB read within 5 s, `Connection: close`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics;
use crate::server::State;

/// How often each backend is checked for `/readyz`.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
const MAX_REQUEST_HEAD: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests answered at once; a connection beyond them is closed at accept.
const MAX_REQUESTS: usize = 32;

/// What `/readyz` knows beyond the configuration: whether the client listener is serving, and
/// the last reachability check of each backend.
#[derive(Default)]
pub struct Health {
    serving: AtomicBool,
    /// Backend name → `None` when reachable, or why not. Empty until the first round.
    backends: Mutex<Option<BTreeMap<String, Option<String>>>>,
    /// Pools that had gauges at the last scrape, so a pool that went away reads 0.
    exported_pools: Mutex<BTreeSet<(String, String, String)>>,
}

impl Health {
    pub fn set_serving(&self, serving: bool) {
        self.serving.store(serving, Ordering::Relaxed);
    }

    /// Why pgvalet is not ready, or nothing when it is.
    pub fn not_ready(&self, state: &State) -> Vec<String> {
        let mut why = Vec::new();
        if !self.serving.load(Ordering::Relaxed) {
            why.push("not accepting clients (starting or stopping)".to_owned());
        }
        for (name, cache) in state.credentials.caches() {
            if cache.cached().is_none() {
                why.push(format!(
                    "credentials.{name} not loaded from {}",
                    cache.location()
                ));
            }
        }
        match &*lock(&self.backends) {
            None => why.push("backends not checked yet".to_owned()),
            Some(checked) => {
                for (name, problem) in checked {
                    if let Some(problem) = problem {
                        why.push(format!("backends.{name} unreachable: {problem}"));
                    }
                }
            }
        }
        why
    }

    /// Checks every backend the routes use once (a TCP connect: Postgres does not log a
    /// connection that closes before sending anything) and records the results.
    pub async fn check_backends(&self, state: &State) {
        let mut results = BTreeMap::new();
        for (name, addr, timeout) in backend_addresses(state) {
            let result = match tokio::time::timeout(timeout, TcpStream::connect(&addr)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("{addr}: {e}")),
                Err(_) => Some(format!("{addr}: no answer within {}s", timeout.as_secs())),
            };
            gauge_reachable(&name, result.is_none());
            if let Some(problem) = &result {
                tracing::warn!(backend = %name, problem, "backend unreachable");
            }
            // One name may stand for several addresses (secrets naming their own host): any
            // unreachable one makes the backend unreachable.
            let entry = results.entry(name).or_insert(None);
            if entry.is_none() {
                *entry = result;
            }
        }
        *lock(&self.backends) = Some(results);
    }
}

fn gauge_reachable(backend: &str, up: bool) {
    ::metrics::gauge!(metrics::BACKEND_REACHABLE, "backend" => backend.to_owned()).set(if up {
        1.0
    } else {
        0.0
    });
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The addresses to check: each route's backend, or the address its secret names when the
/// route has `use_secret_address`.
fn backend_addresses(state: &State) -> BTreeSet<(String, String, Duration)> {
    let mut out = BTreeSet::new();
    for route in &state.config.routes {
        let Some(target) = state.targets.for_route(route) else {
            continue;
        };
        let secret_addr = route
            .use_secret_address
            .then(|| state.credentials.get(route.credentials.as_deref()?))
            .flatten()
            .and_then(|cache| cache.cached())
            .and_then(|c| c.host.map(|h| (h, c.port.unwrap_or(target.port))));
        let addr = match secret_addr {
            Some((host, port)) if host.contains(':') => format!("[{host}]:{port}"),
            Some((host, port)) => format!("{host}:{port}"),
            None => target.addr(),
        };
        out.insert((route.backend.clone(), addr, target.connect_timeout));
    }
    out
}

/// Sets the gauges that mirror state owned elsewhere, then renders every metric.
fn render(state: &State, health: &Health) -> String {
    let now = crate::tls::unix_now();
    for (which, not_after) in &state.expiry {
        ::metrics::gauge!(metrics::CERT_EXPIRY, "certificate" => which.clone())
            .set((not_after - now) as f64);
    }
    for (name, cache) in state.credentials.caches() {
        if let Some(age) = cache.age() {
            ::metrics::gauge!(metrics::SECRET_AGE, "credentials" => name.clone())
                .set(age.as_secs_f64());
        }
    }
    let mut exported = lock(&health.exported_pools);
    let mut now_exported = BTreeSet::new();
    for pool in state.pools.all() {
        let key = (
            pool.route().to_owned(),
            pool.database().to_owned(),
            pool.backend(),
        );
        let stats = pool.stats();
        set_pool_gauges(&key, stats.idle, stats.active, stats.waiting);
        now_exported.insert(key);
    }
    for gone in exported.difference(&now_exported) {
        set_pool_gauges(gone, 0, 0, 0);
    }
    *exported = now_exported;
    drop(exported);
    let handle = metrics::install();
    handle.run_upkeep();
    handle.render()
}

fn set_pool_gauges(
    (route, database, backend): &(String, String, String),
    idle: usize,
    active: usize,
    waiting: usize,
) {
    for (state, n) in [("idle", idle), ("active", active)] {
        ::metrics::gauge!(metrics::POOL_CONNECTIONS, "route" => route.clone(), "database" => database.clone(), "backend" => backend.clone(), "state" => state)
            .set(n as f64);
    }
    ::metrics::gauge!(metrics::POOL_WAITERS, "route" => route.clone(), "database" => database.clone(), "backend" => backend.clone())
        .set(waiting as f64);
}

/// Serves the admin endpoint until `stop`. `state` gives the configuration in force now.
pub async fn serve(
    listener: TcpListener,
    state: impl Fn() -> Arc<State> + Send + Sync + 'static,
    health: Arc<Health>,
    stop: CancellationToken,
) {
    let state = Arc::new(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_REQUESTS));
    loop {
        let (tcp, _) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = crate::net::accept(&listener, "metrics") => accepted,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (state, health) = (state.clone(), health.clone());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(tcp, &*state, &health)).await;
            drop(slot);
        });
    }
}

async fn answer(
    mut tcp: TcpStream,
    state: &(impl Fn() -> Arc<State> + ?Sized),
    health: &Health,
) -> std::io::Result<()> {
    let Some(path) = read_request(&mut tcp).await? else {
        return respond(&mut tcp, "400 Bad Request", "text/plain", "bad request\n").await;
    };
    match path.as_str() {
        "/metrics" => {
            let body = render(&state(), health);
            respond(&mut tcp, "200 OK", "text/plain; version=0.0.4", &body).await
        }
        "/healthz" => respond(&mut tcp, "200 OK", "text/plain", "ok\n").await,
        "/readyz" => {
            let why = health.not_ready(&state());
            if why.is_empty() {
                respond(&mut tcp, "200 OK", "text/plain", "ready\n").await
            } else {
                let body = format!("not ready: {}\n", why.join("; "));
                respond(&mut tcp, "503 Service Unavailable", "text/plain", &body).await
            }
        }
        _ => respond(&mut tcp, "404 Not Found", "text/plain", "not found\n").await,
    }
}

/// Reads a request head and returns the path of a GET, without its query string; anything
/// else is answered 400.
async fn read_request(tcp: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_REQUEST_HEAD {
            return Ok(None);
        }
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = std::str::from_utf8(line).unwrap_or_default().split(' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(target), Some(version)) if version.starts_with("HTTP/1.") => Ok(Some(
            target.split('?').next().unwrap_or_default().to_owned(),
        )),
        _ => Ok(None),
    }
}

async fn respond(
    tcp: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    tcp.shutdown().await
}

/// `pgvalet health`: asks `/readyz` at `addr`. `Ok` with the body when ready, `Err` with the
/// reason otherwise.
pub async fn ask_ready(mut addr: SocketAddr) -> Result<String, String> {
    // Listening on every address (a container's 0.0.0.0:9930): ask over loopback.
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let ask = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: pgvalet\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(String::from_utf8_lossy(&reply).into_owned())
    };
    let reply = tokio::time::timeout(REQUEST_TIMEOUT, ask)
        .await
        .map_err(|_| format!("{addr}: no answer within {}s", REQUEST_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let body = reply
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_owned();
    if reply.starts_with("HTTP/1.1 200") {
        Ok(body)
    } else if body.is_empty() {
        Err(format!("{addr}: unexpected answer"))
    } else {
        Err(body)
    }
}
