//! Certificates: a cluster CA and the leaf certificates it signs, as PEM
//! files. `flotilla certs` and `flotilla up` make them; operators who bring
//! their own CA use theirs instead.
//!
//! Kubernetes reads a client certificate's subject as the caller's
//! identity: the common name (CN) is the user, each organization (O) a
//! group. Leaf certificates here carry both server and client usages when
//! asked, so that one file pair can serve a master's port and identify that
//! master to its peers.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// What went wrong making or reading a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Rcgen { what: String, source: rcgen::Error },
    #[error("subject alternative name {0:?} is neither an IP address nor a DNS name")]
    BadSan(String),
    #[error("a certificate names at most one organization (group) here, not {0:?}: bind further groups' roles to the user instead")]
    TooManyOrganizations(Vec<String>),
}

fn rc(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> CertError {
    let what = what.into();
    move |source| CertError::Rcgen { what, source }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// TLS server authentication only.
    Server,
    /// TLS client authentication only.
    Client,
    /// Both: a master's certificate, which serves its ports and identifies
    /// it when it calls its peers.
    ServerAndClient,
}

/// A leaf certificate to issue.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    /// The subject's common name: the user, for a client certificate.
    pub common_name: String,
    /// The subject's organizations: the user's groups.
    pub organizations: Vec<String>,
    /// IP addresses and DNS names the certificate serves.
    pub sans: Vec<String>,
    pub usage: Usage,
    /// Validity in days from now.
    pub days: u32,
}

impl LeafRequest {
    pub fn client(user: &str, groups: &[&str]) -> Self {
        LeafRequest {
            common_name: user.to_string(),
            organizations: groups.iter().map(|g| g.to_string()).collect(),
            sans: vec![],
            usage: Usage::Client,
            days: DEFAULT_LEAF_DAYS,
        }
    }

    pub fn server(name: &str, sans: &[String]) -> Self {
        LeafRequest {
            common_name: name.to_string(),
            organizations: vec![],
            sans: sans.to_vec(),
            usage: Usage::Server,
            days: DEFAULT_LEAF_DAYS,
        }
    }
}

/// Leaf certificates live a year by default (kubeadm's choice).
pub const DEFAULT_LEAF_DAYS: u32 = 365;
/// CAs live ten years by default.
pub const DEFAULT_CA_DAYS: u32 = 3650;

/// A certificate and its private key, PEM-encoded.
#[derive(Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a private key.
        f.debug_struct("Pem").field("cert", &self.cert).finish()
    }
}

impl Pem {
    /// Write `<dir>/<stem>.crt` and `<dir>/<stem>.key` (the key readable by
    /// its owner only); the paths written.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), CertError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        write_file(&crt, self.cert.as_bytes(), 0o644)?;
        write_file(&key, self.key.as_bytes(), 0o600)?;
        Ok((crt, key))
    }

    pub fn read(crt: &Path, key: &Path) -> Result<Pem, CertError> {
        Ok(Pem {
            cert: fs::read_to_string(crt).map_err(io(crt))?,
            key: fs::read_to_string(key).map_err(io(key))?,
        })
    }
}

/// Write a file whole: to a temporary name, then renamed over the old one,
/// so that a reader (a server reloading its certificate) never sees half.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

fn validity(p: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks that disagree.
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(i64::from(days));
}

/// A certificate authority that signs leaf certificates.
pub struct Ca {
    pem: Pem,
    key: KeyPair,
}

