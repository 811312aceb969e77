//! CertificateSigningRequests: the approver and the signer of nodes'
//! client certificates, as kube-controller-manager's csrapproving and
//! csrsigning controllers do for TLS bootstrap.
//!
//! - **Approval.** A request for `kubernetes.io/kube-apiserver-client-kubelet`
//!   is approved when it asks for a client certificate of a node
//!   (CN `system:node:NAME`, O `system:nodes` only, no alternative names,
//!   usages within digital signature, key encipherment and client auth)
//!   and was made either by a bootstrap token (`system:bootstrappers`) or by
//!   that same node renewing its certificate. Other requests wait for an
//!   operator (`flt certificate approve NAME`).
//! - **Signing.** An approved request for one of the API's client signers
//!   (`kube-apiserver-client-kubelet`, `kube-apiserver-client`) that has no
//!   certificate yet is signed by the cluster CA (`--cluster-signing-cert-file`)
//!   for its `expirationSeconds` or the default duration; a kubelet client
//!   request that is not a node's client certificate is marked Failed
//!   instead, even if an operator approved it.

use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::api::{ApiError, ObjectApi, Reason};
use flotilla_objects::certificates::{
    CertificateSigningRequest, CLIENT_SIGNER, KUBELET_CLIENT_SIGNER,
};
use flotilla_runtime::{
    Action, Controller, Informer, LeaderContext, LeaderLoop, ObjectRef, Reconciler,
};
use flotilla_security::certs::Ca;
use flotilla_security::csr::read_request;
use futures::future::BoxFuture;
use serde_json::json;

pub const COMPONENT: &str = "csr";

/// The group of bootstrap tokens' users.
const BOOTSTRAPPERS: &str = "system:bootstrappers";
const NODES_GROUP: &str = "system:nodes";
const NODE_PREFIX: &str = "system:node:";
const NODE_CLIENT_USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

/// The leader loop: approves and signs with `ca`.
#[derive(Clone)]
pub struct CsrLoop {
    pub ca: Arc<Ca>,
    /// The lifetime of a certificate whose request names none.
    pub duration: Duration,
}

impl LeaderLoop for CsrLoop {
    fn name(&self) -> &'static str {
        COMPONENT
    }

    fn run(&self, ctx: LeaderContext) -> BoxFuture<'static, ()> {
        let me = self.clone();
        Box::pin(async move {
            let csrs = ctx.informers.get::<CertificateSigningRequest>();
            let r = Arc::new(Signer {
                api: ctx.api.clone(),
                csrs: csrs.clone(),
                ca: me.ca,
                duration: me.duration,
            });
            Controller::new(COMPONENT, csrs).run(r, ctx.stop).await
        })
    }
}

struct Signer {
    api: Arc<dyn ObjectApi>,
    csrs: Informer<CertificateSigningRequest>,
    ca: Arc<Ca>,
    duration: Duration,
}

/// Why a request is not a node's own client certificate request made by a
/// bootstrap token or by that node (None: it is, approve it).
pub fn node_client_refusal(c: &CertificateSigningRequest) -> Option<String> {
    if c.spec.signer_name != KUBELET_CLIENT_SIGNER {
        return Some(format!(
            "signer {:?} is not approved automatically",
            c.spec.signer_name
        ));
    }
    let node = match node_client_shape(c) {
        Ok(n) => n,
        Err(why) => return Some(why),
    };
    let cn = format!("{NODE_PREFIX}{node}");
    let by_bootstrap = c.spec.groups.iter().any(|g| g == BOOTSTRAPPERS);
    let by_itself = c.spec.username == cn && c.spec.groups.iter().any(|g| g == NODES_GROUP);
    if !(by_bootstrap || by_itself) {
        return Some(format!(
            "{:?} may not ask for node {node}'s certificate",
            c.spec.username
        ));
    }
    None
}

/// The node a request asks a client certificate for, when it has the
/// shape the kubelet client signer signs (Kubernetes' signer checks it even
/// for a request an operator approved); else why not.
pub fn node_client_shape(c: &CertificateSigningRequest) -> Result<String, String> {
    let s = read_request(&c.request_pem()?)?;
    let Some(node) = s
        .common_name
        .strip_prefix(NODE_PREFIX)
        .filter(|n| !n.is_empty())
    else {
        return Err(format!("the subject {:?} is not a node's", s.common_name));
    };
    if s.organizations != [NODES_GROUP] {
        return Err(format!(
            "the organizations {:?} are not [{NODES_GROUP:?}]",
            s.organizations
        ));
    }
    if s.has_alt_names {
        return Err("a node's client certificate names no alternative names".into());
    }
    if !c.spec.usages.iter().any(|u| u == "client auth")
        || c.spec
            .usages
            .iter()
            .any(|u| !NODE_CLIENT_USAGES.contains(&u.as_str()))
    {
        return Err(format!("usages {:?} are not a client's", c.spec.usages));
    }
    Ok(node.to_string())
}

#[async_trait::async_trait]
impl Reconciler<CertificateSigningRequest> for Signer {
    type Error = ApiError;

