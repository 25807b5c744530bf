//! `source = "iam"`: no stored password at all. Each fetch makes a new RDS IAM auth token for
//! the configured user and backend endpoint, signed with pgvalet's own AWS credentials from the
//! standard chain (ECS task role, web identity, environment, profile). The cache renews it in
//! the background and never hands out one older than `token_lifetime`.

use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_secretsmanager::error::DisplayErrorContext;

use super::{BoxFuture, CredentialSource, Credentials, Secret, Stage};
use crate::config::CredentialsConfig;
use crate::error::CredentialsError;

#[derive(Debug)]
pub struct IamSource {
    name: String,
    user: String,
    host: String,
    port: u16,
    region: Option<String>,
    lifetime: Duration,
    provider: Option<SharedCredentialsProvider>,
}

impl IamSource {
    pub fn new(name: &str, base: &aws_config::SdkConfig, config: &CredentialsConfig) -> IamSource {
        let (host, port) = config
            .endpoint
            .as_deref()
            .and_then(crate::config::parse_endpoint)
            .unwrap_or_default();
        IamSource {
            name: name.to_owned(),
            user: config.username.clone().unwrap_or_default(),
            host,
            port,
            region: config
                .region
                .clone()
                .or_else(|| base.region().map(ToString::to_string)),
            lifetime: config.token_lifetime(),
            provider: base.credentials_provider(),
        }
    }

    fn failed(&self, detail: String) -> CredentialsError {
        CredentialsError::Unreadable {
            name: self.name.clone(),
            location: self.location(),
            detail,
        }
    }

    async fn make(&self) -> Result<Credentials, CredentialsError> {
        let region = self.region.as_deref().ok_or_else(|| {
            self.failed(format!(
                "no AWS region: set credentials.{}.region, or AWS_REGION",
                self.name
            ))
        })?;
        let provider = self
            .provider
            .as_ref()
            .ok_or_else(|| self.failed("no AWS credentials provider is configured".into()))?;
        let aws = provider.provide_credentials().await.map_err(|e| {
            self.failed(format!(
                "no AWS credentials to sign with: {}",
                DisplayErrorContext(&e)
            ))
        })?;
        let token = crate::iam::make_token(
            &aws,
            region,
            &self.host,
            self.port,
            &self.user,
            SystemTime::now(),
        )
        .ok_or_else(|| self.failed("the token could not be signed".into()))?;
        Ok(Credentials {
            username: self.user.clone(),
            password: Secret::new(token),
            host: None,
            port: None,
            dbname: None,
        })
    }
}

impl CredentialSource for IamSource {
    fn fetch(&self, stage: Stage) -> BoxFuture<'_, Result<Option<Credentials>, CredentialsError>> {
        Box::pin(async move {
            if stage != Stage::Current {
                return Ok(None);
            }
            self.make().await.map(Some)
        })
    }

    fn location(&self) -> String {
        format!(
            "IAM auth tokens for {}@{}:{} ({})",
            self.user,
            self.host,
            self.port,
            self.region.as_deref().unwrap_or("no region")
        )
    }

    fn max_age(&self) -> Option<Duration> {
        Some(self.lifetime)
    }
}
