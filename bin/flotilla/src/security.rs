//! The masters' transport and access flags (etcd's TLS flag names,
//! kube-apiserver's for tokens and authorization), turned into the store's
//! [`TransportSecurity`] and the API server's [`Auth`].
//!
//! Without any TLS flag a master serves plaintext, and only on loopback
//! addresses unless `--insecure-allow-plaintext` says otherwise; without
//! credentials configured (no client certificate authentication, no token
//! file) it allows every call, like etcd without auth.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use flotilla_control::audit::{AuditConfig, AuditLog};
use flotilla_control::auth::Auth;
use flotilla_control::encryption::EncryptionConfig;
use flotilla_raftstore::transport::{ClientGate, TransportSecurity};
use flotilla_security::authn::{Authenticator, TokenFile};
use flotilla_security::satoken::TokenKeys;
use flotilla_security::tls::{ClientTlsFiles, ServerTls, ServerTlsFiles};
use tonic::transport::ClientTlsConfig;

#[derive(Args, Clone, Debug, Default)]
pub struct SecurityArgs {
    /// The client port's TLS certificate (PEM); with --key-file, the client
    /// port serves TLS only.
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The key of --cert-file.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// The CA that clients' certificates must chain to (they name the user:
    /// CN the user, O the groups). Also the CA of the agents' certificates.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate of --trusted-ca-file at the TLS
    /// handshake (otherwise a bearer token or anonymous access is possible).
    #[arg(long, requires = "trusted_ca_file")]
    pub client_cert_auth: bool,
    /// The peer port's certificate (PEM); peers must present one of
    /// --peer-trusted-ca-file, and this master presents it to them.
    #[arg(long, requires_all = ["peer_key_file", "peer_trusted_ca_file"])]
    pub peer_cert_file: Option<PathBuf>,
    /// The key of --peer-cert-file.
    #[arg(long, requires = "peer_cert_file")]
    pub peer_key_file: Option<PathBuf>,
    /// The CA of the masters' peer certificates.
    #[arg(long, requires = "peer_cert_file")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Bearer tokens, one `token,user,uid,"group1,group2"` per line
    /// (kube-apiserver's --token-auth-file).
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// How calls are authorized: RBAC (Kubernetes' roles and bindings) or
    /// AlwaysAllow. Default: RBAC when clients can be authenticated
    /// (--trusted-ca-file or --token-auth-file), else AlwaysAllow.
    #[arg(long, value_enum)]
    pub authorization_mode: Option<AuthzMode>,
    /// Serve plaintext on non-loopback addresses (anyone who reaches them
    /// can then read and write everything).
    #[arg(long)]
    pub insecure_allow_plaintext: bool,
    /// Encrypt Secrets (and ConfigMaps, if listed) in the store, as
    /// kube-apiserver's flag of the same name: a Kubernetes
    /// EncryptionConfiguration with aesgcm and identity providers. Every
    /// master needs the same file.
    #[arg(long, value_name = "FILE")]
    pub encryption_provider_config: Option<PathBuf>,
    /// Write an audit log here (`-`: standard output): one JSON line per
    /// write to the object API and per exec, attach and port-forward, in
    /// Kubernetes' audit event format (kube-apiserver's flag).
    #[arg(long, value_name = "FILE")]
    pub audit_log_path: Option<PathBuf>,
    /// Rotate the audit log once it reaches this many megabytes (0: never).
    #[arg(long, default_value_t = 100, value_name = "MB")]
    pub audit_log_maxsize: u64,
    /// Rotated audit logs to keep (FILE.1 newest .. FILE.N).
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub audit_log_maxbackup: usize,
    /// The private key (PEM: PKCS#8 P-256, or RSA) that signs ServiceAccount
    /// tokens, which the agents mount into pods and which authenticate as
    /// system:serviceaccount:NAMESPACE:NAME. Every master needs the same
    /// key. Without it no ServiceAccount token is issued or accepted.
    #[arg(long, value_name = "FILE")]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// The issuer (`iss`) of ServiceAccount tokens (default:
    /// https://kubernetes.default.svc.cluster.local).
    #[arg(long)]
    pub service_account_issuer: Option<String>,
    /// The audiences the API accepts in ServiceAccount tokens (comma-separated;
    /// default: the issuer).
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// The longest lifetime a ServiceAccount token may be given (default 48h).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub service_account_max_token_expiration: Option<std::time::Duration>,
    /// The CA certificate that signs approved CertificateSigningRequests
    /// (nodes' client certificates: TLS bootstrap), as
    /// kube-controller-manager's flag; usually --trusted-ca-file's.
    #[arg(long, value_name = "FILE", requires = "cluster_signing_key_file")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// The key of --cluster-signing-cert-file.
    #[arg(long, value_name = "FILE", requires = "cluster_signing_cert_file")]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// The lifetime of the certificates signed for requests that name none
    /// (default 8760h, a year).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub cluster_signing_duration: Option<std::time::Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthzMode {
    #[value(name = "RBAC", alias = "rbac")]
    Rbac,
    #[value(name = "AlwaysAllow", alias = "always-allow")]
    AlwaysAllow,
}

