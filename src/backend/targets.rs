//! The backends of one configuration, ready to connect to: a [`Target`] per `[backends.…]`
//! table, and one more for each route that presents a client certificate of its own (the
//! certificate's CN is the database user, so routes of one backend may need different ones).

use std::collections::HashMap;
use std::sync::Arc;

use super::Target;
use crate::config::{Config, RouteConfig};
use crate::error::ConfigError;
use crate::tls::backend::{ClientCert, ClientCertFiles};

#[derive(Debug, Default)]
pub struct Targets {
    backends: HashMap<String, Arc<Target>>,
    /// By route name: routes with their own `client_cert`.
    routes: HashMap<String, Arc<Target>>,
}

impl Targets {
    /// Loads every backend's TLS settings and client certificates. A route without credentials
    /// logs in as its certificate's CN, so that certificate must have one.
    pub fn build(config: &Config) -> Result<Targets, ConfigError> {
        let mut backends = HashMap::new();
        for (name, backend) in &config.backends {
            let files = match (&backend.client_cert, &backend.client_key) {
                (Some(cert), Some(key)) => Some(ClientCertFiles {
                    owner: format!("backends.{name}"),
                    cert,
                    key,
                }),
                _ => None,
            };
            backends.insert(
                name.clone(),
                Arc::new(Target::from_config(name, backend, files)?),
            );
        }
        let mut routes = HashMap::new();
        for (i, route) in config.routes.iter().enumerate() {
            let (Some(cert), Some(key), Some(backend)) = (
                &route.client_cert,
                &route.client_key,
                config.backends.get(&route.backend),
            ) else {
                continue;
            };
            let files = ClientCertFiles {
                owner: format!("routes[{i}]"),
                cert,
                key,
            };
            routes.insert(
                route.name.clone(),
                Arc::new(Target::from_config(&route.backend, backend, Some(files))?),
            );
        }
        let targets = Targets { backends, routes };
        for (i, route) in config.routes.iter().enumerate() {
            if route.credentials.is_some() {
                continue;
            }
            let cert = targets
                .for_route(route)
                .and_then(|t| t.client_cert.as_ref());
            if let Some(cert) = cert.filter(|c| c.cn.is_none()) {
                return Err(ConfigError::File {
                    key: cert.key.clone(),
                    path: cert.path.clone(),
                    message: format!(
                        "has no subject CN, and routes[{i}] (\"{}\") has no credentials: the CN is the user it logs in as",
                        route.name
                    ),
                });
            }
        }
        Ok(targets)
    }

    /// Where `route` connects to, with the client certificate it presents.
    pub fn for_route(&self, route: &RouteConfig) -> Option<&Arc<Target>> {
        self.routes
            .get(&route.name)
            .or_else(|| self.backends.get(&route.backend))
    }

    /// The backend of the `[backends.NAME]` table, as its own table says (a reader, say).
    pub fn backend(&self, name: &str) -> Option<&Arc<Target>> {
        self.backends.get(name)
    }

    /// Every client certificate loaded, each once, in key order.
    pub fn client_certs(&self) -> Vec<&ClientCert> {
        let mut certs: Vec<&ClientCert> = self
            .backends
            .values()
            .chain(self.routes.values())
            .filter_map(|t| t.client_cert.as_ref())
            .collect();
        certs.sort_by(|a, b| a.key.cmp(&b.key));
        certs
    }
}
