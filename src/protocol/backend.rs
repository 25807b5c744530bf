//! Decoders for the backend messages pgvalet reads itself during a backend login. Everything else
//! the backend sends is relayed as it came.

/// An `R` (authentication request) message.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest<'a> {
    Ok,
    Cleartext,
    Md5([u8; 4]),
    Sasl(Vec<&'a str>),
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI, SCM credentials: methods a proxy cannot perform.
    Other(i32),
}

pub fn auth_request(body: &[u8]) -> Result<AuthRequest<'_>, &'static str> {
    let (code, rest) = body
        .split_first_chunk::<4>()
        .ok_or("authentication request without a code")?;
    Ok(match i32::from_be_bytes(*code) {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => AuthRequest::Md5(
            *rest
                .first_chunk::<4>()
                .ok_or("MD5 request without a salt")?,
        ),
        10 => {
            let mut mechanisms = Vec::new();
            let mut rest = rest;
            loop {
                let (name, tail) = cstr(rest).ok_or("SASL mechanism list without a terminator")?;
                if name.is_empty() {
                    break;
                }
                mechanisms.push(name);
                rest = tail;
            }
            AuthRequest::Sasl(mechanisms)
        }
        11 => AuthRequest::SaslContinue(rest),
        12 => AuthRequest::SaslFinal(rest),
        other => AuthRequest::Other(other),
    })
}

/// The fields of an ErrorResponse or NoticeResponse, as (code, text) pairs; text that is not
/// UTF-8 is replaced lossily. A malformed tail is dropped.
pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some((&code, tail)) = rest.split_first() {
        if code == 0 {
            break;
        }
        let Some(nul) = tail.iter().position(|&b| b == 0) else {
            break;
        };
        fields.push((code, String::from_utf8_lossy(&tail[..nul]).into_owned()));
        rest = &tail[nul + 1..];
    }
    fields
}

/// The field with the given code (`b'C'` for the SQLSTATE, `b'M'` for the message).
pub fn field(fields: &[(u8, String)], code: u8) -> &str {
    fields
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("", |(_, v)| v.as_str())
}

/// A ParameterStatus body: name and value.
pub fn parameter_status(body: &[u8]) -> Option<(&str, &str)> {
    let (name, rest) = cstr(body)?;
    let (value, rest) = cstr(rest)?;
    rest.is_empty().then_some((name, value))
}

/// A protocol 3.0 BackendKeyData body: process id and secret.
pub fn backend_key_data(body: &[u8]) -> Option<(i32, i32)> {
    let (pid, secret) = body.split_first_chunk::<4>()?;
    let secret: [u8; 4] = secret.try_into().ok()?;
    Some((i32::from_be_bytes(*pid), i32::from_be_bytes(secret)))
}

/// The first column of a DataRow body, as text; `None` for NULL, no columns or a malformed row.
pub fn first_column(body: &[u8]) -> Option<String> {
    let (count, rest) = body.split_first_chunk::<2>()?;
    if u16::from_be_bytes(*count) == 0 {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = usize::try_from(i32::from_be_bytes(*len)).ok()?;
    let value = rest.get(..len)?;
    Some(String::from_utf8_lossy(value).into_owned())
}

fn cstr(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&bytes[..nul]).ok()?;
    Some((text, &bytes[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_requests() {
        assert_eq!(auth_request(&[0, 0, 0, 0]), Ok(AuthRequest::Ok));
        assert_eq!(
            auth_request(&[0, 0, 0, 5, 1, 2, 3, 4]),
            Ok(AuthRequest::Md5([1, 2, 3, 4]))
        );
        assert!(auth_request(&[0, 0, 0, 5, 1]).is_err());
        assert_eq!(
            auth_request(b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0"),
            Ok(AuthRequest::Sasl(vec![
                "SCRAM-SHA-256-PLUS",
                "SCRAM-SHA-256"
            ]))
        );
        assert!(auth_request(b"\0\0\0\x0aSCRAM").is_err());
        assert_eq!(auth_request(&[0, 0, 0, 7]), Ok(AuthRequest::Other(7)));
        assert!(auth_request(&[0, 0]).is_err());
    }

    #[test]
    fn errors_and_params() {
        let f = error_fields(b"SFATAL\0C28P01\0Mpassword authentication failed\0\0");
        assert_eq!(field(&f, b'C'), "28P01");
        assert_eq!(field(&f, b'M'), "password authentication failed");
        assert_eq!(field(&f, b'D'), "");
        assert_eq!(error_fields(b"Cabc"), vec![]);
        assert_eq!(
            parameter_status(b"TimeZone\0UTC\0"),
            Some(("TimeZone", "UTC"))
        );
        assert_eq!(parameter_status(b"TimeZone\0UTC"), None);
        assert_eq!(backend_key_data(&[0, 0, 0, 9, 0, 0, 0, 1]), Some((9, 1)));
        assert_eq!(backend_key_data(&[0, 0, 0, 9, 0, 0, 0]), None);
        assert_eq!(first_column(b"\0\x01\0\0\0\x0297").as_deref(), Some("97"));
        assert_eq!(first_column(b"\0\x01\xff\xff\xff\xff"), None, "NULL");
        assert_eq!(first_column(b"\0\x01\0\0\0\x0597"), None, "short");
        assert_eq!(first_column(b"\0\0"), None);
    }
}
