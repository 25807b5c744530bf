//! `source = "file"`: a JSON file in the shape of an RDS secret. It has only a current version.

use std::path::PathBuf;

use super::{BoxFuture, CredentialSource, Credentials, Stage, secret_json};
use crate::error::CredentialsError;

#[derive(Debug)]
pub struct FileSource {
    name: String,
    path: PathBuf,
}

impl FileSource {
    pub fn new(name: &str, path: PathBuf) -> FileSource {
        FileSource {
            name: name.to_owned(),
            path,
        }
    }
}

impl CredentialSource for FileSource {
    fn fetch(&self, stage: Stage) -> BoxFuture<'_, Result<Option<Credentials>, CredentialsError>> {
        Box::pin(async move {
            if stage != Stage::Current {
                return Ok(None);
            }
            let text = tokio::fs::read_to_string(&self.path).await.map_err(|e| {
                CredentialsError::Unreadable {
                    name: self.name.clone(),
                    location: self.location(),
                    detail: e.to_string(),
                }
            })?;
            secret_json::parse(&text)
                .map(Some)
                .map_err(|detail| CredentialsError::Malformed {
                    name: self.name.clone(),
                    location: self.location(),
                    detail,
                })
        })
    }

    fn location(&self) -> String {
        format!("file {}", self.path.display())
    }
}