    async fn reconcile(
        &self,
        key: &ObjectRef,
        _obj: Option<Arc<CertificateSigningRequest>>,
    ) -> Result<Action, ApiError> {
        let Some(c) = self.csrs.get_ref(key) else {
            return Ok(Action::Await);
        };
        if c.denied() || c.failed() || !c.status.certificate.is_empty() {
            return Ok(Action::Await);
        }
        let rv = c.metadata.resource_version.clone();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if !c.approved() {
            if let Some(why) = node_client_refusal(&c) {
                tracing::debug!(csr = %key.name, %why, "left for an operator to approve");
                return Ok(Action::Await);
            }
            let mut conditions = serde_json::to_value(&c.status.conditions).unwrap_or(json!([]));
            if let Some(list) = conditions.as_array_mut() {
                list.push(json!({
                    "type": "Approved",
                    "status": "True",
                    "reason": "AutoApproved",
                    "message": "Auto approving the client certificate of a node (TLS bootstrap)",
                    "lastUpdateTime": now,
                }));
            }
            self.patch_status(&key.name, &rv, json!({"conditions": conditions}))
                .await?;
            tracing::info!(csr = %key.name, user = %c.spec.username, "approved");
            return Ok(Action::Await);
        }
        if c.spec.signer_name != KUBELET_CLIENT_SIGNER && c.spec.signer_name != CLIENT_SIGNER {
            // Another signer's: not ours to sign.
            return Ok(Action::Await);
        }
        let shape = if c.spec.signer_name == KUBELET_CLIENT_SIGNER {
            node_client_shape(&c).map(|_| ())
        } else {
            Ok(())
        };
        let lifetime = c
            .spec
            .expiration_seconds
            .map(|s| Duration::from_secs(s.max(600) as u64))
            .unwrap_or(self.duration);
        let signed = shape
            .and_then(|()| c.request_pem())
            .map_err(|e| format!("the request: {e}"))
            .and_then(|pem| {
                self.ca
                    .sign_client_request(&pem, lifetime)
                    .map_err(|e| e.to_string())
            });
        let outcome = if signed.is_ok() { "signed" } else { "failed" };
        let status = match signed {
            Ok(cert) => {
                use base64::Engine;
                json!({"certificate": base64::engine::general_purpose::STANDARD.encode(cert)})
            }
            Err(why) => {
                let mut conditions =
                    serde_json::to_value(&c.status.conditions).unwrap_or(json!([]));
                if let Some(list) = conditions.as_array_mut() {
                    list.push(json!({
                        "type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                        "message": why, "lastUpdateTime": now,
                    }));
                }
                json!({"conditions": conditions})
            }
        };
        self.patch_status(&key.name, &rv, status).await?;
        tracing::info!(csr = %key.name, outcome, "certificate request handled");
        Ok(Action::Await)
    }
}

impl Signer {
    /// Merge `status` into the request's, at the version read; a request
    /// changed or deleted meanwhile is left to its next event.
    async fn patch_status(
        &self,
        name: &str,
        rv: &str,
        status: serde_json::Value,
    ) -> Result<(), ApiError> {
        let patch = json!({"metadata": {"resourceVersion": rv}, "status": status});
        match self
            .api
            .patch("certificatesigningrequests", "", name, patch, true, false)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is(Reason::Conflict) || e.is(Reason::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use flotilla_security::csr::client_request;

    use super::*;

    fn csr(
        cn: &str,
        orgs: &[&str],
        user: &str,
        groups: &[&str],
        usages: &[&str],
    ) -> CertificateSigningRequest {
        let (pem, _) = client_request(cn, orgs).expect("request");
        serde_json::from_value(json!({
            "metadata": {"name": "c"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": KUBELET_CLIENT_SIGNER,
                "usages": usages,
                "username": user,
                "groups": groups,
            },
        }))
        .expect("csr")
    }

    const CLIENT: &[&str] = &["digital signature", "key encipherment", "client auth"];

    #[test]
    fn only_a_nodes_own_client_request_by_a_bootstrap_token_or_itself_is_approved() {
        let boot = &[BOOTSTRAPPERS, "system:authenticated"];
        assert_eq!(
            node_client_refusal(&csr(
                "system:node:n1",
                &[NODES_GROUP],
                "system:bootstrap:abcdef",
                boot,
                CLIENT
            )),
            None
        );
        assert_eq!(
            node_client_refusal(&csr(
                "system:node:n1",
                &[NODES_GROUP],
                "system:node:n1",
                &[NODES_GROUP],
                CLIENT
            )),
            None,
            "a node renewing its own"
        );
        for (c, why) in [
            (
                csr(
                    "system:node:n1",
                    &["system:masters"],
                    "system:bootstrap:a",
                    boot,
                    CLIENT,
                ),
                "organizations",
            ),
            (
                csr("admin", &[NODES_GROUP], "system:bootstrap:a", boot, CLIENT),
                "not a node's",
            ),
            (
                csr(
                    "system:node:n2",
                    &[NODES_GROUP],
                    "system:node:n1",
                    &[NODES_GROUP],
                    CLIENT,
                ),
                "may not ask",
            ),
            (
                csr(
                    "system:node:n1",
                    &[NODES_GROUP],
                    "alice",
                    &["system:authenticated"],
                    CLIENT,
                ),
                "may not ask",
            ),
            (
                csr(
                    "system:node:n1",
                    &[NODES_GROUP],
                    "system:bootstrap:a",
                    boot,
                    &["server auth"],
                ),
                "usages",
            ),
        ] {
            let got = node_client_refusal(&c).unwrap_or_default();
            assert!(got.contains(why), "{got:?} should say {why:?}");
        }
        let mut other = csr(
            "system:node:n1",
            &[NODES_GROUP],
            "system:bootstrap:a",
            boot,
            CLIENT,
        );
        other.spec.signer_name = CLIENT_SIGNER.into();
        assert!(node_client_refusal(&other).is_some());
    }
}
