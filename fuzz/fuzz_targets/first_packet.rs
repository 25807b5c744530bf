//! The first packet a client sends (SSLRequest, GSSENCRequest, CancelRequest or StartupMessage),
//! read as pgvalet reads it before and inside TLS: the length word checked first, then exactly
//! that many bytes decoded. Properties:
//! - what is accepted encodes back to the very bytes read;
//! - a CancelRequest pgvalet forwards to a peer is the packet it read;
//! - the NegotiateProtocolVersion pgvalet answers a startup packet with reads back as the
//!   version it serves and every `_pq_.` option the client asked for;
//! - the startup parameters and `options` switches become SQL (`set_config` calls) whose
//!   literals read back, through the SQL lexer, as exactly the values the client sent: no value
//!   escapes its literal.
#![no_main]

mod common;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgvalet::backend::ClientSettings;
use pgvalet::protocol::messages;
use pgvalet::protocol::startup::{self, FirstPacket, LATEST_MINOR};
use pgvalet::session::fuzzing::{Lexer, Token};

fn encode(packet: &FirstPacket) -> Vec<u8> {
    let code = |c: u32| c.to_be_bytes().to_vec();
    match packet {
        FirstPacket::SslRequest => code(80_877_103),
        FirstPacket::GssEncRequest => code(80_877_104),
        FirstPacket::Cancel(key) => {
            let mut out = code(80_877_102);
            out.extend_from_slice(&key.pid.to_be_bytes());
            out.extend_from_slice(&key.secret);
            out
        }
        FirstPacket::Startup(s) => {
            let mut out = code((u32::from(s.major) << 16) | u32::from(s.minor));
            out.extend(common::cstrs(
                s.params.iter().flat_map(|(k, v)| [k.as_str(), v.as_str()]),
            ));
            out.push(0);
            out
        }
    }
}

/// Reads a NegotiateProtocolVersion message: the version and the option names.
fn read_negotiate(buf: &[u8]) -> (i32, Vec<String>) {
    let all = common::messages(buf).expect("whole messages");
    assert_eq!(all.len(), 1);
    let (tag, body) = all[0];
    assert_eq!(tag, b'v');
    let version = i32::from_be_bytes(body[..4].try_into().unwrap());
    let count = i32::from_be_bytes(body[4..8].try_into().unwrap());
    let mut parts: Vec<&[u8]> = body[8..].split(|&b| b == 0).collect();
    assert_eq!(parts.pop(), Some(&[][..]), "each name ends in a NUL");
    let names: Vec<String> = parts
        .into_iter()
        .map(|n| String::from_utf8(n.to_vec()).unwrap())
        .collect();
    assert_eq!(count as usize, names.len());
    (version, names)
}

/// The `(name, value)` pairs of `SELECT pg_catalog.set_config(name, value, false);` statements,
/// as the lexer reads them; anything else in the SQL fails the target.
fn read_set_configs(sql: &str) -> Vec<(String, String)> {
    let mut lexer = Lexer::new(sql);
    let mut tokens = Vec::new();
    let mut found = Vec::new();
    loop {
        tokens.clear();
        let more = lexer.statement(&mut tokens);
        if tokens.is_empty() {
            assert!(!more, "an empty statement in {sql:?}");
            return found;
        }
        match tokens[..] {
            [
                Token::Word("SELECT"),
                Token::Word("pg_catalog"),
                Token::Other,
                Token::Word("set_config"),
                Token::Punct(b'('),
                Token::Str(name),
                Token::Punct(b','),
                Token::Str(value),
                Token::Punct(b','),
                Token::Word("false"),
                Token::Punct(b')'),
            ] => found.push((name.to_owned(), value.to_owned())),
            _ => panic!("settings SQL read as {tokens:?}: {sql:?}"),
        }
        if !more {
            return found;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let Ok(len) = startup::body_len(*header) else {
        return;
    };
    let Some(body) = rest.get(..len) else {
        return;
    };
    let Ok(packet) = startup::decode(body) else {
        return;
    };
    assert_eq!(encode(&packet), body, "{packet:?} encodes back");
    match packet {
        FirstPacket::Cancel(key) => {
            assert_eq!(
                pgvalet::cancel::request_packet(&key),
                data[..4 + len],
                "a forwarded cancel is the packet read"
            );
            let _ = pgvalet::cancel::key::issuer_of(&key.secret);
            let _ = pgvalet::cancel::instance_of(&key.secret);
        }
        FirstPacket::Startup(s) => {
            let minor = s.served_minor();
            assert!(minor <= LATEST_MINOR && minor <= s.minor);
            let options = s.protocol_options();
            let mut buf = BytesMut::new();
            messages::negotiate_protocol_version(&mut buf, minor, options.clone());
            let (version, names) = read_negotiate(&buf);
            assert_eq!(version, (3 << 16) | i32::from(minor));
            assert_eq!(names, options);
            if let Ok(settings) = ClientSettings::from_startup(&s.params) {
                let sql = ClientSettings::default().change_to(&settings);
                let wanted: Vec<(String, String)> = settings
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect();
                assert_eq!(read_set_configs(&sql), wanted, "{sql:?}");
            }
        }
        FirstPacket::SslRequest | FirstPacket::GssEncRequest => {}
    }
});