impl Ca {
    /// A new self-signed CA named `common_name`.
    pub fn generate(common_name: &str, days: u32) -> Result<Ca, CertError> {
        let key = KeyPair::generate().map_err(rc("generating the CA key"))?;
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut p, days);
        let cert = p.self_signed(&key).map_err(rc("signing the CA"))?;
        Ok(Ca {
            pem: Pem {
                cert: cert.pem(),
                key: key.serialize_pem(),
            },
            key,
        })
    }

    /// A CA from its PEM certificate and key.
    pub fn from_pem(pem: Pem) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(&pem.key).map_err(rc("reading the CA key"))?;
        // Check now that the certificate parses, not at the first issue.
        Issuer::from_ca_cert_pem(&pem.cert, &key).map_err(rc("reading the CA certificate"))?;
        Ok(Ca { pem, key })
    }

    /// Read `<dir>/<stem>.crt` and `.key`, or make and write a new CA there
    /// when neither exists.
    pub fn load_or_create(dir: &Path, stem: &str, common_name: &str) -> Result<Ca, CertError> {
        let crt = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        if crt.exists() || key.exists() {
            return Ca::from_pem(Pem::read(&crt, &key)?);
        }
        let ca = Ca::generate(common_name, DEFAULT_CA_DAYS)?;
        ca.pem.write(dir, stem)?;
        Ok(ca)
    }

    pub fn pem(&self) -> &Pem {
        &self.pem
    }

    pub(crate) fn key(&self) -> &KeyPair {
        &self.key
    }

    /// Sign a new leaf certificate with a fresh key.
    pub fn issue(&self, req: &LeafRequest) -> Result<Pem, CertError> {
        let issuer =
            Issuer::from_ca_cert_pem(&self.pem.cert, &self.key).map_err(rc("reading the CA"))?;
        let key = KeyPair::generate().map_err(rc("generating a key"))?;
        let mut p = CertificateParams::default();
        // rcgen writes one value per attribute type.
        if req.organizations.len() > 1 {
            return Err(CertError::TooManyOrganizations(req.organizations.clone()));
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, req.common_name.as_str());
        for o in &req.organizations {
            dn.push(DnType::OrganizationName, o.as_str());
        }
        p.distinguished_name = dn;
        p.subject_alt_names = req.sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = match req.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        p.use_authority_key_identifier_extension = true;
        validity(&mut p, req.days);
        let cert = p.signed_by(&key, &issuer).map_err(rc(format!(
            "signing the certificate of {}",
            req.common_name
        )))?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

fn san(s: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let dns_ok = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '*');
    if !dns_ok {
        return Err(CertError::BadSan(s.to_string()));
    }
    s.to_string()
        .try_into()
        .map(SanType::DnsName)
        .map_err(|_| CertError::BadSan(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::identity_of_certificate;

    #[test]
    fn a_client_certificate_names_its_user_and_groups() {
        let ca = Ca::generate("test-ca", 1).expect("ca");
        let leaf = ca
            .issue(&LeafRequest::client("alice", &["dev"]))
            .expect("issue");
        let der = crate::tls::certs_from_pem(leaf.cert.as_bytes(), Path::new("x")).expect("pem");
        let id = identity_of_certificate(der[0].as_ref()).expect("identity");
        assert_eq!(id.user, "alice");
        assert_eq!(id.groups, ["dev", "system:authenticated"]);
        let e = ca
            .issue(&LeafRequest::client("bob", &["a", "b"]))
            .expect_err("two organizations");
        assert!(e.to_string().contains("at most one organization"), "{e}");
    }

    #[test]
    fn a_ca_read_back_from_its_files_signs_alike() {
        let dir = tempfile::tempdir().expect("tmp");
        let ca = Ca::load_or_create(dir.path(), "ca", "test-ca").expect("create");
        let again = Ca::load_or_create(dir.path(), "ca", "other").expect("load");
        assert_eq!(ca.pem().cert, again.pem().cert, "the existing CA is kept");
        again
            .issue(&LeafRequest::server(
                "m1",
                &["127.0.0.1".into(), "m1.local".into()],
            ))
            .expect("issue");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.path().join("ca.key"))
                .expect("stat")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the key is private");
    }

    #[test]
    fn a_bad_san_is_named() {
        let ca = Ca::generate("test-ca", 1).expect("ca");
        let e = ca
            .issue(&LeafRequest::server("m1", &["not a name!".into()]))
            .expect_err("bad san");
        assert!(e.to_string().contains("not a name!"), "{e}");
    }
}
