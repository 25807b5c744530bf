//! The server side of SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677, channel binding
//! `tls-server-end-point` from RFC 5929), as Postgres speaks it, sans I/O.
//!
//! pgvalet knows the plaintext password (it is in the secret), so it derives the keys itself
//! with a salt of its own choosing. One salt for all candidate passwords lets one client proof be
//! checked against several of them: the current secret and, during a rotation window, the
//! previous one.

use crate::crypto::{constant_time_eq, hmac_sha256 as hmac};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";
pub const SCRAM_SHA_256_PLUS: &str = "SCRAM-SHA-256-PLUS";
/// Postgres' default iteration count.
pub const ITERATIONS: u32 = 4096;

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message is not SCRAM as RFC 5802 writes it.
    Malformed(&'static str),
    /// Channel binding was required, missing, mismatched or downgraded.
    ChannelBinding(&'static str),
    /// The proof matches none of the passwords.
    WrongPassword,
}

/// StoredKey and ServerKey for one password and salt.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    stored_key: [u8; 32],
    server_key: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(***)")
    }
}

/// Derives the keys for `password` (normalized with SASLprep where it can be, as Postgres does).
pub fn derive_keys(password: &str, salt: &[u8]) -> Keys {
    let prepared = stringprep::saslprep(password)
        .map(|p| p.into_owned())
        .unwrap_or_else(|_| password.to_owned());
    // Hi(): PBKDF2 with HMAC-SHA-256 and one output block.
    let mut u = hmac(prepared.as_bytes(), &[salt, &1u32.to_be_bytes()]);
    let mut salted = u;
    for _ in 1..ITERATIONS {
        u = hmac(prepared.as_bytes(), &[&u]);
        for (s, x) in salted.iter_mut().zip(u) {
            *s ^= x;
        }
    }
    let client_key = hmac(&salted, &[b"Client Key"]);
    Keys {
        stored_key: Sha256::digest(client_key).into(),
        server_key: hmac(&salted, &[b"Server Key"]),
    }
}

/// One SCRAM exchange, between the client's first message and its final one.
#[derive(Debug)]
pub struct Exchange {
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    /// The binding data the client must prove it sees (PLUS only).
    binding: Option<Vec<u8>>,
}

impl Exchange {
    /// Reads the client-first message sent with `mechanism` and answers with the server-first
    /// message. `binding` is this connection's `tls-server-end-point` data, `None` when
    /// pgvalet did not offer -PLUS.
    pub fn start(
        mechanism: &str,
        client_first: &[u8],
        salt: &[u8],
        binding: Option<&[u8]>,
    ) -> Result<(Exchange, String), ScramError> {
        let server_nonce: [u8; 18] = rand::random();
        Exchange::start_with_nonce(
            mechanism,
            client_first,
            salt,
            binding,
            &B64.encode(server_nonce),
        )
    }

