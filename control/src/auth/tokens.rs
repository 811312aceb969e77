//! Tokens the API server checks against its objects: ServiceAccount tokens
//! (JWTs this cluster's masters signed, for a ServiceAccount and a pod
//! that must still exist, with the uids the token names) and bootstrap
//! tokens (`ID.SECRET`, matched against the Secret
//! `kube-system/bootstrap-token-ID`), as kube-apiserver's ServiceAccount
//! and bootstrap token authenticators do. It also issues ServiceAccount
//! tokens (the `serviceaccounts/token` subresource).
//!
//! Objects are first read from this replica (serializable reads, as
//! Kubernetes' authenticators read their informers): a token of a
//! ServiceAccount deleted a moment ago may pass once more on a lagging
//! replica. A refusal is never made on such a read alone: the check is
//! repeated on a linearizable read, so a token whose Secret or
//! ServiceAccount was written a moment ago through another master is
//! accepted at once (`flt apply` of a bootstrap token, then a join).
//! Tokens are issued on linearizable reads.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use flotilla_objects::api::{ApiError, Reason};
use flotilla_objects::core::{Pod, Secret, ServiceAccount};
use flotilla_objects::registry;
use flotilla_security::authn::{Identity, AUTHENTICATED};
use flotilla_security::bootstrap::{self, BootstrapToken};
use flotilla_security::satoken::{self, Binding, Claims, Ref, TokenKeys};
use serde::de::DeserializeOwned;

use crate::ApiServer;

/// A check on this replica's state, and when it refuses the caller, the
/// same check on a linearizable read: the refusal may come from a lag.
async fn confirm<F, Fut>(check: F) -> Result<Identity, ApiError>
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = Result<Identity, ApiError>>,
{
    match check(false).await {
        Err(e) if e.is(Reason::Unauthorized) => check(true).await,
        r => r,
    }
}

/// The object-backed token authenticator and ServiceAccount token issuer.
pub struct TokenAuthn {
    keys: Option<Arc<TokenKeys>>,
    api: ApiServer,
}

/// What a token request asks for.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub namespace: String,
    pub service_account: String,
    pub audiences: Vec<String>,
    pub expiration: Option<Duration>,
    /// The pod (name, uid) the token is bound to.
    pub pod: Option<(String, String)>,
}

fn bad_token(why: impl Into<String>) -> ApiError {
    ApiError::new(
        Reason::Unauthorized,
        format!("Unauthorized: {}", why.into()),
    )
}

impl TokenAuthn {
    /// `keys`: the ServiceAccount signing key (None: ServiceAccount tokens
    /// are neither issued nor accepted).
    pub fn new(keys: Option<Arc<TokenKeys>>, api: ApiServer) -> TokenAuthn {
        TokenAuthn { keys, api }
    }

    /// Whether ServiceAccount tokens are issued here.
    pub fn issues_tokens(&self) -> bool {
        self.keys.is_some()
    }

