//! The first packet a client sends, which has no type byte: SSLRequest, GSSENCRequest,
//! CancelRequest or StartupMessage.

/// Postgres' own limit for a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_LEN: usize = 10_000;

const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

/// The newest minor version of protocol 3 pgvalet serves to clients (3.2: long cancel keys),
/// whatever its backends speak.
pub const LATEST_MINOR: u16 = 2;

/// A decoded first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPacket {
    SslRequest,
    GssEncRequest,
    Cancel(CancelKey),
    Startup(Startup),
}

/// The key of a CancelRequest. Protocol 3.0 keys are 4 bytes; 3.2 allows up to 256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelKey {
    pub pid: i32,
    pub secret: Vec<u8>,
}

/// A StartupMessage: protocol version and the parameters in the order the client sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Startup {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl Startup {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The minor version of protocol 3 the session runs: what the client asked for, up to
    /// [`LATEST_MINOR`].
    pub fn served_minor(&self) -> u16 {
        self.minor.min(LATEST_MINOR)
    }

    /// Protocol options (`_pq_.*`) the client asked for; pgvalet supports none.
    pub fn protocol_options(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|(k, _)| k.starts_with("_pq_."))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Why a first packet was refused. The texts follow Postgres' own where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupError {
    /// The length word is outside 8..=MAX_STARTUP_LEN.
    Length(u32),
    /// The body does not have the shape its code promises.
    Layout(&'static str),
}

/// Validates the 4-byte length word of a first packet and returns the body length that follows.
pub fn body_len(header: [u8; 4]) -> Result<usize, StartupError> {
    let len = u32::from_be_bytes(header);
    if !(8..=MAX_STARTUP_LEN as u32).contains(&len) {
        return Err(StartupError::Length(len));
    }
    Ok(len as usize - 4)
}

/// Decodes the body of a first packet (everything after the length word).
pub fn decode(body: &[u8]) -> Result<FirstPacket, StartupError> {
    let Some((code, rest)) = body.split_first_chunk::<4>() else {
        return Err(StartupError::Layout("shorter than its protocol code"));
    };
    match u32::from_be_bytes(*code) {
        SSL_REQUEST if rest.is_empty() => Ok(FirstPacket::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(FirstPacket::GssEncRequest),
        SSL_REQUEST | GSSENC_REQUEST => Err(StartupError::Layout("encryption request with a body")),
        CANCEL_REQUEST => {
            let Some((pid, secret)) = rest.split_first_chunk::<4>() else {
                return Err(StartupError::Layout("cancel request without a process id"));
            };
            if !(4..=256).contains(&secret.len()) {
                return Err(StartupError::Layout(
                    "cancel request key of the wrong length",
                ));
            }
            Ok(FirstPacket::Cancel(CancelKey {
                pid: i32::from_be_bytes(*pid),
                secret: secret.to_vec(),
            }))
        }
        version => Ok(FirstPacket::Startup(Startup {
            major: (version >> 16) as u16,
            minor: (version & 0xffff) as u16,
            params: decode_params(rest)?,
        })),
    }
}

fn decode_params(mut rest: &[u8]) -> Result<Vec<(String, String)>, StartupError> {
    let mut params = Vec::new();
    loop {
        let name = take_cstr(&mut rest)?;
        if name.is_empty() {
            break;
        }
        let value = take_cstr(&mut rest)?;
        params.push((name.to_owned(), value.to_owned()));
    }
    if !rest.is_empty() {
        return Err(StartupError::Layout("expected terminator as last byte"));
    }
    Ok(params)
}

fn take_cstr<'a>(rest: &mut &'a [u8]) -> Result<&'a str, StartupError> {
    let nul = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or(StartupError::Layout("expected terminator as last byte"))?;
    let text = std::str::from_utf8(&rest[..nul])
        .map_err(|_| StartupError::Layout("parameter is not UTF-8"))?;
    *rest = &rest[nul + 1..];
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(code: u32, tail: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(tail);
        body
    }

    #[test]
    fn ssl_gss_cancel() {
        assert_eq!(
            decode(&packet(SSL_REQUEST, b"")),
            Ok(FirstPacket::SslRequest)
        );
        assert_eq!(
            decode(&packet(GSSENC_REQUEST, b"")),
            Ok(FirstPacket::GssEncRequest)
        );
        let cancel = decode(&packet(CANCEL_REQUEST, &[0, 0, 0, 7, 1, 2, 3, 4])).unwrap();
        assert_eq!(
            cancel,
            FirstPacket::Cancel(CancelKey {
                pid: 7,
                secret: vec![1, 2, 3, 4]
            })
        );
        assert!(decode(&packet(SSL_REQUEST, b"x")).is_err());
        assert!(decode(&packet(CANCEL_REQUEST, &[0, 0, 0, 7, 1])).is_err());
    }

    #[test]
    fn startup_params_in_order() {
        let body = packet(196_608, b"user\0orders\0database\0orders\0\0");
        let FirstPacket::Startup(s) = decode(&body).unwrap() else {
            panic!()
        };
        assert_eq!((s.major, s.minor), (3, 0));
        assert_eq!(s.param("user"), Some("orders"));
        assert_eq!(s.params.len(), 2);
        let body = packet(196_610, b"user\0u\0_pq_.x\0y\0\0");
        let FirstPacket::Startup(s) = decode(&body).unwrap() else {
            panic!()
        };
        assert_eq!((s.major, s.minor), (3, 2));
        assert_eq!(s.protocol_options(), vec!["_pq_.x".to_string()]);
    }

    #[test]
    fn malformed_startup() {
        assert!(
            decode(&packet(196_608, b"user\0orders\0")).is_err(),
            "no terminator"
        );
        assert!(decode(&packet(196_608, b"user\0orders")).is_err(), "no nul");
        assert!(
            decode(&packet(196_608, b"user\0o\0\0junk")).is_err(),
            "trailing bytes"
        );
        assert!(
            decode(&packet(196_608, b"us\xffer\0o\0\0")).is_err(),
            "not utf-8"
        );
        assert!(decode(b"ab").is_err());
        assert!(decode(b"").is_err());
    }

    #[test]
    fn lengths() {
        assert_eq!(body_len(8u32.to_be_bytes()), Ok(4));
        assert_eq!(body_len(10_000u32.to_be_bytes()), Ok(9_996));
        assert_eq!(body_len(7u32.to_be_bytes()), Err(StartupError::Length(7)));
        assert_eq!(
            body_len(10_001u32.to_be_bytes()),
            Err(StartupError::Length(10_001))
        );
        assert!(body_len(u32::MAX.to_be_bytes()).is_err());
    }
}
