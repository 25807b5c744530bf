//! Where a session's backend connection comes from. On a read/write endpoint: the route's
//! backend. On a read-only endpoint: the reader in rotation with the fewest sessions, the next
//! one if a login to it fails (which takes it out of the rotation), and when none is left the
//! route's backend itself, with `default_transaction_read_only` on so that a write gets
//! Postgres' own 25006.

use std::sync::Arc;

use crate::backend::{ClientSettings, Target};
use crate::config::{EndpointRole, RouteConfig};
use crate::pool::{Pool, PoolError, Pooled};
use crate::readers::Lease;
use crate::server::State;

/// A session's backend connection, the pool it came from, and its place on a reader.
pub(super) struct Placed {
    pub pool: Arc<Pool>,
    pub backend: Pooled,
    /// Held for the session's life when it runs on a reader.
    pub lease: Option<Lease>,
}

/// Borrows the session's first backend connection as `endpoint`'s role says; `settings` gains
/// `default_transaction_read_only` when a read-only session falls back to the writer.
pub(super) async fn place(
    state: &State,
    endpoint: &'static str,
    route: &RouteConfig,
    writer: &Arc<Target>,
    database: &str,
    settings: &mut ClientSettings,
) -> Result<Placed, PoolError> {
    if state.role_of(endpoint) == EndpointRole::ReadOnly {
        let names = state
            .config
            .backends
            .get(&route.backend)
            .map(|b| b.readers.as_slice())
            .unwrap_or_default();
        let mut tried = Vec::new();
        while let Some(lease) = state.readers.choose(names, &tried) {
            let name = lease.reader().name().to_owned();
            let Some(target) = state.targets.on(route, &name) else {
                tried.push(name);
                continue;
            };
            let pool = state.pools.get(route, target, database);
            match pool.borrow(settings).await {
                Ok(backend) => {
                    return Ok(Placed {
                        pool,
                        backend,
                        lease: Some(lease),
                    });
                }
                // Busy, not broken: the session waits its turn here as on any pool.
                Err(PoolError::Timeout) => return Err(PoolError::Timeout),
                Err(e) => {
                    lease.reader().mark_down(&format!("login failed: {e}"));
                    tried.push(name);
                }
            }
        }
        settings.set("default_transaction_read_only", "on");
        crate::metrics::read_only_fallback(endpoint, &route.name);
        tracing::warn!(
            endpoint, route = %route.name, backend = %route.backend,
            "no reader in rotation; the session runs on the backend, read-only"
        );
    }
    let pool = state.pools.get(route, writer, database);
    let backend = pool.borrow(settings).await?;
    Ok(Placed {
        pool,
        backend,
        lease: None,
    })
}
