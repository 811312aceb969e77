//! How a node role (agent, proxy, ingress) reaches the masters: their
//! addresses and the credentials it presents, the same flags for each.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use flotilla_security::tls::{ClientTlsFiles, ServerTls, ServerTlsFiles};

#[derive(Args, Clone)]
pub struct MasterClientArgs {
    /// Client addresses of the masters, ADDR[,ADDR...] (required).
    #[arg(long, value_delimiter = ',')]
    pub server: Vec<String>,
    /// The CA the masters' certificates chain to: talk to them over TLS
    /// (an address without a scheme then means https).
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// This process's client certificate: its identity to the masters (the
    /// common name is the user, the organization its group; an agent is
    /// system:node:NAME in system:nodes, a proxy system:kube-proxy, an
    /// ingress system:ingress).
    #[arg(long, requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// The key of --cert-file.
    #[arg(long, requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// A file holding a bearer token sent with every call (instead of, or
    /// besides, a client certificate).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

impl MasterClientArgs {
    /// The TLS files given, if any.
    pub fn tls_files(&self) -> Option<ClientTlsFiles> {
        if self.trusted_ca_file.is_none() && self.cert_file.is_none() {
            return None;
        }
        Some(ClientTlsFiles {
            ca: self.trusted_ca_file.clone(),
            cert: self.cert_file.clone(),
            key: self.key_file.clone(),
        })
    }

    /// A client of the masters with these credentials.
    pub fn connect(&self) -> Result<flotilla_client::Client> {
        anyhow::ensure!(
            !self.server.is_empty(),
            "--server is required: the masters' client addresses"
        );
        let token = match &self.token_file {
            Some(p) => {
                let t = std::fs::read_to_string(p)
                    .with_context(|| format!("--token-file {}", p.display()))?;
                let t = t.trim();
                anyhow::ensure!(!t.is_empty(), "--token-file {} is empty", p.display());
                Some(t.to_string())
            }
            None => None,
        };
        connect_as(&self.server, self.tls_files(), token)
    }

    /// TLS for the agent's pod streams: its own certificate, accepting only
    /// callers with a certificate from the masters' CA (the masters relay
    /// logs and exec; the agent admits system:masters only). None when the
    /// agent has no certificate.
    pub fn stream_tls(&self) -> Result<Option<std::sync::Arc<ServerTls>>> {
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else {
            return Ok(None);
        };
        let ca = self
            .trusted_ca_file
            .clone()
            .context("--cert-file needs --trusted-ca-file (the CA of the masters' certificates)")?;
        Ok(Some(server_tls(cert.clone(), key.clone(), ca)?))
    }
}

/// A client of `servers`, over TLS with `files` when given.
pub fn connect_as(
    servers: &[String],
    files: Option<ClientTlsFiles>,
    token: Option<String>,
) -> Result<flotilla_client::Client> {
    let opts = flotilla_client::ClientOptions {
        tls: match files {
            Some(f) => Some(f.tonic_config().context("the client certificate files")?),
            None => None,
        },
        credentials: flotilla_client::Credentials {
            token,
            ..Default::default()
        },
        ..Default::default()
    };
    flotilla_client::Client::connect_with(servers, opts).context("connecting to the masters")
}

/// A server identity that requires client certificates from `client_ca`.
pub fn server_tls(
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
) -> Result<std::sync::Arc<ServerTls>> {
    ServerTls::load(ServerTlsFiles {
        cert,
        key,
        client_ca: Some(client_ca),
        require_client_cert: true,
    })
    .context("the agent's stream certificate")
}
