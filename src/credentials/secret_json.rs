//! The JSON shape of a database secret, as RDS and the usual terraform modules write it:
//! `username`, `password`, and optionally `host`, `port`, `dbname`, `engine`. Other keys are
//! ignored. Parse errors never quote the text, since it holds the password.

use serde::Deserialize;

use super::{Credentials, Secret};

#[derive(Deserialize)]
struct SecretJson {
    username: String,
    password: String,
    host: Option<String>,
    port: Option<Port>,
    dbname: Option<String>,
}

/// RDS writes the port as a number; some hand-written secrets have it as a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Port {
    Number(u16),
    Text(String),
}

/// Parses a secret's text. The error says what is wrong and where, never what the text holds.
pub fn parse(text: &str) -> Result<Credentials, String> {
    let json: SecretJson = serde_json::from_str(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON"
            }
            serde_json::error::Category::Io => "could not be read",
            serde_json::error::Category::Data => {
                "is not an object with string fields \"username\" and \"password\""
            }
        };
        format!("{what} (line {}, column {})", e.line(), e.column())
    })?;
    let port = match json.port {
        None => None,
        Some(Port::Number(p)) => Some(p),
        Some(Port::Text(t)) => Some(
            t.parse()
                .map_err(|_| "has a \"port\" that is not a number from 1 to 65535".to_owned())?,
        ),
    };
    if json.username.is_empty() {
        return Err("has an empty \"username\"".into());
    }
    Ok(Credentials {
        username: json.username,
        password: Secret::new(json.password),
        host: json.host.filter(|h| !h.is_empty()),
        port,
        dbname: json.dbname.filter(|d| !d.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rds_shape() {
        let c = parse(r#"{"engine":"postgres","username":"u","password":"p","host":"h","port":5432,"dbname":"d","dbInstanceIdentifier":"x"}"#).unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("u", "p"));
        assert_eq!(
            (c.host.as_deref(), c.port, c.dbname.as_deref()),
            (Some("h"), Some(5432), Some("d"))
        );
        assert_eq!(
            parse(r#"{"username":"u","password":"p","port":"6432"}"#)
                .unwrap()
                .port,
            Some(6432)
        );
    }

    #[test]
    fn errors_never_quote_the_secret() {
        for bad in [
            r#"{"username":"u","password":12345678}"#,
            r#"{"username":"u","password":"hunter2""#,
            r#"{"username":"u","password":"hunter2","port":"hunter2"}"#,
            r#"hunter2"#,
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("hunter2") && !e.contains("12345678"), "{e}");
        }
    }
}
