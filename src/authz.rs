//! Who may connect: the certificate identity type, and the route lookup that turns
//! (identity, user, database, source address) into a route or a refusal. Deny by default.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};

#[cfg(test)]
use crate::config::AuthMode;
use crate::config::RouteConfig;
use crate::error::Denied;

/// Where in the certificate an identity was found. Route rules name the kind, so a subject CN
/// can never stand in for a SAN URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    Uri,
    Dns,
    Cn,
}

/// A certificate identity such as `uri:spiffe://prod.example/ns/app/sa/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub kind: IdentityKind,
    pub value: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            IdentityKind::Uri => "uri",
            IdentityKind::Dns => "dns",
            IdentityKind::Cn => "cn",
        };
        write!(f, "{kind}:{}", self.value)
    }
}

impl FromStr for Identity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, value) = s
            .split_once(':')
            .ok_or_else(|| format!("identity \"{s}\" must start with uri:, dns: or cn:"))?;
        let kind = match kind {
            "uri" => IdentityKind::Uri,
            "dns" => IdentityKind::Dns,
            "cn" => IdentityKind::Cn,
            _ => {
                return Err(format!(
                    "identity \"{s}\" must start with uri:, dns: or cn:"
                ));
            }
        };
        if value.is_empty() {
            return Err(format!("identity \"{s}\" has nothing after the kind"));
        }
        Ok(Identity {
            kind,
            value: value.to_owned(),
        })
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(de::Error::custom)
    }
}

/// True when `addr` falls in one of `nets`. IPv4-mapped IPv6 addresses count as IPv4.
pub fn cidr_allows(nets: &[IpNet], addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    nets.iter().any(|net| net.contains(&addr))
}

/// What a client asks for, and what it is.
pub struct Request<'a> {
    /// The identities of the certificate, all of the highest-priority kind it has.
    pub identities: &'a [Identity],
    pub user: &'a str,
    pub database: &'a str,
    pub source: IpAddr,
}

/// Finds the one route that lets this request in, or says why none does.
pub fn route<'r>(routes: &'r [RouteConfig], req: &Request<'_>) -> Result<&'r RouteConfig, Denied> {
    let shown = req.identities.first().map_or_else(
        || "a certificate with no identity".to_owned(),
        |id| format!("certificate identity \"{id}\""),
    );
    let deny = |reason: String| Denied {
        identity: shown.clone(),
        reason,
    };
    // Certificate routes for this identity, and password routes, which take any client.
    let mine: Vec<&RouteConfig> = routes
        .iter()
        .filter(|r| match &r.identity {
            Some(identity) => req.identities.contains(identity),
            None => true,
        })
        .collect();
    let has_cert_route = mine.iter().any(|r| r.identity.is_some());
    if !has_cert_route && !mine.iter().any(|r| r.users().contains(&req.user)) {
        // RDS Proxy's words for a user it has no secret for.
        return Err(deny(if req.identities.is_empty() {
            format!(
                "This pgvalet proxy has no credentials for the role {}. Check the credentials for this role and try again.",
                req.user
            )
        } else {
            "no route is configured for it".into()
        }));
    }
    let Some(route) = mine.iter().find(|r| r.users().contains(&req.user)) else {
        let allowed: Vec<&str> = mine.iter().flat_map(|r| r.users()).collect();
        return Err(deny(format!(
            "user \"{}\" is not allowed (allowed: {})",
            req.user,
            allowed.join(", ")
        )));
    };
    if !route.allows_database(req.database) {
        return Err(deny(format!(
            "route \"{}\" does not allow database \"{}\"",
            route.name, req.database
        )));
    }
    if let Some(nets) = &route.allow_cidrs
        && !cidr_allows(nets, req.source)
    {
        return Err(deny(format!(
            "route \"{}\" does not allow connections from {}",
            route.name, req.source
        )));
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        name: &str,
        identity: &str,
        users: Option<Vec<&str>>,
        dbs: &[&str],
        cidrs: Option<&str>,
    ) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            auth: if identity.is_empty() {
                AuthMode::Password
            } else {
                AuthMode::Cert
            },
            identity: (!identity.is_empty()).then(|| identity.parse().unwrap()),
            users: users.map(|u| u.into_iter().map(String::from).collect()),
            databases: dbs.iter().map(|d| d.to_string()).collect(),
            allow_cidrs: cidrs.map(|c| vec![c.parse().unwrap()]),
            backend: "b".into(),
            credentials: Some("c".into()),
            client_cert: None,
            client_key: None,
            use_secret_address: false,
            pool_mode: Default::default(),
            max_size: Some(1),
            max_connections_percent: None,
            max_idle_connections_percent: None,
            init_query: String::new(),
            min_idle: 0,
            borrow_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(1),
            max_lifetime: std::time::Duration::from_secs(1),
            reset_query: String::new(),
            max_client_conn: None,
        }
    }

    fn req<'a>(ids: &'a [Identity], user: &'a str, db: &'a str, ip: &str) -> Request<'a> {
        Request {
            identities: ids,
            user,
            database: db,
            source: ip.parse().unwrap(),
        }
    }

    #[test]
    fn identity_round_trip_and_refusals() {
        let id: Identity = "uri:spiffe://a/b".parse().unwrap();
        assert_eq!(id.kind, IdentityKind::Uri);
        assert_eq!(id.to_string(), "uri:spiffe://a/b");
        assert!("spiffe://a/b".parse::<Identity>().is_err());
        assert!("email:x".parse::<Identity>().is_err());
        assert!("cn:".parse::<Identity>().is_err());
    }

    #[test]
    fn routes_match_exactly_and_deny_by_default() {
        let routes = vec![
            rule(
                "orders",
                "uri:spiffe://d/orders",
                None,
                &["orders"],
                Some("127.0.0.1/32"),
            ),
            rule(
                "billing",
                "cn:billing",
                Some(vec!["billing", "billing_ro"]),
                &["*"],
                None,
            ),
        ];
        let orders = ["uri:spiffe://d/orders".parse().unwrap()];
        assert_eq!(
            route(&routes, &req(&orders, "orders", "orders", "127.0.0.1"))
                .unwrap()
                .name,
            "orders"
        );
        let e = route(&routes, &req(&orders, "billing", "orders", "127.0.0.1")).unwrap_err();
        assert!(
            e.to_string().contains("user \"billing\" is not allowed"),
            "{e}"
        );
        let e = route(&routes, &req(&orders, "orders", "billing", "127.0.0.1")).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not allow database \"billing\""),
            "{e}"
        );
        let e = route(&routes, &req(&orders, "orders", "orders", "127.0.0.2")).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not allow connections from 127.0.0.2"),
            "{e}"
        );

        // A CN that spells a URI does not match a uri: rule.
        let cn = ["cn:spiffe://d/orders".parse().unwrap()];
        let e = route(&routes, &req(&cn, "orders", "orders", "127.0.0.1")).unwrap_err();
        assert!(e.to_string().contains("no route"), "{e}");

        let billing = ["cn:billing".parse().unwrap()];
        assert_eq!(
            route(&routes, &req(&billing, "billing_ro", "any", "10.0.0.1"))
                .unwrap()
                .name,
            "billing"
        );
        assert!(route(&routes, &req(&[], "orders", "orders", "127.0.0.1")).is_err());
    }

    #[test]
    fn mapped_v4_counts_as_v4() {
        let nets = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(cidr_allows(&nets, "::ffff:127.0.0.1".parse().unwrap()));
        assert!(!cidr_allows(&nets, "::1".parse().unwrap()));
    }
}
