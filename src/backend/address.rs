//! Where a backend's host name points. pgvalet asks the system's resolver at each new
//! connection (as libpq does; nothing is cached here) and, while a pool holds connections, again
//! every `dns_refresh_interval`. Each connection keeps the address it went to and the answer it
//! was made from, so that when the name moves (an Aurora failover points the cluster endpoint at
//! another instance) its pool can tell it went to an address the name no longer gives.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::time::Instant;

/// The addresses a host name gave, and when it was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub host: String,
    pub port: u16,
    pub addrs: Vec<SocketAddr>,
    pub at: Instant,
}

impl Answer {
    /// Asks the resolver for `host`'s addresses; an IP address is its own answer.
    pub async fn resolve(host: &str, port: u16) -> io::Result<Answer> {
        let at = Instant::now();
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port)).await?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("\"{host}\" resolves to no address"),
            ));
        }
        Ok(Answer {
            host: host.to_owned(),
            port,
            addrs,
            at,
        })
    }

    /// Whether the host is a name, whose addresses may change, rather than an IP address.
    pub fn is_name(&self) -> bool {
        self.host.parse::<IpAddr>().is_err()
    }

    /// Whether this answer, asked after `then`, no longer gives `addr`, which a connection made
    /// from `then` went to.
    pub fn has_left(&self, then: &Answer, addr: SocketAddr) -> bool {
        self.host == then.host
            && self.port == then.port
            && self.at > then.at
            && !self.addrs.contains(&addr)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn answer(host: &str, addrs: &[&str], at: Instant) -> Answer {
        Answer {
            host: host.into(),
            port: 5432,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            at,
        }
    }

    #[test]
    fn a_later_answer_without_the_address_means_the_name_left_it() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let a = "10.0.0.1:5432".parse().unwrap();
        let then = answer("db", &["10.0.0.1:5432"], t0);
        assert!(answer("db", &["10.0.0.2:5432"], t1).has_left(&then, a));
        assert!(!answer("db", &["10.0.0.2:5432", "10.0.0.1:5432"], t1).has_left(&then, a));
        // An older answer says nothing about a newer connection, nor one of another name.
        assert!(!answer("db", &["10.0.0.2:5432"], t0).has_left(&then, a));
        assert!(!answer("other", &["10.0.0.2:5432"], t1).has_left(&then, a));
    }

    #[tokio::test]
    async fn ip_addresses_are_their_own_answer() {
        let answer = Answer::resolve("127.0.0.2", 6432).await.unwrap();
        assert_eq!(answer.addrs, ["127.0.0.2:6432".parse().unwrap()]);
        assert!(!answer.is_name());
        let answer = Answer::resolve("localhost", 6432).await.unwrap();
        assert!(answer.is_name() && !answer.addrs.is_empty());
        assert!(Answer::resolve("no-such-host.invalid", 1).await.is_err());
    }
}
