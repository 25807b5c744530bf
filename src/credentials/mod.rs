//! Database credentials for routes. A [`CredentialSource`] yields [`Credentials`]; the
//! [`Store`] holds one source per `[credentials.…]` table and is what sessions ask.

mod file;
mod secret_json;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::CredentialsConfig;
use crate::error::CredentialsError;

pub use file::FileSource;

/// A password or other secret value. Its Debug prints `***`, and it has no Display, so it
/// cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    /// The value, for the one place that must send it: the backend login.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A database login, optionally with where it is valid (as RDS secrets carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dbname: Option<String>,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Somewhere credentials come from.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// The current credentials.
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, CredentialsError>>;
}

/// All configured credential sources, by the name of their `[credentials.…]` table.
#[derive(Debug, Default)]
pub struct Store {
    sources: HashMap<String, Arc<dyn CredentialSource>>,
}

impl Store {
    pub fn from_config(config: &std::collections::BTreeMap<String, CredentialsConfig>) -> Store {
        let sources = config
            .iter()
            .map(|(name, c)| {
                let source: Arc<dyn CredentialSource> = match c {
                    CredentialsConfig::File { path } => Arc::new(FileSource::new(name, path)),
                };
                (name.clone(), source)
            })
            .collect();
        Store { sources }
    }

    /// The current credentials of the named entry. Config validation guarantees the name exists.
    pub async fn get(&self, name: &str) -> Result<Credentials, CredentialsError> {
        match self.sources.get(name) {
            Some(source) => source.fetch().await,
            None => Err(CredentialsError::Malformed {
                name: name.to_owned(),
                location: "the configuration".into(),
                detail: "no such [credentials] table".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_hides_value() {
        let c = Credentials {
            username: "u".into(),
            password: Secret::new("hunter2".into()),
            host: None,
            port: None,
            dbname: None,
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***"),
            "{shown}"
        );
    }
}
