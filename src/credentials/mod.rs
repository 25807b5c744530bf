//! Database credentials for routes. A [`CredentialSource`] reads them (a file, environment
//! variables, AWS Secrets Manager); a [`Cache`] per `[credentials.…]` table keeps the last good
//! value, refreshes it in the background, and supplies the candidates to try while a secret
//! rotates. The [`Store`] holds the caches by name.

pub mod aws;
pub mod aws_http;
mod cache;
mod env;
mod file;
mod iam;
mod secret_json;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{CredentialsConfig, SourceKind};
use crate::error::{ConfigError, CredentialsError};

pub use cache::Cache;
pub use secret_json::parse as parse_secret;

/// A password or other secret value. Its Debug prints `***`, and it has no Display, so it
/// cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }
    /// The value, for the places that must use it: the backend login, a client's password check.
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

/// The staging labels of a rotating secret. Sources without versions have only `Current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Current,
    Pending,
    Previous,
}

impl Stage {
    /// The Secrets Manager staging label.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Current => "AWSCURRENT",
            Stage::Pending => "AWSPENDING",
            Stage::Previous => "AWSPREVIOUS",
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Somewhere credentials come from.
pub trait CredentialSource: Send + Sync + fmt::Debug {
    /// The credentials at `stage`, or `None` when the source has no such version.
    fn fetch(&self, stage: Stage) -> BoxFuture<'_, Result<Option<Credentials>, CredentialsError>>;
    /// Where they come from, for logs and errors: `file …`, `secret "…"`.
    fn location(&self) -> String;
    /// For sources whose values expire (IAM auth tokens): the oldest a value may be when it is
    /// used. A new value from such a source is a renewal, not a rotation.
    fn max_age(&self) -> Option<std::time::Duration> {
        None
    }
}

/// All configured credentials, by the name of their `[credentials.…]` table.
#[derive(Debug, Default)]
pub struct Store {
    caches: HashMap<String, Arc<Cache>>,
}

impl Store {
    /// Builds a cache per table. AWS and IAM sources share one SDK configuration (the standard
    /// credential chain: environment, profile, web identity, ECS task role, IMDS).
    #[allow(
        clippy::expect_used,
        reason = "at start-up: the SDK configuration is loaded whenever a source is aws"
    )]
    pub async fn build(config: &BTreeMap<String, CredentialsConfig>) -> Store {
        let needs_aws = config
            .values()
            .any(|c| matches!(c.source, SourceKind::Aws | SourceKind::Iam));
        let aws_base = if needs_aws {
            Some(aws::load_sdk_config().await)
        } else {
            None
        };
        let caches = config
            .iter()
            .map(|(name, c)| {
                let source: Arc<dyn CredentialSource> = match c.source {
                    SourceKind::File => Arc::new(file::FileSource::new(
                        name,
                        c.path.clone().unwrap_or_default(),
                    )),
                    SourceKind::Env => Arc::new(env::EnvSource::new(
                        name,
                        c.username_env.clone().unwrap_or_default(),
                        c.password_env.clone().unwrap_or_default(),
                    )),
                    SourceKind::Aws => Arc::new(aws::AwsSource::new(
                        name,
                        aws_base
                            .as_ref()
                            .expect("loaded above when any source is aws"),
                        c,
                    )),
                    SourceKind::Iam => Arc::new(iam::IamSource::new(
                        name,
                        aws_base
                            .as_ref()
                            .expect("loaded above when any source is iam"),
                        c,
                    )),
                };
                (
                    name.clone(),
                    Arc::new(Cache::new(name, source, c.refresh_interval)),
                )
            })
            .collect();
        Store { caches }
    }

    /// The cache of the named table. Config validation guarantees every route's name exists.
    pub fn get(&self, name: &str) -> Option<&Arc<Cache>> {
        self.caches.get(name)
    }

    /// Every cache, by name.
    pub fn caches(&self) -> impl Iterator<Item = (&String, &Arc<Cache>)> {
        self.caches.iter()
    }

    /// Reads every table once, all at once. The start waits for the tables with
    /// `require_at_start` (each read bounded by the cache's fetch timeout), and one that cannot
    /// be read stops it; the others are read beside the start, logged if they fail, and retried
    /// by their refresher, so a source that never answers holds up nothing but its own routes.
    pub async fn prime(
        &self,
        config: &BTreeMap<String, CredentialsConfig>,
    ) -> Result<(), ConfigError> {
        let mut required = tokio::task::JoinSet::new();
        for (name, cache) in &self.caches {
            let (name, cache) = (name.clone(), cache.clone());
            if config.get(&name).is_some_and(|c| c.require_at_start) {
                required.spawn(async move { (name, cache.refresh().await) });
            } else {
                tokio::spawn(async move {
                    if let Err(error) = cache.refresh().await {
                        tracing::warn!(credentials = %name, %error, "credentials not available at start; retrying in the background");
                    }
                });
            }
        }
        let mut failed = Vec::new();
        while let Some(read) = required.join_next().await {
            if let Ok((name, Err(source))) = read {
                failed.push((name, source));
            }
        }
        failed.sort_by(|a, b| a.0.cmp(&b.0));
        match failed.into_iter().next() {
            Some((name, source)) => Err(ConfigError::Credentials { name, source }),
            None => Ok(()),
        }
    }

    /// Starts one background refresher per table; they stop with `stop`.
    pub fn spawn_refreshers(&self, tasks: &TaskTracker, stop: &CancellationToken) {
        for cache in self.caches.values() {
            tasks.spawn(cache.clone().refresh_forever(stop.clone()));
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
