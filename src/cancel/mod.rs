//! Cancel keys. pgvalet hands each client its own BackendKeyData (layout in [`key`]) and maps
//! it to the backend connection serving that client right now, so a CancelRequest reaches the
//! right backend with that backend's real key.

pub mod key;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{self, Target};
use crate::protocol::startup::CancelKey;
pub use key::{Wanted, instance_of};

/// Which backend process a client's cancel goes to, if it is running anything: its target, the
/// address it runs at, and its key.
type Slot = Option<(Arc<Target>, SocketAddr, (i32, i32))>;

struct Entry {
    secret: Box<[u8]>,
    slot: Arc<Mutex<Slot>>,
}

/// All cancel keys this instance has handed out and not yet taken back. Keys are found by
/// process id, then secret: in session mode the process id is the backend's, and two backends
/// (or a backend and a transaction-mode key) may share one.
pub struct Registry {
    instance_id: u8,
    tagger: key::Tagger,
    entries: Mutex<HashMap<i32, Vec<Entry>>>,
}

/// What became of a CancelRequest.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    /// The key is known but its client has no backend right now: nothing to cancel.
    Idle,
    /// No such key, or the secret is wrong. Postgres ignores these silently, and so does pgvalet.
    Unknown,
    Failed,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Idle => "idle",
            Outcome::Unknown => "unknown",
            Outcome::Failed => "failed",
        }
    }
}

impl Registry {
    pub fn new(instance_id: u8) -> Arc<Registry> {
        Arc::new(Registry {
            instance_id,
            tagger: key::Tagger::random(),
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<i32, Vec<Entry>>> {
        // A panic while holding this lock cannot leave the map inconsistent: every critical
        // section is a single insert, remove or lookup.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh key for a client session. The key is withdrawn when the ticket drops.
    pub fn issue(self: &Arc<Self>, wanted: Wanted) -> Ticket {
        let slot = Arc::new(Mutex::new(None));
        let mut entries = self.entries();
        let (pid, secret) = loop {
            let (pid, secret) = key::make(self.instance_id, &self.tagger, wanted);
            // A random 3.0 key may repeat one in use; make another.
            let taken = entries
                .get(&pid)
                .is_some_and(|list| list.iter().any(|e| *e.secret == *secret));
            if !taken {
                break (pid, secret.into_boxed_slice());
            }
        };
        // Keys rarely share a pid: a list holds one entry until one does.
        entries
            .entry(pid)
            .or_insert_with(|| Vec::with_capacity(1))
            .push(Entry {
                secret: secret.clone(),
                slot: slot.clone(),
            });
        Ticket {
            registry: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// Number of keys handed out and still held by sessions.
    pub fn len(&self) -> usize {
        self.entries().values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a key was issued by this instance, as far as its secret says (a key that names
    /// no instance is looked up here too).
    pub fn is_own(&self, key: &CancelKey) -> bool {
        instance_of(&key.secret).is_none_or(|id| id == self.instance_id)
    }

    /// Forwards a client's CancelRequest to the backend serving that client.
    pub async fn cancel(&self, key: &CancelKey) -> Outcome {
        let target = {
            let entries = self.entries();
            let Some(list) = entries.get(&key.pid) else {
                return Outcome::Unknown;
            };
            // Every entry of the pid is compared, so the time says nothing about which matched.
            let mut found = None;
            for entry in list {
                if key::constant_time_eq(&entry.secret, &key.secret) {
                    found = Some(entry.slot.clone());
                }
            }
            let Some(slot) = found else {
                return Outcome::Unknown;
            };
            let slot = slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.clone()
        };
        let Some((target, addr, backend_key)) = target else {
            return Outcome::Idle;
        };
        match backend::cancel(&target, addr, backend_key).await {
            Ok(()) => Outcome::Forwarded,
            Err(e) => {
                tracing::warn!(error = %e, "could not forward a cancel request");
                Outcome::Failed
            }
        }
    }
}

/// Passes a CancelRequest on, unchanged, to the peer instance that issued its key, and waits
/// until the peer closes the connection (once it has acted on the request).
pub async fn forward_to_peer(addr: std::net::SocketAddr, key: &CancelKey) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let packet = request_packet(key);
    let send = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(&packet).await?;
        let mut rest = [0u8; 64];
        while tcp.read(&mut rest).await? > 0 {}
        Ok(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), send)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// A CancelRequest packet carrying `key`, as a client sends it.
pub fn request_packet(key: &CancelKey) -> Vec<u8> {
    let mut packet = Vec::with_capacity(12 + key.secret.len());
    packet.extend_from_slice(&((12 + key.secret.len()) as u32).to_be_bytes());
    packet.extend_from_slice(&80_877_102u32.to_be_bytes());
    packet.extend_from_slice(&key.pid.to_be_bytes());
    packet.extend_from_slice(&key.secret);
    packet
}

/// A session's cancel key. Dropping it withdraws the key.
pub struct Ticket {
    registry: Arc<Registry>,
    pid: i32,
    secret: Box<[u8]>,
    slot: Arc<Mutex<Slot>>,
}

impl Ticket {
    /// The process id sent to the client in BackendKeyData.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The secret sent to the client in BackendKeyData.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// Points cancels at `backend` (at its address, with its real key), or at nothing with
    /// `None`.
    pub fn serve(&self, backend: Option<(Arc<Target>, SocketAddr, (i32, i32))>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = backend;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut entries = self.registry.entries();
        if let Some(list) = entries.get_mut(&self.pid) {
            list.retain(|e| !Arc::ptr_eq(&e.slot, &self.slot));
            if list.is_empty() {
                entries.remove(&self.pid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cancel_key(ticket: &Ticket) -> CancelKey {
        CancelKey {
            pid: ticket.pid(),
            secret: ticket.secret().to_vec(),
        }
    }

    #[tokio::test]
    async fn keys_carry_instance_and_are_withdrawn() {
        let registry = Registry::new(5);
        let wanted = Wanted {
            pid: None,
            long: false,
            issuer: None,
        };
        let ticket = registry.issue(wanted);
        assert!(ticket.pid() > 0);
        assert_eq!(instance_of(ticket.secret()), Some(5));
        assert_eq!(registry.len(), 1);
        let key = cancel_key(&ticket);
        assert!(registry.is_own(&key));
        assert_eq!(registry.cancel(&key).await, Outcome::Idle);
        let mut wrong = key.clone();
        wrong.secret[3] ^= 1;
        assert_eq!(registry.cancel(&wrong).await, Outcome::Unknown);
        drop(ticket);
        assert!(registry.is_empty());
        assert_eq!(registry.cancel(&key).await, Outcome::Unknown);
    }

    #[tokio::test]
    async fn sessions_sharing_a_backend_pid_keep_their_own_keys() {
        let registry = Registry::new(1);
        let wanted = |long| Wanted {
            pid: Some(777),
            long,
            issuer: None,
        };
        let (a, b) = (registry.issue(wanted(false)), registry.issue(wanted(true)));
        assert_eq!((a.pid(), b.pid()), (777, 777));
        assert_eq!(b.secret().len(), key::LONG_LEN);
        assert_eq!(registry.len(), 2);
        let (key_a, key_b) = (cancel_key(&a), cancel_key(&b));
        drop(a);
        assert_eq!(registry.cancel(&key_a).await, Outcome::Unknown);
        assert_eq!(registry.cancel(&key_b).await, Outcome::Idle);
        let other = Registry::new(2);
        assert!(!other.is_own(&key_b), "another instance's key");
    }
}
