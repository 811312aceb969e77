//! Who may do what through a master's client port.
//!
//! Each call is authenticated (`flotilla_security::authn`: a bearer token,
//! else the verified client certificate, else anonymous), may act as
//! another user when the caller may impersonate it (`impersonate-user`,
//! `impersonate-group`, as kubectl's `--as`), and is then authorized:
//! with [`Mode::Rbac`] by Kubernetes' RBAC over the index of this
//! replica's Roles and bindings ([`policy`]), the group `system:masters`
//! always allowed (as kube-apiserver's privileged group); with
//! [`Mode::AlwaysAllow`] (a master on loopback without credentials
//! configured) everything is allowed.
//!
//! A refusal is Forbidden in Kubernetes' words:
//! `User "alice" cannot list resource "pods" in API group "" in the namespace "default"`.

pub mod node;
pub mod policy;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use flotilla_objects::api::{ApiError, Reason};
use flotilla_objects::rbac::Attributes;
use flotilla_objects::registry;
use flotilla_security::authn::{
    bearer_token, Authenticator, AuthnError, Identity, AUTHENTICATED, MASTERS_GROUP,
};
use flotilla_security::satoken::TokenKeys;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tonic::Request;

use crate::ApiServer;
pub use policy::PolicyIndex;

/// The metadata entries of impersonation (kubectl's `--as` and `--as-group`).
pub const IMPERSONATE_USER: &str = "impersonate-user";
pub const IMPERSONATE_GROUP: &str = "impersonate-group";

/// How requests are authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything is allowed (a master without credentials, on loopback).
    AlwaysAllow,
    /// Kubernetes' RBAC.
    Rbac,
}

/// How long a call waits for a starting master's first read of the RBAC
/// objects before it is told to retry.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// Authentication and authorization of the client port.
pub struct Auth {
    mode: Mode,
    authn: Authenticator,
    index: Option<PolicyIndex>,
    nodes: Option<node::NodeAuthorizer>,
    /// ServiceAccount and bootstrap tokens (RBAC mode only).
    tokens: Option<tokens::TokenAuthn>,
}

impl Auth {
    /// Everyone may do everything (callers are still identified).
    pub fn always_allow(authn: Authenticator) -> Arc<Auth> {
        Arc::new(Auth {
            mode: Mode::AlwaysAllow,
            authn,
            index: None,
            nodes: None,
            tokens: None,
        })
    }

    /// RBAC over the objects `api` holds, followed until `stop`;
    /// ServiceAccount tokens signed and checked with `sa_keys`, bootstrap
    /// tokens checked against their Secrets.
    pub fn rbac(
        authn: Authenticator,
        api: ApiServer,
        stop: CancellationToken,
        sa_keys: Option<Arc<TokenKeys>>,
    ) -> Arc<Auth> {
        Arc::new(Auth {
            mode: Mode::Rbac,
            authn,
            index: Some(PolicyIndex::follow(api.clone(), stop)),
            nodes: Some(node::NodeAuthorizer::new(api.clone())),
            tokens: Some(tokens::TokenAuthn::new(sa_keys, api)),
        })
    }

