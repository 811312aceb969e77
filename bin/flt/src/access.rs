//! How flt proves who it is: TLS to the masters (their CA, a client
//! certificate) and a bearer token, from flags (kubectl's names), else the
//! config file's keys (`certificate-authority`, `client-certificate`,
//! `client-key`, `token`); and `--as`/`--as-group` to act as another user.
//! Set once per run ([`init`]) and used by every connection flt makes.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use clap::Args;
use flotilla_client::Credentials;
use flotilla_security::tls::ClientTlsFiles;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::ClientTlsConfig;

use crate::config::Config;

#[derive(Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// A bearer token for the masters (a line of their --token-auth-file).
    #[arg(long, global = true, env = "FLT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA that the masters' certificates chain to (turns on TLS).
    #[arg(long, global = true, value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
    /// A client certificate to present (its CN is the user, O the groups).
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    pub client_certificate: Option<PathBuf>,
    /// The key of --client-certificate.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "client_certificate"
    )]
    pub client_key: Option<PathBuf>,
    /// Act as this user (needs the impersonate verb on users).
    #[arg(long = "as", global = true, value_name = "USER")]
    pub as_user: Option<String>,
    /// Act in this group too (repeatable; needs --as).
    #[arg(
        long = "as-group",
        global = true,
        value_name = "GROUP",
        requires = "as_user"
    )]
    pub as_groups: Vec<String>,
}

/// What every connection of this run uses.
#[derive(Clone, Default)]
pub struct Access {
    pub tls: Option<ClientTlsConfig>,
    pub credentials: Credentials,
}

static ACCESS: OnceLock<Access> = OnceLock::new();

/// Work out this run's access from flags and the config file.
pub fn init(a: &AccessArgs, cfg: &Config) -> Result<()> {
    let ca = a
        .certificate_authority
        .clone()
        .or_else(|| cfg.certificate_authority.clone());
    let (cert, key) = match (&a.client_certificate, &a.client_key) {
        (Some(c), Some(k)) => (Some(c.clone()), Some(k.clone())),
        _ => (cfg.client_certificate.clone(), cfg.client_key.clone()),
    };
    let tls = if ca.is_some() || cert.is_some() {
        Some(
            ClientTlsFiles { ca, cert, key }
                .tonic_config()
                .context("TLS settings")?,
        )
    } else {
        None
    };
    let access = Access {
        tls,
        credentials: Credentials {
            token: a.token.clone().or_else(|| cfg.token.clone()),
            impersonate_user: a.as_user.clone(),
            impersonate_groups: a.as_groups.clone(),
        },
    };
    let _ = ACCESS.set(access);
    Ok(())
}

pub fn get() -> Access {
    ACCESS.get().cloned().unwrap_or_default()
}

/// Adds the credentials to each call of a raw gRPC client.
#[derive(Clone, Default)]
pub struct Headers(Credentials);

pub fn headers() -> Headers {
    Headers(get().credentials)
}

impl Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        let bad = || tonic::Status::invalid_argument("credentials must be printable ASCII");
        if let Some(t) = &self.0.token {
            md.insert(
                "authorization",
                MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| bad())?,
            );
        }
        if let Some(u) = &self.0.impersonate_user {
            md.insert(
                "impersonate-user",
                MetadataValue::try_from(u.as_str()).map_err(|_| bad())?,
            );
        }
        for g in &self.0.impersonate_groups {
            md.append(
                "impersonate-group",
                MetadataValue::try_from(g.as_str()).map_err(|_| bad())?,
            );
        }
        Ok(req)
    }
}
