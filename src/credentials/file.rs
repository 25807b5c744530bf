//! `source = "file"`: a JSON file in the shape of an RDS secret, read at every fetch so that a
//! rewritten file takes effect for the next connection.

use std::path::{Path, PathBuf};

use super::{BoxFuture, CredentialSource, Credentials, secret_json};
use crate::error::CredentialsError;

#[derive(Debug)]
pub struct FileSource {
    name: String,
    path: PathBuf,
}

impl FileSource {
    pub fn new(name: &str, path: &Path) -> FileSource {
        FileSource {
            name: name.to_owned(),
            path: path.to_owned(),
        }
    }
}

impl CredentialSource for FileSource {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, CredentialsError>> {
        Box::pin(async move {
            let location = format!("file {}", self.path.display());
            let text = tokio::fs::read_to_string(&self.path)
                .await
                .map_err(|source| CredentialsError::Unreadable {
                    name: self.name.clone(),
                    location: location.clone(),
                    source,
                })?;
            secret_json::parse(&text).map_err(|detail| CredentialsError::Malformed {
                name: self.name.clone(),
                location,
                detail,
            })
        })
    }
}
