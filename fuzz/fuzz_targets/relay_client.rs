//! The client side of the relay: the scanner that finds message boundaries in what a client
//! sends, and what the relay does with the messages it reads whole (the SQL of Query and Parse,
//! statement renaming in transaction mode, the requests in flight). The driver below follows
//! `session::relay`'s `forward_client` step by step, without sockets. Properties:
//! - the messages the scanner finds, what the relay sends on and the effects it reads in SQL do
//!   not depend on how the stream was split into reads;
//! - when the stream ends on a message boundary, what the relay sends on is whole messages, and
//!   a backend answering each of them leaves the client with exactly one ParseComplete per
//!   Parse and one ReadyForQuery per Query, Sync and FunctionCall it sent: every Parse and Sync
//!   pgvalet adds itself is answered out of the client's sight. In transaction mode a Parse of a
//!   name in use is refused (42P05) by an error the backend is made to give, after which it
//!   skips to the next Sync, as Postgres does: with a refusal in the stream, no Parse is
//!   answered twice and every Sync still gets its ReadyForQuery.
//!
//! Input: one byte choosing the pieces and the pool mode, then the client's stream.
#![no_main]

mod common;

use std::collections::HashSet;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgvalet::protocol::scan::{BadLength, Item, Scanner};
use pgvalet::session::fuzzing::{
    Effect, Expect, Expected, InFlight, Statements, carried_set, effect, needing_no_sessions,
    query_text, wanted,
};

/// The relay's limits: any message, and one read whole.
const MAX_MESSAGE: usize = 1 << 30;
const MAX_WHOLE: usize = 64 << 20;

#[derive(Debug, PartialEq)]
enum Event {
    Begin(u8),
    Whole(u8, usize),
    Effect(Option<Effect>, Option<(String, String)>),
    Databases(Vec<String>),
}

#[derive(Debug, PartialEq)]
enum Stop {
    BadLength(BadLength),
    Terminate,
    Malformed(&'static str),
}

struct Relay {
    transaction: bool,
    scan: Scanner,
    buf: Vec<u8>,
    statements: Statements,
    on_backend: HashSet<String>,
    expected: Expected,
    in_flight: InFlight,
    out: BytesMut,
    events: Vec<Event>,
    stop: Option<Stop>,
}

impl Relay {
    fn new(transaction: bool) -> Relay {
        Relay {
            transaction,
            scan: Scanner::default(),
            buf: Vec::new(),
            statements: Statements::numbered(1),
            on_backend: HashSet::new(),
            expected: Expected::default(),
            in_flight: InFlight::default(),
            out: BytesMut::new(),
            events: Vec::new(),
            stop: None,
        }
    }

