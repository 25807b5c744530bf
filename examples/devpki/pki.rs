//! A throwaway certificate authority for development and tests. Every key it makes is for
//! local use only: never put one of these certificates in front of real data.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A CA that can issue server and client certificates and a CRL.
pub struct Authority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
    next_serial: u64,
    revoked: Vec<u64>,
}

/// An issued certificate with its key.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// The key as PKCS#8 DER, the form JDBC (and so DBeaver) wants.
    pub key_pkcs8_der: Vec<u8>,
    pub serial: u64,
}

/// What a leaf certificate says about its holder.
pub struct Leaf<'a> {
    pub cn: &'a str,
    pub uris: &'a [&'a str],
    pub dns: &'a [&'a str],
    pub ips: &'a [IpAddr],
    pub server: bool,
    /// Valid from `not_before` to `not_after`, relative to now.
    pub not_before: Duration,
    pub not_after: Duration,
}

impl<'a> Leaf<'a> {
    /// A client certificate valid from yesterday for two years.
    pub fn client(cn: &'a str, uris: &'a [&'a str]) -> Leaf<'a> {
        Leaf {
            cn,
            uris,
            dns: &[],
            ips: &[],
            server: false,
            not_before: Duration::days(-1),
            not_after: Duration::days(730),
        }
    }

    /// A server certificate for localhost, 127.0.0.1 and ::1.
    pub fn localhost_server(cn: &'a str) -> Leaf<'a> {
        const IPS: &[IpAddr] = &[
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        Leaf {
            cn,
            uris: &[],
            dns: &["localhost"],
            ips: IPS,
            server: true,
            not_before: Duration::days(-1),
            not_after: Duration::days(730),
        }
    }
}

impl Authority {
    pub fn new(name: &str) -> Result<Authority> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(
            DnType::OrganizationName,
            "pgvalet development (not for production)",
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Authority {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            key_pem,
            next_serial: 1000,
            revoked: Vec::new(),
        })
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub fn issue(&mut self, leaf: &Leaf<'_>) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, leaf.cn);
        for uri in leaf.uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into()?));
        }
        for name in leaf.dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*name).try_into()?));
        }
        for ip in leaf.ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![if leaf.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let now = OffsetDateTime::now_utc();
        params.not_before = now + leaf.not_before;
        params.not_after = now + leaf.not_after;
        self.next_serial += 1;
        let serial = self.next_serial;
        params.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_pkcs8_der: key.serialize_der(),
            serial,
        })
    }

    /// Marks a certificate this authority issued as revoked in the next CRL.
    pub fn revoke(&mut self, issued: &Issued) {
        self.revoked.push(issued.serial);
    }

    /// A CRL listing every revoked certificate, valid for a week.
    pub fn crl_pem(&self) -> Result<String> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: self
                .revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial.to_be_bytes()),
                    revocation_time: now - Duration::hours(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// Writes a file; keys get mode 0600, as libpq insists for a client key.
pub fn write(dir: &Path, name: &str, contents: &[u8], secret: bool) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    fs::write(&path, contents)?;
    fs::set_permissions(
        &path,
        fs::Permissions::from_mode(if secret { 0o600 } else { 0o644 }),
    )
}

/// The trust domain of the development identities.
pub const TRUST_DOMAIN: &str = "spiffe://pgvalet.dev/svc";

/// Generates the whole development PKI into `dir` (see certs-dev/README.md for the list).
pub fn generate_dev(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    let mut ca = Authority::new("pgvalet dev CA")?;
    write(dir, "ca.crt", ca.cert_pem.as_bytes(), false)?;
    write(dir, "ca.key", ca.key_pem().as_bytes(), true)?;
    let put = |name: &str, issued: &Issued| -> io::Result<()> {
        write(
            dir,
            &format!("{name}.crt"),
            issued.cert_pem.as_bytes(),
            false,
        )?;
        write(dir, &format!("{name}.key"), issued.key_pem.as_bytes(), true)
    };
    put("server", &ca.issue(&Leaf::localhost_server("pgvalet"))?)?;
    // The server certificate's successor, to try a renewal: copy it over server.crt/.key and
    // send pgvalet SIGHUP.
    put(
        "server-renewed",
        &ca.issue(&Leaf::localhost_server("pgvalet renewed"))?,
    )?;
    put("postgres", &ca.issue(&Leaf::localhost_server("postgres"))?)?;
    let orders_uri = format!("{TRUST_DOMAIN}/orders");
    let orders_uris = [orders_uri.as_str()];
    let orders = ca.issue(&Leaf::client("orders", &orders_uris))?;
    put("orders", &orders)?;
    write(dir, "orders.pk8", &orders.key_pkcs8_der, true)?;
    put(
        "billing",
        &ca.issue(&Leaf::client(
            "billing",
            &[&format!("{TRUST_DOMAIN}/billing")],
        ))?,
    )?;
    put(
        "mallory",
        &ca.issue(&Leaf::client(
            "mallory",
            &[&format!("{TRUST_DOMAIN}/mallory")],
        ))?,
    )?;
    let expired = Leaf {
        not_before: Duration::days(-30),
        not_after: Duration::days(-1),
        ..Leaf::client("orders", &orders_uris)
    };
    put("expired", &ca.issue(&expired)?)?;
    let revoked = ca.issue(&Leaf::client("orders", &orders_uris))?;
    ca.revoke(&revoked);
    put("revoked", &revoked)?;
    write(dir, "ca.crl", ca.crl_pem()?.as_bytes(), false)?;
    let mut rogue_ca = Authority::new("rogue CA")?;
    write(dir, "rogue-ca.crt", rogue_ca.cert_pem.as_bytes(), false)?;
    put(
        "rogue",
        &rogue_ca.issue(&Leaf::client("orders", &orders_uris))?,
    )?;
    Ok(())
}
