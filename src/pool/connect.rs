//! Making a new backend connection for a pool: log in with the route's credentials, and carry
//! on through a rotation window when the backend refuses them; or, for a route without
//! credentials, as its client certificate's CN.

use std::sync::Arc;

use crate::backend::{self, Connection, Target};
use crate::credentials::{Credentials, Secret, Store};
use crate::error::BackendError;

/// What a new backend connection is for.
pub struct Login<'a> {
    pub target: Arc<Target>,
    /// Name of the route's `[credentials.…]` table; `None` when the target's client
    /// certificate is the whole login.
    pub credentials: Option<&'a str>,
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
    let Some(credentials) = request.credentials else {
        return certificate_login(request).await;
    };
    let cache = store
        .get(credentials)
        .ok_or_else(|| BackendError::Protocol {
            backend: request.target.name.clone(),
            what: format!("no [credentials.{credentials}] table"),
        })?;
    let mut attempt = cache.login().await?;
    let mut refused: Vec<Credentials> = Vec::new();
    loop {
        let target = match (&attempt.host, request.use_secret_address) {
            (Some(host), true) => Arc::new(request.target.at(host, attempt.port)?),
            _ => request.target.clone(),
        };
        let login = backend::Request {
            credentials_name: Some(credentials),
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
                    credentials, user = %attempt.username, error = %e,
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

/// Logs in as the client certificate's CN, with no password: the backend's pg_hba.conf says
/// `cert` for it.
async fn certificate_login(request: Login<'_>) -> Result<Connection, BackendError> {
    let target = request.target;
    let Some(user) = target.client_cert.as_ref().and_then(|c| c.cn.clone()) else {
        return Err(BackendError::NoLogin {
            backend: target.name.clone(),
            what: "the route has no credentials and no client certificate with a CN".into(),
        });
    };
    let credentials = Credentials {
        username: user,
        password: Secret::new(String::new()),
        host: None,
        port: None,
        dbname: None,
    };
    let login = backend::Request {
        credentials_name: None,
        credentials: &credentials,
        database: request.database,
    };
    backend::connect(target, &login).await
}
