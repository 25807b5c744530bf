//! An RDS IAM authentication token, read without I/O. The token is a SigV4-presigned request
//! for `rds-db:connect`, without its scheme:
//!
//! ```text
//! HOST:PORT/?Action=connect&DBUser=USER&X-Amz-Algorithm=AWS4-HMAC-SHA256
//!   &X-Amz-Credential=KEY%2FYYYYMMDD%2FREGION%2Frds-db%2Faws4_request&X-Amz-Date=YYYYMMDDTHHMMSSZ
//!   &X-Amz-Expires=900&X-Amz-SignedHeaders=host[&X-Amz-Security-Token=…]&X-Amz-Signature=HEX
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest token pgvalet reads: tokens signed with temporary credentials carry a session token
/// and run to 2-3 KB.
pub const MAX_TOKEN_LEN: usize = 8192;

/// A token's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `HOST:PORT` as signed.
    pub host: String,
    pub port: u16,
    pub db_user: String,
    pub access_key_id: String,
    /// The date of the credential scope, `YYYYMMDD`.
    pub scope_date: String,
    pub region: String,
    pub service: String,
    /// When it was signed.
    pub signed_at: SystemTime,
    /// `X-Amz-Date` as written.
    pub amz_date: String,
    pub expires: Duration,
    pub signed_headers: String,
    pub security_token: Option<String>,
    /// Hex, as written.
    pub signature: String,
    /// The query parameters other than the `X-Amz-*` ones, decoded, in order.
    pub other_params: Vec<(String, String)>,
}

/// Why a token could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Token {
    pub fn parse(text: &str) -> Result<Token, Malformed> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(Malformed("it is longer than any RDS token"));
        }
        let text = text.strip_prefix("https://").unwrap_or(text);
        let (authority, query) = text.split_once("/?").ok_or(Malformed(
            "it is not HOST:PORT/?… (is this an RDS IAM token?)",
        ))?;
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or(Malformed("it names no port"))?;
        let port = port
            .parse()
            .map_err(|_| Malformed("its port is not a number"))?;
        if host.is_empty() {
            return Err(Malformed("it names no host"));
        }
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((decode(name)?, decode(value)?));
        }
        let one = |name: &'static str| -> Result<String, Malformed> {
            let mut found = params.iter().filter(|(k, _)| k == name);
            match (found.next(), found.next()) {
                (Some((_, v)), None) => Ok(v.clone()),
                (None, _) => Err(Malformed(missing(name))),
                (Some(_), Some(_)) => Err(Malformed("a parameter appears twice")),
            }
        };
        if one("Action")? != "connect" {
            return Err(Malformed("its Action is not connect"));
        }
        if one("X-Amz-Algorithm")? != "AWS4-HMAC-SHA256" {
            return Err(Malformed("its algorithm is not AWS4-HMAC-SHA256"));
        }
        let credential = one("X-Amz-Credential")?;
        let scope: Vec<&str> = credential.split('/').collect();
        let [key, date, region, service, terminator] = scope[..] else {
            return Err(Malformed(
                "its credential is not KEY/DATE/REGION/SERVICE/aws4_request",
            ));
        };
        if terminator != "aws4_request" {
            return Err(Malformed("its credential does not end in aws4_request"));
        }
        let amz_date = one("X-Amz-Date")?;
        let signed_at =
            parse_amz_date(&amz_date).ok_or(Malformed("its X-Amz-Date is not YYYYMMDDTHHMMSSZ"))?;
        if amz_date.get(..8) != Some(date) {
            return Err(Malformed("its credential date and X-Amz-Date differ"));
        }
        let expires = one("X-Amz-Expires")?
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| Malformed("its X-Amz-Expires is not a number of seconds"))?;
        // RDS tokens sign the host header alone, and the signature is checked as such: a token
        // naming other headers would claim what was never checked.
        let signed_headers = one("X-Amz-SignedHeaders")?;
        if signed_headers != "host" {
            return Err(Malformed("its X-Amz-SignedHeaders is not host"));
        }
        let security_token = one("X-Amz-Security-Token").ok();
        Ok(Token {
            host: host.to_owned(),
            port,
            db_user: one("DBUser")?,
            access_key_id: key.to_owned(),
            scope_date: date.to_owned(),
            region: region.to_owned(),
            service: service.to_owned(),
            signed_at,
            amz_date,
            expires,
            signed_headers,
            security_token,
            signature: one("X-Amz-Signature")?,
            other_params: params
                .iter()
                .filter(|(k, _)| !k.starts_with("X-Amz-"))
                .cloned()
                .collect(),
        })
    }
}

