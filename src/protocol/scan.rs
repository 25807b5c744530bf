//! Message boundaries in a relayed byte stream, without buffering whole messages: a large
//! DataRow or CopyData passes through in whatever pieces it arrives in, and only the messages
//! the relay must read (ReadyForQuery, Terminate, …) are held until they are complete.

/// What the next bytes of a buffer are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// The first `n` bytes (header included) of a message with `tag`, to pass on as they are.
    Begin { tag: u8, n: usize },
    /// `n` more bytes of the body of the message in flight, to pass on as they are.
    Pass(usize),
    /// A whole message the caller asked to see, `len` bytes long (tag and length word
    /// included), at the start of the buffer.
    Whole { tag: u8, len: usize },
    /// More bytes are needed before anything can be said.
    NeedMore,
}

/// A declared message length below 4 or above the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength {
    pub tag: u8,
    pub len: u32,
}

/// Walks one direction of a session.
#[derive(Debug, Default)]
pub struct Scanner {
    /// Body bytes of the message in flight still to pass.
    remaining: usize,
}

impl Scanner {
    /// True between messages.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Classifies the start of `buf`. `whole` says which tags the caller wants complete;
    /// `max_whole` bounds those (a longer one is an error), `max` bounds any message.
    pub fn next(
        &mut self,
        buf: &[u8],
        whole: impl Fn(u8) -> bool,
        max_whole: usize,
        max: usize,
    ) -> Result<Item, BadLength> {
        if buf.is_empty() {
            return Ok(Item::NeedMore);
        }
        if self.remaining > 0 {
            let n = self.remaining.min(buf.len());
            self.remaining -= n;
            return Ok(Item::Pass(n));
        }
        let Some(header) = buf.first_chunk::<5>() else {
            return Ok(Item::NeedMore);
        };
        let tag = header[0];
        let declared = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let limit = if whole(tag) { max_whole } else { max };
        if declared < 4 || declared as usize > limit {
            return Err(BadLength { tag, len: declared });
        }
        let len = 1 + declared as usize;
        if whole(tag) {
            return Ok(if buf.len() >= len {
                Item::Whole { tag, len }
            } else {
                Item::NeedMore
            });
        }
        let n = len.min(buf.len());
        self.remaining = len - n;
        Ok(Item::Begin { tag, n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(scanner: &mut Scanner, buf: &[u8]) -> Vec<Item> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let item = scanner
                .next(&buf[pos..], |t| t == b'Z', 64, 1 << 20)
                .unwrap();
            out.push(item);
            match item {
                Item::Begin { n, .. } | Item::Pass(n) | Item::Whole { len: n, .. } => pos += n,
                Item::NeedMore => return out,
            }
        }
    }

    #[test]
    fn passes_bodies_and_holds_wanted_messages() {
        let mut s = Scanner::default();
        // A DataRow of 10 bytes arriving in two pieces, then a ReadyForQuery split in half.
        let first = b"D\0\0\0\x0aabcZ\0";
        let items = walk(&mut s, &first[..8]);
        assert_eq!(items, vec![Item::Begin { tag: b'D', n: 8 }, Item::NeedMore]);
        assert!(!s.at_boundary());
        let rest = b"defZ\0\0\0\x05I";
        let items = walk(&mut s, rest);
        assert_eq!(
            items,
            vec![
                Item::Pass(3),
                Item::Whole { tag: b'Z', len: 6 },
                Item::NeedMore
            ]
        );
        assert!(s.at_boundary());
    }

    #[test]
    fn bad_lengths() {
        let mut s = Scanner::default();
        assert_eq!(
            s.next(b"D\0\0\0\x03", |_| false, 64, 100),
            Err(BadLength { tag: b'D', len: 3 })
        );
        assert!(s.next(b"D\0\0\x10\0", |_| false, 64, 100).is_err());
        assert!(
            s.next(b"Z\0\0\x01\0", |t| t == b'Z', 64, 1 << 20).is_err(),
            "wanted messages have their own bound"
        );
        assert_eq!(s.next(b"D\0\0", |_| false, 64, 100), Ok(Item::NeedMore));
    }
}
