//! Making a new backend connection for a pool: log in with the route's credentials, and carry
//! on through a rotation window when the backend refuses them.

use std::sync::Arc;

use crate::backend::{self, Connection, Target};
use crate::credentials::{Credentials, Store};
use crate::error::BackendError;

/// What a new backend connection is for.
pub struct Login<'a> {
    pub target: Arc<Target>,
    /// Name of the route's `[credentials.…]` table.
    pub credentials: &'a str,
    /// Connect where the secret says (`host`, `port`) rather than to `target`'s address.
    pub use_secret_address: bool,
    pub database: &'a str,
}

/// Logs in with the credentials the cache offers. When the backend refuses them (SQLSTATE
/// 28P01: a rotation is under way), it tries the cache's other candidates — the freshly read
/// current version, then pending, then previous — each at most once.
pub async fn login_through_rotation(
    store: &Store,
    request: Login<'_>,
) -> Result<Connection, BackendError> {
    let cache = store
        .get(request.credentials)
        .ok_or_else(|| BackendError::Protocol {
            backend: request.target.name.clone(),
            what: format!("no [credentials.{}] table", request.credentials),
        })?;
    let mut attempt = cache.login().await?;
    let mut refused: Vec<Credentials> = Vec::new();
    loop {
        let target = match (&attempt.host, request.use_secret_address) {
            (Some(host), true) => Arc::new(request.target.at(host, attempt.port)?),
            _ => request.target.clone(),
        };
        let login = backend::Request {
            credentials_name: request.credentials,
            credentials: &attempt,
            database: request.database,
        };
        match backend::connect(target, &login).await {
            Ok(connection) => {
                cache.accepted(&attempt);
                return Ok(connection);
            }
            Err(e) if e.is_auth_failure() => {
                tracing::info!(
                    credentials = request.credentials, user = %attempt.username, error = %e,
                    "backend refused the credentials; trying the secret's other versions"
                );
                refused.push(attempt);
                match cache.candidates(&refused).await.into_iter().next() {
                    Some(next) => attempt = next,
                    None => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
}
