//! Frontend message framing as pgvalet reads it before authentication (`frame::split` under the
//! small limits of the SASL and IAM token exchanges), and the password messages read from it.
//! Properties:
//! - a stream read in pieces splits into the same messages, and fails at the same message with
//!   the same error, as the stream read whole;
//! - a SASLInitialResponse that is accepted encodes back to the bytes read;
//! - a password message's text goes to the IAM token reader without a panic.
//!
//! Input: one byte choosing the pieces and the limit, then the stream.
#![no_main]

mod common;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgvalet::protocol::frame::{self, Frame, FrameError};
use pgvalet::session::password::parse_initial_response;

/// The limits pgvalet reads with before authentication: a SASL message, an IAM token.
const LIMITS: [usize; 2] = [2048, pgvalet::iam::token::MAX_TOKEN_LEN + 5];

fn read(
    stream: &[u8],
    cuts: &[std::ops::Range<usize>],
    max: usize,
) -> Vec<Result<Frame, FrameError>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for cut in cuts {
        buf.extend_from_slice(&stream[cut.clone()]);
        loop {
            match frame::split(&mut buf, max) {
                Ok(Some(f)) => out.push(Ok(f)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let max = LIMITS[usize::from(seed >> 7)];
    let whole = read(stream, &[0..stream.len()], max);
    let pieces = read(stream, &common::pieces(seed, stream.len()), max);
    assert_eq!(whole, pieces, "the stream read in pieces");
    let mut consumed = 0;
    for f in whole.iter().flatten() {
        assert_eq!(f.bytes[..], stream[consumed..consumed + f.bytes.len()]);
        assert_eq!(
            f.bytes.len(),
            1 + u32::from_be_bytes(f.bytes[1..5].try_into().unwrap()) as usize
        );
        consumed += f.bytes.len();
        if f.tag != b'p' {
            continue;
        }
        if let Ok((mechanism, initial)) = parse_initial_response(f.body()) {
            let mut again = common::cstrs([mechanism]);
            again.extend_from_slice(&(initial.len() as i32).to_be_bytes());
            again.extend_from_slice(initial);
            assert_eq!(again, f.body(), "a SASLInitialResponse encodes back");
        }
        // What session::iam does with a password message: the token text, then its reader.
        let text = f.body().strip_suffix(&[0]).unwrap_or(f.body());
        if let Ok(text) = std::str::from_utf8(text) {
            let _ = pgvalet::iam::token::Token::parse(text);
        }
    }
    if let Some(Err(FrameError::Length { tag, len })) = whole.last() {
        assert_eq!(stream[consumed], *tag);
        assert!(*len < 4 || *len as usize > max);
    }
});
