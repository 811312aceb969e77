//! The certificates group (`certificates.k8s.io/v1`):
//! CertificateSigningRequest, through which a node asks for its client
//! certificate with a bootstrap token and renews it before it expires, as
//! kubelet's TLS bootstrap does.
//!
//! The API server fills `spec.username`, `spec.uid` and `spec.groups` from
//! the caller (what a client sends there is replaced); an approver adds the
//! `Approved` (or `Denied`) condition and a signer writes
//! `status.certificate`, both through the status.

use base64::Engine;

use crate::admit::FieldError;
use crate::meta::{object, resource, ObjectMeta, Time};
use crate::registry;

/// The signer of nodes' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of other client certificates of the API.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// The signer of nodes' serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// The usages a request may ask for.
pub const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

object! {
    /// A request for a certificate.
    pub struct CertificateSigningRequest {
        /// "certificates.k8s.io/v1"
        pub api_version: String,
        /// "CertificateSigningRequest"
        pub kind: String,
        /// Metadata.
        pub metadata: ObjectMeta,
        /// What is asked for.
        pub spec: CertificateSigningRequestSpec,
        /// Approval and the certificate.
        pub status: CertificateSigningRequestStatus,
    }
}
resource!(
    CertificateSigningRequest,
    registry::CERTIFICATE_SIGNING_REQUEST
);

object! {
    /// The request.
    pub struct CertificateSigningRequestSpec {
        /// A PEM "CERTIFICATE REQUEST" block, base64-encoded.
        pub request: String,
        /// Who is to sign it (e.g. kubernetes.io/kube-apiserver-client-kubelet).
        pub signer_name: String,
        /// The lifetime asked for, in seconds (at least 600).
        pub expiration_seconds: Option<i32>,
        /// Key usages and extended key usages asked for.
        pub usages: Vec<String>,
        /// Who asked (set by the API server).
        pub username: String,
        /// Their uid (set by the API server).
        pub uid: String,
        /// Their groups (set by the API server).
        pub groups: Vec<String>,
    }
}

object! {
    /// Whether the request was approved, and the certificate.
    pub struct CertificateSigningRequestStatus {
        /// Approved, Denied, Failed.
        pub conditions: Vec<CertificateSigningRequestCondition>,
        /// The issued PEM certificate, base64-encoded.
        pub certificate: String,
    }
}

object! {
    /// One condition of a request.
    pub struct CertificateSigningRequestCondition {
        /// Approved, Denied or Failed.
        #[serde(rename = "type")]
        pub type_: String,
        /// "True".
        pub status: String,
        /// Machine-readable reason.
        pub reason: String,
        /// Human-readable message.
        pub message: String,
        /// When it was last updated.
        pub last_update_time: Option<Time>,
    }
}

impl CertificateSigningRequest {
    fn has(&self, t: &str) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == t && c.status != "False")
    }

    pub fn approved(&self) -> bool {
        self.has("Approved")
    }

    pub fn denied(&self) -> bool {
        self.has("Denied")
    }

    pub fn failed(&self) -> bool {
        self.has("Failed")
    }

    /// The PEM request, decoded from `spec.request`.
    pub fn request_pem(&self) -> Result<String, String> {
        decode_pem(&self.spec.request)
    }
}

/// A base64 field holding PEM text.
fn decode_pem(b64: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "not PEM text".to_string())
}

pub(crate) fn validate_csr(c: &CertificateSigningRequest) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if c.spec.request.is_empty() {
        errs.push(FieldError::required("spec.request", ""));
    } else {
        match decode_pem(&c.spec.request) {
            Err(why) => errs.push(FieldError::invalid("spec.request", "", why)),
            Ok(pem) if !pem.contains("-----BEGIN CERTIFICATE REQUEST-----") => errs.push(
                FieldError::invalid("spec.request", "", "no CERTIFICATE REQUEST block was found"),
            ),
            Ok(_) => {}
        }
    }
    if c.spec.signer_name.is_empty() {
        errs.push(FieldError::required("spec.signerName", ""));
    } else if c.spec.signer_name.split('/').count() != 2 {
        errs.push(FieldError::invalid_str(
            "spec.signerName",
            &c.spec.signer_name,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    }
    if let Some(s) = c.spec.expiration_seconds {
        if s < 600 {
            errs.push(FieldError::invalid(
                "spec.expirationSeconds",
                s.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    if c.spec.usages.is_empty() {
        errs.push(FieldError::required("spec.usages", ""));
    }
    for (i, u) in c.spec.usages.iter().enumerate() {
        if !USAGES.contains(&u.as_str()) {
            errs.push(FieldError::not_supported(
                format!("spec.usages[{i}]"),
                u,
                USAGES,
            ));
        }
    }
    for (i, cond) in c.status.conditions.iter().enumerate() {
        if !["Approved", "Denied", "Failed"].contains(&cond.type_.as_str()) {
            errs.push(FieldError::not_supported(
                format!("status.conditions[{i}].type"),
                &cond.type_,
                &["Approved", "Denied", "Failed"],
            ));
        }
    }
    if c.approved() && c.denied() {
        errs.push(FieldError::invalid(
            "status.conditions",
            "",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    if !c.status.certificate.is_empty() {
        if !c.approved() {
            errs.push(FieldError::invalid(
                "status.certificate",
                "",
                "a certificate may only be set on an approved request",
            ));
        }
        match decode_pem(&c.status.certificate) {
            Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => errs.push(FieldError::invalid(
                "status.certificate",
                "",
                "no CERTIFICATE block was found",
            )),
            Err(why) => errs.push(FieldError::invalid("status.certificate", "", why)),
        }
    }
    errs
}

/// The request is immutable; an approval cannot be taken back, nor the
/// certificate changed once issued.
pub(crate) fn csr_update(
    old: &CertificateSigningRequest,
    new: &CertificateSigningRequest,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.spec != new.spec {
        errs.push(FieldError::forbidden(
            "spec",
            "updates to a certificate signing request's spec are forbidden",
        ));
    }
    for (t, was) in [
        ("Approved", old.approved()),
        ("Denied", old.denied()),
        ("Failed", old.failed()),
    ] {
        if was && !new.has(t) {
            errs.push(FieldError::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type {t:?}"),
            ));
        }
    }
    if !old.status.certificate.is_empty() && old.status.certificate != new.status.certificate {
        errs.push(FieldError::forbidden(
            "status.certificate",
            "updates may not modify existing certificate content",
        ));
    }
    errs
}
