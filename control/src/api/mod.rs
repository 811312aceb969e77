//! The object API's semantics, independent of the wire: create, get, list,
//! update, status, patch, apply, delete, bind and watch over a [`Store`].
//!
//! Objects are stored as their JSON encoding under
//! `/registry/<plural>/<namespace>/<name>` (cluster-scoped kinds:
//! `/registry/<plural>/<name>`), without `metadata.resourceVersion`: that is
//! the key's mod revision, filled in on the way out. Every write is a
//! compare-and-swap on the revision it was computed from ([`cas`]), so
//! concurrent writers never lose an update: a caller's stale resourceVersion
//! is a Conflict, and the server's own read-modify-write loops retry.
//!
//! One module per operation ([`create`], [`read`], [`update`], [`delete`],
//! [`bind`], [`watch`]); what is special about a kind is its
//! [`strategy::Strategy`].
//!
//! A call may carry a request id (retries of one client call carry the
//! same: the store applies it once) and, for a controller on the leader, a
//! fence (the Raft term its leadership began in: the store refuses the write
//! once that term is over). Both ride on every transaction the call makes.

mod bind;
mod cas;
mod create;
mod delete;
pub(crate) mod json;
mod priority;
mod read;
mod restriction;
pub mod strategy;
mod update;
mod watch;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use flotilla_objects::api::{
    ApiError, Applied, DeleteParams, ListParams, ObjectApi, ObjectList, RawEvent, RawWatch, Reason,
    WatchParams, Written,
};
use flotilla_objects::registry::{self, ResourceInfo};
use serde_json::Value;

use crate::alloc::ServiceRanges;
use crate::store::{key_after, Kv, RequestId, Store, StoreError};
use crate::watch_cache::WatchCaches;
use json::{meta_mut, str_at, strip_rv};
use strategy::Strategies;

pub use flotilla_objects::api::NAMESPACE_FINALIZER;
pub use json::with_rv;
pub use read::{ListResult, RawList};
pub use strategy::PROTECTED_NAMESPACES;
pub use watch::WatchReceiver;

/// kubectl's annotation for the manifest last applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
pub use flotilla_objects::api::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

/// How many times a server-side read-modify-write retries a lost race.
const CAS_RETRIES: usize = 16;
/// Recent events each kind's watch cache keeps for watches that start a
/// little in the past.
const WATCH_CACHE_EVENTS: usize = 10_000;

/// What the API server is configured with (the same on every master).
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// Cluster IPs and node ports of services.
    pub services: ServiceRanges,
    /// Pod CIDRs of nodes.
    pub pod_cidrs: crate::podcidr::PodCidrs,
}

/// The wall clock the server stamps objects with (creation, deletion
/// deadlines); tests substitute their own.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What rides on every transaction of one call.
#[derive(Debug, Clone, Default)]
struct CallCtx {
    fence: Option<u64>,
    request: Option<RequestId>,
    /// The caller is this node's agent: its writes are restricted
    /// ([`restriction`]).
    node: Option<Arc<str>>,
}

/// The API server's core. Cheap to clone; clones share everything but the
/// call context ([`ApiServer::fenced`], [`ApiServer::with_request`]).
#[derive(Clone)]
pub struct ApiServer {
    store: Arc<dyn Store>,
    strategies: Arc<Strategies>,
    caches: Arc<WatchCaches>,
    clock: Clock,
    ctx: CallCtx,
}

/// Resolve the resource a request names (plural, or any name flt accepts).
pub fn resolve(resource: &str) -> Result<&'static ResourceInfo, ApiError> {
    registry::by_plural(resource)
        .or_else(|| registry::lookup(resource))
        .ok_or_else(|| {
            ApiError::new(
                Reason::NotFound,
                format!("the server doesn't have a resource type \"{resource}\""),
            )
        })
}

/// The store key of an object.
pub fn object_key(info: &ResourceInfo, ns: &str, name: &str) -> Vec<u8> {
    if info.namespaced {
        format!("/registry/{}/{}/{}", info.plural, ns, name).into_bytes()
    } else {
        format!("/registry/{}/{}", info.plural, name).into_bytes()
    }
}

/// The store prefix of a kind's objects (in one namespace, or all).
pub fn kind_prefix(info: &ResourceInfo, ns: &str) -> Vec<u8> {
    if info.namespaced && !ns.is_empty() {
        format!("/registry/{}/{}/", info.plural, ns).into_bytes()
    } else {
        format!("/registry/{}/", info.plural).into_bytes()
    }
}

