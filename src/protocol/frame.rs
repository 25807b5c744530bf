//! Typed messages (`tag`, `len`, body), as both sides send them after startup.

use bytes::BytesMut;

/// A message split off a buffer: the whole frame, tag and length word included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub bytes: BytesMut,
}

impl Frame {
    /// The body, after the tag and the length word.
    pub fn body(&self) -> &[u8] {
        &self.bytes[5..]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length word is below 4 or above the limit.
    Length { tag: u8, len: u32 },
}

/// Splits one complete message off the front of `buf`, or returns `Ok(None)` when more bytes are
/// needed. A declared length over `max` is an error before anything is buffered for it.
pub fn split(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    let Some(header) = buf.first_chunk::<5>() else {
        return Ok(None);
    };
    let tag = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len < 4 || len as usize > max {
        return Err(FrameError::Length { tag, len });
    }
    let total = 1 + len as usize;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    Ok(Some(Frame {
        tag,
        bytes: buf.split_to(total),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_frames_only() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IR\0\0"[..]);
        let f = split(&mut buf, 100).unwrap().unwrap();
        assert_eq!((f.tag, f.body()), (b'Z', &b"I"[..]));
        assert_eq!(split(&mut buf, 100), Ok(None));
        buf.extend_from_slice(b"\0\x04");
        let f = split(&mut buf, 100).unwrap().unwrap();
        assert_eq!((f.tag, f.body()), (b'R', &b""[..]));
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_bad_lengths() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x03"[..]);
        assert_eq!(
            split(&mut buf, 100),
            Err(FrameError::Length { tag: b'Z', len: 3 })
        );
        let mut buf = BytesMut::from(&b"D\x7f\xff\xff\xff"[..]);
        assert!(split(&mut buf, 1 << 20).is_err());
    }
}
