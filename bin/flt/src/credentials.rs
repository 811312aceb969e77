//! Credentials the masters hand out: `flt create token` (a ServiceAccount
//! token, as `kubectl create token`), `flt create bootstrap-token` (a node
//! join token, as `kubeadm token create`), and `flt certificate
//! approve|deny` (CertificateSigningRequests, as `kubectl certificate`).

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand};
use flotilla_proto::objects::CreateTokenRequest;
use flotilla_security::bootstrap::{self, BootstrapToken};
use serde_json::{json, Value};

use crate::commands::Ctx;

/// `flt create token SERVICEACCOUNT`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The ServiceAccount.
    pub service_account: String,
    /// How long the token lives (at least 10m; the masters cap it at
    /// their --service-account-max-token-expiration).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Whom the token is for (repeatable; default: the masters).
    #[arg(long)]
    pub audience: Vec<String>,
    /// Bind the token to a pod of the account: it stops working when the
    /// pod is deleted.
    #[arg(long, value_name = "NAME")]
    pub bound_pod: Option<String>,
}

/// `flt create bootstrap-token`.
#[derive(Args, Debug)]
pub struct BootstrapTokenArgs {
    /// How long the token may be used to join (0: forever).
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Why the token exists.
    #[arg(long, default_value = "")]
    pub description: String,
}

#[derive(Subcommand, Debug)]
pub enum CertificateCommand {
    /// Approve CertificateSigningRequests: the masters sign those of their
    /// client signers.
    Approve {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Deny CertificateSigningRequests.
    Deny {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Print a new ServiceAccount token.
pub async fn create_token(ctx: &Ctx, a: TokenArgs) -> Result<()> {
    let mut req = CreateTokenRequest {
        namespace: ctx.namespace.clone(),
        name: a.service_account,
        audiences: a.audience,
        expiration_seconds: a.duration.as_secs() as i64,
        ..Default::default()
    };
    if let Some(pod) = a.bound_pod {
        let p = ctx
            .client
            .get("pods", &ctx.namespace, &pod)
            .await
            .map_err(|e| anyhow!(e.message))?;
        req.bound_pod_uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
        req.bound_pod_name = pod;
    }
    let t = ctx
        .client
        .create_token(req)
        .await
        .map_err(|e| anyhow!(e.message))?;
    println!("{}", t.token);
    Ok(())
}

/// The Secret of a new bootstrap token, valid for `ttl` (0: no expiry).
pub fn bootstrap_secret(t: &BootstrapToken, ttl: Duration, description: &str) -> Value {
    let mut data = json!({
        "token-id": t.id,
        "token-secret": t.secret,
        "usage-bootstrap-authentication": "true",
        "usage-bootstrap-signing": "true",
    });
    if !ttl.is_zero() {
        let at = chrono::Utc::now()
            + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(1));
        data["expiration"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    if !description.is_empty() {
        data["description"] = json!(description);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": t.secret_name(), "namespace": bootstrap::NAMESPACE},
        "type": bootstrap::SECRET_TYPE,
        "stringData": data,
    })
}

/// Make a bootstrap token and print it.
pub async fn create_bootstrap_token(ctx: &Ctx, a: BootstrapTokenArgs) -> Result<()> {
    let t = BootstrapToken::generate();
    ctx.client
        .create(
            "secrets",
            bootstrap::NAMESPACE,
            &bootstrap_secret(&t, a.ttl, &a.description),
            false,
        )
        .await
        .map_err(|e| anyhow!(e.message))?;
    println!("{t}");
    Ok(())
}

/// Add the Approved or Denied condition to each request.
pub async fn certificate(ctx: &Ctx, cmd: CertificateCommand) -> Result<()> {
    let (names, kind, reason, verb) = match cmd {
        CertificateCommand::Approve { names } => (names, "Approved", "FltApprove", "approved"),
        CertificateCommand::Deny { names } => (names, "Denied", "FltDeny", "denied"),
    };
    let mut failed = 0;
    for name in &names {
        match decide(ctx, name, kind, reason).await {
            Ok(()) => println!("certificatesigningrequest.certificates.k8s.io/{name} {verb}"),
            Err(e) => {
                eprintln!("Error: {name}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} requests were not {verb}", names.len());
    }
    Ok(())
}

async fn decide(ctx: &Ctx, name: &str, kind: &str, reason: &str) -> Result<()> {
    let c = ctx
        .client
        .get("certificatesigningrequests", "", name)
        .await
        .map_err(|e| anyhow!(e.message))?;
    let mut conditions = c
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conditions.iter().any(|x| x["type"] == kind) {
        return Ok(());
    }
    conditions.push(json!({
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": format!("This CSR was {} by flt certificate", kind.to_lowercase()),
        "lastUpdateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }));
    let patch = json!({
        "metadata": {"resourceVersion": c["metadata"]["resourceVersion"]},
        "status": {"conditions": conditions},
    });
    ctx.client
        .patch("certificatesigningrequests", "", name, &patch, true)
        .await
        .map_err(|e| anyhow!(e.message))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_secret_is_as_kubeadm_writes_it() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").expect("token");
        let s = bootstrap_secret(&t, Duration::from_secs(3600), "join n7");
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(s["metadata"]["namespace"], "kube-system");
        assert_eq!(s["type"], "bootstrap.kubernetes.io/token");
        assert_eq!(s["stringData"]["token-secret"], "0123456789abcdef");
        assert_eq!(s["stringData"]["usage-bootstrap-authentication"], "true");
        assert_eq!(s["stringData"]["description"], "join n7");
        let exp = s["stringData"]["expiration"].as_str().expect("expiration");
        let at = chrono::DateTime::parse_from_rfc3339(exp).expect("rfc3339");
        let left = at.timestamp() - chrono::Utc::now().timestamp();
        assert!((3590..=3600).contains(&left), "{left}");
        let forever = bootstrap_secret(&t, Duration::ZERO, "");
        assert!(forever["stringData"].get("expiration").is_none());
    }
}
