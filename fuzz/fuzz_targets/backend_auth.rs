//! A backend login as pgvalet performs it: the backend's `R` messages read by
//! `protocol::backend::auth_request` and answered by `backend::auth::Login` (cleartext, MD5,
//! SCRAM-SHA-256 with and without channel binding, through postgres-protocol's SCRAM client).
//! Properties:
//! - no sequence of requests makes pgvalet send the password itself, except in answer to a
//!   cleartext request;
//! - with channel binding data and a backend that offers -PLUS, pgvalet chooses -PLUS;
//! - whatever is sent is whole frontend messages.
//!
//! Input: one byte of options (channel binding data or not), then the backend's messages.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pgvalet::backend::{Login, Step};
use pgvalet::protocol::backend::{self, AuthRequest};

const USER: &str = "orders_app";
const PASSWORD: &str = "pgvalet fuzz password";

/// The iteration count a SCRAM server-first asks for, if it names one.
fn iterations(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    text.split(',')
        .find_map(|attr| attr.strip_prefix("i="))
        .and_then(|n| n.parse().ok())
}

fuzz_target!(|data: &[u8]| {
    let Some((&options, stream)) = data.split_first() else {
        return;
    };
    let binding = (options & 1 == 1).then(|| b"tls-server-end-point hash".to_vec());
    let mut login = Login::new(USER, Some(PASSWORD), binding.clone());
    let Some(requests) = common::messages(stream) else {
        return;
    };
    for (tag, body) in requests {
        if tag != b'R' {
            return;
        }
        let Ok(request) = backend::auth_request(body) else {
            return;
        };
        // postgres-protocol refuses more than 100,000 iterations; below that, a high count only
        // makes the target slow.
        if let AuthRequest::SaslContinue(data) = request
            && iterations(data).is_some_and(|i| (10_000..=100_000).contains(&i))
        {
            return;
        }
        let cleartext = request == AuthRequest::Cleartext;
        let offered_plus =
            matches!(&request, AuthRequest::Sasl(m) if m.contains(&"SCRAM-SHA-256-PLUS"));
        match login.step(request) {
            Ok(Step::Send(out)) => {
                let sent = common::messages(&out).expect("whole messages");
                assert!(sent.iter().all(|(tag, _)| *tag == b'p'));
                let leaks = out
                    .windows(PASSWORD.len())
                    .any(|w| w == PASSWORD.as_bytes());
                assert_eq!(
                    leaks, cleartext,
                    "the password is sent only when asked in clear"
                );
                if offered_plus && binding.is_some() {
                    assert!(out[5..].starts_with(b"SCRAM-SHA-256-PLUS\0"));
                    assert!(login.bound());
                }
            }
            Ok(Step::Wait) => {}
            Ok(Step::Done) | Err(_) => return,
        }
    }
});
