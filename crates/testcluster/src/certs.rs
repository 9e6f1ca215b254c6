//! Certificates for the cluster: one CA signs the API server's and the kubelet's serving
//! certificates and every client certificate; the service-account signing key pair is
//! separate. All keys are ECDSA P-256, written as PEM (PKCS#8) files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The CA, kept in memory so that more certificates can be issued later.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the CA certificate.
    pub cert_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

/// A certificate and key written to disk.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
}

fn write_private(path: &Path, data: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data.as_bytes())?;
    Ok(())
}

impl Ca {
    pub fn create(dir: &Path, common_name: &str) -> Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let cert_path = dir.join("ca.crt");
        let key_path = dir.join("ca.key");
        std::fs::write(&cert_path, &cert_pem)?;
        write_private(&key_path, &key.serialize_pem())?;
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem,
            cert_path,
            key_path,
        })
    }

    /// A serving certificate for the given DNS names and IP addresses.
    pub fn serving(&self, dir: &Path, name: &str, sans: &[&str]) -> Result<CertFiles> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(dir, name, params)
    }

    /// A client certificate: the API server maps CN to the user and O to groups.
    pub fn client(&self, dir: &Path, file: &str, user: &str, groups: &[&str]) -> Result<CertFiles> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, user);
        for g in groups {
            dn.push(DnType::OrganizationName, *g);
        }
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(dir, file, params)
    }

    fn issue(&self, dir: &Path, file: &str, params: CertificateParams) -> Result<CertFiles> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        let cert_path = dir.join(format!("{file}.crt"));
        let key_path = dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, &cert_pem)?;
        write_private(&key_path, &key_pem)?;
        Ok(CertFiles {
            cert_path,
            key_path,
            cert_pem,
            key_pem,
        })
    }
}

/// The service-account token signing key pair: (private key path, public key path).
pub fn service_account_keys(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let key = KeyPair::generate()?;
    let private = dir.join("sa.key");
    let public = dir.join("sa.pub");
    write_private(&private, &key.serialize_pem())?;
    std::fs::write(&public, key.public_key_pem())?;
    Ok((private, public))
}
