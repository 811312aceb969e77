//! Where flt finds the masters and its default namespace: flags, then
//! `FLT_SERVER`, then the config file (`$FLT_CONFIG`, else `~/.flt/config`):
//!
//! ```yaml
//! server: 10.0.0.1:2379,10.0.0.2:2379   # or a YAML list
//! namespace: web
//! certificate-authority: /etc/flotilla/pki/ca.crt   # TLS to the masters
//! client-certificate: /home/alice/.flt/alice.crt     # who flt is
//! client-key: /home/alice/.flt/alice.key
//! token: 0123456789abcdef                           # or a bearer token
//! ```
//!
//! `flotilla up` writes such a file for its cluster-admin (`<data>/flt.yaml`).
//!
//! The file may also hold several clusters, users and contexts, as a
//! kubeconfig does (`clusters:`, `users:`, `contexts:`, `current-context:`);
//! the current context (or `--context`) then says which cluster, user and
//! namespace flt uses (see [`crate::contexts`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::contexts::{NamedCluster, NamedContext, NamedUser};

/// The config file's contents.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// "v1", as in a kubeconfig (ignored).
    #[serde(
        default,
        rename = "apiVersion",
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// "Config", as in a kubeconfig (ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<Servers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The CA of the masters' certificates (turns on TLS).
    #[serde(
        default,
        rename = "certificate-authority",
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_authority: Option<PathBuf>,
    /// A client certificate and its key.
    #[serde(
        default,
        rename = "client-certificate",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_certificate: Option<PathBuf>,
    #[serde(
        default,
        rename = "client-key",
        skip_serializing_if = "Option::is_none"
    )]
    pub client_key: Option<PathBuf>,
    /// A bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Named clusters: their masters and CA.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<NamedCluster>,
    /// Named users: their credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<NamedUser>,
    /// Named contexts: a cluster, a user and a namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contexts: Vec<NamedContext>,
    /// The context used unless --context says otherwise.
    #[serde(
        default,
        rename = "current-context",
        skip_serializing_if = "Option::is_none"
    )]
    pub current_context: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Servers {
    One(String),
    Many(Vec<String>),
}

/// The masters flt talks to when nothing else says.
pub const DEFAULT_SERVER: &str = "127.0.0.1:2379";

pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLT_CONFIG") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".flt").join("config"))
}

/// Read the config file; a missing file is an empty config.
pub fn load() -> Result<Config> {
    let Some(p) = path() else {
        return Ok(Config::default());
    };
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    if text.trim().is_empty() {
        return Ok(Config::default());
    }
    serde_yaml::from_str(&text).with_context(|| format!("reading {}", p.display()))
}

/// The masters: the flag (or FLT_SERVER), else the config file, else the default.
pub fn servers(flag: Option<Vec<String>>, cfg: &Config) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    let from_flag: Vec<String> = flag
        .unwrap_or_default()
        .iter()
        .flat_map(|s| split(s))
        .collect();
    if !from_flag.is_empty() {
        return from_flag;
    }
    let from_cfg: Vec<String> = match &cfg.server {
        Some(Servers::One(s)) => split(s),
        Some(Servers::Many(v)) => v.iter().flat_map(|s| split(s)).collect(),
        None => vec![],
    };
    if !from_cfg.is_empty() {
        return from_cfg;
    }
    vec![DEFAULT_SERVER.to_string()]
}