/// The etcd and cluster admin APIs' gate, bound to the API server's
/// [`Auth`] once the master has opened (refusing until then).
#[derive(Default)]
pub struct LateGate {
    pub auth: OnceLock<Arc<Auth>>,
}

impl ClientGate for LateGate {
    fn check(&self, req: &tonic::Request<()>) -> Result<(), tonic::Status> {
        let Some(auth) = self.auth.get() else {
            return Err(tonic::Status::unavailable("the master is starting; retry"));
        };
        let certs = req.peer_certs();
        let leaf = certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        auth.etcd_allowed(req.metadata(), leaf)
            .map_err(flotilla_control::grpc::to_status)
    }
}

/// What the control plane needs to authenticate and authorize.
pub struct AccessConfig {
    pub authn: Authenticator,
    pub rbac: bool,
    /// TLS with which the masters call agents (logs, exec).
    pub agent_tls: Option<ClientTlsConfig>,
    pub gate: Arc<LateGate>,
    /// How resources are encrypted in the store (None: not at all).
    pub encryption: Option<EncryptionConfig>,
    /// Where writes, exec and port-forward are recorded.
    pub audit: Option<Arc<AuditLog>>,
    /// The ServiceAccount token signing key.
    pub sa_keys: Option<Arc<TokenKeys>>,
}

impl SecurityArgs {
    /// The CertificateSigningRequest approver and signer, when a signing CA
    /// is given.
    pub fn csr_loop(&self) -> Result<Option<Arc<dyn flotilla_runtime::LeaderLoop>>> {
        let (Some(cert), Some(key)) = (
            &self.cluster_signing_cert_file,
            &self.cluster_signing_key_file,
        ) else {
            return Ok(None);
        };
        let pem = flotilla_security::certs::Pem::read(cert, key)
            .context("--cluster-signing-cert-file/--cluster-signing-key-file")?;
        let ca = flotilla_security::certs::Ca::from_pem(pem)
            .context("--cluster-signing-cert-file/--cluster-signing-key-file")?;
        Ok(Some(Arc::new(flotilla_controllers::csr::CsrLoop {
            ca: Arc::new(ca),
            duration: self
                .cluster_signing_duration
                .unwrap_or(std::time::Duration::from_secs(365 * 86400)),
        })))
    }

    fn tls_on(&self) -> bool {
        self.cert_file.is_some()
    }

