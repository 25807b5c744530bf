//! RDS IAM auth tokens as pgvalet reads and checks them (`iam::token::Token::parse`,
//! `iam::Verifier::check`). Properties:
//! - a token that is read writes back, in canonical form, to a token that reads the same;
//! - a token pgvalet makes (as `generate_db_auth_token` does) for any user, port and time
//!   passes the check at its signing time;
//! - a token changed in one byte passes only if it still says exactly what the original said
//!   (the host name's case aside): a signature covers every claim.
//!
//! Input: one byte of mode; then either a token's text, or the position and value of the byte
//! to change, a port, a time, and the user name of a token to make.
#![no_main]

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use aws_credential_types::Credentials;
use libfuzzer_sys::fuzz_target;
use pgvalet::config::{IamConfig, IamKey, IamVerify};
use pgvalet::iam::token::Token;
use pgvalet::iam::{Verifier, make_token};

const HOST: &str = "db.example.com";
const PORT: u16 = 6432;
const REGION: &str = "us-east-1";
const KEY_ID: &str = "AKIDEXAMPLE";
const SECRET: &str = "pgvalet fuzz secret";

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    // SAFETY: set once, before any other thread reads the environment.
    unsafe { std::env::set_var("PGVALET_FUZZ_IAM_SECRET", SECRET) };
    Verifier::from_config(&IamConfig {
        endpoint: format!("{HOST}:{PORT}"),
        region: REGION.into(),
        verify: IamVerify::Signature,
        clock_skew: Duration::from_secs(300),
        keys: vec![IamKey {
            access_key_id: KEY_ID.into(),
            secret_access_key: "env:PGVALET_FUZZ_IAM_SECRET".into(),
        }],
    })
    .expect("the verifier's key is readable")
});

/// Percent-encoding of a query component: unreserved characters as they are.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// A token's canonical text: its parameters in a fixed order, each encoded.
fn canonical(t: &Token) -> String {
    let mut params: Vec<(String, String)> = t.other_params.clone();
    let credential = format!(
        "{}/{}/{}/{}/aws4_request",
        t.access_key_id, t.scope_date, t.region, t.service
    );
    params.push(("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()));
    params.push(("X-Amz-Credential".into(), credential));
    params.push(("X-Amz-Date".into(), t.amz_date.clone()));
    params.push(("X-Amz-Expires".into(), t.expires.as_secs().to_string()));
    params.push(("X-Amz-SignedHeaders".into(), t.signed_headers.clone()));
    if let Some(st) = &t.security_token {
        params.push(("X-Amz-Security-Token".into(), st.clone()));
    }
    params.push(("X-Amz-Signature".into(), t.signature.clone()));
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("{}:{}/?{}", t.host, t.port, query.join("&"))
}

fn same_claims(a: &Token, b: &Token) -> bool {
    let mut b = b.clone();
    if a.host.eq_ignore_ascii_case(&b.host) {
        b.host = a.host.clone();
    }
    *a == b
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        // A password message's text, as a client sends it.
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        if let Ok(token) = Token::parse(text) {
            let again = canonical(&token);
            assert_eq!(Token::parse(&again).as_ref(), Ok(&token), "{again}");
            let _ = VERIFIER.check(text, &token.db_user, token.signed_at);
        }
        return;
    }
    let Some((head, user)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let Ok(user) = std::str::from_utf8(user) else {
        return;
    };
    let at = usize::from(u16::from_be_bytes([head[0], head[1]]));
    let value = head[2];
    let port = u16::from_be_bytes([head[3], head[4]]);
    // A signing time from 1970 to about 2501.
    let secs = u64::from(u32::from_be_bytes([head[5], head[6], head[7], 0])) * 4;
    let signed_at = UNIX_EPOCH + Duration::from_secs(secs);
    let credentials = Credentials::new(KEY_ID, SECRET, None, None, "fuzz");
    let Some(made) = make_token(&credentials, REGION, HOST, port, user, signed_at) else {
        return;
    };
    let original = Token::parse(&made).expect("pgvalet reads the tokens it makes");
    assert_eq!(original.db_user, user);
    let checked = VERIFIER.check(&made, user, signed_at + Duration::from_secs(1));
    assert_eq!(checked.is_ok(), port == PORT, "{made}: {checked:?}");
    let mut changed = made.clone().into_bytes();
    let Some(byte) = changed.get_mut(at % made.len()) else {
        return;
    };
    *byte = value;
    let Ok(changed) = String::from_utf8(changed) else {
        return;
    };
    if changed == made {
        return;
    }
    let now = signed_at + Duration::from_secs(1);
    if VERIFIER.check(&changed, user, now).is_ok() {
        let read = Token::parse(&changed).expect("a token that passed reads");
        assert!(same_claims(&original, &read), "{changed} passed for {made}");
    }
});
