//! Durations in the config are written the way people say them: `"500ms"`, `"10s"`, `"5m"`,
//! `"1h"`; a bare number is seconds, as RDS Proxy's settings are written (`120`).

use std::time::Duration;

use serde::{Deserialize, Deserializer, de};

/// Parses `"<number><unit>"` with unit `ms`, `s`, `m` or `h`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{text}\" has no unit: write it as 500ms, 10s, 5m or 1h"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" does not start with a whole number"))?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => {
            return Err(format!(
                "\"{text}\" has unknown unit \"{unit}\": use ms, s, m or h"
            ));
        }
    };
    millis
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{text}\" is too long"))
}

/// A duration as the config writes it: text with a unit, or a bare whole number of seconds (as
/// RDS Proxy's settings are given).
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Text(String),
    Seconds(u64),
}

/// `#[serde(deserialize_with = "duration::deserialize")]`
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Written::deserialize(d)? {
        Written::Text(text) => parse(&text).map_err(de::Error::custom),
        Written::Seconds(secs) => Ok(Duration::from_secs(secs)),
    }
}

/// `#[serde(default, deserialize_with = "duration::deserialize_option")]`
pub fn deserialize_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse(" 1h "), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn refusals_say_why() {
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("s").unwrap_err().contains("whole number"));
        assert!(parse("3d").unwrap_err().contains("unknown unit"));
        assert!(parse("99999999999999999999h").is_err());
    }
}
