//! A pool following its backend's host name. Every new connection resolves the name and the pool
//! keeps the latest answer; while it holds connections it asks again every
//! `dns_refresh_interval`. A connection whose address a later answer no longer gives (an Aurora
//! failover moved the cluster endpoint to another instance) is retired: idle ones at once, busy
//! ones when their client gives them back, never in the middle of a transaction. Each
//! retirement is logged and counted in `pgvalet_backend_moved_total`.
//!
//! A name that resolves to a changing subset of its addresses (a round-robin reader endpoint)
//! retires connections at each change; name each reader as a backend of its own instead.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::{HOUSEKEEPING_TIMEOUT, Pool};
use crate::backend::{Answer, Connection};

/// What a pool knows of its backend's host name.
#[derive(Debug, Default)]
pub(super) struct Dns {
    /// The latest answer, from a new connection or a refresh.
    latest: Option<Answer>,
    /// When the pool last asked the resolver itself, whatever came of it.
    asked: Option<Instant>,
}

impl Dns {
    /// Keeps `answer` if it is newer than the one held (or for another host: the secret's host
    /// changed). Returns the addresses it replaced, when they differ.
    fn learn(&mut self, answer: Answer) -> Option<Vec<SocketAddr>> {
        let replaced = match &self.latest {
            Some(held) if held.host == answer.host && held.port == answer.port => {
                if held.at >= answer.at {
                    return None;
                }
                let same = held.addrs.len() == answer.addrs.len()
                    && held.addrs.iter().all(|a| answer.addrs.contains(a));
                (!same).then(|| held.addrs.clone())
            }
            _ => None,
        };
        self.latest = Some(answer);
        replaced
    }

    /// Whether the name no longer gives the address `conn` went to.
    fn has_left(&self, conn: &Connection) -> bool {
        self.latest
            .as_ref()
            .is_some_and(|latest| latest.has_left(&conn.resolved, conn.peer))
    }

    /// The host and port to resolve again, if they are a name and `interval` has passed since
    /// the last answer and the last try.
    fn due(&self, now: Instant, interval: std::time::Duration) -> Option<(String, u16)> {
        let latest = self.latest.as_ref().filter(|a| a.is_name())?;
        let last = self.asked.map_or(latest.at, |asked| asked.max(latest.at));
        (now.duration_since(last) >= interval).then(|| (latest.host.clone(), latest.port))
    }
}

impl Pool {
    fn dns(&self) -> std::sync::MutexGuard<'_, Dns> {
        // Critical sections are single reads and replacements.
        self.dns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the answer a new connection was made from.
    pub(super) fn learn_address(&self, conn: &Connection) {
        let replaced = self.dns().learn(conn.resolved.clone());
        if let Some(was) = replaced {
            self.log_move(&conn.resolved, &was);
        }
    }

    /// Resolves the backend's host name again once `dns_refresh_interval` has passed, while the
    /// pool has connections that could be affected. A failure keeps the answer held (and the
    /// connections), and is tried again after the interval.
    pub(super) async fn refresh_address(&self) {
        let stats = self.stats();
        if stats.idle + stats.active == 0 {
            return;
        }
        let interval = self.target.load().dns_refresh_interval;
        let now = Instant::now();
        let Some((host, port)) = self.dns().due(now, interval) else {
            return;
        };
        self.dns().asked = Some(now);
        let answer = tokio::time::timeout(HOUSEKEEPING_TIMEOUT, Answer::resolve(&host, port)).await;
        match answer {
            Ok(Ok(answer)) => {
                let replaced = self.dns().learn(answer.clone());
                if let Some(was) = replaced {
                    self.log_move(&answer, &was);
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(pool = %self.name, host, error = %e, "could not resolve the backend's host name again; its connections stay");
            }
            Err(_) => {
                tracing::warn!(pool = %self.name, host, "resolving the backend's host name again timed out; its connections stay");
            }
        }
    }

    /// Whether `conn` went to an address its host name no longer gives; if so it is counted and
    /// logged as retired, and the caller closes it. `how`: "idle", or "released" by its client.
    pub(super) fn retire_if_moved(&self, conn: &Connection, how: &'static str) -> bool {
        if !self.dns().has_left(conn) {
            return false;
        }
        tracing::info!(
            pool = %self.name, backend = %conn.target.name, host = %conn.resolved.host,
            addr = %conn.peer, how,
            "backend connection closed: its host name no longer resolves to its address"
        );
        crate::metrics::backend_moved(&conn.target.name);
        true
    }

    fn log_move(&self, now: &Answer, was: &[SocketAddr]) {
        tracing::info!(
            pool = %self.name, host = %now.host, was = ?was, now = ?now.addrs,
            "the backend's host name resolves to other addresses: new connections go there, and connections to the old ones close as they come free"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn answer(host: &str, addr: &str, at: Instant) -> Answer {
        Answer {
            host: host.into(),
            port: 5432,
            addrs: vec![addr.parse().unwrap()],
            at,
        }
    }

    #[test]
    fn only_newer_answers_replace_the_one_held() {
        let t0 = Instant::now();
        let (t1, t2) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
        let mut dns = Dns::default();
        assert_eq!(dns.learn(answer("db", "10.0.0.1:5432", t1)), None);
        // An answer asked earlier but learned later (a slow login) changes nothing.
        assert_eq!(dns.learn(answer("db", "10.0.0.9:5432", t0)), None);
        assert_eq!(dns.latest.as_ref().unwrap().at, t1);
        let moved = dns.learn(answer("db", "10.0.0.2:5432", t2));
        assert_eq!(moved, Some(vec!["10.0.0.1:5432".parse().unwrap()]));
        // Another host (a secret's) is taken as it is.
        assert_eq!(dns.learn(answer("other", "10.0.0.3:5432", t0)), None);
        assert_eq!(dns.latest.as_ref().unwrap().host, "other");
    }

    #[test]
    fn a_name_is_resolved_again_once_the_interval_has_passed_since_the_last_try() {
        let t0 = Instant::now();
        let interval = Duration::from_secs(15);
        let mut dns = Dns::default();
        assert_eq!(dns.due(t0, interval), None, "nothing to refresh yet");
        dns.learn(answer("db", "10.0.0.1:5432", t0));
        assert_eq!(dns.due(t0 + Duration::from_secs(14), interval), None);
        let due = dns.due(t0 + interval, interval);
        assert_eq!(due, Some(("db".to_owned(), 5432)));
        dns.asked = Some(t0 + interval);
        assert_eq!(
            dns.due(t0 + interval + Duration::from_secs(1), interval),
            None
        );
        let mut literal = Dns::default();
        literal.learn(answer("10.0.0.1", "10.0.0.1:5432", t0));
        assert_eq!(
            literal.due(t0 + interval * 2, interval),
            None,
            "an IP address"
        );
    }
}
