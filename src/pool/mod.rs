//! Where sessions get their backend connections. Today every session gets a connection of its
//! own ([`Direct`]); pools plug in behind the same [`BackendConnector`] trait.

use std::sync::Arc;

use crate::backend::{self, Connection, Target};
use crate::credentials::{BoxFuture, Store};
use crate::error::BackendError;

/// What a session needs a backend connection for.
pub struct Checkout<'a> {
    pub target: Arc<Target>,
    /// Name of the route's `[credentials.…]` table.
    pub credentials: &'a str,
    pub database: &'a str,
    /// The client's startup parameters.
    pub params: &'a [(String, String)],
}

/// Hands out logged-in backend connections.
pub trait BackendConnector: Send + Sync {
    fn checkout<'a>(
        &'a self,
        request: Checkout<'a>,
    ) -> BoxFuture<'a, Result<Connection, BackendError>>;
}

/// One fresh backend connection per checkout, logged in with the route's current credentials.
pub struct Direct {
    credentials: Arc<Store>,
}

impl Direct {
    pub fn new(credentials: Arc<Store>) -> Direct {
        Direct { credentials }
    }
}

impl BackendConnector for Direct {
    fn checkout<'a>(
        &'a self,
        request: Checkout<'a>,
    ) -> BoxFuture<'a, Result<Connection, BackendError>> {
        Box::pin(async move {
            let credentials = self.credentials.get(request.credentials).await?;
            let login = backend::Request {
                credentials_name: request.credentials,
                credentials: &credentials,
                database: request.database,
                params: request.params,
            };
            backend::connect(request.target, &login).await
        })
    }
}