    /// The store's transport security and the API's access configuration.
    pub fn build(
        &self,
        client: SocketAddr,
        peer: SocketAddr,
    ) -> Result<(TransportSecurity, AccessConfig)> {
        if !self.insecure_allow_plaintext {
            if !self.tls_on() && !client.ip().is_loopback() {
                bail!("--client-addr {client} is not a loopback address: serve it with TLS (--cert-file, --key-file) or pass --insecure-allow-plaintext");
            }
            if self.peer_cert_file.is_none() && !peer.ip().is_loopback() {
                bail!("--peer-addr {peer} is not a loopback address: secure it with --peer-cert-file, --peer-key-file, --peer-trusted-ca-file or pass --insecure-allow-plaintext");
            }
        }
        let mut sec = TransportSecurity::default();
        let gate = Arc::new(LateGate::default());
        sec.gate = Some(gate.clone());
        let mut agent_tls = None;
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            let files = ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.trusted_ca_file.clone(),
                require_client_cert: self.client_cert_auth,
            };
            sec.client_tls = Some(ServerTls::load(files).context("client TLS")?);
            // The same certificate identifies this master to other masters'
            // client ports and to the agents.
            let client = ClientTlsFiles {
                ca: self.trusted_ca_file.clone(),
                cert: Some(cert.clone()),
                key: Some(key.clone()),
            }
            .tonic_config()
            .context("TLS to other masters and agents")?;
            sec.client_client = Some(client.clone());
            agent_tls = Some(client);
        }
        if let (Some(cert), Some(key), Some(ca)) = (
            &self.peer_cert_file,
            &self.peer_key_file,
            &self.peer_trusted_ca_file,
        ) {
            let files = ServerTlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: Some(ca.clone()),
                require_client_cert: true,
            };
            sec.peer_tls = Some(ServerTls::load(files).context("peer TLS")?);
            sec.peer_client = Some(
                ClientTlsFiles {
                    ca: Some(ca.clone()),
                    cert: Some(cert.clone()),
                    key: Some(key.clone()),
                }
                .tonic_config()
                .context("TLS to peers")?,
            );
        }
        let tokens = match &self.token_auth_file {
            Some(p) => TokenFile::load(p).context("--token-auth-file")?,
            None => TokenFile::default(),
        };
        let can_authenticate = self.trusted_ca_file.is_some() || self.token_auth_file.is_some();
        let rbac = match self.authorization_mode {
            Some(AuthzMode::Rbac) => {
                if !can_authenticate {
                    bail!("--authorization-mode RBAC needs a way to authenticate clients: --trusted-ca-file or --token-auth-file");
                }
                true
            }
            Some(AuthzMode::AlwaysAllow) => false,
            None => can_authenticate,
        };
        let encryption = match &self.encryption_provider_config {
            Some(p) => {
                let c = EncryptionConfig::load(p).context("--encryption-provider-config")?;
                tracing::info!(config = %p.display(), encrypted = ?c, "encryption at rest");
                Some(c)
            }
            None => None,
        };
        let audit = match &self.audit_log_path {
            Some(p) => {
                let cfg = AuditConfig {
                    path: p.clone(),
                    max_bytes: self.audit_log_maxsize.saturating_mul(1 << 20),
                    max_backups: self.audit_log_maxbackup,
                };
                let log = AuditLog::open(cfg)
                    .with_context(|| format!("--audit-log-path {}", p.display()))?;
                tracing::info!(path = %p.display(), "audit log");
                Some(log)
            }
            None => None,
        };
        let sa_keys = match &self.service_account_signing_key_file {
            Some(p) => {
                let k = TokenKeys::load(
                    p,
                    self.service_account_issuer
                        .as_deref()
                        .unwrap_or(flotilla_security::satoken::DEFAULT_ISSUER),
                    &self.api_audiences,
                    self.service_account_max_token_expiration
                        .unwrap_or(std::time::Duration::from_secs(48 * 3600)),
                )
                .context("--service-account-signing-key-file")?;
                if !rbac {
                    tracing::warn!("ServiceAccount tokens are issued only with RBAC authorization: --service-account-signing-key-file is ignored");
                }
                Some(Arc::new(k))
            }
            None => None,
        };
        Ok((
            sec,
            AccessConfig {
                authn: Authenticator { tokens },
                rbac,
                agent_tls,
                gate,
                encryption,
                audit,
                sa_keys,
            },
        ))
    }
}
