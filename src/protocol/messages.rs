//! Messages pgvalet itself sends to clients, encoded with pgwire's message types.

use bytes::BytesMut;
use pgwire::messages::Message;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::startup::{
    Authentication, BackendKeyData, NegotiateProtocolVersion, ParameterStatus, SecretKey,
};

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

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    encode(BackendKeyData::new(pid, SecretKey::I32(secret)), buf);
}

/// `NegotiateProtocolVersion`: pgvalet speaks 3.0 and none of the `_pq_.` options.
pub fn negotiate_protocol_version(buf: &mut BytesMut, unsupported_options: Vec<String>) {
    encode(NegotiateProtocolVersion::new(0, unsupported_options), buf);
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
        backend_key_data(&mut buf, 7, -1);
        ready_for_query(&mut buf, b'I');
        assert_eq!(
            &buf[..],
            b"R\0\0\0\x08\0\0\0\0K\0\0\0\x0c\0\0\0\x07\xff\xff\xff\xffZ\0\0\0\x05I"
        );
        let mut buf = BytesMut::new();
        negotiate_protocol_version(&mut buf, vec!["_pq_.x".into()]);
        assert_eq!(&buf[..], b"v\0\0\0\x13\0\0\0\0\0\0\0\x01_pq_.x\0");
    }
}