pub(crate) fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(m) => ApiError::new(Reason::Unavailable, m),
        e @ StoreError::Fenced { .. } => ApiError::new(Reason::Unavailable, e.to_string()),
        StoreError::Compacted { compact_revision } => ApiError::new(
            Reason::Gone,
            format!("too old resource version (compacted to {compact_revision})"),
        ),
        StoreError::TooLarge => ApiError::bad_request("request is too large"),
        StoreError::Other(m) => ApiError::internal(m),
    }
}

pub(crate) fn invalid(
    info: &ResourceInfo,
    name: &str,
    errs: &[flotilla_objects::FieldError],
) -> ApiError {
    ApiError::new(
        Reason::Invalid,
        flotilla_objects::admit::invalid_message(info, name, errs),
    )
}

pub(crate) fn check_name_param(what: &str, s: &str) -> Result<(), ApiError> {
    if s.contains('/') || s == "." || s == ".." {
        return Err(ApiError::bad_request(format!("invalid {what} {s:?}")));
    }
    Ok(())
}

impl ApiServer {
    pub fn new(store: Arc<dyn Store>, cfg: ApiConfig) -> Self {
        ApiServer {
            caches: Arc::new(WatchCaches::new(store.clone(), WATCH_CACHE_EVENTS)),
            strategies: Arc::new(Strategies::new(&cfg)),
            store,
            clock: Arc::new(Utc::now),
            ctx: CallCtx::default(),
        }
    }

    /// The same server with another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// This server for a controller that leads in `term`: every write it
    /// makes is refused by the store once that term is over.
    pub fn fenced(&self, term: u64) -> ApiServer {
        let mut s = self.clone();
        s.ctx.fence = Some(term);
        s
    }

