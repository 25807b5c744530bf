//! `source = "aws"`: AWS Secrets Manager, by secret name or ARN. Every read names its staging
//! label explicitly (a read without one can return a stale version right after a rotation).

use aws_config::BehaviorVersion;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Region;
use aws_sdk_secretsmanager::error::DisplayErrorContext;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;

use super::aws_http::RustlsHttpClient;
use super::{BoxFuture, CredentialSource, Credentials, Stage, secret_json};
use crate::config::CredentialsConfig;
use crate::error::CredentialsError;

/// The shared SDK configuration: the standard credential chain and region lookup, with
/// pgvalet's rustls + ring HTTP client.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(RustlsHttpClient)
        .load()
        .await
}

/// A Secrets Manager client for one `[credentials.…]` table's region and endpoint.
pub fn client(
    base: &aws_config::SdkConfig,
    region: Option<&str>,
    endpoint_url: Option<&str>,
) -> Client {
    let mut builder = aws_sdk_secretsmanager::config::Builder::from(base);
    if let Some(region) = region {
        builder = builder.region(Region::new(region.to_owned()));
    }
    if let Some(url) = endpoint_url {
        builder = builder.endpoint_url(url);
    }
    Client::from_conf(builder.build())
}

#[derive(Debug)]
pub struct AwsSource {
    name: String,
    secret_id: String,
    client: Client,
}

impl AwsSource {
    pub fn new(name: &str, base: &aws_config::SdkConfig, config: &CredentialsConfig) -> AwsSource {
        AwsSource {
            name: name.to_owned(),
            secret_id: config.secret_id.clone().unwrap_or_default(),
            client: client(
                base,
                config.region.as_deref(),
                config.endpoint_url.as_deref(),
            ),
        }
    }
}

impl CredentialSource for AwsSource {
    fn fetch(&self, stage: Stage) -> BoxFuture<'_, Result<Option<Credentials>, CredentialsError>> {
        Box::pin(async move {
            let answer = self
                .client
                .get_secret_value()
                .secret_id(&self.secret_id)
                .version_stage(stage.label())
                .send()
                .await;
            let output = match answer {
                Ok(output) => output,
                Err(e) => {
                    let not_found = matches!(
                        e.as_service_error(),
                        Some(GetSecretValueError::ResourceNotFoundException(_))
                    );
                    return match (not_found, stage) {
                        (true, Stage::Current) => Err(CredentialsError::NotFound {
                            name: self.name.clone(),
                            location: self.location(),
                        }),
                        (true, _) => Ok(None),
                        (false, _) => Err(CredentialsError::Unreadable {
                            name: self.name.clone(),
                            location: self.location(),
                            detail: DisplayErrorContext(&e).to_string(),
                        }),
                    };
                }
            };
            let malformed = |detail: String| CredentialsError::Malformed {
                name: self.name.clone(),
                location: format!("{} ({})", self.location(), stage.label()),
                detail,
            };
            let text = output
                .secret_string()
                .ok_or_else(|| malformed("holds binary data, not a JSON string".into()))?;
            secret_json::parse(text).map(Some).map_err(malformed)
        })
    }

    fn location(&self) -> String {
        format!("secret \"{}\"", self.secret_id)
    }
}