    fn start_with_nonce(
        mechanism: &str,
        client_first: &[u8],
        salt: &[u8],
        binding: Option<&[u8]>,
        server_nonce: &str,
    ) -> Result<(Exchange, String), ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("client-first is not UTF-8"))?;
        let (flag, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("no GS2 header"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(ScramError::Malformed("bad authzid"));
        }
        let plus = mechanism == SCRAM_SHA_256_PLUS;
        let binding = match (flag, plus) {
            ("p=tls-server-end-point", true) => Some(
                binding
                    .ok_or(ScramError::ChannelBinding(
                        "-PLUS was not offered on this connection",
                    ))?
                    .to_vec(),
            ),
            (f, true) if f.starts_with("p=") => {
                return Err(ScramError::ChannelBinding(
                    "unsupported channel binding type",
                ));
            }
            (_, true) => {
                return Err(ScramError::ChannelBinding(
                    "-PLUS selected without channel binding",
                ));
            }
            ("n", false) => None,
            // The client could bind but believes the server cannot: a downgrade if we offered.
            ("y", false) if binding.is_some() => {
                return Err(ScramError::ChannelBinding("channel binding was downgraded"));
            }
            ("y", false) => None,
            (f, false) if f.starts_with("p=") => {
                return Err(ScramError::ChannelBinding(
                    "binding requested with plain SCRAM-SHA-256",
                ));
            }
            _ => return Err(ScramError::Malformed("bad GS2 channel binding flag")),
        };
        if mechanism != SCRAM_SHA_256 && !plus {
            return Err(ScramError::Malformed("unknown SASL mechanism"));
        }
        let mut client_nonce = None;
        for attr in bare.split(',') {
            if let Some(n) = attr.strip_prefix("r=") {
                client_nonce = Some(n);
            } else if attr.starts_with("m=") {
                return Err(ScramError::Malformed("mandatory extension"));
            }
        }
        let client_nonce = client_nonce
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("no client nonce"))?;
        if client_nonce.contains(',') || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError::Malformed("bad client nonce"));
        }
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", B64.encode(salt));
        let exchange = Exchange {
            gs2_header: format!("{flag},{authzid},"),
            client_first_bare: bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
            binding,
        };
        Ok((exchange, server_first))
    }

    /// Checks the client-final message against each of `candidates`; returns the index of the
    /// one whose password the client proved, and the server-final message.
    pub fn finish(
        &self,
        client_final: &[u8],
        candidates: &[Keys],
    ) -> Result<(usize, String), ScramError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut channel = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(c) = attr.strip_prefix("c=") {
                channel = Some(c);
            } else if let Some(r) = attr.strip_prefix("r=") {
                nonce = Some(r);
            }
        }
        let channel = B64
            .decode(channel.ok_or(ScramError::Malformed("no channel binding attribute"))?)
            .map_err(|_| ScramError::Malformed("channel binding is not base64"))?;
        let mut expected = self.gs2_header.as_bytes().to_vec();
        if let Some(binding) = &self.binding {
            expected.extend_from_slice(binding);
        }
        if channel != expected {
            return Err(ScramError::ChannelBinding(
                "channel binding data does not match this connection",
            ));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        let proof: [u8; 32] = proof
            .try_into()
            .map_err(|_| ScramError::Malformed("proof has the wrong length"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        for (i, keys) in candidates.iter().enumerate() {
            let signature = hmac(&keys.stored_key, &[auth_message.as_bytes()]);
            let mut client_key = proof;
            for (k, s) in client_key.iter_mut().zip(signature) {
                *k ^= s;
            }
            let stored: [u8; 32] = Sha256::digest(client_key).into();
            if constant_time_eq(&stored, &keys.stored_key) {
                let server_signature = hmac(&keys.server_key, &[auth_message.as_bytes()]);
                return Ok((i, format!("v={}", B64.encode(server_signature))));
            }
        }
        Err(ScramError::WrongPassword)
    }
}

#[cfg(test)]
mod tests {
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    use super::*;

    const SALT: &[u8] = b"0123456789abcdef";

    /// Runs a whole exchange with postgres-protocol's SCRAM client (the one tokio-postgres uses).
    fn run(
        mechanism: &str,
        client_binding: ChannelBinding,
        server_binding: Option<&[u8]>,
        password: &str,
        candidates: &[Keys],
    ) -> Result<usize, ScramError> {
        let mut client = ScramSha256::new(password.as_bytes(), client_binding);
        let (exchange, server_first) =
            Exchange::start(mechanism, client.message(), SALT, server_binding)?;
        client.update(server_first.as_bytes()).unwrap();
        let (index, server_final) = exchange.finish(client.message(), candidates)?;
        client
            .finish(server_final.as_bytes())
            .expect("the client accepts the server's signature");
        Ok(index)
    }

    #[test]
    fn plain_and_plus_exchanges_with_a_real_client() {
        let keys = [derive_keys("right", SALT)];
        assert_eq!(
            run(
                SCRAM_SHA_256,
                ChannelBinding::unsupported(),
                None,
                "right",
                &keys
            ),
            Ok(0)
        );
        let cb = b"end-point-hash".to_vec();
        assert_eq!(
            run(
                SCRAM_SHA_256_PLUS,
                ChannelBinding::tls_server_end_point(cb.clone()),
                Some(&cb),
                "right",
                &keys
            ),
            Ok(0)
        );
        assert_eq!(
            run(
                SCRAM_SHA_256,
                ChannelBinding::unsupported(),
                None,
                "wrong",
                &keys
            ),
            Err(ScramError::WrongPassword)
        );
    }

    #[test]
    fn one_proof_checks_against_several_passwords() {
        let keys = [derive_keys("current", SALT), derive_keys("previous", SALT)];
        assert_eq!(
            run(
                SCRAM_SHA_256,
                ChannelBinding::unsupported(),
                None,
                "previous",
                &keys
            ),
            Ok(1)
        );
        assert_eq!(
            run(
                SCRAM_SHA_256,
                ChannelBinding::unsupported(),
                None,
                "current",
                &keys
            ),
            Ok(0)
        );
    }

    #[test]
    fn binding_mismatch_and_downgrade_are_refused() {
        let keys = [derive_keys("right", SALT)];
        let seen_by_client = ChannelBinding::tls_server_end_point(b"mitm-cert".to_vec());
        let err = run(
            SCRAM_SHA_256_PLUS,
            seen_by_client,
            Some(b"real-cert"),
            "right",
            &keys,
        )
        .unwrap_err();
        assert!(matches!(err, ScramError::ChannelBinding(_)), "{err:?}");
        // 'y': the client could bind but thinks the server cannot, though -PLUS was offered.
        let err = run(
            SCRAM_SHA_256,
            ChannelBinding::unrequested(),
            Some(b"real-cert"),
            "right",
            &keys,
        )
        .unwrap_err();
        assert_eq!(
            err,
            ScramError::ChannelBinding("channel binding was downgraded")
        );
        assert_eq!(
            run(
                SCRAM_SHA_256,
                ChannelBinding::unrequested(),
                None,
                "right",
                &keys
            ),
            Ok(0)
        );
    }

    #[test]
    fn malformed_messages() {
        for bad in [
            &b""[..],
            b"x",
            b"n,,",
            b"n,,n=,r=",
            b"q,,n=,r=abc",
            b"n,,m=ext,r=abc",
            b"\xff,,r=a",
        ] {
            assert!(
                Exchange::start(SCRAM_SHA_256, bad, SALT, None).is_err(),
                "{bad:?}"
            );
        }
        let (exchange, _) = Exchange::start(SCRAM_SHA_256, b"n,,n=,r=abc", SALT, None).unwrap();
        let keys = [derive_keys("x", SALT)];
        for bad in [
            &b""[..],
            b"c=biws,r=abc",
            b"c=biws,r=wrong,p=AAAA",
            b"c=!!,r=abc,p=AAAA",
            b"c=biws,p=AAAA",
        ] {
            assert!(exchange.finish(bad, &keys).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rfc_7677_test_vector() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let (exchange, server_first) = Exchange::start_with_nonce(
            SCRAM_SHA_256,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            &salt,
            None,
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let client_final = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        let (index, server_final) = exchange
            .finish(client_final, &[derive_keys("pencil", &salt)])
            .unwrap();
        assert_eq!(
            (index, server_final.as_str()),
            (0, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        );
    }
}
