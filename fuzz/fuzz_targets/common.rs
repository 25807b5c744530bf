//! Helpers shared by the fuzz targets (not a target itself).
#![allow(dead_code)]

/// Cuts `len` bytes into pieces whose sizes follow from `seed`, as a socket might deliver them:
/// single bytes, small runs and larger reads, never empty.
pub fn pieces(seed: u8, len: usize) -> Vec<std::ops::Range<usize>> {
    let mut state = u32::from(seed) | 0x100;
    let mut at = 0;
    let mut out = Vec::new();
    while at < len {
        // xorshift: a fixed sequence of sizes for each seed.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = match seed % 4 {
            0 => 1,
            1 => 1 + (state % 7) as usize,
            2 => 1 + (state % 64) as usize,
            _ => 1 + (state % 4096) as usize,
        };
        let end = (at + size).min(len);
        out.push(at..end);
        at = end;
    }
    out
}

/// A message as both sides frame them: tag, length word, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(tag);
    out.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a buffer of whole messages into (tag, body) pairs; `None` if it is not exactly that.
pub fn messages(mut buf: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let header = buf.get(..5)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len < 4 {
            return None;
        }
        let body = buf.get(5..1 + len)?;
        out.push((header[0], body));
        buf = &buf[1 + len..];
    }
    Some(out)
}

/// NUL-terminated strings, concatenated.
pub fn cstrs<'a>(parts: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(p.as_bytes());
        out.push(0);
    }
    out
}
