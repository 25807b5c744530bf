//! Cancel keys. pgvalet hands each client its own BackendKeyData (the instance id in the high
//! bits of the process id, a random secret) and maps it to the backend connection serving that
//! client right now, so a CancelRequest reaches the right backend with that backend's real key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::backend::{self, Target};
use crate::protocol::startup::CancelKey;

/// Which backend process a client's cancel goes to, if it is running anything.
type Slot = Option<(Arc<Target>, (i32, i32))>;

struct Entry {
    secret: i32,
    slot: Arc<Mutex<Slot>>,
}

/// All cancel keys this instance has handed out and not yet taken back.
pub struct Registry {
    instance_id: u8,
    entries: Mutex<HashMap<i32, Entry>>,
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
            entries: Mutex::new(HashMap::new()),
        })
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<i32, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent: every critical
        // section is a single insert, remove or lookup.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Issues a fresh key for a client session. The key is withdrawn when the ticket drops.
    pub fn issue(self: &Arc<Self>) -> Ticket {
        let secret: i32 = rand::random();
        let slot = Arc::new(Mutex::new(None));
        let mut entries = self.entries();
        let pid = loop {
            // Bit 31 clear (a positive pid, as clients expect), 8 bits of instance id, 23 random.
            let pid = (i32::from(self.instance_id) << 23) | (rand::random::<i32>() & 0x7f_ffff);
            if pid != 0 && !entries.contains_key(&pid) {
                break pid;
            }
        };
        entries.insert(
            pid,
            Entry {
                secret,
                slot: slot.clone(),
            },
        );
        Ticket {
            registry: self.clone(),
            pid,
            secret,
            slot,
        }
    }

    /// Number of keys handed out and still held by sessions.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forwards a client's CancelRequest to the backend serving that client.
    pub async fn cancel(&self, key: &CancelKey) -> Outcome {
        let target = {
            let entries = self.entries();
            let Some(entry) = entries.get(&key.pid) else {
                return Outcome::Unknown;
            };
            if !same_secret(entry.secret, &key.secret) {
                return Outcome::Unknown;
            }
            let slot = entry.slot.lock().unwrap_or_else(|e| e.into_inner());
            slot.clone()
        };
        let Some((target, backend_key)) = target else {
            return Outcome::Idle;
        };
        match backend::cancel(&target, backend_key).await {
            Ok(()) => Outcome::Forwarded,
            Err(e) => {
                tracing::warn!(error = %e, "could not forward a cancel request");
                Outcome::Failed
            }
        }
    }
}

/// The instance id a cancel key's process id carries.
pub fn instance_of(pid: i32) -> u8 {
    ((pid >> 23) & 0xff) as u8
}

/// Passes a CancelRequest on, unchanged, to the peer instance that issued its key.
pub async fn forward_to_peer(addr: std::net::SocketAddr, key: &CancelKey) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut packet = Vec::with_capacity(12 + key.secret.len());
    packet.extend_from_slice(&((12 + key.secret.len()) as u32).to_be_bytes());
    packet.extend_from_slice(&80_877_102u32.to_be_bytes());
    packet.extend_from_slice(&key.pid.to_be_bytes());
    packet.extend_from_slice(&key.secret);
    let send = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.write_all(&packet).await?;
        tcp.shutdown().await
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), send)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Compares without an early exit, so the time taken says nothing about the secret.
fn same_secret(expected: i32, given: &[u8]) -> bool {
    let expected = expected.to_be_bytes();
    given.len() == expected.len()
        && expected
            .iter()
            .zip(given)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// A session's cancel key. Dropping it withdraws the key.
pub struct Ticket {
    registry: Arc<Registry>,
    pid: i32,
    secret: i32,
    slot: Arc<Mutex<Slot>>,
}

impl Ticket {
    /// The (process id, secret) to send the client in BackendKeyData.
    pub fn key(&self) -> (i32, i32) {
        (self.pid, self.secret)
    }

    /// Points cancels at `backend` (its real key), or at nothing with `None`.
    pub fn serve(&self, backend: Option<(Arc<Target>, (i32, i32))>) {
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = backend;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.entries().remove(&self.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_carry_instance_and_are_withdrawn() {
        let registry = Registry::new(5);
        let ticket = registry.issue();
        let (pid, secret) = ticket.key();
        assert!(pid > 0);
        assert_eq!(pid >> 23, 5);
        assert_eq!(instance_of(pid), 5);
        assert_eq!(registry.len(), 1);
        let key = CancelKey {
            pid,
            secret: secret.to_be_bytes().to_vec(),
        };
        assert_eq!(registry.cancel(&key).await, Outcome::Idle);
        let wrong = CancelKey {
            pid,
            secret: (secret ^ 1).to_be_bytes().to_vec(),
        };
        assert_eq!(registry.cancel(&wrong).await, Outcome::Unknown);
        drop(ticket);
        assert!(registry.is_empty());
        assert_eq!(registry.cancel(&key).await, Outcome::Unknown);
    }
}