    /// This server for one client call with a request id.
    pub fn with_request(&self, id: RequestId) -> ApiServer {
        let mut s = self.clone();
        s.ctx.request = Some(id);
        s
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The watch caches' series, for this master's registry.
    pub fn watch_cache_collector(&self) -> crate::metrics::WatchCacheCollector {
        crate::metrics::WatchCacheCollector::new(Arc::downgrade(&self.caches))
    }

    fn strategy(&self, info: &ResourceInfo) -> &dyn strategy::Strategy {
        self.strategies.for_kind(info)
    }

    fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    fn now_str(&self) -> String {
        self.now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }

    /// Create the namespaces that always exist, when they do not yet.
    pub async fn ensure_namespaces(&self) -> Result<(), ApiError> {
        for ns in PROTECTED_NAMESPACES {
            let key = object_key(&registry::NAMESPACE, "", ns);
            if self.read(&key, true).await?.is_some() {
                continue;
            }
            let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(&registry::NAMESPACE, "", obj, false).await {
                Ok(_) => tracing::info!(namespace = ns, "created"),
                Err(e) if e.is(Reason::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Create the default ClusterRoles and ClusterRoleBindings
    /// (`flotilla_objects::rbac::bootstrap_policy`) that do not exist yet.
    /// Existing ones are left as operators changed them.
    pub async fn ensure_rbac_defaults(&self) -> Result<(), ApiError> {
        let (roles, bindings) = flotilla_objects::rbac::bootstrap_policy();
        let to_value = |v: Result<Value, serde_json::Error>| {
            v.map_err(|e| ApiError::internal(format!("encoding the default policy: {e}")))
        };
        let mut objects = Vec::new();
        for r in roles {
            objects.push((
                &registry::CLUSTER_ROLE,
                r.metadata.name.clone(),
                to_value(serde_json::to_value(r))?,
            ));
        }
        for b in bindings {
            objects.push((
                &registry::CLUSTER_ROLE_BINDING,
                b.metadata.name.clone(),
                to_value(serde_json::to_value(b))?,
            ));
        }
        for (info, name, obj) in objects {
            if self
                .read(&object_key(info, "", &name), true)
                .await?
                .is_some()
            {
                continue;
            }
            match self.create(info, "", obj, false).await {
                Ok(_) => tracing::info!(kind = info.kind, name, "created"),
                Err(e) if e.is(Reason::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The namespace an object of `info` goes in: the object's own, or the
    /// request's ("default" when neither says), "" for cluster-scoped kinds.
    fn namespace_for(
        &self,
        info: &ResourceInfo,
        req_ns: &str,
        obj: &Value,
    ) -> Result<String, ApiError> {
        let obj_ns = str_at(obj, "/metadata/namespace");
        if !info.namespaced {
            return Ok(String::new());
        }
        if !req_ns.is_empty() && !obj_ns.is_empty() && req_ns != obj_ns {
            return Err(ApiError::bad_request(format!(
                "the namespace of the provided object ({obj_ns}) does not match the namespace sent on the request ({req_ns})"
            )));
        }
        let ns = if !obj_ns.is_empty() {
            obj_ns
        } else if !req_ns.is_empty() {
            req_ns
        } else {
            "default"
        };
        check_name_param("namespace", ns)?;
        Ok(ns.to_string())
    }

    /// The namespace of a call that names an object.
    fn object_ns(&self, info: &ResourceInfo, ns: &str) -> Result<String, ApiError> {
        if !info.namespaced {
            return Ok(String::new());
        }
        if ns.is_empty() {
            return Err(ApiError::bad_request(format!(
                "a namespace is required for {}",
                info.plural
            )));
        }
        check_name_param("namespace", ns)?;
        Ok(ns.to_string())
    }

    async fn read(&self, key: &[u8], linearizable: bool) -> Result<Option<Kv>, ApiError> {
        let page = self
            .store
            .range(key, &key_after(key), 1, 0, linearizable)
            .await
            .map_err(store_err)?;
        Ok(page.kvs.into_iter().next().filter(|kv| kv.key == key))
    }

    fn encode_for_store(&self, v: &Value) -> Result<Vec<u8>, ApiError> {
        let b = if v.pointer("/metadata/resourceVersion").is_some() {
            let mut v = v.clone();
            strip_rv(&mut v);
            serde_json::to_vec(&v)
        } else {
            serde_json::to_vec(v)
        }
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let max = self.store.max_value_bytes();
        if b.len() > max {
            return Err(ApiError::bad_request(format!(
                "object is too large: {} bytes, the limit is {max}",
                b.len()
            )));
        }
        Ok(b)
    }

    /// The object an earlier attempt of this call wrote (its request id was
    /// replayed): as it is now, through the leader.
    async fn replayed(&self, key: &[u8]) -> Result<Option<Value>, ApiError> {
        match self.read(key, true).await? {
            Some(kv) => Ok(Some(json::decode(&kv)?)),
            None => Ok(None),
        }
    }
}

/// Server-set metadata every new object gets.
fn stamp_new(obj: &mut Value, uid: String, now: String, has_status: bool) {
    let m = meta_mut(obj);
    m.insert("uid".into(), Value::String(uid));
    m.insert("creationTimestamp".into(), Value::String(now));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        m.remove(k);
    }
    if has_status {
        m.insert("generation".into(), serde_json::json!(1));
    } else {
        m.remove("generation");
    }
}

#[async_trait::async_trait]
impl ObjectApi for ApiServer {
    async fn create(
        &self,
        resource: &str,
        namespace: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        ApiServer::create(self, resolve(resource)?, namespace, object, dry_run).await
    }

    async fn get(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Value, ApiError> {
        ApiServer::get(self, resolve(resource)?, namespace, name, serializable).await
    }

    async fn list(
        &self,
        resource: &str,
        namespace: &str,
        params: &ListParams,
    ) -> Result<ObjectList, ApiError> {
        let l = ApiServer::list(self, resolve(resource)?, namespace, params).await?;
        Ok(ObjectList {
            items: l.items,
            resource_version: l.resource_version.to_string(),
            continue_token: l.continue_token,
        })
    }

    async fn update(
        &self,
        resource: &str,
        namespace: &str,
        object: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        let info = resolve(resource)?;
        if status {
            self.update_status(info, namespace, object, dry_run).await
        } else {
            ApiServer::update(self, info, namespace, object, dry_run).await
        }
    }

    async fn patch(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        patch: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        ApiServer::patch(
            self,
            resolve(resource)?,
            namespace,
            name,
            patch,
            status,
            dry_run,
        )
        .await
    }

    async fn delete(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        params: &DeleteParams,
    ) -> Result<(Value, bool), ApiError> {
        ApiServer::delete(self, resolve(resource)?, namespace, name, params).await
    }

    async fn apply(
        &self,
        namespace: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Applied, ApiError> {
        let (w, action) = ApiServer::apply(self, namespace, object, dry_run).await?;
        Ok(Applied {
            object: w.object,
            action: action.to_string(),
            warnings: w.warnings,
        })
    }

    async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<Value, ApiError> {
        ApiServer::bind(self, namespace, pod, node).await
    }

    async fn watch(
        &self,
        resource: &str,
        namespace: &str,
        params: &WatchParams,
    ) -> Result<RawWatch, ApiError> {
        let rx = ApiServer::watch(self, resolve(resource)?, namespace, params).await?;
        let s = futures::stream::unfold(rx, |mut rx| async move {
            let item = rx.recv().await?;
            Some((item.map(|(kind, object)| RawEvent { kind, object }), rx))
        });
        Ok(Box::pin(s))
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_list;
#[cfg(test)]
mod tests_nodes;
