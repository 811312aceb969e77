//! TLS for Flotilla's gRPC ports, on rustls.
//!
//! Servers: [`ServerTls`] holds the rustls configuration built from a
//! certificate, its key and (to verify clients) a CA, and rebuilds it when
//! any of those files changes on disk, so that a rotated certificate is
//! served to the next connection without a restart; connections already
//! open keep theirs. [`ServerTls::incoming`] turns a listener into the
//! stream of handshaken connections that tonic serves, each handshake in a
//! task of its own so that a slow client cannot hold up the others.
//!
//! Clients: [`ClientTlsFiles`] becomes tonic's client configuration (the CA
//! to trust, and the certificate to present).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;

/// What is wrong with a TLS setting; names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The certificates in a PEM text (`path` only names it in errors).
pub fn certs_from_pem(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            message: "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    Ok(certs)
}

fn key_from_pem(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        message: format!("holds no usable private key: {e}"),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs_from_pem(&read(path)?, path)? {
        store.add(c).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            message: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The files a TLS server is configured from (etcd's flag names in
/// brackets).
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    /// The server's certificate chain (`--cert-file`).
    pub cert: PathBuf,
    /// Its private key (`--key-file`).
    pub key: PathBuf,
    /// The CA that client certificates must chain to (`--trusted-ca-file`);
    /// without it, client certificates are not asked for.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (`--client-cert-auth`);
    /// otherwise a certificate is optional (a caller may use a token).
    pub require_client_cert: bool,
}

impl ServerTlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.as_deref());
        v
    }

    fn build(&self) -> Result<ServerConfig, TlsError> {
        let certs = certs_from_pem(&read(&self.cert)?, &self.cert)?;
        let key = key_from_pem(&read(&self.key)?, &self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
                let v = if self.require_client_cert {
                    v
                } else {
                    v.allow_unauthenticated()
                };
                let v = v.build().map_err(|e| TlsError::Pem {
                    path: ca.clone(),
                    message: format!("cannot verify clients with it: {e}"),
                })?;
                builder.with_client_cert_verifier(v)
            }
            None if self.require_client_cert => {
                return Err(TlsError::Config(
                    "client certificates are required but no CA to verify them is given (--trusted-ca-file)".into(),
                ))
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Pem {
                path: self.key.clone(),
                message: format!(
                    "does not match the certificate {}: {e}",
                    self.cert.display()
                ),
            })?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(cfg)
    }
}

fn stamps(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// How often a server looks at its certificate files' modification times.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct Loaded {
    config: Arc<ServerConfig>,
    stamps: Vec<Option<SystemTime>>,
    checked: Instant,
}

/// A TLS server configuration that follows its files.
pub struct ServerTls {
    files: ServerTlsFiles,
    loaded: Mutex<Loaded>,
}

impl ServerTls {
    /// Read the files now: a bad file is an error at start, not at the
    /// first connection.
    pub fn load(files: ServerTlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        let config = Arc::new(files.build()?);
        let stamps = stamps(&files.paths());
        Ok(Arc::new(ServerTls {
            files,
            loaded: Mutex::new(Loaded {
                config,
                stamps,
                checked: Instant::now(),
            }),
        }))
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    /// The configuration for the next connection: rebuilt when a file has
    /// changed since it was read. A change that does not load (a key written
    /// before its certificate, say) keeps the previous configuration and is
    /// tried again at the next check.
    pub fn current(&self) -> Arc<ServerConfig> {
        let mut l = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if l.checked.elapsed() >= RELOAD_CHECK {
            l.checked = Instant::now();
            let now = stamps(&self.files.paths());
            if now != l.stamps {
                match self.files.build() {
                    Ok(c) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                        l.config = Arc::new(c);
                        l.stamps = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load; serving the previous certificate")
                    }
                }
            }
        }
        l.config.clone()
    }

    /// The connections accepted on `listener`, after their TLS handshake.
    /// Handshakes that fail are logged and dropped. Accepting stops when the
    /// stream is dropped (the server stopped).
    pub fn incoming(
        self: &Arc<Self>,
        listener: TcpListener,
    ) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
        let (tx, rx) = mpsc::channel(64);
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = tx.closed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    // The listening socket was shut down (a stopping master
                    // refuses new clients at once): accept no more, and
                    // keep the stream open until the server drops it.
                    Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                        tracing::debug!("listener shut down; accepting no more connections");
                        tx.closed().await;
                        return;
                    }
                    Err(e) => {
                        // Out of file descriptors, say: wait, do not spin.
                        tracing::warn!(error = %e, "accepting a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = TlsAcceptor::from(me.current());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send(Ok(s)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake refused")
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// The files a TLS client is configured from.
#[derive(Debug, Clone, Default)]
pub struct ClientTlsFiles {
    /// The CA the servers' certificates chain to.
    pub ca: Option<PathBuf>,
    /// The certificate to present, and its key.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// tonic's client configuration from these files, read now.
    pub fn tonic_config(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        let mut cfg = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            let pem = read(ca)?;
            certs_from_pem(&pem, ca)?;
            cfg = cfg.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let (cp, kp) = (read(c)?, read(k)?);
                certs_from_pem(&cp, c)?;
                key_from_pem(&kp, k)?;
                cfg = cfg.identity(tonic::transport::Identity::from_pem(cp, kp));
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(TlsError::Config(
                    "a client certificate needs its key, and a key its certificate".into(),
                ))
            }
        }
        Ok(cfg)
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .finish()
    }
}
