//! [`Config::validate`]: what the types cannot check — references between tables, required
//! companions, ambiguity. Every refusal is `(key, message)`.

use std::collections::HashSet;

use super::{
    AuthMode, BackendTls, Config, CredentialsConfig, IamVerify, ProxyProtocol, RouteConfig,
    SourceKind,
};
use crate::authz::Identity;

/// RDS accepts an IAM auth token for 15 minutes after it was signed.
const MAX_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(15 * 60);

impl Config {
    /// Checks what the types cannot: references between tables, required companions, ambiguity.
    /// The error is `(key, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let fail = |key: String, message: String| Err((key, message));
        if self.handshake_timeout.is_zero() {
            return fail("handshake_timeout".into(), "must be longer than 0".into());
        }
        if !self.require_tls {
            return fail(
                "require_tls".into(),
                "is false, but pgvalet always requires TLS from clients (leave it out, or true)"
                    .into(),
            );
        }
        if self.idle_client_timeout.is_zero() {
            return fail("idle_client_timeout".into(), "must be longer than 0".into());
        }
        if self.max_clients == 0 {
            return fail("max_clients".into(), "must be at least 1".into());
        }
        if self.allow_cidrs.is_empty() {
            return fail(
                "allow_cidrs".into(),
                "is empty, so no client could connect; list the networks clients come from".into(),
            );
        }
        if self.proxy_protocol != ProxyProtocol::Off && self.proxy_protocol_trusted.is_empty() {
            return fail(
                "proxy_protocol_trusted".into(),
                "is empty: with proxy_protocol on, name the load balancers' networks, or anyone could claim any address".into(),
            );
        }
        let mut seen = HashSet::from([self.instance_id]);
        for (i, peer) in self.peers.iter().enumerate() {
            if !seen.insert(peer.instance_id) {
                return fail(
                    format!("peers[{i}].instance_id"),
                    format!("{} is this instance's or another peer's", peer.instance_id),
                );
            }
        }
        if let Some(iam) = &self.iam {
            if super::parse_endpoint(&iam.endpoint).is_none() {
                return fail(
                    "iam.endpoint".into(),
                    format!("\"{}\" is not host:port", iam.endpoint),
                );
            }
            if iam.verify == IamVerify::Signature && iam.keys.is_empty() {
                return fail(
                    "iam.keys".into(),
                    "is empty: with verify = \"signature\" list the access keys tokens are signed with (or verify = \"claims\" on a laptop)".into(),
                );
            }
        }
        for (name, backend) in &self.backends {
            let key = |field: &str| format!("backends.{name}.{field}");
            if backend.host.is_empty() {
                return fail(key("host"), "is empty".into());
            }
            if backend.port == 0 {
                return fail(key("port"), "must be 1-65535".into());
            }
            let verifies = matches!(backend.tls, BackendTls::VerifyCa | BackendTls::VerifyFull);
            if verifies && backend.ca.is_none() {
                return fail(
                    key("ca"),
                    format!(
                        "is required with tls = \"{}\": name the PEM bundle that signs the backend's certificate",
                        if backend.tls == BackendTls::VerifyCa {
                            "verify-ca"
                        } else {
                            "verify-full"
                        }
                    ),
                );
            }
            client_cert_pair(&backend.client_cert, &backend.client_key, backend.tls)
                .map_err(|(field, message)| (key(field), message))?;
        }
        for (name, backend) in &self.backends {
            for reader in &backend.readers {
                let key = format!("backends.{name}.readers");
                match self.backends.get(reader) {
                    None => {
                        return fail(key, format!("\"{reader}\" is not a [backends.…] table"));
                    }
                    Some(_) if reader == name => {
                        return fail(key, "names the backend itself".into());
                    }
                    Some(r) if !r.readers.is_empty() => {
                        return fail(
                            key,
                            format!("\"{reader}\" has readers of its own; a reader cannot"),
                        );
                    }
                    Some(_) => {}
                }
            }
            for (key, interval) in [
                ("check_interval", backend.check_interval),
                ("dns_refresh_interval", backend.dns_refresh_interval),
            ] {
                if interval.is_zero() {
                    return fail(
                        format!("backends.{name}.{key}"),
                        "must be longer than 0".into(),
                    );
                }
            }
        }
        for (name, credentials) in &self.credentials {
            credentials
                .validate()
                .map_err(|(field, message)| (format!("credentials.{name}.{field}"), message))?;
        }
        let mut names = HashSet::new();
        let mut claims: HashSet<(Option<&Identity>, &str)> = HashSet::new();
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            if route.name.is_empty() {
                return fail(key("name"), "is empty".into());
            }
            if !names.insert(route.name.as_str()) {
                return fail(key("name"), format!("\"{}\" names two routes", route.name));
            }
            if !self.backends.contains_key(&route.backend) {
                return fail(
                    key("backend"),
                    format!("\"{}\" is not a [backends.…] table", route.backend),
                );
            }
            self.validate_backend_login(route)
                .map_err(|(field, message)| (key(field), message))?;
            if route.databases.is_empty() {
                return fail(
                    key("databases"),
                    "is empty, so the route allows nothing; list databases or write [\"*\"]".into(),
                );
            }
            match (route.max_size, route.max_connections_percent) {
                (Some(0), _) => return fail(key("max_size"), "must be at least 1".into()),
                (Some(_), Some(_)) => {
                    return fail(
                        key("max_connections_percent"),
                        "cannot be set with max_size: give a fixed size or a share of the backend's connections, not both".into(),
                    );
                }
                (None, Some(p)) if !(1..=100).contains(&p) => {
                    return fail(
                        key("max_connections_percent"),
                        format!("is {p}; it must be between 1 and 100"),
                    );
                }
                (Some(max), None) if route.min_idle > max => {
                    return fail(key("min_idle"), format!("is larger than max_size ({max})"));
                }
                _ => {}
            }
            if route.max_idle_connections_percent.is_some_and(|p| p > 100) {
                return fail(
                    key("max_idle_connections_percent"),
                    "must be between 0 and 100".into(),
                );
            }
            if route.borrow_timeout.is_zero() {
                return fail(key("borrow_timeout"), "must be longer than 0".into());
            }
            if route.max_client_conn == Some(0) {
                return fail(
                    key("max_client_conn"),
                    "must be at least 1 (leave it out for no limit)".into(),
                );
            }
            if route.users.as_ref().is_some_and(Vec::is_empty) {
                return fail(key("users"), "is empty, so the route allows nothing".into());
            }
            match (&route.identity, route.auth.needs_cert()) {
                (None, true) => {
                    return fail(
                        key("identity"),
                        format!("is required with auth = \"{}\"", route.auth.as_str()),
                    );
                }
                (Some(_), false) => {
                    return fail(
                        key("identity"),
                        format!(
                            "does not apply to auth = \"{}\"; its clients need no certificate{}",
                            route.auth.as_str(),
                            if route.auth == AuthMode::Password {
                                " (write auth = \"cert+password\" to require both)"
                            } else {
                                ""
                            }
                        ),
                    );
                }
                _ => {}
            }
            if route.auth == AuthMode::Iam && self.iam.is_none() {
                return fail(
                    key("auth"),
                    "is \"iam\", which needs an [iam] table (the endpoint name, region and keys)"
                        .into(),
                );
            }
            // A password route takes its user names for every client, certificate or not, so
            // no other route may claim them.
            for user in route.users() {
                let clash = if route.identity.is_none() {
                    claims.iter().any(|(_, u)| *u == user)
                } else {
                    claims.contains(&(None, user))
                        || claims.contains(&(route.identity.as_ref(), user))
                };
                if clash || !claims.insert((route.identity.as_ref(), user)) {
                    let who = route
                        .identity
                        .as_ref()
                        .map_or("any client".to_owned(), |id| format!("identity {id}"));
                    return fail(
                        key("users"),
                        format!("{who} as user \"{user}\" is already claimed by an earlier route"),
                    );
                }
            }
        }
        self.validate_endpoints()
    }

    /// Every `[[endpoints]]` table: a name of its own and a listener of its own, serving
    /// routes that exist.
    fn validate_endpoints(&self) -> Result<(), (String, String)> {
        let mut names = HashSet::from([super::DEFAULT_ENDPOINT]);
        let mut addrs = HashSet::from([self.listen_addr]);
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let key = |field: &str| format!("endpoints[{i}].{field}");
            if endpoint.name.is_empty() {
                return Err((key("name"), "is empty".into()));
            }
            if !names.insert(endpoint.name.as_str()) {
                return Err((
                    key("name"),
                    format!(
                        "\"{}\" names two endpoints (\"{}\" is listen_addr's)",
                        endpoint.name,
                        super::DEFAULT_ENDPOINT
                    ),
                ));
            }
            // Port 0 (any free port) is for tests, and never clashes.
            if endpoint.listen_addr.port() != 0 && !addrs.insert(endpoint.listen_addr) {
                return Err((
                    key("listen_addr"),
                    format!("{} is already another endpoint's", endpoint.listen_addr),
                ));
            }
            if let Some(iam) = &endpoint.iam_endpoint
                && super::parse_endpoint(iam).is_none()
            {
                return Err((key("iam_endpoint"), format!("\"{iam}\" is not host:port")));
            }
            for route in endpoint.routes.iter().flatten() {
                if !self.routes.iter().any(|r| &r.name == route) {
                    return Err((key("routes"), format!("\"{route}\" is not a route's name")));
                }
            }
        }
        Ok(())
    }
}

