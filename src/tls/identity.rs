//! The identity of a verified client certificate: SAN URIs, else SAN DNS names, else the
//! subject CN. All identities of the first kind present are returned; routes match any of them.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authz::{Identity, IdentityKind};

/// Extracts the identities of a leaf certificate. An empty result means the certificate names
/// nobody; routing then denies it.
pub fn identities(leaf: &CertificateDer<'_>) -> Result<Vec<Identity>, String> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| e.to_string())?;
    let mut uris = Vec::new();
    let mut dns = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(uri) => uris.push(*uri),
                GeneralName::DNSName(name) => dns.push(*name),
                _ => {}
            }
        }
    }
    let make = |kind, values: Vec<&str>| {
        values
            .into_iter()
            .map(|v| Identity {
                kind,
                value: v.to_owned(),
            })
            .collect()
    };
    if !uris.is_empty() {
        return Ok(make(IdentityKind::Uri, uris));
    }
    if !dns.is_empty() {
        return Ok(make(IdentityKind::Dns, dns));
    }
    let cns = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .collect();
    Ok(make(IdentityKind::Cn, cns))
}
