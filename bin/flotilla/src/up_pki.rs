//! The certificates of `flotilla up`, under `<data>/pki`: a cluster CA and
//! a peer CA (made once and kept), each master's client-port and peer
//! certificates, an admin client certificate, one per agent (its identity
//! `system:node:<name>` and the certificate of its pod streams) and the
//! node proxies' (`system:kube-proxy`); the flt configuration that uses
//! the admin certificate; and the masters' encryption configuration
//! (`encryption.yaml`: Secrets sealed with AES-GCM at rest).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use flotilla_security::certs::{Ca, LeafRequest, Usage, DEFAULT_LEAF_DAYS};
use flotilla_security::tls::ClientTlsFiles;

use crate::security::SecurityArgs;

pub struct UpPki {
    pub dir: PathBuf,
    ca: Ca,
    peer_ca: Ca,
}

/// A certificate's files.
pub struct Files {
    pub crt: PathBuf,
    pub key: PathBuf,
}

impl UpPki {
    /// Make (or find) the CAs under `data_dir/pki`.
    pub fn ensure(data_dir: &Path) -> Result<UpPki> {
        let dir = data_dir.join("pki");
        let ca = Ca::load_or_create(&dir, "ca", "flotilla-ca").context("the cluster CA")?;
        let peer_ca =
            Ca::load_or_create(&dir, "peer-ca", "flotilla-peer-ca").context("the peer CA")?;
        Ok(UpPki { dir, ca, peer_ca })
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// `stem`'s certificate, issued now unless both files exist.
    fn leaf(&self, peer: bool, stem: &str, req: LeafRequest) -> Result<Files> {
        let files = Files {
            crt: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        if files.crt.exists() && files.key.exists() {
            return Ok(files);
        }
        let ca = if peer { &self.peer_ca } else { &self.ca };
        ca.issue(&req)?
            .write(&self.dir, stem)
            .with_context(|| format!("writing the certificate {stem}"))?;
        Ok(files)
    }

    /// A master's flags: TLS on both ports, clients authenticated by the
    /// cluster CA (certificates optional: tokens work too), RBAC.
    pub fn master_args(&self, name: &str) -> Result<SecurityArgs> {
        let sans = vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "::1".to_string(),
        ];
        let client = self.leaf(
            false,
            name,
            LeafRequest {
                common_name: format!("system:master:{name}"),
                organizations: vec!["system:masters".into()],
                sans: sans.clone(),
                usage: Usage::ServerAndClient,
                days: DEFAULT_LEAF_DAYS,
            },
        )?;
        let peer = self.leaf(
            true,
            &format!("{name}-peer"),
            LeafRequest {
                common_name: name.to_string(),
                organizations: vec![],
                sans,
                usage: Usage::ServerAndClient,
                days: DEFAULT_LEAF_DAYS,
            },
        )?;
        Ok(SecurityArgs {
            cert_file: Some(client.crt),
            key_file: Some(client.key),
            trusted_ca_file: Some(self.ca_file()),
            peer_cert_file: Some(peer.crt),
            peer_key_file: Some(peer.key),
            peer_trusted_ca_file: Some(self.dir.join("peer-ca.crt")),
            encryption_provider_config: Some(self.encryption_config()?),
            audit_log_path: self
                .dir
                .parent()
                .map(|data| data.join("audit").join(format!("{name}.log"))),
            audit_log_maxsize: 100,
            audit_log_maxbackup: 10,
            service_account_signing_key_file: Some(self.service_account_key()?),
            cluster_signing_cert_file: Some(self.ca_file()),
            cluster_signing_key_file: Some(self.dir.join("ca.key")),
            ..Default::default()
        })
    }

    /// The key that signs ServiceAccount tokens, made once and kept.
    fn service_account_key(&self) -> Result<PathBuf> {
        let path = self.dir.join("sa.key");
        if !path.exists() {
            let pem = flotilla_security::satoken::generate_key_pem()?;
            flotilla_security::certs::write_file(&path, pem.as_bytes(), 0o600)?;
        }
        Ok(path)
    }

    /// The masters' encryption configuration (Secrets sealed with a key of
    /// this cluster's own), made once with a random key and kept.
    fn encryption_config(&self) -> Result<PathBuf> {
        let path = self.dir.join("encryption.yaml");
        if path.exists() {
            return Ok(path);
        }
        let text = flotilla_control::encryption::EncryptionConfig::generate("up")
            .map_err(anyhow::Error::msg)?;
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let tmp = self.dir.join("encryption.yaml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// A client certificate for `user` in `groups`, serving `sans` too
    /// when there are any; as the files a client is configured from.
    pub fn client(
        &self,
        stem: &str,
        user: &str,
        groups: &[&str],
        sans: &[IpAddr],
    ) -> Result<ClientTlsFiles> {
        let f = self.leaf(
            false,
            stem,
            LeafRequest {
                common_name: user.to_string(),
                organizations: groups.iter().map(|g| g.to_string()).collect(),
                sans: sans.iter().map(|s| s.to_string()).collect(),
                usage: if sans.is_empty() {
                    Usage::Client
                } else {
                    Usage::ServerAndClient
                },
                days: DEFAULT_LEAF_DAYS,
            },
        )?;
        Ok(ClientTlsFiles {
            ca: Some(self.ca_file()),
            cert: Some(f.crt),
            key: Some(f.key),
        })
    }

    /// Write `<data>/flt.yaml` for the admin (cluster-admin through the
    /// group system:masters); its path.
    pub fn write_flt_config(&self, data_dir: &Path, servers: &[String]) -> Result<PathBuf> {
        let admin = self.client("admin", "admin", &["system:masters"], &[])?;
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let text = format!(
            "# Written by `flotilla up`: the cluster-admin's configuration.\nserver: {}\ncertificate-authority: {}\nclient-certificate: {}\nclient-key: {}\n",
            servers.join(","),
            abs(&self.ca_file()).display(),
            abs(admin.cert.as_deref().unwrap_or(Path::new(""))).display(),
            abs(admin.key.as_deref().unwrap_or(Path::new(""))).display(),
        );
        let path = data_dir.join("flt.yaml");
        flotilla_security::certs::write_file(&path, text.as_bytes(), 0o600)?;
        Ok(abs(&path))
    }
}
