//! The PROXY protocol v1/v2 parser on arbitrary bytes: it never panics, a header it accepts
//! lies within the input, and reading the same bytes in pieces gives the same answer as reading
//! them whole (pgvalet peeks at a socket that may deliver the header in several reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgvalet::proxy_protocol::{Peek, peek};

fuzz_target!(|data: &[u8]| {
    let whole = peek(data);
    match &whole {
        Ok(Peek::Header { len, .. }) => {
            assert!(*len <= data.len(), "header longer than the input");
            assert_eq!(
                peek(&data[..*len]),
                whole,
                "the header alone reads the same"
            );
            for cut in 0..*len {
                match peek(&data[..cut]) {
                    Ok(Peek::Incomplete) => {}
                    // An empty buffer says nothing yet.
                    Ok(Peek::Absent) if cut == 0 => {}
                    other => panic!("a prefix of {cut} bytes of a valid header read as {other:?}"),
                }
            }
        }
        Ok(Peek::Incomplete) => {
            for cut in 1..data.len() {
                assert_eq!(
                    peek(&data[..cut]),
                    Ok(Peek::Incomplete),
                    "prefix {cut} of an incomplete header"
                );
            }
        }
        Ok(Peek::Absent) | Err(_) => {}
    }
});