    /// The ServiceAccount token issuer (None without RBAC).
    pub fn tokens(&self) -> Option<&tokens::TokenAuthn> {
        self.tokens.as_ref()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The caller of a request (after impersonation, which is itself
    /// authorized).
    pub async fn caller<T>(&self, req: &Request<T>) -> Result<Identity, ApiError> {
        Ok(self.callers(req).await?.0)
    }

    /// Who sent a request, from its bearer token (the token file, then
    /// ServiceAccount and bootstrap tokens) or client certificate, before
    /// impersonation.
    async fn authenticate(
        &self,
        md: &MetadataMap,
        leaf_cert: Option<&[u8]>,
    ) -> Result<Identity, ApiError> {
        let authorization = authorization(md)?;
        if let (Some(h), Some(tokens)) = (authorization, &self.tokens) {
            let token = bearer_token(h).map_err(|e| unauthorized(&e.to_string()))?;
            if self.authn.tokens.get(token).is_none() {
                if let Some(who) = tokens.authenticate(token).await {
                    return who;
                }
            }
        }
        self.authn
            .authenticate(authorization, leaf_cert)
            .map_err(|e| unauthorized(&e.to_string()))
    }

    /// [`Auth::caller`] from a request's metadata and client certificate.
    pub async fn caller_of(
        &self,
        md: &MetadataMap,
        leaf_cert: Option<&[u8]>,
    ) -> Result<Identity, ApiError> {
        Ok(self.callers_of(md, leaf_cert).await?.0)
    }

    /// The caller a request acts as, and, when it impersonates, who sent
    /// it (what an audit event records as `user` and `impersonatedUser`).
    pub async fn callers<T>(
        &self,
        req: &Request<T>,
    ) -> Result<(Identity, Option<Identity>), ApiError> {
        let cert = req.peer_certs();
        let leaf = cert.as_ref().and_then(|c| c.first()).map(|c| c.as_ref());
        self.callers_of(req.metadata(), leaf).await
    }

    async fn callers_of(
        &self,
        md: &MetadataMap,
        leaf_cert: Option<&[u8]>,
    ) -> Result<(Identity, Option<Identity>), ApiError> {
        let who = self.authenticate(md, leaf_cert).await?;
        let Some(user) = md.get(IMPERSONATE_USER) else {
            if md.get(IMPERSONATE_GROUP).is_some() {
                return Err(ApiError::bad_request(
                    "impersonating a group needs a user to impersonate too (impersonate-user)",
                ));
            }
            return Ok((who, None));
        };
        let user = user
            .to_str()
            .map_err(|_| ApiError::bad_request("impersonate-user is not text"))?
            .to_string();
        let mut groups = Vec::new();
        for g in md.get_all(IMPERSONATE_GROUP) {
            groups.push(
                g.to_str()
                    .map_err(|_| ApiError::bad_request("impersonate-group is not text"))?
                    .to_string(),
            );
        }
        let imp = |resource: &str, name: &str| Attributes {
            verb: "impersonate".into(),
            api_group: String::new(),
            resource: resource.into(),
            name: name.into(),
            ..Default::default()
        };
        self.authorize(&who, &imp("users", &user)).await?;
        for g in &groups {
            self.authorize(&who, &imp("groups", g)).await?;
        }
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        let acting = Identity {
            user,
            uid: String::new(),
            groups,
        };
        Ok((acting, Some(who)))
    }

    /// Whether `who` may do `a`.
    pub async fn allowed(&self, who: &Identity, a: &Attributes) -> Result<bool, ApiError> {
        Ok(self.verdict(who, a).await?.is_ok())
    }

    /// `Ok` when `who` may do `a`, else why not (the node authorizer's
    /// reason, when it is the one refusing).
    async fn verdict(
        &self,
        who: &Identity,
        a: &Attributes,
    ) -> Result<Result<(), Option<String>>, ApiError> {
        if self.mode == Mode::AlwaysAllow || who.in_group(MASTERS_GROUP) {
            return Ok(Ok(()));
        }
        let Some(index) = &self.index else {
            return Ok(Err(None));
        };
        if !index.wait_synced(SYNC_WAIT).await {
            return Err(ApiError::unavailable(
                "this master has not read its access rules yet; retry",
            ));
        }
        if let (Some(name), Some(nodes)) = (node::node_of(who), &self.nodes) {
            match nodes.decide(name, a).await? {
                node::Decision::Allow => return Ok(Ok(())),
                node::Decision::Deny(why) => return Ok(Err(Some(why))),
                node::Decision::NoOpinion => {}
            }
        }
        Ok(if index.allows(&who.user, &who.groups, a) {
            Ok(())
        } else {
            Err(None)
        })
    }

    /// `Ok` when `who` may do `a`, else Forbidden in Kubernetes' words.
    pub async fn authorize(&self, who: &Identity, a: &Attributes) -> Result<(), ApiError> {
        let Err(why) = self.verdict(who, a).await? else {
            return Ok(());
        };
        tracing::debug!(user = %who.user, verb = %a.verb, resource = %a.full_resource(), namespace = %a.namespace, "forbidden");
        let mut m = forbidden(who, a);
        if let Some(why) = why {
            m.push_str(": ");
            m.push_str(&why);
        }
        Err(ApiError::new(Reason::Forbidden, m))
    }

    /// Authenticate the request's caller and authorize `a` for it.
    pub async fn check<T>(&self, req: &Request<T>, a: &Attributes) -> Result<Identity, ApiError> {
        let who = self.caller(req).await?;
        self.authorize(&who, a).await?;
        Ok(who)
    }

    /// Whether the caller of a call with metadata `md`, over a connection
    /// whose client presented `leaf_cert`, may use the etcd API: only
    /// cluster admins may, since the raw keys bypass object authorization.
    /// Synchronous (a tonic interceptor asks it); no impersonation.
    pub fn etcd_allowed(&self, md: &MetadataMap, leaf_cert: Option<&[u8]>) -> Result<(), ApiError> {
        if self.mode == Mode::AlwaysAllow {
            return Ok(());
        }
        if md.get(IMPERSONATE_USER).is_some() {
            return Err(ApiError::new(
                Reason::Forbidden,
                "impersonation is not available on the etcd API",
            ));
        }
        // Only the token file and certificates: ServiceAccount and
        // bootstrap tokens never reach the raw keys.
        let who = self
            .authn
            .authenticate(authorization(md)?, leaf_cert)
            .map_err(|e| match e {
                AuthnError::BadToken => unauthorized(
                    "invalid bearer token (service account and bootstrap tokens are not accepted on the etcd API)",
                ),
                e => unauthorized(&e.to_string()),
            })?;
        let all = Attributes {
            verb: "*".into(),
            api_group: "*".into(),
            resource: "*".into(),
            ..Default::default()
        };
        let admin = who.in_group(MASTERS_GROUP)
            || self
                .index
                .as_ref()
                .is_some_and(|i| i.allows(&who.user, &who.groups, &all));
        if admin {
            Ok(())
        } else {
            Err(ApiError::new(
                Reason::Forbidden,
                format!(
                    "User \"{}\" cannot use the etcd API: it is reserved to cluster-admin (the object API is authorized per object)",
                    who.user
                ),
            ))
        }
    }

    /// Whether `who` may do everything (the etcd API is reserved to it).
    pub async fn is_cluster_admin(&self, who: &Identity) -> bool {
        let all = Attributes {
            verb: "*".into(),
            api_group: "*".into(),
            resource: "*".into(),
            ..Default::default()
        };
        self.allowed(who, &all).await.unwrap_or(false)
    }
}

/// The Forbidden message for `who` asking `a`: Kubernetes' wording, with
/// the resource's qualified name (`deployments.apps "web" is forbidden: ...`).
pub fn forbidden(who: &Identity, a: &Attributes) -> String {
    let what = match registry::by_plural(&a.resource) {
        Some(info) => info.qualified_name(),
        None => a.resource.clone(),
    };
    let subject = if a.name.is_empty() {
        what
    } else {
        format!("{what} \"{}\"", a.name)
    };
    format!("{subject} is forbidden: {}", a.forbidden_message(&who.user))
}

/// The `authorization` entry of a request's metadata, as text.
fn authorization(md: &MetadataMap) -> Result<Option<&str>, ApiError> {
    md.get("authorization")
        .map(|v| {
            v.to_str()
                .map_err(|_| unauthorized("the authorization header is not text"))
        })
        .transpose()
}

pub(crate) fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(Reason::Unauthorized, format!("Unauthorized: {detail}"))
}

#[cfg(test)]
mod tests;
