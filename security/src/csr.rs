//! Certificate signing requests (PKCS#10): what a node sends to ask for its
//! client certificate (TLS bootstrap), what the masters read of it before
//! approving, and how the cluster CA signs it.

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use crate::certs::{Ca, CertError};

/// A new key and a request for a client certificate naming `user` in
/// `groups` (PEM request, PEM key).
pub fn client_request(user: &str, groups: &[&str]) -> Result<(String, String), CertError> {
    let key = KeyPair::generate().map_err(rc("generating a key"))?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, user);
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    p.distinguished_name = dn;
    let csr = p
        .serialize_request(&key)
        .map_err(rc("making the certificate request"))?;
    let pem = csr.pem().map_err(rc("encoding the certificate request"))?;
    Ok((pem, key.serialize_pem()))
}

fn rc(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |source| CertError::Rcgen {
        what: what.into(),
        source,
    }
}

/// What a request asks to be called, read from its subject and extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSubject {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// Whether it asks for subject alternative names (a client
    /// certificate of a node asks for none).
    pub has_alt_names: bool,
}

/// Read a PEM request, its self-signature checked.
pub fn read_request(pem: &str) -> Result<RequestSubject, String> {
    let block = pem::parse(pem).map_err(|e| format!("not a PEM block: {e}"))?;
    if block.tag() != "CERTIFICATE REQUEST" {
        return Err(format!(
            "a {:?} PEM block, not a CERTIFICATE REQUEST",
            block.tag()
        ));
    }
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(block.contents())
            .map_err(|e| format!("not a certificate request: {e}"))?;
    req.verify_signature()
        .map_err(|_| "the request's signature does not match its key".to_string())?;
    let subject = &req.certification_request_info.subject;
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_string();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    let has_alt_names = req.requested_extensions().is_some_and(|mut exts| {
        exts.any(|e| {
            matches!(
                e,
                x509_parser::extensions::ParsedExtension::SubjectAlternativeName(_)
            )
        })
    });
    Ok(RequestSubject {
        common_name,
        organizations,
        has_alt_names,
    })
}

impl Ca {
    /// Sign a PEM request as a client certificate valid for `lifetime`
    /// (never past the CA's own end); the PEM certificate.
    pub fn sign_client_request(
        &self,
        pem: &str,
        lifetime: std::time::Duration,
    ) -> Result<String, CertError> {
        let issuer =
            Issuer::from_ca_cert_pem(&self.pem().cert, self.key()).map_err(rc("reading the CA"))?;
        let mut req =
            CertificateSigningRequestParams::from_pem(pem).map_err(rc("reading the request"))?;
        let now = OffsetDateTime::now_utc();
        let ca_end = ca_not_after(&self.pem().cert).unwrap_or(OffsetDateTime::now_utc());
        let p = &mut req.params;
        p.not_before = now - time::Duration::minutes(5);
        let asked = time::Duration::try_from(lifetime).unwrap_or(time::Duration::days(365));
        p.not_after = (now + asked).min(ca_end);
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.subject_alt_names.clear();
        p.use_authority_key_identifier_extension = true;
        let cert = req
            .signed_by(&issuer)
            .map_err(rc("signing the certificate request"))?;
        Ok(cert.pem())
    }
}

/// When a PEM certificate stops being valid.
pub fn ca_not_after(pem: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(validity(pem)?.1).ok()
}

/// When a PEM certificate's validity began and ends (unix seconds).
pub fn validity(pem: &str) -> Option<(i64, i64)> {
    let block = pem::parse(pem).ok()?;
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(block.contents()).ok()?;
    Some((
        c.validity().not_before.timestamp(),
        c.validity().not_after.timestamp(),
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::authn::identity_of_certificate;

    #[test]
    fn a_node_request_is_read_signed_and_names_the_node() {
        let (req, _key) = client_request("system:node:n1", &["system:nodes"]).expect("request");
        let s = read_request(&req).expect("read");
        assert_eq!(s.common_name, "system:node:n1");
        assert_eq!(s.organizations, ["system:nodes"]);
        assert!(!s.has_alt_names);
        let ca = Ca::generate("test-ca", 30).expect("ca");
        let cert = ca
            .sign_client_request(&req, std::time::Duration::from_secs(3600))
            .expect("sign");
        let der = crate::tls::certs_from_pem(cert.as_bytes(), Path::new("x")).expect("pem");
        let id = identity_of_certificate(der[0].as_ref()).expect("identity");
        assert_eq!(id.user, "system:node:n1");
        assert!(id.in_group("system:nodes"));
        let (from, to) = validity(&cert).expect("validity");
        assert!((3600..3600 + 400).contains(&(to - from)), "{from} {to}");
        // Never past the CA's end.
        let long = ca
            .sign_client_request(&req, std::time::Duration::from_secs(400 * 86400))
            .expect("sign");
        assert!(validity(&long).expect("v").1 <= validity(&ca.pem().cert).expect("ca").1);
    }

    #[test]
    fn a_tampered_or_foreign_block_is_refused() {
        let (req, key) = client_request("system:node:n1", &["system:nodes"]).expect("request");
        assert!(read_request(&key).is_err(), "a key is not a request");
        let block = pem::parse(&req).expect("pem");
        let mut der = block.contents().to_vec();
        // Flip a byte of the subject: the signature no longer matches.
        let at = der
            .windows(2)
            .position(|w| w == b"n1")
            .expect("name in the request");
        der[at + 1] = b'2';
        let forged = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let e = read_request(&forged).expect_err("forged");
        assert!(e.contains("signature"), "{e}");
    }
}
