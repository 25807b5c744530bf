//! TLS from pgvalet to a backend, with libpq's `sslmode` meanings: `require` encrypts without
//! checking, `verify-ca` checks the chain, `verify-full` checks the chain and the host name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256, Sha384, Sha512};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{BackendConfig, BackendTls};
use crate::error::ConfigError;

/// Where a client certificate for a backend is configured: `owner` is the table that names it
/// (`backends.main`, `routes[2]`), whose `client_cert` and `client_key` are `cert` and `key`.
pub struct ClientCertFiles<'a> {
    pub owner: String,
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// A client certificate pgvalet presents to a backend, as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The key that names it, as `backends.main.client_cert`.
    pub key: String,
    pub path: PathBuf,
    /// Its subject CN: the database user of routes that have no credentials.
    pub cn: Option<String>,
    /// When it expires, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// The TLS client side towards one backend.
pub struct Client {
    pub config: Arc<ClientConfig>,
    /// The client certificate it presents, if any.
    pub cert: Option<ClientCert>,
}

/// The client config for one backend, or `None` for `tls = "disable"`; with `client_cert`,
/// presenting that certificate.
pub fn client_config(
    name: &str,
    backend: &BackendConfig,
    client_cert: Option<ClientCertFiles<'_>>,
) -> Result<Option<Client>, ConfigError> {
    let provider = super::provider();
    let verifier: Arc<dyn ServerCertVerifier> = match backend.tls {
        BackendTls::Disable => return Ok(None),
        BackendTls::Require => Arc::new(NoVerify(provider.clone())),
        BackendTls::VerifyCa | BackendTls::VerifyFull => {
            let key = format!("backends.{name}.ca");
            let path = backend.ca.as_ref().ok_or_else(|| ConfigError::Invalid {
                path: "-".into(),
                key: key.clone(),
                message: "is required to verify the backend".into(),
            })?;
            let roots = super::root_store(&key, path)?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| ConfigError::File {
                        key,
                        path: path.clone(),
                        message: e.to_string(),
                    })?;
            if backend.tls == BackendTls::VerifyCa {
                Arc::new(ChainOnly(webpki))
            } else {
                webpki
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid {
            path: "-".into(),
            key: format!("backends.{name}.tls"),
            message: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let Some(files) = client_cert else {
        return Ok(Some(Client {
            config: Arc::new(builder.with_no_client_auth()),
            cert: None,
        }));
    };
    let cert_key = format!("{}.client_cert", files.owner);
    let key_key = format!("{}.client_key", files.owner);
    let chain = super::load_certs(&cert_key, files.cert)?;
    let loaded = describe(&cert_key, files.cert, &chain[0])?;
    let key = super::load_key(&key_key, files.key)?;
    let config = builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| ConfigError::File {
            key: key_key,
            path: files.key.to_owned(),
            message: format!("does not fit {cert_key}: {e}"),
        })?;
    Ok(Some(Client {
        config: Arc::new(config),
        cert: Some(loaded),
    }))
}

/// The CN and expiry of a client certificate.
fn describe(key: &str, path: &Path, cert: &CertificateDer<'_>) -> Result<ClientCert, ConfigError> {
    let (_, parsed) = X509Certificate::from_der(cert).map_err(|e| ConfigError::File {
        key: key.to_owned(),
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let cn = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    Ok(ClientCert {
        key: key.to_owned(),
        path: path.to_owned(),
        cn,
        not_after: parsed.validity().not_after.timestamp(),
    })
}

/// The `tls-server-end-point` channel binding data (RFC 5929) for a server certificate: its
/// hash with the certificate's signature hash, SHA-256 for MD5 and SHA-1.
pub fn tls_server_end_point(cert: &CertificateDer<'_>) -> Option<Vec<u8>> {
    let (_, parsed) = X509Certificate::from_der(cert).ok()?;
    let oid = parsed.signature_algorithm.algorithm.to_id_string();
    let digest = match oid.as_str() {
        // sha384WithRSAEncryption, ecdsa-with-SHA384
        "1.2.840.113549.1.1.12" | "1.2.840.10045.4.3.3" => Sha384::digest(cert).to_vec(),
        // sha512WithRSAEncryption, ecdsa-with-SHA512
        "1.2.840.113549.1.1.13" | "1.2.840.10045.4.3.4" => Sha512::digest(cert).to_vec(),
        // Ed25519 has no hash of its own: RFC 5929 leaves it undefined, so no binding.
        "1.3.101.112" => return None,
        _ => Sha256::digest(cert).to_vec(),
    };
    Some(digest)
}

/// `verify-ca`: the chain must be good; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // webpki checks the chain before the name, so a name error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require`: encrypt, trust any certificate. The handshake signatures are still checked, so
/// SCRAM channel binding still detects a man in the middle.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["db.example".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn end_point_hash_follows_the_signature_hash() {
        let p256 = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(
            tls_server_end_point(&p256),
            Some(Sha256::digest(&p256).to_vec())
        );
        let p384 = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
        assert_eq!(
            tls_server_end_point(&p384),
            Some(Sha384::digest(&p384).to_vec())
        );
        let ed25519 = self_signed(&rcgen::PKCS_ED25519);
        assert_eq!(tls_server_end_point(&ed25519), None);
        assert_eq!(
            tls_server_end_point(&CertificateDer::from(vec![1, 2, 3])),
            None
        );
    }
}
