//! Read replicas in rotation. A backend's `readers` take the sessions of read-only endpoints:
//! each goes to the reader in rotation with the fewest sessions. A reader leaves the rotation
//! when a login to it fails or its check does (a TCP connect and TLS handshake every
//! `check_interval`), and comes back when a check passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Targets;
use crate::config::Config;

/// One reader's standing, kept across reloads while its name is still some backend's reader.
pub struct Reader {
    name: String,
    up: AtomicBool,
    sessions: AtomicUsize,
    /// When the next check is due.
    next_check: std::sync::Mutex<Instant>,
}

impl Reader {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Sessions on this reader now.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Takes the reader out of the rotation (once; later calls only return false).
    pub fn mark_down(&self, why: &str) -> bool {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        if was_up {
            tracing::warn!(reader = %self.name, why, "reader left the rotation");
            crate::metrics::reader_up(&self.name, false);
        }
        was_up
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            tracing::info!(reader = %self.name, "reader passed its check; back in the rotation");
            crate::metrics::reader_up(&self.name, true);
        }
    }

    fn count(&self, change: isize) {
        let now = if change > 0 {
            self.sessions.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.sessions.fetch_sub(1, Ordering::Relaxed) - 1
        };
        crate::metrics::reader_sessions(&self.name, now);
    }
}

/// A session's place on a reader: counted while it lives.
pub struct Lease(Arc<Reader>);

impl Lease {
    pub fn reader(&self) -> &Reader {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.count(-1);
    }
}

/// Every backend that is some backend's reader.
#[derive(Default)]
pub struct Readers {
    by_name: HashMap<String, Arc<Reader>>,
    /// Where the search for the least loaded reader starts, so that ties take turns.
    turn: AtomicUsize,
}

impl Readers {
    /// The readers `config` names, each keeping its standing from `old` if it was there.
    pub fn build(config: &Config, old: Option<&Readers>) -> Readers {
        let mut by_name = HashMap::new();
        for name in config.backends.values().flat_map(|b| &b.readers) {
            let kept = old.and_then(|o| o.by_name.get(name)).cloned();
            by_name.entry(name.clone()).or_insert_with(|| {
                kept.unwrap_or_else(|| {
                    crate::metrics::reader_up(name, true);
                    Arc::new(Reader {
                        name: name.clone(),
                        up: AtomicBool::new(true),
                        sessions: AtomicUsize::new(0),
                        next_check: std::sync::Mutex::new(Instant::now()),
                    })
                })
            });
        }
        Readers {
            by_name,
            turn: AtomicUsize::new(0),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Reader>> {
        self.by_name.get(name)
    }

    /// Of `names`, the reader in rotation with the fewest sessions, leaving out `tried`;
    /// `None` when no reader is left.
    pub fn choose(&self, names: &[String], tried: &[String]) -> Option<Lease> {
        let n = names.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        let chosen = (0..n)
            .map(|i| &names[(start + i) % n])
            .filter(|name| !tried.contains(name))
            .filter_map(|name| self.by_name.get(name))
            .filter(|r| r.is_up())
            .min_by_key(|r| r.sessions())?;
        chosen.count(1);
        Some(Lease(chosen.clone()))
    }

    /// Checks every reader whose check is due, all at once; each takes at most its backend's
    /// `connect_timeout`.
    pub async fn check_due(&self, config: &Config, targets: &Targets) {
        let now = Instant::now();
        let mut checks = tokio::task::JoinSet::new();
        for reader in self.by_name.values() {
            let (Some(target), Some(backend)) = (
                targets.backend(&reader.name),
                config.backends.get(&reader.name),
            ) else {
                continue;
            };
            {
                let mut next = reader.next_check.lock().unwrap_or_else(|e| e.into_inner());
                if *next > now {
                    continue;
                }
                *next = now + backend.check_interval;
            }
            let (reader, target) = (reader.clone(), target.clone());
            let timeout = backend.connect_timeout;
            checks.spawn(async move {
                match tokio::time::timeout(timeout, target.open()).await {
                    Ok(Ok(mut stream)) => {
                        // A close_notify before any startup packet: Postgres logs nothing.
                        use tokio::io::AsyncWriteExt;
                        let _ = tokio::time::timeout(timeout, stream.shutdown()).await;
                        reader.mark_up();
                    }
                    Ok(Err(e)) => {
                        reader.mark_down(&format!("check failed: {e}"));
                    }
                    Err(_) => {
                        reader.mark_down(&format!(
                            "check failed: no answer within {}s",
                            timeout.as_secs()
                        ));
                    }
                }
            });
        }
        while checks.join_next().await.is_some() {}
    }
}

/// How often the check loop looks for readers whose check is due.
pub const CHECK_TICK: Duration = Duration::from_millis(250);