    /// An object, from this replica's state (`fresh`: linearizably).
    async fn object<T: DeserializeOwned>(
        &self,
        info: &'static registry::ResourceInfo,
        ns: &str,
        name: &str,
        fresh: bool,
    ) -> Result<Option<T>, ApiError> {
        match self.api.get(info, ns, name, !fresh).await {
            Ok(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| ApiError::new(Reason::Internal, format!("reading {name}: {e}"))),
            Err(e) if e.is(Reason::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The caller a bearer token names, when it is a ServiceAccount or a
    /// bootstrap token; None when it is neither shape.
    pub async fn authenticate(&self, token: &str) -> Option<Result<Identity, ApiError>> {
        if let Some(keys) = &self.keys {
            if satoken::looks_like_jwt(token) {
                let c = match keys.verify(token) {
                    Ok(c) => c,
                    Err(e) => return Some(Err(bad_token(e.to_string()))),
                };
                return Some(confirm(|fresh| self.service_account(&c, fresh)).await);
            }
        }
        let t = BootstrapToken::parse(token)?;
        Some(confirm(|fresh| self.bootstrap(&t, fresh)).await)
    }

    /// The objects behind a signed ServiceAccount token.
    async fn service_account(&self, c: &Claims, fresh: bool) -> Result<Identity, ApiError> {
        let b = &c.kubernetes;
        let ns = b.namespace.as_str();
        let sa: Option<ServiceAccount> = self
            .object(
                &registry::SERVICE_ACCOUNT,
                ns,
                &b.serviceaccount.name,
                fresh,
            )
            .await?;
        match sa {
            Some(sa) if sa.metadata.uid == b.serviceaccount.uid => {}
            Some(_) => {
                return Err(bad_token(format!(
                    "service account {ns}/{} was deleted and made again since the token was issued",
                    b.serviceaccount.name
                )))
            }
            None => {
                return Err(bad_token(format!(
                    "service account {ns}/{} has been deleted",
                    b.serviceaccount.name
                )))
            }
        }
        if let Some(p) = &b.pod {
            let pod: Option<Pod> = self.object(&registry::POD, ns, &p.name, fresh).await?;
            if pod.is_none_or(|pod| pod.metadata.uid != p.uid) {
                return Err(bad_token(format!(
                    "the pod {ns}/{} the token is bound to no longer exists",
                    p.name
                )));
            }
        }
        let mut groups = satoken::sa_groups(ns);
        groups.push(AUTHENTICATED.into());
        Ok(Identity {
            user: c.user(),
            uid: b.serviceaccount.uid.clone(),
            groups,
        })
    }

    async fn bootstrap(&self, t: &BootstrapToken, fresh: bool) -> Result<Identity, ApiError> {
        let unknown = || bad_token("invalid bootstrap token");
        let s: Secret = self
            .object(
                &registry::SECRET,
                bootstrap::NAMESPACE,
                &t.secret_name(),
                fresh,
            )
            .await?
            .ok_or_else(unknown)?;
        if s.type_ != bootstrap::SECRET_TYPE || s.metadata.deletion_timestamp.is_some() {
            return Err(unknown());
        }
        let field = |k: &str| -> String {
            s.data
                .get(k)
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .or_else(|| s.string_data.get(k).cloned())
                .unwrap_or_default()
        };
        let secret = field("token-secret");
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(secret.as_bytes(), t.secret.as_bytes()).into();
        if field("token-id") != t.id || !same {
            return Err(unknown());
        }
        if field("usage-bootstrap-authentication") != "true" {
            return Err(bad_token(format!(
                "bootstrap token {} may not be used for authentication",
                t.id
            )));
        }
        let exp = field("expiration");
        if !exp.is_empty() {
            let at = chrono::DateTime::parse_from_rfc3339(&exp).map_err(|_| unknown())?;
            if at < chrono::Utc::now() {
                return Err(bad_token(format!("bootstrap token {} has expired", t.id)));
            }
        }
        let mut groups = vec![bootstrap::GROUP.to_string()];
        for g in field("auth-extra-groups").split(',').map(str::trim) {
            if g.starts_with("system:bootstrappers:") && !groups.iter().any(|x| x == g) {
                groups.push(g.into());
            }
        }
        groups.push(AUTHENTICATED.into());
        Ok(Identity {
            user: t.user(),
            uid: String::new(),
            groups,
        })
    }

    /// A ServiceAccount token: the account must exist, and the pod it is
    /// bound to must exist, run as that account, and have the uid given.
    pub async fn issue(&self, r: &TokenRequest) -> Result<(String, Claims), ApiError> {
        let Some(keys) = &self.keys else {
            return Err(ApiError::new(
                Reason::MethodNotAllowed,
                "service account tokens are not issued by this master: it was started without --service-account-signing-key-file",
            ));
        };
        let expiration = r.expiration.unwrap_or(satoken::DEFAULT_EXPIRATION);
        if expiration < satoken::MIN_EXPIRATION {
            return Err(ApiError::new(
                Reason::Invalid,
                format!(
                    "spec.expirationSeconds: Invalid value: {}: may not specify a duration less than 10 minutes",
                    expiration.as_secs()
                ),
            ));
        }
        let sa: ServiceAccount = self
            .object(
                &registry::SERVICE_ACCOUNT,
                &r.namespace,
                &r.service_account,
                true,
            )
            .await?
            .ok_or_else(|| {
                ApiError::not_found(
                    &registry::SERVICE_ACCOUNT.qualified_name(),
                    &r.service_account,
                )
            })?;
        let mut binding = Binding {
            namespace: r.namespace.clone(),
            serviceaccount: Ref {
                name: sa.metadata.name.clone(),
                uid: sa.metadata.uid.clone(),
            },
            pod: None,
            node: None,
        };
        if let Some((name, uid)) = &r.pod {
            let pod: Pod = self
                .object(&registry::POD, &r.namespace, name, true)
                .await?
                .ok_or_else(|| ApiError::not_found("pods", name))?;
            if !uid.is_empty() && pod.metadata.uid != *uid {
                return Err(ApiError::new(
                    Reason::Conflict,
                    format!("the UID in the bound object reference ({uid}) does not match the pod's ({})", pod.metadata.uid),
                ));
            }
            if pod.spec.service_account_name != r.service_account {
                return Err(ApiError::bad_request(format!(
                    "cannot bind a token of service account {:?} to pod {name:?}: it runs as {:?}",
                    r.service_account, pod.spec.service_account_name
                )));
            }
            binding.pod = Some(Ref {
                name: name.clone(),
                uid: pod.metadata.uid.clone(),
            });
            if !pod.spec.node_name.is_empty() {
                binding.node = Some(Ref {
                    name: pod.spec.node_name.clone(),
                    uid: String::new(),
                });
            }
        }
        keys.sign(binding, &r.audiences, expiration)
            .map_err(|e| ApiError::new(Reason::Internal, e.to_string()))
    }
}
