//! TLS on both sides: the client-facing server config (client certificate required, CRLs,
//! ALPN `postgresql` for direct TLS), identity extraction, and the backend client config.

pub mod backend;
pub mod identity;

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::config::{TlsConfig, TlsVersion};
use crate::error::ConfigError;

/// The ALPN protocol name Postgres 17 uses for TLS, required for direct TLS connections.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// The one crypto provider pgvalet uses everywhere: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(key: &str, path: &Path, message: impl ToString) -> ConfigError {
    ConfigError::File {
        key: key.to_owned(),
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The PEM text a path names: a file, or with `env:NAME` the environment variable `NAME`
/// (for containers that are handed their certificates as variables).
pub fn read_pem(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    match path.to_str().and_then(|p| p.strip_prefix("env:")) {
        Some(name) => std::env::var(name).map(String::into_bytes).map_err(|_| {
            file_error(
                key,
                path,
                format!("the environment variable {name} is not set or not UTF-8"),
            )
        }),
        None => std::fs::read(path).map_err(|e| file_error(key, path, e)),
    }
}

/// Reads every certificate in a PEM file; an empty file is an error.
pub fn load_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_pem(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn load_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read_pem(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_error(key, path, e))
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, ConfigError> {
    let pem = read_pem("tls.crls", path)?;
    CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error("tls.crls", path, e))
}

/// When the first certificate of a PEM file expires, in seconds since the Unix epoch.
pub fn not_after(key: &str, path: &Path) -> Result<i64, ConfigError> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let certs = load_certs(key, path)?;
    let (_, cert) = X509Certificate::from_der(&certs[0]).map_err(|e| file_error(key, path, e))?;
    Ok(cert.validity().not_after.timestamp())
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A root store from a PEM bundle, refusing certificates that are not usable as trust anchors.
pub fn root_store(key: &str, path: &Path) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(key, path)? {
        roots.add(cert).map_err(|e| file_error(key, path, e))?;
    }
    Ok(roots)
}

/// Builds the client-facing TLS config. A client certificate that chains to `client_ca` is
/// required, unless `certificate_optional` (some route takes passwords alone); a certificate
/// that is presented is always verified. The CRLs revoke leaf certificates (an issuer no CRL
/// covers is accepted).
pub fn server_config(
    tls: &TlsConfig,
    certificate_optional: bool,
) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = provider();
    let roots = root_store("tls.client_ca", &tls.client_ca)?;
    let mut crls = Vec::new();
    for path in &tls.crls {
        crls.extend(load_crls(path)?);
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if !crls.is_empty() {
        verifier = verifier
            .with_crls(crls)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    if certificate_optional {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier
        .build()
        .map_err(|e| file_error("tls.client_ca", &tls.client_ca, e))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let chain = load_certs("tls.cert", &tls.cert)?;
    let key = load_key("tls.key", &tls.key)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| file_error("tls.min_version", Path::new("-"), e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| file_error("tls.key", &tls.key, format!("does not fit tls.cert: {e}")))?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Arc::new(config))
}

/// The `tls-server-end-point` channel binding data of the server certificate in `tls.cert`,
/// for SCRAM-SHA-256-PLUS with clients.
pub fn server_end_point(tls: &TlsConfig) -> Result<Option<Vec<u8>>, ConfigError> {
    let chain = load_certs("tls.cert", &tls.cert)?;
    Ok(chain.first().and_then(backend::tls_server_end_point))
}
