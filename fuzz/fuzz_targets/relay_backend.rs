//! The backend side of the relay: the scanner that finds message boundaries in what a backend
//! sends, holding whole only ReadyForQuery, ParameterStatus, ParseComplete and
//! NotificationResponse, and the readers pgvalet applies to backend messages
//! (`protocol::backend`). Properties:
//! - the messages found and the bytes passed on do not depend on how the stream was split;
//! - every message is passed on exactly once, in order, whole or in pieces;
//! - what the readers accept encodes back to the bytes read (ParameterStatus, BackendKeyData,
//!   the fields of ErrorResponse and NoticeResponse, the mechanisms of an authentication
//!   request).
//!
//! Input: one byte choosing the pieces, then the backend's stream.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use pgvalet::protocol::backend::{self, AuthRequest};
use pgvalet::protocol::scan::{BadLength, Item, Scanner};

/// The relay's limits: any message, and one read whole.
const MAX_MESSAGE: usize = 1 << 30;
const MAX_HELD: usize = 8192;

#[derive(Debug, PartialEq)]
enum Event {
    Begin(u8),
    Whole(Vec<u8>),
}

#[derive(Default)]
struct Relay {
    scan: Scanner,
    buf: Vec<u8>,
    passed: Vec<u8>,
    events: Vec<Event>,
    error: Option<BadLength>,
}

impl Relay {
    fn feed(&mut self, chunk: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.buf.extend_from_slice(chunk);
        let mut end = 0;
        loop {
            let item = self.scan.next(
                &self.buf[end..],
                |tag| matches!(tag, b'Z' | b'S' | b'1' | b'A'),
                MAX_HELD,
                MAX_MESSAGE,
            );
            match item {
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
                Ok(Item::NeedMore) => break,
                Ok(Item::Begin { tag, n }) => {
                    self.events.push(Event::Begin(tag));
                    end += n;
                }
                Ok(Item::Pass(n)) => end += n,
                Ok(Item::Whole { tag, len }) => {
                    let message = &self.buf[end..end + len];
                    assert_eq!(message[0], tag);
                    assert!(len <= 1 + MAX_HELD);
                    self.events.push(Event::Whole(message.to_vec()));
                    end += len;
                }
            }
        }
        self.passed.extend(self.buf.drain(..end));
    }
}

fn check_readers(tag: u8, body: &[u8]) {
    match tag {
        b'S' => {
            if let Some((name, value)) = backend::parameter_status(body) {
                assert_eq!(common::cstrs([name, value]), body);
            }
        }
        b'K' => {
            if let Some((pid, secret)) = backend::backend_key_data(body) {
                assert_eq!([pid.to_be_bytes(), secret.to_be_bytes()].concat(), body);
            }
        }
        b'E' | b'N' => {
            let fields = backend::error_fields(body);
            let _ = backend::field(&fields, b'C');
            // Field texts are read as UTF-8 one by one (lossily); in an ASCII body each is
            // exactly its bytes. (A UTF-8 body may still split a character at a field code.)
            if body.is_ascii() {
                let mut again = Vec::new();
                for (code, text) in &fields {
                    again.push(*code);
                    again.extend(common::cstrs([text.as_str()]));
                }
                assert!(body.starts_with(&again), "the fields read are the body's");
            }
        }
        b'D' => {
            if let Some(text) = backend::first_column(body) {
                assert!(text.len() <= body.len() * 3);
            }
        }
        b'R' => {
            if let Ok(request) = backend::auth_request(body) {
                let code = &body[..4];
                let again: Vec<u8> = match &request {
                    AuthRequest::Md5(salt) => [code, salt].concat(),
                    AuthRequest::Sasl(names) => {
                        [code, &common::cstrs(names.iter().copied()), &[0][..]].concat()
                    }
                    AuthRequest::SaslContinue(data) | AuthRequest::SaslFinal(data) => {
                        [code, *data].concat()
                    }
                    AuthRequest::Ok | AuthRequest::Cleartext | AuthRequest::Other(_) => {
                        code.to_vec()
                    }
                };
                assert!(
                    body.starts_with(&again),
                    "{request:?} is what the body says"
                );
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let mut whole = Relay::default();
    whole.feed(stream);
    let mut pieces = Relay::default();
    for cut in common::pieces(seed, stream.len()) {
        pieces.feed(&stream[cut]);
    }
    assert_eq!(whole.events, pieces.events, "what the scanner found");
    assert_eq!(whole.error, pieces.error);
    assert_eq!(whole.passed, pieces.passed, "what was passed on");
    assert_eq!(
        whole.passed[..],
        stream[..whole.passed.len()],
        "passed on in order"
    );

    // Every message passed on, read whole by the readers pgvalet has for it.
    let mut rest = &stream[..whole.passed.len()];
    while let Some(header) = rest.get(..5) {
        let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let Some(body) = rest.get(5..1 + len) else {
            break;
        };
        check_readers(header[0], body);
        rest = &rest[1 + len..];
    }
});
