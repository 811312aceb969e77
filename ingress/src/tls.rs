//! TLS termination: certificates from Secrets of type `kubernetes.io/tls`
//! (`tls.crt`, `tls.key`, PEM), chosen by the client's SNI among the hosts
//! of the Ingresses' `tls` entries (exact host, then `*.domain`); an entry
//! without hosts gives the certificate for a client that names no known
//! host. The set is swapped whole when Secrets or Ingresses change.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine;
use flotilla_objects::core::Secret;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::table::TlsEntry;

/// Certificates by host name.
#[derive(Default, Debug)]
pub struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the suffix after "*.".
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl Certs {
    /// The certificate for a server name.
    pub fn find(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = sni.map(|s| s.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.fallback.clone();
        };
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        if let Some((_, rest)) = name.split_once('.') {
            if let Some(c) = self.wildcard.get(rest) {
                return Some(c.clone());
            }
        }
        self.fallback.clone()
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.fallback.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decode a `kubernetes.io/tls` secret into a signing key and chain.
pub fn certified_key(provider: &CryptoProvider, s: &Secret) -> Result<CertifiedKey, String> {
    if s.type_ != "kubernetes.io/tls" {
        return Err(format!("type is {:?}, not kubernetes.io/tls", s.type_));
    }
    let field = |k: &str| -> Result<Vec<u8>, String> {
        let v = s.data.get(k).ok_or_else(|| format!("no {k}"))?;
        base64::engine::general_purpose::STANDARD
            .decode(v)
            .map_err(|e| format!("{k}: {e}"))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&field("tls.crt")?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(&field("tls.key")?).map_err(|e| format!("tls.key: {e}"))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("tls.key: {e}"))?;
    Ok(CertifiedKey::new(chain, key))
}

/// Build the certificate set for the table's TLS entries; a secret that is
/// missing or unusable is logged and skipped.
pub fn build(
    provider: &CryptoProvider,
    entries: &[TlsEntry],
    secret: impl Fn(&str, &str) -> Option<Arc<Secret>>,
) -> Certs {
    let mut certs = Certs::default();
    let mut loaded: HashMap<(String, String), Option<Arc<CertifiedKey>>> = HashMap::new();
    for e in entries {
        let key = loaded
            .entry((e.namespace.clone(), e.secret.clone()))
            .or_insert_with(|| {
                let Some(s) = secret(&e.namespace, &e.secret) else {
                    tracing::warn!(secret = %format!("{}/{}", e.namespace, e.secret), "TLS secret not found");
                    return None;
                };
                match certified_key(provider, &s) {
                    Ok(k) => Some(Arc::new(k)),
                    Err(why) => {
                        tracing::warn!(secret = %format!("{}/{}", e.namespace, e.secret), %why, "TLS secret unusable");
                        None
                    }
                }
            })
            .clone();
        let Some(key) = key else { continue };
        if e.hosts.is_empty() && certs.fallback.is_none() {
            certs.fallback = Some(key.clone());
        }
        for h in &e.hosts {
            let map = match h.strip_prefix("*.") {
                Some(suffix) => certs.wildcard.entry(suffix.to_string()),
                None => certs.exact.entry(h.clone()),
            };
            map.or_insert_with(|| key.clone());
        }
    }
    certs
}

/// rustls' view of the current set.
#[derive(Debug)]
pub struct Resolver(pub Arc<ArcSwap<Certs>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().find(hello.server_name())
    }
}

/// The server configuration: HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(
    provider: Arc<CryptoProvider>,
    certs: Arc<ArcSwap<Certs>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(certs)));
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(c)
}
