//! The backends of one configuration, ready to connect to: a [`Target`] per `[backends.…]`
//! table, and for each route that presents a client certificate of its own one more per backend
//! it runs on (its backend and that one's readers): the certificate's CN is the database user,
//! so routes of one backend may need different ones.

use std::collections::HashMap;
use std::sync::Arc;

use super::Target;
use crate::config::{Config, RouteConfig};
use crate::error::ConfigError;
use crate::tls::backend::{ClientCert, ClientCertFiles};

#[derive(Debug, Default)]
pub struct Targets {
    backends: HashMap<String, Arc<Target>>,
    /// By (route, backend): routes with their own `client_cert`, on their backend and on each
    /// of its readers.
    routes: HashMap<(String, String), Arc<Target>>,
}

impl Targets {
    /// Loads every backend's TLS settings and client certificates. A route without credentials
    /// logs in as its certificate's CN (on its backend and on the readers), so it needs one.
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
            let (Some(cert), Some(key)) = (&route.client_cert, &route.client_key) else {
                continue;
            };
            for name in served_by(config, route) {
                let Some(backend) = config.backends.get(name) else {
                    continue;
                };
                let files = ClientCertFiles {
                    owner: format!("routes[{i}]"),
                    cert,
                    key,
                };
                routes.insert(
                    (route.name.clone(), name.to_owned()),
                    Arc::new(Target::from_config(name, backend, Some(files))?),
                );
            }
        }
        let targets = Targets { backends, routes };
        for (i, route) in config.routes.iter().enumerate() {
            if route.credentials.is_some() {
                continue;
            }
            for name in served_by(config, route) {
                let cert = targets.on(route, name).and_then(|t| t.client_cert.as_ref());
                let problem = match cert {
                    None => ConfigError::Invalid {
                        path: "-".into(),
                        key: format!("routes[{i}].credentials"),
                        message: format!(
                            "is required: backends.{name}, a reader of backends.{}, has no client_cert to log in with",
                            route.backend
                        ),
                    },
                    Some(cert) if cert.cn.is_none() => ConfigError::File {
                        key: cert.key.clone(),
                        path: cert.path.clone(),
                        message: format!(
                            "has no subject CN, and routes[{i}] (\"{}\") has no credentials: the CN is the user it logs in as",
                            route.name
                        ),
                    },
                    Some(_) => continue,
                };
                return Err(problem);
            }
        }
        Ok(targets)
    }

    /// Where `route` connects to on its own backend, with the client certificate it presents.
    pub fn for_route(&self, route: &RouteConfig) -> Option<&Arc<Target>> {
        self.on(route, &route.backend)
    }

    /// Where `route` connects to on `backend` (its own or one of its readers), with the client
    /// certificate it presents there: the route's own, or else that backend's.
    pub fn on(&self, route: &RouteConfig, backend: &str) -> Option<&Arc<Target>> {
        self.routes
            .get(&(route.name.clone(), backend.to_owned()))
            .or_else(|| self.backends.get(backend))
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
        certs.dedup_by(|a, b| a.key == b.key);
        certs
    }
}

/// The backends a route's sessions may run on: its own, and its readers.
fn served_by<'a>(config: &'a Config, route: &'a RouteConfig) -> Vec<&'a str> {
    let readers = config
        .backends
        .get(&route.backend)
        .map(|b| b.readers.as_slice())
        .unwrap_or_default();
    std::iter::once(route.backend.as_str())
        .chain(readers.iter().map(String::as_str))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Writes a self-signed client certificate with `cn` (if any) as NAME.crt and NAME.key.
    fn cert(dir: &Path, name: &str, cn: Option<&str>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    fn config(dir: &Path, main: &str, route: &str) -> Config {
        let d = |name: &str| dir.join(name).display().to_string();
        let text = format!(
            r#"
listen_addr = "127.0.0.1:6432"
allow_cidrs = ["127.0.0.0/8"]
[tls]
cert = "s.crt"
key = "s.key"
client_ca = "ca.crt"
[backends.main]
host = "127.0.0.1"
tls = "require"
readers = ["replica"]
{main}
[backends.replica]
host = "127.0.0.2"
tls = "require"
[[routes]]
name = "app"
identity = "cn:app"
databases = ["app"]
backend = "main"
{route}
"#
        )
        .replace("DIR/", &format!("{}/", d("")));
        Config::parse(&text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn a_route_presents_its_own_certificate_on_its_backend_and_its_readers() {
        let dir = tempfile::tempdir().unwrap();
        cert(dir.path(), "main", Some("main_user"));
        cert(dir.path(), "route", Some("route_user"));
        cert(dir.path(), "nameless", None);
        let main = "client_cert = \"DIR/main.crt\"\nclient_key = \"DIR/main.key\"";
        let route = "client_cert = \"DIR/route.crt\"\nclient_key = \"DIR/route.key\"";

        let c = config(dir.path(), main, route);
        let targets = Targets::build(&c).unwrap();
        let route_cfg = &c.routes[0];
        for backend in ["main", "replica"] {
            let cert = targets.on(route_cfg, backend).unwrap().client_cert.clone();
            assert_eq!(cert.unwrap().cn.as_deref(), Some("route_user"), "{backend}");
        }
        let keys: Vec<&str> = targets
            .client_certs()
            .iter()
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(keys, ["backends.main.client_cert", "routes[0].client_cert"]);

        // Without credentials or a certificate of its own, the route logs in as the backend's
        // CN; its reader has no certificate, so it could not log in there.
        let err = Targets::build(&config(dir.path(), main, ""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes[0].credentials is required: backends.replica, a reader of backends.main, has no client_cert"),
            "{err}"
        );
        let nameless = "client_cert = \"DIR/nameless.crt\"\nclient_key = \"DIR/nameless.key\"";
        let err = Targets::build(&config(dir.path(), main, nameless))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("routes[0].client_cert") && err.contains("has no subject CN"),
            "{err}"
        );
        // With credentials, a CN is not needed.
        let with_credentials = format!(
            "{nameless}\ncredentials = \"c\"\n[credentials.c]\nsource = \"env\"\nusername_env = \"U\"\npassword_env = \"P\""
        );
        assert!(Targets::build(&config(dir.path(), main, &with_credentials)).is_ok());
    }
}
