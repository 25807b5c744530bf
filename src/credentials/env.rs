//! `source = "env"`: the user name and password in two environment variables, as ECS injects
//! secrets into a container. Read at every fetch; only a current version.

use super::{BoxFuture, CredentialSource, Credentials, Secret, Stage};
use crate::error::CredentialsError;

#[derive(Debug)]
pub struct EnvSource {
    name: String,
    username_env: String,
    password_env: String,
}

impl EnvSource {
    pub fn new(name: &str, username_env: String, password_env: String) -> EnvSource {
        EnvSource {
            name: name.to_owned(),
            username_env,
            password_env,
        }
    }

    fn var(&self, var: &str) -> Result<String, CredentialsError> {
        std::env::var(var).map_err(|e| CredentialsError::Unreadable {
            name: self.name.clone(),
            location: format!("environment variable {var}"),
            detail: e.to_string(),
        })
    }
}

impl CredentialSource for EnvSource {
    fn fetch(&self, stage: Stage) -> BoxFuture<'_, Result<Option<Credentials>, CredentialsError>> {
        Box::pin(async move {
            if stage != Stage::Current {
                return Ok(None);
            }
            Ok(Some(Credentials {
                username: self.var(&self.username_env)?,
                password: Secret::new(self.var(&self.password_env)?),
                host: None,
                port: None,
                dbname: None,
            }))
        })
    }

    fn location(&self) -> String {
        format!(
            "environment variables {} and {}",
            self.username_env, self.password_env
        )
    }
}
