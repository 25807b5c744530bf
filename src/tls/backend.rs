//! TLS from pgvalet to a backend, with libpq's `sslmode` meanings: `require` encrypts without
//! checking, `verify-ca` checks the chain, `verify-full` checks the chain and the host name.

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

/// The client config for one backend, or `None` for `tls = "disable"`.
pub fn client_config(
    name: &str,
    backend: &BackendConfig,
) -> Result<Option<Arc<ClientConfig>>, ConfigError> {
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
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid {
            path: "-".into(),
            key: format!("backends.{name}.tls"),
            message: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
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
