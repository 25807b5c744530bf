//! The layout of the cancel keys pgvalet hands to clients, sans-IO.
//!
//! A key is the process id and secret of BackendKeyData. The process id is the backend's own in
//! session mode (so `pg_backend_pid()`, the driver's backend pid and NOTIFY agree, as they do
//! direct) and a random positive number in transaction mode, where the backend changes from one
//! transaction to the next. Wherever the process id comes from, the secret says which instance
//! issued the key, so that a cancel reaching another instance behind the same load balancer can
//! be passed to its issuer:
//!
//! - **Protocol 3.0** (a 4-byte secret): byte 0 is the instance id, bytes 1..4 are random.
//! - **Protocol 3.2** (a [`LONG_LEN`]-byte secret, layout 1):
//!
//!   | bytes    | what |
//!   |----------|------|
//!   | 0        | layout version, 1 |
//!   | 1        | instance id |
//!   | 2..18    | the issuer's own address as its client reached it (IPv6; IPv4 mapped; zeros if unknown) |
//!   | 18..32   | random |
//!   | 32..48   | tag: HMAC-SHA-256 over the process id and bytes 0..32, under the key of [`Tagger`], first 16 bytes |
//!
//!   The address lets an instance that finds its peers by address (a DNS name listing every
//!   instance) route a cancel without any table of ids; the tag lets instances that share the
//!   tagging key check that the routing bytes were not forged before they forward anything.
//!   Today each instance makes its own tagging key and routes by `peers` and the instance id;
//!   the issuer itself compares the whole key in constant time.

use std::net::{IpAddr, Ipv6Addr};

pub use crate::crypto::constant_time_eq;
use crate::crypto::hmac_sha256;

/// Secret length of a protocol 3.2 key.
pub const LONG_LEN: usize = 48;
/// Layout version in byte 0 of a long secret.
const LAYOUT: u8 = 1;
const TAGGED: usize = 32;

/// Makes and checks the tag of long keys.
#[derive(Clone)]
pub struct Tagger {
    key: [u8; 32],
}

impl Tagger {
    /// A tagging key of this instance's own.
    pub fn random() -> Tagger {
        Tagger {
            key: rand::random(),
        }
    }

    fn tag(&self, pid: i32, head: &[u8]) -> [u8; 16] {
        let full = hmac_sha256(&self.key, &[&pid.to_be_bytes(), head]);
        let mut tag = [0u8; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }

    /// Whether a long secret carries a tag this key made for `pid`.
    pub fn verify(&self, pid: i32, secret: &[u8]) -> bool {
        secret.len() == LONG_LEN
            && secret[0] == LAYOUT
            && constant_time_eq(&self.tag(pid, &secret[..TAGGED]), &secret[TAGGED..])
    }
}

/// What a new key is for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// The process id the client should see (the backend's, in session mode); `None` for a
    /// random one.
    pub pid: Option<i32>,
    /// The client speaks protocol 3.2 or later.
    pub long: bool,
    /// The address the client reached this instance at.
    pub issuer: Option<IpAddr>,
}

/// Makes a key: the process id and the secret.
pub fn make(instance_id: u8, tagger: &Tagger, wanted: Wanted) -> (i32, Vec<u8>) {
    let pid = wanted.pid.unwrap_or_else(random_pid);
    if !wanted.long {
        let random: [u8; 3] = rand::random();
        return (pid, vec![instance_id, random[0], random[1], random[2]]);
    }
    let mut secret = Vec::with_capacity(LONG_LEN);
    secret.push(LAYOUT);
    secret.push(instance_id);
    let address = match wanted.issuer {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped(),
        Some(IpAddr::V6(v6)) => v6,
        None => Ipv6Addr::UNSPECIFIED,
    };
    secret.extend_from_slice(&address.octets());
    secret.extend_from_slice(&rand::random::<[u8; TAGGED - 18]>());
    let tag = tagger.tag(pid, &secret);
    secret.extend_from_slice(&tag);
    (pid, secret)
}

/// The instance that issued a key, as its secret says; `None` for a secret of no layout
/// pgvalet makes (a client's own invention, or a key from Postgres itself).
pub fn instance_of(secret: &[u8]) -> Option<u8> {
    match secret.len() {
        4 => Some(secret[0]),
        LONG_LEN if secret[0] == LAYOUT => Some(secret[1]),
        _ => None,
    }
}

/// The issuer's address a long secret carries, if any.
pub fn issuer_of(secret: &[u8]) -> Option<IpAddr> {
    if secret.len() != LONG_LEN || secret[0] != LAYOUT {
        return None;
    }
    let octets: [u8; 16] = secret[2..18].try_into().ok()?;
    let v6 = Ipv6Addr::from(octets);
    if v6.is_unspecified() {
        return None;
    }
    Some(match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    })
}

/// A positive, non-zero process id (clients expect one), at random.
fn random_pid() -> i32 {
    loop {
        let pid = rand::random::<i32>() & i32::MAX;
        if pid != 0 {
            return pid;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_carry_the_instance_in_the_secret() {
        let tagger = Tagger::random();
        let wanted = Wanted {
            pid: Some(4242),
            long: false,
            issuer: None,
        };
        let (pid, secret) = make(7, &tagger, wanted);
        assert_eq!(pid, 4242, "the backend's pid is kept");
        assert_eq!(secret.len(), 4);
        assert_eq!(instance_of(&secret), Some(7));
        assert_eq!(issuer_of(&secret), None);
        let (pid, _) = make(
            7,
            &tagger,
            Wanted {
                pid: None,
                ..wanted
            },
        );
        assert!(pid > 0);
    }

    #[test]
    fn long_keys_carry_instance_address_and_a_tag() {
        let tagger = Tagger::random();
        let issuer: IpAddr = "10.1.2.3".parse().unwrap();
        let wanted = Wanted {
            pid: None,
            long: true,
            issuer: Some(issuer),
        };
        let (pid, secret) = make(9, &tagger, wanted);
        assert_eq!(secret.len(), LONG_LEN);
        assert_eq!(instance_of(&secret), Some(9));
        assert_eq!(issuer_of(&secret), Some(issuer));
        assert!(tagger.verify(pid, &secret));
        // Another instance's key, a changed routing byte or another pid: the tag says no.
        assert!(!Tagger::random().verify(pid, &secret));
        let mut forged = secret.clone();
        forged[1] ^= 1;
        assert!(!tagger.verify(pid, &forged));
        assert!(!tagger.verify(pid ^ 1, &secret));
        // Two keys for the same pid differ.
        let (_, again) = make(
            9,
            &tagger,
            Wanted {
                pid: Some(pid),
                ..wanted
            },
        );
        assert_ne!(again, secret);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let (_, secret) = make(
            9,
            &tagger,
            Wanted {
                issuer: Some(v6),
                ..wanted
            },
        );
        assert_eq!(issuer_of(&secret), Some(v6));
        let (_, secret) = make(
            9,
            &tagger,
            Wanted {
                issuer: None,
                ..wanted
            },
        );
        assert_eq!(issuer_of(&secret), None);
    }

    #[test]
    fn foreign_secrets_name_no_instance() {
        assert_eq!(instance_of(&[0; 32]), None, "a Postgres 18 key");
        assert_eq!(instance_of(&[2; LONG_LEN]), None, "another layout");
        assert_eq!(instance_of(&[1; 5]), None);
    }
}
