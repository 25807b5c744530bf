//! The server side of SCRAM-SHA-256 and -PLUS that checks a client's password
//! (`protocol::scram::Exchange`, password mode), on arbitrary client-first and client-final
//! messages. Properties:
//! - the server-first message answers with the client's own nonce, extended, and pgvalet's salt
//!   and iteration count;
//! - no client-final message passes without knowing the password: the target's password is
//!   never in the input, so a pass is a forged proof;
//! - with the password, postgres-protocol's client (the one tokio-postgres and pgvalet's own
//!   backend login use) completes the exchange for any password text, -PLUS included.
//!
//! Input: one byte of options (mechanism, channel binding offered, full exchange), then the
//! client-first message, a NUL, and the client-final message.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pgvalet::protocol::scram::{
    self, Exchange, Keys, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramError,
};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

const SALT: &[u8] = b"pgvalet-fuzz-salt";
const BINDING: &[u8] = b"tls-server-end-point hash";

/// Keys of a password the fuzzer is never given: a client-final that passes forged its proof.
static KEYS: LazyLock<[Keys; 1]> =
    LazyLock::new(|| [scram::derive_keys("not\0in the input", SALT)]);

/// A whole exchange with postgres-protocol's client and `password`.
fn exchange(password: &str, plus: bool, candidates: &[Keys]) -> Result<usize, ScramError> {
    let (mechanism, client_binding, server_binding) = if plus {
        (
            SCRAM_SHA_256_PLUS,
            ChannelBinding::tls_server_end_point(BINDING.to_vec()),
            Some(BINDING),
        )
    } else {
        (SCRAM_SHA_256, ChannelBinding::unsupported(), None)
    };
    let mut client = ScramSha256::new(password.as_bytes(), client_binding);
    let (exchange, server_first) =
        Exchange::start(mechanism, client.message(), SALT, server_binding)?;
    client
        .update(server_first.as_bytes())
        .expect("the client reads the server-first message");
    let (index, server_final) = exchange.finish(client.message(), candidates)?;
    client
        .finish(server_final.as_bytes())
        .expect("the client accepts the server's signature");
    Ok(index)
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, rest)) = data.split_first() else {
        return;
    };
    let plus = options & 1 == 1;
    let mechanism = if plus {
        SCRAM_SHA_256_PLUS
    } else {
        SCRAM_SHA_256
    };
    let binding = (options & 2 == 2).then_some(BINDING);

    if options & 0xfe == 0xfe && rest.len() <= 32 {
        // The full exchange with a password from the input: two key derivations of 4096 HMAC
        // rounds each, so kept to this one option byte.
        let password = String::from_utf8_lossy(rest);
        let keys = [scram::derive_keys(&password, SALT)];
        assert_eq!(exchange(&password, plus, &keys), Ok(0), "{password:?}");
        return;
    }

    let mut parts = rest.splitn(2, |&b| b == 0);
    let client_first = parts.next().unwrap_or_default();
    let client_final = parts.next().unwrap_or_default();
    let Ok((exchange, server_first)) = Exchange::start(mechanism, client_first, SALT, binding)
    else {
        return;
    };
    // Accepted: the client's nonce is the r= attribute of its bare message.
    let text = std::str::from_utf8(client_first).expect("accepted text is UTF-8");
    let bare = text.splitn(3, ',').nth(2).expect("a GS2 header was read");
    let client_nonce = bare
        .split(',')
        .filter_map(|a| a.strip_prefix("r="))
        .last()
        .expect("a nonce was read");
    let rest = server_first
        .strip_prefix("r=")
        .and_then(|r| r.strip_prefix(client_nonce))
        .expect("the server nonce extends the client's");
    let (server_part, tail) = rest.split_once(',').expect("salt and iterations follow");
    assert_eq!(server_part.len(), 24, "18 random bytes in base64");
    assert!(tail.ends_with(",i=4096") && tail.starts_with("s="));
    assert_ne!(
        exchange.finish(client_final, &*KEYS).map(|(i, _)| i),
        Ok(0),
        "a client-final without the password passed"
    );
});
