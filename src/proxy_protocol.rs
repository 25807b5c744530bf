//! The PROXY protocol header a load balancer (an AWS NLB, HAProxy) puts in front of a
//! connection to pass on the client's real address: version 1 (text) and version 2 (binary),
//! sans I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";
/// Version 1 headers are at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// Version 2 addresses and TLVs; NLBs send a few dozen bytes of TLVs at most.
const V2_MAX_BODY: usize = 1024;

/// What the start of a connection holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Not a PROXY header at all.
    Absent,
    /// Looks like one so far; more bytes are needed.
    Incomplete,
    /// A whole header of `len` bytes. `source` is `None` for LOCAL (the balancer's own health
    /// check) and UNKNOWN connections, which keep the socket's address.
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// A header that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// Reads a PROXY header at the start of `buf`, if there is one.
pub fn peek(buf: &[u8]) -> Result<Peek, Invalid> {
    if starts_like(buf, V2_SIGNATURE) {
        return v2(buf);
    }
    if starts_like(buf, V1_PREFIX) {
        return v1(buf);
    }
    Ok(Peek::Absent)
}

/// True when `buf` and `prefix` agree on their common length and `buf` is not empty.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    n > 0 && buf[..n] == prefix[..n]
}

fn v2(buf: &[u8]) -> Result<Peek, Invalid> {
    let Some(header) = buf.get(..16) else {
        return Ok(Peek::Incomplete);
    };
    let (version, command) = (header[12] >> 4, header[12] & 0x0f);
    if version != 2 {
        return Err(Invalid("unsupported PROXY protocol version"));
    }
    let body_len = u16::from_be_bytes([header[14], header[15]]) as usize;
    if body_len > V2_MAX_BODY {
        return Err(Invalid("PROXY v2 header too long"));
    }
    let len = 16 + body_len;
    let Some(body) = buf.get(16..len) else {
        return Ok(Peek::Incomplete);
    };
    let source = match command {
        0 => None,
        1 => match header[13] {
            // TCP over IPv4: source address, destination address, source port, destination port.
            0x11 => {
                let a = body
                    .get(..12)
                    .ok_or(Invalid("PROXY v2 IPv4 addresses cut short"))?;
                let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                Some(SocketAddr::new(
                    IpAddr::V4(ip),
                    u16::from_be_bytes([a[8], a[9]]),
                ))
            }
            0x21 => {
                let a = body
                    .first_chunk::<36>()
                    .ok_or(Invalid("PROXY v2 IPv6 addresses cut short"))?;
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&a[..16]);
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(octets)),
                    u16::from_be_bytes([a[32], a[33]]),
                ))
            }
            // UNSPEC, UDP and unix sockets: the socket's own address stands.
            _ => None,
        },
        _ => return Err(Invalid("unknown PROXY v2 command")),
    };
    Ok(Peek::Header { len, source })
}

fn v1(buf: &[u8]) -> Result<Peek, Invalid> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(Invalid("PROXY v1 header without CRLF"))
        } else {
            Ok(Peek::Incomplete)
        };
    };
    let len = end + 2;
    if len > V1_MAX {
        return Err(Invalid("PROXY v1 header too long"));
    }
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| Invalid("PROXY v1 header is not text"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => None,
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            src,
            _dst,
            src_port,
            _dst_port,
        ] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| Invalid("PROXY v1 source address"))?;
            if (*family == "TCP4") != ip.is_ipv4() {
                return Err(Invalid("PROXY v1 address does not match its family"));
            }
            let port: u16 = src_port
                .parse()
                .map_err(|_| Invalid("PROXY v1 source port"))?;
            Some(SocketAddr::new(ip, port))
        }
        _ => return Err(Invalid("malformed PROXY v1 header")),
    };
    Ok(Peek::Header { len, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_tcp4(src: [u8; 4], port: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x21);
        h.push(0x11);
        h.extend(((12 + tlvs.len()) as u16).to_be_bytes());
        h.extend(src);
        h.extend([10, 0, 0, 1]);
        h.extend(port.to_be_bytes());
        h.extend(6432u16.to_be_bytes());
        h.extend(tlvs);
        h
    }

    #[test]
    fn version_2() {
        let mut h = v2_tcp4([203, 0, 113, 7], 40000, &[0x04, 0, 1, 0]);
        let len = h.len();
        h.extend(b"\0\0\0\x08\x04\xd2\x16\x2f");
        let source = "203.0.113.7:40000".parse().ok();
        assert_eq!(peek(&h), Ok(Peek::Header { len, source }));
        for cut in [1, 12, 15, 20] {
            assert_eq!(peek(&h[..cut]), Ok(Peek::Incomplete), "cut at {cut}");
        }
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(
            peek(&local),
            Ok(Peek::Header {
                len: 16,
                source: None
            })
        );
        let mut v6 = V2_SIGNATURE.to_vec();
        v6.extend([0x21, 0x21, 0, 36]);
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend([0u8; 16]);
        v6.extend([0x1f, 0x90, 0, 0]);
        assert_eq!(
            peek(&v6),
            Ok(Peek::Header {
                len: 52,
                source: "[::1]:8080".parse().ok()
            })
        );
    }

    #[test]
    fn version_1() {
        let h = b"PROXY TCP4 198.51.100.9 10.0.0.1 51234 6432\r\nrest";
        assert_eq!(
            peek(h),
            Ok(Peek::Header {
                len: 45,
                source: "198.51.100.9:51234".parse().ok()
            })
        );
        assert_eq!(
            peek(b"PROXY UNKNOWN\r\n"),
            Ok(Peek::Header {
                len: 15,
                source: None
            })
        );
        assert_eq!(peek(b"PROXY TCP4 1.2"), Ok(Peek::Incomplete));
        assert_eq!(peek(b"PRO"), Ok(Peek::Incomplete));
    }

    #[test]
    fn not_a_header_and_bad_headers() {
        assert_eq!(
            peek(b"\0\0\0\x08\x04\xd2\x16\x2f"),
            Ok(Peek::Absent),
            "an SSLRequest"
        );
        assert_eq!(peek(b"\x16\x03\x01"), Ok(Peek::Absent), "a TLS ClientHello");
        assert_eq!(peek(b""), Ok(Peek::Absent));
        assert!(peek(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n").is_err());
        assert!(peek(b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n").is_err());
        assert!(peek(b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n").is_err());
        assert!(peek(&[b"PROXY ".as_slice(), &[b'x'; 120]].concat()).is_err());
        let mut bad_version = V2_SIGNATURE.to_vec();
        bad_version.extend([0x11, 0x11, 0, 0]);
        assert!(peek(&bad_version).is_err());
        let mut too_long = V2_SIGNATURE.to_vec();
        too_long.extend([0x21, 0x11, 0xff, 0xff]);
        assert!(peek(&too_long).is_err());
        let mut short_body = V2_SIGNATURE.to_vec();
        short_body.extend([0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(peek(&short_body).is_err());
    }
}
