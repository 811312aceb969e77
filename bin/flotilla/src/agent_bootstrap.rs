//! TLS bootstrap of a node, as kubelet's: an agent started with a
//! bootstrap token and no certificate asks the masters for one through a
//! CertificateSigningRequest (the masters approve a node's own request made
//! with a valid bootstrap token and sign it with the cluster CA), keeps it
//! in its certificate folder, and asks again, as itself, once 80% of the
//! certificate's life has passed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use base64::Engine;
use flotilla_objects::certificates::KUBELET_CLIENT_SIGNER;
use flotilla_security::certs::write_file;
use flotilla_security::csr::{client_request, validity};
use flotilla_security::tls::ClientTlsFiles;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::master_client::connect_as;

/// How long a request may wait for its certificate.
const SIGN_TIMEOUT: Duration = Duration::from_secs(300);

/// The agent's certificate and key in `dir`.
pub fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("agent.crt"), dir.join("agent.key"))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// When the certificate at `crt` should be renewed (unix seconds): at 80%
/// of its life. None when there is none or it cannot be read.
fn renew_at(crt: &Path) -> Option<i64> {
    let pem = std::fs::read_to_string(crt).ok()?;
    let (from, to) = validity(&pem)?;
    Some(from + (to - from) * 8 / 10)
}

/// Ask for a certificate of node `name` through `client`; write it and its
/// key into `dir`.
async fn request(
    client: &flotilla_client::Client,
    name: &str,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<()> {
    let user = format!("system:node:{name}");
    let (csr, key) = client_request(&user, &["system:nodes"])?;
    let object = json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": format!("node-csr-{name}-")},
        "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(&csr),
            "signerName": KUBELET_CLIENT_SIGNER,
            "usages": ["digital signature", "key encipherment", "client auth"],
        },
    });
    let (made, _) = client
        .create("certificatesigningrequests", "", &object, false)
        .await
        .context("creating the certificate signing request")?;
    let csr_name = made
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    tracing::info!(csr = %csr_name, "waiting for the node's certificate");
    let deadline = tokio::time::Instant::now() + SIGN_TIMEOUT;
    let cert = loop {
        let c = client
            .get("certificatesigningrequests", "", &csr_name)
            .await
            .with_context(|| format!("reading {csr_name}"))?;
        let cond = |t: &str| {
            c.pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|x| x["type"] == t)
                .map(|x| x["message"].as_str().unwrap_or("").to_string())
        };
        if let Some(why) = cond("Denied").or_else(|| cond("Failed")) {
            bail!("certificate signing request {csr_name} was denied or failed: {why}");
        }
        if let Some(b64) = c
            .pointer("/status/certificate")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .context("the issued certificate is not base64")?;
            break String::from_utf8(pem).context("the issued certificate is not PEM")?;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("certificate signing request {csr_name} was not signed within {SIGN_TIMEOUT:?}: is it approved (flt get csr)?");
        }
        tokio::select! {
            _ = stop.cancelled() => bail!("stopped while waiting for {csr_name}"),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (crt_path, key_path) = paths(dir);
    write_file(&key_path, key.as_bytes(), 0o600)?;
    write_file(&crt_path, cert.as_bytes(), 0o644)?;
    tracing::info!(csr = %csr_name, cert = %crt_path.display(), "node certificate written");
    Ok(())
}

/// The agent's certificate and key: those in `dir` while valid, else new
/// ones asked for with the bootstrap token in `token_file`.
pub async fn ensure(
    servers: &[String],
    ca: Option<PathBuf>,
    name: &str,
    token_file: &Path,
    dir: &Path,
    stop: &CancellationToken,
) -> Result<(PathBuf, PathBuf)> {
    let (crt, key) = paths(dir);
    let valid = std::fs::read_to_string(&crt)
        .ok()
        .and_then(|p| validity(&p))
        .is_some_and(|(_, to)| to > now() + 60)
        && key.exists();
    if valid {
        return Ok((crt, key));
    }
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("--bootstrap-token-file {}", token_file.display()))?
        .trim()
        .to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "--bootstrap-token-file {} is empty",
        token_file.display()
    );
    let files = ClientTlsFiles {
        ca,
        cert: None,
        key: None,
    };
    let client = connect_as(servers, Some(files), Some(token))?;
    request(&client, name, dir, stop).await?;
    Ok((crt, key))
}

/// Renew the certificate in `dir` at 80% of its life, asking as the node
/// itself, until `stop`. The new files are picked up by the pod stream
/// server at once; calls to the masters use them from their next
/// connection.
pub async fn renew(
    servers: Vec<String>,
    ca: Option<PathBuf>,
    name: String,
    dir: PathBuf,
    stop: CancellationToken,
) {
    let (crt, key) = paths(&dir);
    loop {
        let wait = renew_at(&crt).map_or(60, |at| (at - now()).max(0)) as u64;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(wait.min(3600))) => {}
        }
        if renew_at(&crt).is_some_and(|at| at > now()) {
            continue;
        }
        let files = ClientTlsFiles {
            ca: ca.clone(),
            cert: Some(crt.clone()),
            key: Some(key.clone()),
        };
        let r = match connect_as(&servers, Some(files), None) {
            Ok(client) => request(&client, &name, &dir, &stop).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            tracing::warn!("renewing the node certificate: {e:#}; retrying in a minute");
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }
}
