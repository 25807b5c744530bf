//! Messages pgvalet itself sends to clients, encoded with pgwire's message types.

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::startup::{Authentication, NegotiateProtocolVersion, ParameterStatus};

/// `FATAL` or `ERROR`.
#[derive(Debug, Clone, Copy)]
pub enum Severity {
    Fatal,
    Error,
}

/// An ErrorResponse in the shape Postgres sends: severity (twice, localized and not), code, message.
pub fn error_response(buf: &mut BytesMut, severity: Severity, code: &str, message: &str) {
    let severity = match severity {
        Severity::Fatal => "FATAL",
        Severity::Error => "ERROR",
    };
    let fields = vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    encode(ErrorResponse::new(fields), buf);
}

pub fn authentication_ok(buf: &mut BytesMut) {
    encode(Authentication::Ok, buf);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    encode(ParameterStatus::new(name.to_owned(), value.to_owned()), buf);
}

/// `BackendKeyData`: a 4-byte secret for protocol 3.0, longer ones for 3.2.
pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: &[u8]) {
    buf.extend_from_slice(b"K");
    buf.extend_from_slice(&(8 + secret.len() as u32).to_be_bytes());
    buf.extend_from_slice(&pid.to_be_bytes());
    buf.extend_from_slice(secret);
}

/// `NegotiateProtocolVersion` as Postgres sends it: the newest version both sides speak
/// (major 3, `minor`) as one Int32, and the `_pq_.` options pgvalet does not know (all of them).
pub fn negotiate_protocol_version(
    buf: &mut BytesMut,
    minor: u16,
    unsupported_options: Vec<String>,
) {
    let version = (3 << 16) | i32::from(minor);
    encode(
        NegotiateProtocolVersion::new(version, unsupported_options),
        buf,
    );
}

/// `ReadyForQuery` with the transaction status byte (`I`, `T` or `E`).
pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    buf.extend_from_slice(&[b'Z', 0, 0, 0, 5, status]);
}

fn encode<M: Message>(message: M, buf: &mut BytesMut) {
    // pgwire refuses only messages over its size limits; ours are all a few hundred bytes, so a
    // failure here is a bug in pgvalet, not something a client can cause.
    if let Err(e) = message.encode(buf) {
        tracing::error!(error = %e, "could not encode a message for the client");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_bytes() {
        let mut buf = BytesMut::new();
        error_response(&mut buf, Severity::Fatal, "28000", "no");
        assert_eq!(&buf[..], b"E\0\0\0\x1eSFATAL\0VFATAL\0C28000\0Mno\0\0");
    }

    #[test]
    fn startup_replies() {
        let mut buf = BytesMut::new();
        authentication_ok(&mut buf);
        backend_key_data(&mut buf, 7, &[0xff; 4]);
        ready_for_query(&mut buf, b'I');
        assert_eq!(
            &buf[..],
            b"R\0\0\0\x08\0\0\0\0K\0\0\0\x0c\0\0\0\x07\xff\xff\xff\xffZ\0\0\0\x05I"
        );
        let mut buf = BytesMut::new();
        negotiate_protocol_version(&mut buf, 2, vec!["_pq_.x".into()]);
        assert_eq!(&buf[..], b"v\0\0\0\x13\0\x03\0\x02\0\0\0\x01_pq_.x\0");
        let mut buf = BytesMut::new();
        backend_key_data(&mut buf, 9, &[7; 32]);
        assert_eq!(&buf[..9], b"K\0\0\0\x28\0\0\0\x09");
        assert_eq!(buf.len(), 1 + 40);
    }
}