/// A client certificate needs its key, and TLS to be presented in.
fn client_cert_pair(
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
    tls: BackendTls,
) -> Result<(), (&'static str, String)> {
    match (cert, key) {
        (Some(_), None) => Err(("client_key", "is required with client_cert".into())),
        (None, Some(_)) => Err(("client_cert", "is required with client_key".into())),
        (Some(_), Some(_)) if tls == BackendTls::Disable => Err((
            "client_cert",
            "needs TLS to the backend, but its tls is \"disable\"".into(),
        )),
        _ => Ok(()),
    }
}

impl Config {
    /// How a route logs in to its backend: with a credentials table, with a client
    /// certificate alone, or both; an IAM token only over TLS. Errors name a route field.
    fn validate_backend_login(&self, route: &RouteConfig) -> Result<(), (&'static str, String)> {
        // validate() checked that the backend exists.
        let Some(backend) = self.backends.get(&route.backend) else {
            return Ok(());
        };
        client_cert_pair(&route.client_cert, &route.client_key, backend.tls)?;
        let has_cert = route.client_cert.is_some() || backend.client_cert.is_some();
        let Some(name) = &route.credentials else {
            if !has_cert {
                return Err((
                    "credentials",
                    format!(
                        "is required: neither the route nor backends.{} has a client_cert to log in with",
                        route.backend
                    ),
                ));
            }
            if route.auth.needs_password() {
                return Err((
                    "credentials",
                    format!(
                        "is required with auth = \"{}\": clients are checked against its password",
                        route.auth.as_str()
                    ),
                ));
            }
            if route.use_secret_address {
                return Err((
                    "use_secret_address",
                    "needs credentials that name an address".into(),
                ));
            }
            return Ok(());
        };
        let Some(credentials) = self.credentials.get(name) else {
            return Err((
                "credentials",
                format!("\"{name}\" is not a [credentials.…] table"),
            ));
        };
        if credentials.source == SourceKind::Iam {
            if backend.tls == BackendTls::Disable {
                return Err((
                    "credentials",
                    format!(
                        "\"{name}\" makes IAM auth tokens, which pgvalet sends only over TLS, but backends.{}.tls is \"disable\"",
                        route.backend
                    ),
                ));
            }
            if route.auth.needs_password() {
                return Err((
                    "credentials",
                    format!(
                        "\"{name}\" makes IAM auth tokens for the backend; auth = \"{}\" would check clients against them. Give this route a password source",
                        route.auth.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl CredentialsConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let kind = self.source.as_str();
        let required: &[&str] = match self.source {
            SourceKind::File => &["path"],
            SourceKind::Env => &["username_env", "password_env"],
            SourceKind::Aws => &["secret_id"],
            SourceKind::Iam => &["username", "endpoint"],
        };
        let present = vec![
            ("path", self.path.is_some()),
            ("username_env", self.username_env.is_some()),
            ("password_env", self.password_env.is_some()),
            ("secret_id", self.secret_id.is_some()),
            ("region", self.region.is_some()),
            ("endpoint_url", self.endpoint_url.is_some()),
            ("username", self.username.is_some()),
            ("endpoint", self.endpoint.is_some()),
            ("token_lifetime", self.token_lifetime.is_some()),
        ];
        let allowed: &[&str] = match self.source {
            SourceKind::Aws => &["secret_id", "region", "endpoint_url"],
            SourceKind::Iam => &["username", "endpoint", "region", "token_lifetime"],
            _ => required,
        };
        for (field, set) in &present {
            if required.contains(field) && !set {
                return Err((
                    (*field).into(),
                    format!("is required with source = \"{kind}\""),
                ));
            }
        }
        for (field, set) in present {
            if set && !allowed.contains(&field) {
                return Err((
                    field.into(),
                    format!("does not apply to source = \"{kind}\""),
                ));
            }
        }
        if self.refresh_interval.is_zero() {
            return Err(("refresh_interval".into(), "must be longer than 0".into()));
        }
        if let Some(endpoint) = &self.endpoint
            && super::parse_endpoint(endpoint).is_none()
        {
            return Err((
                "endpoint".into(),
                format!("\"{endpoint}\" is not host:port"),
            ));
        }
        if self.username.as_ref().is_some_and(String::is_empty) {
            return Err(("username".into(), "is empty".into()));
        }
        let lifetime = self.token_lifetime();
        if lifetime.is_zero() || lifetime > MAX_TOKEN_LIFETIME {
            return Err((
                "token_lifetime".into(),
                "must be longer than 0 and at most 15m, as long as RDS accepts a token".into(),
            ));
        }
        Ok(())
    }
}