fn missing(name: &str) -> &'static str {
    match name {
        "Action" => "it has no Action",
        "DBUser" => "it has no DBUser",
        "X-Amz-Algorithm" => "it has no X-Amz-Algorithm",
        "X-Amz-Credential" => "it has no X-Amz-Credential",
        "X-Amz-Date" => "it has no X-Amz-Date",
        "X-Amz-Expires" => "it has no X-Amz-Expires",
        "X-Amz-SignedHeaders" => "it has no X-Amz-SignedHeaders",
        "X-Amz-Signature" => "it has no X-Amz-Signature",
        _ => "a parameter is missing",
    }
}

/// Percent-decoding of a query component (`+` is a space, as form encoding writes it).
fn decode(text: &str) -> Result<String, Malformed> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or(Malformed("a %-escape is not two hex digits"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| Malformed("a parameter is not UTF-8"))
}

/// `YYYYMMDDTHHMMSSZ` as a time.
pub fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTO: &str = "db.example.com:6432/?Action=connect&DBUser=orders_app&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261202%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date=20261202T013542Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=90b8c6ce9470cda75b9a995a7f7fa90ae9880442f5d511b636da9d68688f5f6b";

    #[test]
    fn reads_a_token_made_by_boto3() {
        let t = Token::parse(BOTO).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("db.example.com", 6432));
        assert_eq!(t.db_user, "orders_app");
        assert_eq!(t.access_key_id, "AKIDEXAMPLE");
        assert_eq!(
            (t.region.as_str(), t.service.as_str()),
            ("us-east-1", "rds-db")
        );
        assert_eq!(t.expires, Duration::from_secs(900));
        assert_eq!(
            t.signed_at.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_796_175_342,
            "2026-12-02T01:35:42Z"
        );
        assert_eq!(
            t.other_params,
            [
                ("Action".into(), "connect".into()),
                ("DBUser".into(), "orders_app".into())
            ]
        );
    }

    #[test]
    fn refuses_what_is_not_a_token() {
        for bad in [
            "hunter2",
            "db:6432",
            "db:x/?Action=connect",
            ":6432/?Action=connect",
            &BOTO.replace("Action=connect", "Action=drop"),
            &BOTO.replace("%2Frds-db%2F", "%2F"),
            &BOTO.replace("20261202T013542Z", "2026-12-02"),
            &BOTO.replace("X-Amz-Expires=900", "X-Amz-Expires=soon"),
            &BOTO.replace("&X-Amz-Signature=", "&X-Amz-Nothing="),
            &format!("{BOTO}&DBUser=other"),
            &BOTO.replace("%2F", "%zz"),
            // Found by fuzzing: claims the signature check did not cover.
            &BOTO.replace("SignedHeaders=host", "SignedHeaders=xost"),
            &BOTO.replace("SignedHeaders=host", "SignedHeaders=host%3Bx-amz-date"),
            &BOTO.replace("%2F20261202%2F", "%2F2026%2F"),
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(Token::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amz_dates() {
        let at = |s| parse_amz_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(at("19700101T000000Z"), Some(0));
        assert_eq!(at("20000229T120000Z"), Some(951_825_600));
        assert_eq!(at("20001301T000000Z"), None);
        assert_eq!(at("2000010lT000000Z"), None);
        assert_eq!(at("20000101 000000Z"), None);
    }
}
