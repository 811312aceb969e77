//! Config maps' and secrets' entries from flags (`--from-literal`,
//! `--from-file`, `--from-env-file`), and the three kinds of secret
//! `flt create secret` makes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{key_value, meta, GenFlags};

/// Where a config map's or secret's entries come from.
#[derive(Args, Debug, Clone, Default)]
pub struct DataFlags {
    /// KEY=VALUE.
    #[arg(long)]
    pub from_literal: Vec<String>,
    /// [KEY=]PATH: a file (KEY defaults to its name) or every file of a folder.
    #[arg(long)]
    pub from_file: Vec<String>,
    /// A file of KEY=VALUE lines.
    #[arg(long)]
    pub from_env_file: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum SecretCmd {
    /// Entries from literals and files.
    Generic {
        name: String,
        #[command(flatten)]
        data: DataFlags,
        /// The secret's type.
        #[arg(long = "type", default_value = "Opaque")]
        type_: String,
        #[command(flatten)]
        flags: GenFlags,
    },
    /// A certificate and its key.
    Tls {
        name: String,
        #[arg(long, required = true)]
        cert: PathBuf,
        #[arg(long, required = true)]
        key: PathBuf,
        #[command(flatten)]
        flags: GenFlags,
    },
    /// Registry credentials (a .dockerconfigjson).
    DockerRegistry {
        name: String,
        #[arg(long, default_value = "https://index.docker.io/v1/")]
        docker_server: String,
        #[arg(long, required = true)]
        docker_username: String,
        #[arg(long, required = true)]
        docker_password: String,
        #[arg(long, default_value = "")]
        docker_email: String,
        #[command(flatten)]
        flags: GenFlags,
    },
}

/// Entries from --from-literal, --from-file and --from-env-file, as bytes.
pub(super) fn entries(d: &DataFlags) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut put = |k: String, v: Vec<u8>| -> Result<()> {
        if out.insert(k.clone(), v).is_some() {
            bail!("cannot add key {k}, another key by that name already exists");
        }
        Ok(())
    };
    for l in &d.from_literal {
        let (k, v) = key_value(l, "--from-literal")?;
        put(k, v.into_bytes())?;
    }
    for f in &d.from_file {
        let (key, path) = match f.split_once('=') {
            Some((k, p)) => (Some(k.to_string()), PathBuf::from(p)),
            None => (None, PathBuf::from(f)),
        };
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .collect();
            files.sort();
            for p in files {
                put(file_key(&p), read(&p)?)?;
            }
        } else {
            put(key.unwrap_or_else(|| file_key(&path)), read(&path)?)?;
        }
    }
    for f in &d.from_env_file {
        let text =
            String::from_utf8(read(f)?).map_err(|_| anyhow!("{}: not UTF-8 text", f.display()))?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = key_value(line, &format!("{}: line", f.display()))?;
            put(k, v.into_bytes())?;
        }
    }
    Ok(out)
}

fn file_key(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

pub(super) fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(v)
}

pub(super) fn secret(ns: &str, s: SecretCmd) -> Result<(Value, GenFlags, Option<String>)> {
    let (name, ty, data, flags) = match s {
        SecretCmd::Generic {
            name,
            data,
            type_,
            flags,
        } => (name, type_, entries(&data)?, flags),
        SecretCmd::Tls {
            name,
            cert,
            key,
            flags,
        } => {
            let mut d = BTreeMap::new();
            d.insert("tls.crt".to_string(), read(&cert)?);
            d.insert("tls.key".to_string(), read(&key)?);
            (name, "kubernetes.io/tls".to_string(), d, flags)
        }
        SecretCmd::DockerRegistry {
            name,
            docker_server,
            docker_username,
            docker_password,
            docker_email,
            flags,
        } => {
            let auth = b64(format!("{docker_username}:{docker_password}").as_bytes());
            let cfg = json!({"auths": {docker_server: {"username": docker_username,
                "password": docker_password, "email": docker_email, "auth": auth}}});
            let mut d = BTreeMap::new();
            d.insert(
                ".dockerconfigjson".to_string(),
                cfg.to_string().into_bytes(),
            );
            (name, "kubernetes.io/dockerconfigjson".to_string(), d, flags)
        }
    };
    let data: Map<String, Value> = data.into_iter().map(|(k, v)| (k, json!(b64(&v)))).collect();
    Ok((
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(&name, Some(ns)),
            "type": ty, "data": data}),
        flags,
        None,
    ))
}