    fn sql(&mut self, message: &[u8]) {
        if let Some(sql) = query_text(message) {
            self.events.push(Event::Databases(needing_no_sessions(sql)));
            let effect = effect(sql);
            self.events.push(Event::Effect(effect, carried_set(sql)));
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        if self.stop.is_some() {
            return;
        }
        self.buf.extend_from_slice(chunk);
        let transaction = self.transaction;
        let whole = |tag: u8| matches!(tag, b'X' | b'Q' | b'P') || (transaction && wanted(tag));
        let mut used = 0;
        loop {
            let item = match self
                .scan
                .next(&self.buf[used..], whole, MAX_WHOLE, MAX_MESSAGE)
            {
                Ok(item) => item,
                Err(e) => {
                    self.stop = Some(Stop::BadLength(e));
                    break;
                }
            };
            match item {
                Item::NeedMore => break,
                Item::Whole { tag: b'X', .. } => {
                    self.stop = Some(Stop::Terminate);
                    break;
                }
                Item::Begin { tag, n } => {
                    self.events.push(Event::Begin(tag));
                    let owed = self.in_flight.client_message(tag);
                    for _ in 0..owed.voided {
                        self.expected.void_last_ready();
                    }
                    if owed.ready {
                        self.expected.push(Expect::Ready);
                    }
                    self.out.extend_from_slice(&self.buf[used..used + n]);
                    used += n;
                }
                Item::Pass(n) => {
                    self.out.extend_from_slice(&self.buf[used..used + n]);
                    used += n;
                }
                Item::Whole { tag, len } => {
                    self.events.push(Event::Whole(tag, len));
                    let message = self.buf[used..used + len].to_vec();
                    used += len;
                    self.sql(&message);
                    if !transaction {
                        if self.in_flight.client_message(tag).ready {
                            self.expected.push(Expect::Ready);
                        }
                        self.out.extend_from_slice(&message);
                    } else if tag == b'Q' {
                        let rewritten = query_text(&message).and_then(|sql| {
                            self.statements.rewrite_sql(
                                sql,
                                &mut self.on_backend,
                                &mut self.expected,
                                &mut self.out,
                            )
                        });
                        match rewritten {
                            Some((sql, sent_parse)) => {
                                if sent_parse {
                                    self.out.extend_from_slice(&[b'S', 0, 0, 0, 4]);
                                    self.in_flight.client_message(b'S');
                                    self.expected.push(Expect::HiddenReady);
                                }
                                self.out.extend_from_slice(&common::message(
                                    b'Q',
                                    &[sql.as_bytes(), &[0]].concat(),
                                ));
                            }
                            None => self.out.extend_from_slice(&message),
                        }
                        self.in_flight.client_message(b'Q');
                        self.expected.push(Expect::Ready);
                    } else {
                        self.in_flight.client_message(tag);
                        if let Err(e) = self.statements.rewrite(
                            &message,
                            &mut self.on_backend,
                            &mut self.expected,
                            &mut self.out,
                        ) {
                            self.stop = Some(Stop::Malformed(e.0));
                            break;
                        }
                    }
                }
            }
        }
        self.buf.drain(..used);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let transaction = seed & 0x80 != 0;
    let mut whole = Relay::new(transaction);
    whole.feed(stream);
    let mut pieces = Relay::new(transaction);
    for cut in common::pieces(seed, stream.len()) {
        pieces.feed(&stream[cut]);
    }
    assert_eq!(whole.events, pieces.events, "what the scanner found");
    assert_eq!(whole.stop, pieces.stop);
    assert_eq!(whole.out, pieces.out, "what was sent on");

    // A stream that ended cleanly, with no COPY in it: answer as a backend would.
    let clean = whole.stop.is_none() && whole.buf.is_empty() && whole.scan.at_boundary();
    let Some(sent) = common::messages(stream) else {
        return;
    };
    if !clean
        || sent
            .iter()
            .any(|(tag, _)| matches!(tag, b'd' | b'c' | b'f'))
    {
        return;
    }
    let owed_parse = sent.iter().filter(|(tag, _)| *tag == b'P').count();
    let owed_ready = sent
        .iter()
        .filter(|(tag, _)| matches!(tag, b'Q' | b'S' | b'F'))
        .count();
    let forwarded = common::messages(&whole.out).expect("whole messages sent on");
    let (mut parse_complete, mut ready, mut refused, mut syncs) = (0, 0, 0, 0);
    // After an error the backend skips everything up to the next Sync.
    let mut skipping = false;
    for (tag, _) in forwarded {
        if skipping && tag != b'S' {
            continue;
        }
        match tag {
            b'P' => parse_complete += usize::from(!whole.expected.parse_complete()),
            // The Describe that stands for a refused Parse fails: the client sees 42P05.
            b'D' if whole.expected.refusal_next() => {
                let name = whole
                    .statements
                    .error(&mut whole.expected, &mut whole.on_backend);
                assert!(name.is_some(), "a refusal names its statement");
                refused += 1;
                skipping = true;
            }
            b'S' => {
                skipping = false;
                let shown = !whole.expected.ready();
                ready += usize::from(shown);
                syncs += usize::from(shown);
            }
            b'Q' | b'F' => ready += usize::from(!whole.expected.ready()),
            _ => {}
        }
    }
    if refused == 0 {
        assert_eq!(
            parse_complete, owed_parse,
            "ParseComplete messages the client sees"
        );
        assert_eq!(ready, owed_ready, "ReadyForQuery messages the client sees");
    } else {
        let owed_syncs = sent.iter().filter(|(tag, _)| *tag == b'S').count();
        assert!(
            parse_complete + refused <= owed_parse,
            "{parse_complete} ParseComplete and {refused} refusals for {owed_parse} Parse messages"
        );
        assert_eq!(syncs, owed_syncs, "ReadyForQuery messages for Sync");
    }

    // A batch of Parse messages and a Sync, answered without a backend.
    let mut statements = Statements::numbered(2);
    let mut reply = BytesMut::new();
    if let Some(used) = statements.answer_parse_batch(stream, MAX_WHOLE, &mut reply) {
        let batch = common::messages(&stream[..used]).expect("whole messages");
        let (last, parses) = batch.split_last().expect("a Sync at least");
        assert_eq!(last.0, b'S');
        assert!(!parses.is_empty() && parses.iter().all(|(tag, _)| *tag == b'P'));
        let mut want = b"1\0\0\0\x04".repeat(parses.len());
        want.extend_from_slice(b"Z\0\0\0\x05I");
        assert_eq!(reply[..], want[..]);
    }
});
