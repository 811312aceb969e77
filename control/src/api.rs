//! The object API's semantics, independent of the wire: create, get, list,
//! update, status, patch, delete, apply and watch over a [`Store`].
//!
//! Objects are stored as their JSON encoding under
//! `/registry/<plural>/<namespace>/<name>` (cluster-scoped kinds:
//! `/registry/<plural>/<name>`), without `metadata.resourceVersion`: that is
//! the key's mod revision, filled in on the way out. Every write is a
//! compare-and-swap on the revision it was computed from, so concurrent
//! writers never lose an update: a caller's stale resourceVersion is a
//! Conflict, and the server's own read-modify-write loops retry.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::Utc;
use flotilla_client::{
    ApiError, DeleteParams, EventType, ListParams, Propagation, Reason, WatchParams,
};
use flotilla_objects::patch::{diff, merge_patch};
use flotilla_objects::registry::{self, ResourceInfo};
use flotilla_objects::selector::{FieldSelector, Selector};
use flotilla_objects::{admit, validate_update};
use rand::Rng;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::alloc::{self, ServiceRanges};
use crate::store::{key_after, prefix_end, Change, Cond, Kv, Op, Store, StoreError, WatchMsg};
use crate::watch_cache::{CachedEvent, Msg, WatchCaches};

/// kubectl's annotation for the manifest last applied.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Finalizers the garbage collector acts on.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The namespace finalizer (spec.finalizers) the namespace controller removes
/// once the namespace is empty.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";
/// Namespaces that always exist and may not be deleted.
pub const PROTECTED_NAMESPACES: &[&str] = &["default", "kube-system"];

/// How many times a server-side read-modify-write retries a lost race.
const CAS_RETRIES: usize = 16;
/// Recent events each kind's watch cache keeps for watches that start a
/// little in the past.
const WATCH_CACHE_EVENTS: usize = 10_000;
/// Keys read per store page while listing with selectors.
const LIST_BATCH: usize = 500;

/// How a read-modify-write loop reads: from this master first (cheap, maybe
/// stale); once anything it read disagrees (the object absent, a
/// precondition failing, a compare-and-swap lost), through the leader, so as
/// not to spin on a lagging copy or report a stale answer.
#[derive(Default)]
struct Reader {
    linearizable: bool,
}

impl Reader {
    /// Switch to reads through the leader: true when that is new (read
    /// again), false when they already were (the disagreement stands).
    fn escalate(&mut self) -> bool {
        !std::mem::replace(&mut self.linearizable, true)
    }
}

/// The API server's core.
#[derive(Clone)]
pub struct ApiServer {
    store: Arc<dyn Store>,
    ranges: Arc<ServiceRanges>,
    caches: Arc<WatchCaches>,
}

#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: i64,
    pub continue_token: String,
}

/// What an update changed.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    /// False when the object was already as asked (nothing written).
    pub changed: bool,
}

pub type WatchReceiver = mpsc::Receiver<Result<(EventType, Bytes), ApiError>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// Metadata and spec (status kept).
    Main,
    /// Status only.
    Status,
}

// ---- small helpers on JSON objects ----

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

/// The object's metadata, created if missing. Every caller has checked that
/// `v` is an object; anything else is replaced by one.
fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let md = v
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})));
    match md {
        Some(m) => {
            if !m.is_object() {
                *m = json!({});
            }
            match m.as_object_mut() {
                Some(m) => m,
                None => unreachable!("metadata was just made an object"),
            }
        }
        None => unreachable!("v was just made an object"),
    }
}

/// Set the object's status (none, or null: remove it).
fn set_status(v: &mut Value, status: Option<&Value>) {
    if let Some(o) = v.as_object_mut() {
        match status {
            Some(s) if !s.is_null() => {
                o.insert("status".into(), s.clone());
            }
            _ => {
                o.remove("status");
            }
        }
    }
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(v: &mut Value, f: &[String]) {
    let m = meta_mut(v);
    if f.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(f));
    }
}

fn is_terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

fn now_str() -> String {
    Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The object as stored: without resourceVersion.
fn strip_rv(v: &mut Value) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

pub(crate) fn with_rv(mut v: Value, rev: i64) -> Value {
    if v.is_object() {
        meta_mut(&mut v).insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
    v
}

fn decode(kv: &Kv) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(&kv.value).map_err(|e| {
        ApiError::internal(format!(
            "stored object {} is not valid JSON: {e}",
            String::from_utf8_lossy(&kv.key)
        ))
    })?;
    Ok(with_rv(v, kv.mod_revision))
}

fn store_err(e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(m) => ApiError::new(Reason::Unavailable, m),
        StoreError::Compacted { compact_revision } => ApiError::new(
            Reason::Gone,
            format!("too old resource version (compacted to {compact_revision})"),
        ),
        StoreError::TooLarge => ApiError::bad_request("request is too large"),
        StoreError::Other(m) => ApiError::internal(m),
    }
}

fn invalid(info: &ResourceInfo, name: &str, errs: &[flotilla_objects::FieldError]) -> ApiError {
    ApiError::new(
        Reason::Invalid,
        flotilla_objects::admit::invalid_message(info, name, errs),
    )
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

fn random_suffix() -> String {
    // Kubernetes' alphabet for generated names: no vowels, no look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::thread_rng();
    (0..5)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

fn check_name_param(what: &str, s: &str) -> Result<(), ApiError> {
    if s.contains('/') || s == "." || s == ".." {
        return Err(ApiError::bad_request(format!("invalid {what} {s:?}")));
    }
    Ok(())
}

/// Two stored forms are the same object (resourceVersion aside).
fn same(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return a == b;
    };
    let meta_eq = |x: Option<&Value>, y: Option<&Value>| match (
        x.and_then(Value::as_object),
        y.and_then(Value::as_object),
    ) {
        (Some(x), Some(y)) => {
            let rest = |m: &Map<String, Value>| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "resourceVersion")
                    .count()
            };
            rest(x) == rest(y)
                && x.iter()
                    .filter(|(k, _)| k.as_str() != "resourceVersion")
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        _ => x == y,
    };
    a.len() == b.len()
        && a.iter().all(|(k, v)| {
            if k == "metadata" {
                meta_eq(Some(v), b.get(k))
            } else {
                b.get(k) == Some(v)
            }
        })
}

/// The part of a manifest that apply remembers.
fn applied_config(manifest: &Value) -> Value {
    let mut m = manifest.clone();
    if let Some(o) = m.as_object_mut() {
        o.remove("status");
    }
    if let Some(md) = m.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
        ] {
            md.remove(k);
        }
        if let Some(a) = md.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(LAST_APPLIED);
            if a.is_empty() {
                md.remove("annotations");
            }
        }
    }
    m
}

fn set_last_applied(v: &mut Value, config: &Value) {
    let s = serde_json::to_string(config).unwrap_or_default();
    let m = meta_mut(v);
    let a = m.entry("annotations").or_insert_with(|| json!({}));
    if !a.is_object() {
        *a = json!({});
    }
    if let Some(a) = a.as_object_mut() {
        a.insert(LAST_APPLIED.into(), Value::String(s));
    }
}

struct ContinueToken {
    revision: i64,
    start: Vec<u8>,
}

fn encode_continue(revision: i64, start: &[u8]) -> String {
    let j = json!({"v": 1, "rv": revision, "start": String::from_utf8_lossy(start)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(j.to_string())
}

fn decode_continue(token: &str, prefix: &[u8]) -> Result<ContinueToken, ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: ill-formed token");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let j: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let revision = j.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = j
        .get("start")
        .and_then(Value::as_str)
        .ok_or_else(bad)?
        .as_bytes()
        .to_vec();
    if revision <= 0 || !start.starts_with(prefix) {
        return Err(ApiError::bad_request(
            "continue key is not valid: it does not belong to this list",
        ));
    }
    Ok(ContinueToken { revision, start })
}

fn parse_selectors(
    info: &ResourceInfo,
    labels: &str,
    fields: &str,
) -> Result<(Selector, FieldSelector), ApiError> {
    let l = Selector::parse(labels)
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let f = FieldSelector::parse(fields, info).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((l, f))
}

/// What a list or watch reads: its selectors and its keys' prefix.
fn collection(
    info: &ResourceInfo,
    ns: &str,
    labels: &str,
    fields: &str,
) -> Result<(Selector, FieldSelector, Vec<u8>), ApiError> {
    if !ns.is_empty() {
        check_name_param("namespace", ns)?;
    }
    let (l, f) = parse_selectors(info, labels, fields)?;
    Ok((l, f, kind_prefix(info, ns)))
}

fn matches(l: &Selector, f: &FieldSelector, v: &Value) -> bool {
    (l.is_empty() || l.matches(&labels_of(v))) && (f.is_empty() || f.matches(v))
}

impl ApiServer {
    pub fn new(store: Arc<dyn Store>, ranges: ServiceRanges) -> Self {
        ApiServer {
            caches: Arc::new(WatchCaches::new(store.clone(), WATCH_CACHE_EVENTS)),
            store,
            ranges: Arc::new(ranges),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Create the namespaces that always exist, when they do not yet.
    pub async fn ensure_namespaces(&self) -> Result<(), ApiError> {
        for ns in PROTECTED_NAMESPACES {
            let key = object_key(&registry::NAMESPACE, "", ns);
            if self.read(&key, true).await?.is_some() {
                continue;
            }
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            match self.create(&registry::NAMESPACE, "", obj, false).await {
                Ok(_) => tracing::info!(namespace = ns, "created"),
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
        let mut v = v.clone();
        strip_rv(&mut v);
        let b = serde_json::to_vec(&v).map_err(|e| ApiError::internal(e.to_string()))?;
        let max = self.store.max_value_bytes();
        if b.len() > max {
            return Err(ApiError::bad_request(format!(
                "object is too large: {} bytes, the limit is {max}",
                b.len()
            )));
        }
        Ok(b)
    }

    // ---- create ----

    /// Create an object. The namespace must exist and not be terminating.
    #[tracing::instrument(level = "debug", skip(self, object), fields(kind = info.kind))]
    pub async fn create(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        let ns = self.namespace_for(info, req_ns, &object)?;
        let mut object = object;
        if info.namespaced {
            meta_mut(&mut object).insert("namespace".into(), Value::String(ns.clone()));
        } else {
            meta_mut(&mut object).remove("namespace");
        }
        // Generated names are chosen before validation, so that they are checked too.
        if str_at(&object, "/metadata/name").is_empty() {
            let g = str_at(&object, "/metadata/generateName").to_string();
            if !g.is_empty() {
                meta_mut(&mut object).insert(
                    "name".into(),
                    Value::String(format!("{g}{}", random_suffix())),
                );
            }
        }
        let name = str_at(&object, "/metadata/name").to_string();
        let admitted = admit(info, object).map_err(|e| invalid(info, &name, &e))?;
        let mut obj = admitted.object;
        self.prepare_create(info, &mut obj);
        if dry_run {
            return Ok(Written {
                object: obj,
                warnings: admitted.warnings,
                changed: false,
            });
        }
        let key = object_key(info, &ns, &name);
        let ns_key = object_key(&registry::NAMESPACE, "", &ns);
        let forbidden = || {
            ApiError::new(
                Reason::Forbidden,
                format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", info.qualified_name()),
            )
        };
        // The addresses the user named (held before any is picked).
        let requested = alloc::held(&obj);
        // The first look at the namespace may be served locally; the write is
        // conditioned on the namespace revision seen, so a namespace deleted
        // (or marked terminating) meanwhile fails it, and the retry reads
        // through the leader.
        let mut rd = Reader::default();
        for _ in 0..CAS_RETRIES {
            let mut obj = obj.clone();
            let mut conds = vec![Cond::Absent(key.clone())];
            if info.namespaced {
                match self.read(&ns_key, rd.linearizable).await? {
                    Some(kv) => {
                        if is_terminating(&decode(&kv)?) {
                            return Err(forbidden());
                        }
                        conds.push(Cond::ModRevision(ns_key.clone(), kv.mod_revision));
                    }
                    None if rd.linearizable => return Err(ApiError::not_found("namespaces", &ns)),
                    None => conds.push(Cond::Present(ns_key.clone())),
                }
            }
            let mut ops = Vec::new();
            let mut held = Vec::new();
            if info.kind == "Service" {
                alloc::assign(&self.ranges, &mut obj, None)?;
                held = alloc::held(&obj);
                for k in &held {
                    conds.push(Cond::Absent(k.clone()));
                    ops.push(Op::Put(k.clone(), key.clone()));
                }
            }
            ops.push(Op::Put(key.clone(), self.encode_for_store(&obj)?));
            match self.store.txn(conds, ops).await.map_err(store_err)? {
                Some(rev) => {
                    return Ok(Written {
                        object: with_rv(obj, rev),
                        warnings: admitted.warnings,
                        changed: true,
                    })
                }
                None => {
                    rd.escalate();
                    if self.read(&key, true).await?.is_some() {
                        return Err(ApiError::already_exists(&info.qualified_name(), &name));
                    }
                    // Otherwise the namespace changed (looked at again on the
                    // next round) or an address was taken meanwhile: one the
                    // user named is an error, one we picked is picked again.
                    for k in &held {
                        if requested.contains(k) && self.read(k, true).await?.is_some() {
                            return Err(alloc::taken(&name, k));
                        }
                    }
                }
            }
        }
        Err(ApiError::new(
            Reason::Unavailable,
            format!(
                "{} \"{name}\" could not be created: its namespace or addresses kept changing; try again",
                info.qualified_name()
            ),
        ))
    }

    /// Server-set metadata and status of a new object.
    fn prepare_create(&self, info: &'static ResourceInfo, obj: &mut Value) {
        let uid = uuid::Uuid::new_v4().to_string();
        {
            let m = meta_mut(obj);
            m.insert("uid".into(), Value::String(uid.clone()));
            m.insert("creationTimestamp".into(), Value::String(now_str()));
            for k in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                m.remove(k);
            }
            if info.has_status {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        let Some(o) = obj.as_object_mut() else { return };
        // Status is the controllers' and agents' to write: a new object starts without one
        // (a node registers with its status, as kubelet does).
        if info.has_status && info.kind != "Node" {
            o.remove("status");
        }
        match info.kind {
            "Pod" => {
                o.insert("status".into(), json!({"phase": "Pending"}));
            }
            "Namespace" => {
                o.insert("status".into(), json!({"phase": "Active"}));
                o.insert("spec".into(), json!({"finalizers": [NAMESPACE_FINALIZER]}));
            }
            "Job" => {
                if let Ok(mut job) =
                    serde_json::from_value::<flotilla_objects::batch::Job>(obj.clone())
                {
                    job.generate_selector();
                    if let Ok(v) = serde_json::to_value(&job) {
                        *obj = v;
                    }
                }
            }
            _ => {}
        }
    }

    // ---- get / list ----

    pub async fn get(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Value, ApiError> {
        let ns = self.object_ns(info, ns)?;
        check_name_param("name", name)?;
        match self
            .read(&object_key(info, &ns, name), !serializable)
            .await?
        {
            Some(kv) => decode(&kv),
            None => Err(ApiError::not_found(&info.qualified_name(), name)),
        }
    }

    /// List objects (in one namespace, or all with ""), at one revision
    /// across pages.
    #[tracing::instrument(level = "debug", skip(self, o), fields(kind = info.kind))]
    pub async fn list(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        o: &ListParams,
    ) -> Result<ListResult, ApiError> {
        let (ls, fs, prefix) = collection(info, ns, &o.label_selector, &o.field_selector)?;
        let end = prefix_end(&prefix);
        let (mut revision, mut start) = if o.continue_token.is_empty() {
            (0, prefix.clone())
        } else {
            let t = decode_continue(&o.continue_token, &prefix)?;
            (t.revision, t.start)
        };
        let limit = if o.limit > 0 {
            o.limit as usize
        } else {
            usize::MAX
        };
        let mut items = Vec::new();
        let mut linearizable = !o.serializable && revision == 0;
        loop {
            let batch = if limit == usize::MAX {
                0
            } else {
                LIST_BATCH.max(limit.saturating_add(1).min(10_000))
            };
            let page = match self.store.range(&start, &end, batch, revision, linearizable).await {
                Ok(p) => p,
                Err(StoreError::Compacted { .. }) if !o.continue_token.is_empty() => {
                    return Err(ApiError::new(
                        Reason::Gone,
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ))
                }
                Err(e) => return Err(store_err(e)),
            };
            linearizable = false;
            if revision == 0 {
                revision = page.revision;
            }
            let n = page.kvs.len();
            for (i, kv) in page.kvs.iter().enumerate() {
                let v = decode(kv)?;
                if !matches(&ls, &fs, &v) {
                    continue;
                }
                items.push(v);
                if items.len() == limit {
                    let more = i + 1 < n || page.more;
                    let token = if more {
                        encode_continue(revision, &key_after(&kv.key))
                    } else {
                        String::new()
                    };
                    return Ok(ListResult {
                        items,
                        resource_version: revision,
                        continue_token: token,
                    });
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => start = key_after(&last.key),
                _ => break,
            }
        }
        Ok(ListResult {
            items,
            resource_version: revision,
            continue_token: String::new(),
        })
    }

    // ---- update / status / patch / apply ----

    /// Replace metadata and spec from `object`; its resourceVersion, when set,
    /// is a precondition.
    pub async fn update(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        self.replace_part(info, req_ns, object, Part::Main, dry_run)
            .await
    }

    /// Replace the status from `object`; its resourceVersion, when set, is a
    /// precondition.
    pub async fn update_status(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        if !info.has_status {
            return Err(ApiError::new(
                Reason::MethodNotAllowed,
                format!("{} have no status", info.plural),
            ));
        }
        self.replace_part(info, req_ns, object, Part::Status, dry_run)
            .await
    }

    async fn replace_part(
        &self,
        info: &'static ResourceInfo,
        req_ns: &str,
        object: Value,
        part: Part,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        if !object.is_object() {
            return Err(ApiError::bad_request("the object must be a JSON object"));
        }
        let ns = self.namespace_for(info, req_ns, &object)?;
        let name = str_at(&object, "/metadata/name").to_string();
        if name.is_empty() {
            return Err(ApiError::new(
                Reason::Invalid,
                format!(
                    "{} \"\" is invalid: metadata.name: Required value: name is required",
                    info.kind
                ),
            ));
        }
        let rv = str_at(&object, "/metadata/resourceVersion").to_string();
        let precondition = (!rv.is_empty()).then_some(rv);
        self.modify(info, &ns, &name, part, precondition, dry_run, |_cur| {
            Ok(object.clone())
        })
        .await
    }

    /// Apply a JSON merge patch to the object or its status. A
    /// resourceVersion in the patch is a precondition.
    pub async fn patch(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        patch: Value,
        status: bool,
        dry_run: bool,
    ) -> Result<Written, ApiError> {
        let ns = self.object_ns(info, ns)?;
        check_name_param("name", name)?;
        if !patch.is_object() {
            return Err(ApiError::bad_request("a merge patch must be a JSON object"));
        }
        if status && !info.has_status {
            return Err(ApiError::new(
                Reason::MethodNotAllowed,
                format!("{} have no status", info.plural),
            ));
        }
        let rv = str_at(&patch, "/metadata/resourceVersion").to_string();
        let precondition = (!rv.is_empty()).then_some(rv);
        let part = if status { Part::Status } else { Part::Main };
        self.modify(info, &ns, name, part, precondition, dry_run, |cur| {
            let mut v = cur.clone();
            merge_patch(&mut v, &patch);
            strip_rv(&mut v);
            Ok(v)
        })
        .await
    }

    /// Create or update from a manifest: fields set by the manifest are set,
    /// fields the previous apply set and this one no longer does are
    /// removed, everything else (other writers' changes) is kept.
    #[tracing::instrument(level = "debug", skip(self, manifest))]
    pub async fn apply(
        &self,
        req_ns: &str,
        manifest: Value,
        dry_run: bool,
    ) -> Result<(Written, &'static str), ApiError> {
        if !manifest.is_object() {
            return Err(ApiError::bad_request("the manifest must be a JSON object"));
        }
        let api_version = str_at(&manifest, "/apiVersion");
        let kind = str_at(&manifest, "/kind");
        if kind.is_empty() {
            return Err(ApiError::bad_request("the manifest has no kind"));
        }
        let info = registry::by_kind(api_version, kind).ok_or_else(|| {
            ApiError::bad_request(format!(
                "no matches for kind \"{kind}\" in version \"{api_version}\""
            ))
        })?;
        let ns = self.namespace_for(info, req_ns, &manifest)?;
        let name = str_at(&manifest, "/metadata/name").to_string();
        if name.is_empty() {
            return Err(ApiError::new(
                Reason::Invalid,
                format!(
                    "{} \"\" is invalid: metadata.name: Required value: name is required",
                    info.kind
                ),
            ));
        }
        let config = applied_config(&manifest);
        // Update in place; an object that is not there (modify's NotFound
        // comes from a read through the leader) is created instead.
        for _ in 0..CAS_RETRIES {
            let res = self
                .modify(info, &ns, &name, Part::Main, None, dry_run, |cur| {
                    let last = cur
                        .pointer("/metadata/annotations")
                        .and_then(|a| a.get(LAST_APPLIED))
                        .and_then(Value::as_str)
                        .and_then(|s| serde_json::from_str::<Value>(s).ok())
                        .unwrap_or_else(|| json!({}));
                    let mut v = cur.clone();
                    merge_patch(&mut v, &diff(&last, &config));
                    set_last_applied(&mut v, &config);
                    strip_rv(&mut v);
                    Ok(v)
                })
                .await;
            match res {
                Ok(w) => {
                    let action = if w.changed { "configured" } else { "unchanged" };
                    return Ok((w, action));
                }
                Err(e) if e.is(Reason::NotFound) => {}
                Err(e) => return Err(e),
            }
            let mut obj = config.clone();
            set_last_applied(&mut obj, &config);
            match self.create(info, &ns, obj, dry_run).await {
                Ok(w) => return Ok((w, "created")),
                Err(e) if e.is(Reason::AlreadyExists) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(ApiError::conflict(&info.qualified_name(), &name))
    }

    /// The read-modify-write loop behind update, status, patch and apply.
    #[allow(clippy::too_many_arguments)]
    async fn modify<F>(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        part: Part,
        precondition: Option<String>,
        dry_run: bool,
        f: F,
    ) -> Result<Written, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let key = object_key(info, ns, name);
        let qn = info.qualified_name();
        let mut rd = Reader::default();
        for _ in 0..CAS_RETRIES {
            let Some(kv) = self.read(&key, rd.linearizable).await? else {
                if rd.escalate() {
                    continue;
                }
                return Err(ApiError::not_found(&qn, name));
            };
            let cur = decode(&kv)?;
            if let Some(rv) = &precondition {
                if rv != &kv.mod_revision.to_string() {
                    if rd.escalate() {
                        continue;
                    }
                    return Err(ApiError::conflict(&qn, name));
                }
            }
            let desired = f(&cur)?;
            if !desired.is_object() {
                return Err(ApiError::bad_request("the object must be a JSON object"));
            }
            let dname = str_at(&desired, "/metadata/name");
            if !dname.is_empty() && dname != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({dname}) does not match the name on the request ({name})"
                )));
            }
            let duid = str_at(&desired, "/metadata/uid");
            let cuid = str_at(&cur, "/metadata/uid");
            if !duid.is_empty() && duid != cuid {
                return Err(ApiError::new(
                    Reason::Conflict,
                    format!("Operation cannot be fulfilled on {qn} \"{name}\": Precondition failed: UID in precondition: {duid}, UID in object meta: {cuid}"),
                ));
            }
            let (mut new, warnings) = match part {
                Part::Main => {
                    let mut d = desired;
                    meta_mut(&mut d).insert("name".into(), Value::String(name.to_string()));
                    if info.namespaced {
                        meta_mut(&mut d).insert("namespace".into(), Value::String(ns.to_string()));
                    } else {
                        meta_mut(&mut d).remove("namespace");
                    }
                    if info.kind == "Job" {
                        keep_job_selector(&cur, &mut d);
                    }
                    let a = admit(info, d).map_err(|e| invalid(info, name, &e))?;
                    let errs = validate_update(info, &cur, &a.object);
                    if !errs.is_empty() {
                        return Err(invalid(info, name, &errs));
                    }
                    (self.carry_over(info, &cur, a.object), a.warnings)
                }
                Part::Status => {
                    // Everything but the status stays; the status is admitted
                    // (decoded, defaulted, validated) as part of the object.
                    let mut n = cur.clone();
                    set_status(&mut n, desired.get("status"));
                    let a = admit(info, n).map_err(|e| invalid(info, name, &e))?;
                    let mut kept = cur.clone();
                    set_status(&mut kept, a.object.get("status"));
                    (kept, a.warnings)
                }
            };
            strip_rv(&mut new);
            if same(&new, &cur) {
                // Nothing to write: say so only about the current object,
                // never about a copy this master has not caught up on.
                if rd.escalate() {
                    continue;
                }
                return Ok(Written {
                    object: cur,
                    warnings,
                    changed: false,
                });
            }
            if dry_run {
                return Ok(Written {
                    object: with_rv(new, kv.mod_revision),
                    warnings,
                    changed: true,
                });
            }
            // A terminating object whose last finalizer went is deleted.
            let finished = is_terminating(&new)
                && finalizers(&new).is_empty()
                && (info.kind != "Namespace"
                    || new
                        .pointer("/spec/finalizers")
                        .and_then(Value::as_array)
                        .is_none_or(|a| a.is_empty()));
            let mut conds = vec![Cond::ModRevision(key.clone(), kv.mod_revision)];
            let mut ops = Vec::new();
            if info.kind == "Service" {
                if !finished && part == Part::Main {
                    alloc::assign(&self.ranges, &mut new, Some(&cur))?;
                }
                let (had, has) = (
                    alloc::held(&cur),
                    if finished { vec![] } else { alloc::held(&new) },
                );
                for k in has.iter().filter(|k| !had.contains(k)) {
                    if self.read(k, false).await?.is_some() {
                        return Err(alloc::taken(name, k));
                    }
                    conds.push(Cond::Absent(k.clone()));
                    ops.push(Op::Put(k.clone(), key.clone()));
                }
                for k in had.iter().filter(|k| !has.contains(k)) {
                    ops.push(Op::Delete(k.clone()));
                }
            }
            ops.push(if finished {
                Op::Delete(key.clone())
            } else {
                Op::Put(key.clone(), self.encode_for_store(&new)?)
            });
            match self.store.txn(conds, ops).await.map_err(store_err)? {
                Some(rev) => {
                    return Ok(Written {
                        object: with_rv(new, rev),
                        warnings,
                        changed: true,
                    })
                }
                // Lost the race: read again through the leader (a
                // precondition that no longer holds is then the caller's
                // conflict).
                None => {
                    rd.escalate();
                }
            }
        }
        Err(ApiError::conflict(&qn, name))
    }

    /// What an update keeps from the stored object.
    fn carry_over(&self, info: &ResourceInfo, cur: &Value, mut new: Value) -> Value {
        let cm = cur.get("metadata").cloned().unwrap_or_else(|| json!({}));
        {
            let m = meta_mut(&mut new);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match cm.get(k) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
        }
        if info.has_status {
            let gen = cm.get("generation").and_then(Value::as_i64).unwrap_or(1);
            let bump = cur.get("spec") != new.get("spec");
            meta_mut(&mut new).insert("generation".into(), json!(if bump { gen + 1 } else { gen }));
            set_status(&mut new, cur.get("status"));
        } else {
            meta_mut(&mut new).remove("generation");
        }
        new
    }

    // ---- delete ----

    /// Delete an object: at once, or (finalizers, grace period, namespace
    /// contents, foreground/orphan propagation) mark it terminating.
    #[tracing::instrument(level = "debug", skip(self, o), fields(kind = info.kind))]
    pub async fn delete(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        o: &DeleteParams,
    ) -> Result<(Value, bool), ApiError> {
        let ns = self.object_ns(info, ns)?;
        check_name_param("name", name)?;
        let qn = info.qualified_name();
        if info.kind == "Namespace" && PROTECTED_NAMESPACES.contains(&name) {
            return Err(ApiError::new(
                Reason::Forbidden,
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted"),
            ));
        }
        let key = object_key(info, &ns, name);
        let mut rd = Reader::default();
        for _ in 0..CAS_RETRIES {
            let Some(kv) = self.read(&key, rd.linearizable).await? else {
                if rd.escalate() {
                    continue;
                }
                return Err(ApiError::not_found(&qn, name));
            };
            let cur = decode(&kv)?;
            let uid = str_at(&cur, "/metadata/uid");
            if !o.precondition_uid.is_empty() && o.precondition_uid != uid {
                if rd.escalate() {
                    continue;
                }
                return Err(ApiError::new(Reason::Conflict, format!(
                    "Operation cannot be fulfilled on {qn} \"{name}\": Precondition failed: UID in precondition: {}, UID in object meta: {uid}", o.precondition_uid)));
            }
            if !o.precondition_resource_version.is_empty()
                && o.precondition_resource_version != kv.mod_revision.to_string()
            {
                if rd.escalate() {
                    continue;
                }
                return Err(ApiError::new(Reason::Conflict, format!(
                    "Operation cannot be fulfilled on {qn} \"{name}\": Precondition failed: ResourceVersion in precondition: {}, ResourceVersion in object meta: {}", o.precondition_resource_version, kv.mod_revision)));
            }
            let terminating = is_terminating(&cur);
            let mut new = cur.clone();
            strip_rv(&mut new);
            let mut fins = finalizers(&cur);
            if !terminating {
                let add = match o.propagation {
                    Some(Propagation::Foreground) => Some(FOREGROUND_FINALIZER),
                    Some(Propagation::Orphan) => Some(ORPHAN_FINALIZER),
                    _ => None,
                };
                if let Some(f) = add {
                    if !fins.iter().any(|x| x == f) {
                        fins.push(f.to_string());
                    }
                }
            }
            let mut pending = !fins.is_empty();
            let now = now_str();
            if info.kind == "Namespace" {
                let spec_fins = cur
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| !a.is_empty());
                if spec_fins {
                    pending = true;
                    if let Some(o) = new.as_object_mut() {
                        o.insert("status".into(), json!({"phase": "Terminating"}));
                    }
                }
            }
            let mut grace = 0;
            if info.kind == "Pod" && !str_at(&cur, "/spec/nodeName").is_empty() {
                grace = o.grace_period_seconds.unwrap_or_else(|| {
                    cur.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                        .unwrap_or(30)
                });
                grace = grace.max(0);
                let current = cur
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64);
                if grace > 0 && current.is_none_or(|c| grace < c) {
                    pending = true;
                } else if grace > 0 {
                    // Already terminating with a shorter grace: nothing to shorten.
                    pending = true;
                    grace = current.unwrap_or(grace);
                }
            }
            if !pending {
                if o.dry_run {
                    return Ok((cur, true));
                }
                let mut ops: Vec<Op> = alloc::held(&cur)
                    .into_iter()
                    .filter(|_| info.kind == "Service")
                    .map(Op::Delete)
                    .collect();
                ops.push(Op::Delete(key.clone()));
                match self
                    .store
                    .txn(vec![Cond::ModRevision(key.clone(), kv.mod_revision)], ops)
                    .await
                    .map_err(store_err)?
                {
                    Some(_) => return Ok((cur, true)),
                    None => {
                        rd.escalate();
                        continue;
                    }
                }
            }
            set_finalizers(&mut new, &fins);
            {
                let m = meta_mut(&mut new);
                if grace > 0 {
                    let at = (Utc::now() + chrono::Duration::seconds(grace))
                        .format("%Y-%m-%dT%H:%M:%SZ")
                        .to_string();
                    let keep = terminating
                        && m.get("deletionGracePeriodSeconds").and_then(Value::as_i64)
                            == Some(grace);
                    if !keep {
                        m.insert("deletionTimestamp".into(), Value::String(at));
                        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                } else if !terminating {
                    m.insert("deletionTimestamp".into(), Value::String(now));
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
            }
            if same(&new, &cur) || o.dry_run {
                // As in `modify`: answer from the current object only.
                if rd.escalate() {
                    continue;
                }
                return Ok((cur, false));
            }
            let bytes = self.encode_for_store(&new)?;
            match self
                .store
                .txn(
                    vec![Cond::ModRevision(key.clone(), kv.mod_revision)],
                    vec![Op::Put(key.clone(), bytes)],
                )
                .await
                .map_err(store_err)?
            {
                Some(rev) => return Ok((with_rv(new, rev), false)),
                None => {
                    rd.escalate();
                }
            }
        }
        Err(ApiError::conflict(&qn, name))
    }

    // ---- watch ----

    /// Watch a kind. "" or "0": the current objects first, as ADDED; a
    /// revision: the changes after it. A compacted start ends with Gone.
    pub async fn watch(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        o: &WatchParams,
    ) -> Result<WatchReceiver, ApiError> {
        let (ls, fs, prefix) = collection(info, ns, &o.label_selector, &o.field_selector)?;
        let (tx, rx) = mpsc::channel(256);
        let mut initial = Vec::new();
        let from = if o.resource_version.is_empty() || o.resource_version == "0" {
            let l = self
                .list(
                    info,
                    ns,
                    &ListParams {
                        label_selector: o.label_selector.clone(),
                        field_selector: o.field_selector.clone(),
                        ..Default::default()
                    },
                )
                .await?;
            initial = l.items;
            l.resource_version + 1
        } else {
            let rv: i64 = o.resource_version.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {:?}", o.resource_version))
            })?;
            if rv < 0 {
                return Err(ApiError::bad_request(format!(
                    "invalid resourceVersion {rv}"
                )));
            }
            rv + 1
        };
        let interval = if o.bookmark_interval.is_zero() {
            Duration::from_secs(10)
        } else {
            o.bookmark_interval.max(Duration::from_millis(100))
        };
        let w = Watcher {
            info,
            ls,
            fs,
            prefix,
            tx,
            bookmarks: o.bookmarks,
            interval,
            requested: o.resource_version.clone(),
            cursor: Cursor::starting_at(from),
            last_bookmark: from - 1,
        };
        let (caches, store) = (self.caches.clone(), self.store.clone());
        tokio::spawn(async move {
            for v in initial {
                if w.tx
                    .send(Ok((EventType::Added, to_bytes(&v))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            w.run(caches, store).await;
        });
        Ok(rx)
    }
}

/// A Job's generated selector (and the labels it selects) stay when an
/// update does not mention them, as with Kubernetes.
fn keep_job_selector(cur: &Value, desired: &mut Value) {
    let manual = desired
        .pointer("/spec/manualSelector")
        .and_then(Value::as_bool)
        == Some(true);
    if manual
        || desired
            .pointer("/spec/selector")
            .is_some_and(|s| !s.is_null())
    {
        return;
    }
    let Some(sel) = cur.pointer("/spec/selector").cloned() else {
        return;
    };
    let generated: Vec<(String, Value)> = cur
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            [
                flotilla_objects::batch::CONTROLLER_UID_LABEL,
                flotilla_objects::batch::JOB_NAME_LABEL,
            ]
            .iter()
            .filter_map(|k| l.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect()
        })
        .unwrap_or_default();
    let mut patch = json!({"spec": {"selector": sel}});
    if !generated.is_empty() {
        let labels: Map<String, Value> = generated.into_iter().collect();
        patch["spec"]["template"] = json!({"metadata": {"labels": labels}});
    }
    merge_patch(desired, &patch);
}

fn to_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Where a watcher is: every event before revision `rev` was forwarded, and
/// of `rev` itself all of them (`done`) or the first `count`.
#[derive(Clone, Copy)]
struct Cursor {
    rev: i64,
    count: usize,
    done: bool,
}

impl Cursor {
    /// A watcher that wants the events from revision `from` on.
    fn starting_at(from: i64) -> Cursor {
        Cursor {
            rev: from - 1,
            count: 0,
            done: true,
        }
    }

    /// Whether an event of `revision` is new; notes it if so.
    /// `seen_in_revision` counts the events of each revision met on this
    /// pass, to skip the ones forwarded before a resume.
    fn accept(&mut self, revision: i64, seen_in_revision: &mut (i64, usize)) -> bool {
        if seen_in_revision.0 != revision {
            *seen_in_revision = (revision, 0);
        }
        seen_in_revision.1 += 1;
        if revision < self.rev {
            return false;
        }
        if revision == self.rev {
            if self.done || seen_in_revision.1 <= self.count {
                return false;
            }
            self.count += 1;
            return true;
        }
        self.rev = revision;
        self.count = 1;
        self.done = false;
        true
    }

    /// The revision to resume from (the current one when more of its
    /// events may follow).
    fn resume_from(&self) -> i64 {
        if self.done {
            self.rev + 1
        } else {
            self.rev
        }
    }
}

/// One watch's forwarding task.
struct Watcher {
    info: &'static ResourceInfo,
    ls: Selector,
    fs: FieldSelector,
    /// Keys of the watched namespace (or kind).
    prefix: Vec<u8>,
    tx: mpsc::Sender<Result<(EventType, Bytes), ApiError>>,
    bookmarks: bool,
    interval: Duration,
    requested: String,
    cursor: Cursor,
    last_bookmark: i64,
}

impl Watcher {
    /// Serve from the kind's watch cache while it reaches back far enough;
    /// otherwise follow the store from where the watcher is.
    async fn run(mut self, caches: Arc<WatchCaches>, store: Arc<dyn Store>) {
        loop {
            let cache = caches.get(self.info);
            let Some(joined) = cache.join(self.cursor.resume_from(), store.compact_revision())
            else {
                return self.follow_store(store).await;
            };
            let mut seen = (0, 0);
            for ev in &joined.backlog {
                if !self.forward_cached(ev, &mut seen).await {
                    return;
                }
            }
            let mut rx = joined.rx;
            let mut tick = tokio::time::interval(self.interval);
            tick.tick().await;
            loop {
                tokio::select! {
                    m = rx.recv() => match m {
                        Ok(Msg::Event(ev)) => {
                            if !self.forward_cached(&ev, &mut seen).await {
                                return;
                            }
                        }
                        // The cache stopped, or this watcher fell too far
                        // behind it: resume from the cursor.
                        Ok(Msg::Closed) | Err(_) => break,
                    },
                    _ = tick.tick(), if self.bookmarks => {
                        if let Some(p) = cache.progress(&rx) {
                            if !self.bookmark(p).await {
                                return;
                            }
                        }
                    }
                    _ = self.tx.closed() => return,
                }
            }
        }
    }

    async fn forward_cached(&mut self, ev: &CachedEvent, seen: &mut (i64, usize)) -> bool {
        if !self.cursor.accept(ev.revision, seen) || !ev.key.starts_with(&self.prefix) {
            return true;
        }
        let was = ev
            .prev
            .as_ref()
            .is_some_and(|p| matches(&self.ls, &self.fs, p));
        let kind = if ev.deleted {
            was.then_some(EventType::Deleted)
        } else {
            match (was, matches(&self.ls, &self.fs, &ev.object)) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        };
        match kind {
            Some(k) => self.tx.send(Ok((k, ev.bytes.clone()))).await.is_ok(),
            None => true,
        }
    }

    async fn bookmark(&mut self, rev: i64) -> bool {
        let rev = rev
            .max(self.last_bookmark)
            .max(self.cursor.resume_from() - 1);
        self.last_bookmark = rev;
        let bm = json!({
            "apiVersion": self.info.api_version(),
            "kind": self.info.kind,
            "metadata": {"resourceVersion": rev.to_string()},
        });
        self.tx
            .send(Ok((EventType::Bookmark, to_bytes(&bm))))
            .await
            .is_ok()
    }

    /// A follower of its own, reading the store's history (a start before
    /// the cache's window, or a cache that failed).
    async fn follow_store(mut self, store: Arc<dyn Store>) {
        let stream = store.watch(
            &self.prefix,
            &prefix_end(&self.prefix),
            self.cursor.resume_from(),
        );
        let mut rx = stream.rx;
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(WatchMsg::Changes { revision, changes }) => {
                        let mut seen = (0, 0);
                        for c in changes {
                            if !self.cursor.accept(revision, &mut seen) {
                                continue;
                            }
                            if let Some((k, v)) = translate(&self.ls, &self.fs, revision, c) {
                                if self.tx.send(Ok((k, to_bytes(&v)))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    Some(WatchMsg::Compacted { compact_revision }) => {
                        let _ = self
                            .tx
                            .send(Err(ApiError::new(
                                Reason::Gone,
                                format!("too old resource version: {} ({compact_revision})", self.requested),
                            )))
                            .await;
                        return;
                    }
                    Some(WatchMsg::Failed(m)) => {
                        let _ = self.tx.send(Err(ApiError::internal(m))).await;
                        return;
                    }
                    None => return,
                },
                _ = tick.tick(), if self.bookmarks => {
                    // Load the follower's progress first: if the channel is
                    // then empty, every event below it has been forwarded
                    // (it publishes progress only after queueing the
                    // events). Otherwise bookmark only what was forwarded.
                    let done = stream.progress.load(Ordering::Acquire) - 1;
                    let rev = if rx.is_empty() { done } else { self.cursor.resume_from() - 1 };
                    if !self.bookmark(rev).await {
                        return;
                    }
                }
                _ = self.tx.closed() => return,
            }
        }
    }
}

/// One stored change as a watch event, through the selectors: an object that
/// stops matching is reported DELETED, one that starts matching ADDED.
fn translate(
    ls: &Selector,
    fs: &FieldSelector,
    revision: i64,
    c: Change,
) -> Option<(EventType, Value)> {
    let parse = |kv: &Kv| serde_json::from_slice::<Value>(&kv.value).ok();
    match c {
        Change::Put { kv, prev } => {
            let cur = parse(&kv)?;
            let was = prev
                .as_ref()
                .and_then(parse)
                .is_some_and(|p| matches(ls, fs, &p));
            let is = matches(ls, fs, &cur);
            let obj = with_rv(cur, revision);
            match (was, is) {
                (true, true) => Some((EventType::Modified, obj)),
                (false, true) => Some((EventType::Added, obj)),
                (true, false) => Some((EventType::Deleted, obj)),
                (false, false) => None,
            }
        }
        Change::Delete { prev, .. } => {
            let p = parse(prev.as_ref()?)?;
            matches(ls, fs, &p).then(|| (EventType::Deleted, with_rv(p, revision)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed (revision) events through a cursor; return the accepted ones.
    fn pass(c: &mut Cursor, revs: &[i64]) -> Vec<i64> {
        let mut seen = (0, 0);
        revs.iter()
            .copied()
            .filter(|r| c.accept(*r, &mut seen))
            .collect()
    }

    #[test]
    fn a_resumed_cursor_skips_exactly_what_was_forwarded() {
        let mut c = Cursor::starting_at(10);
        assert_eq!(c.resume_from(), 10);
        // Events of revisions before the start (a cache that had not yet
        // reached them when the watcher joined) are not delivered.
        assert_eq!(pass(&mut c, &[8, 9, 9]), Vec::<i64>::new());
        // Revision 11 has three events; the stream breaks after the second.
        assert_eq!(pass(&mut c, &[10, 11, 11]), [10, 11, 11]);
        assert_eq!((c.rev, c.count, c.resume_from()), (11, 2, 11));
        // Resuming from 11 replays its three events: only the third is new.
        assert_eq!(pass(&mut c, &[11, 11, 11, 12]), [11, 12]);
        // Revision 12 may have more events to come: resume from it.
        assert_eq!((c.rev, c.count, c.resume_from()), (12, 1, 12));
        // Old revisions (a window that reaches further back) are skipped.
        assert_eq!(pass(&mut c, &[5, 12, 12, 13]), [12, 13]);
    }

    #[test]
    fn merge_patch_diff_round_trips_through_apply_config() {
        let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "7", "uid": "u",
                "annotations": {LAST_APPLIED: "{}", "keep": "x"}},
            "data": {"k": "v"}, "status": {"ignored": true}});
        let c = applied_config(&manifest);
        assert_eq!(
            c,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "annotations": {"keep": "x"}}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn continue_tokens_belong_to_their_list() {
        let t = encode_continue(42, b"/registry/pods/default/b\0");
        let d = decode_continue(&t, b"/registry/pods/default/").expect("valid");
        assert_eq!(
            (d.revision, d.start.as_slice()),
            (42, &b"/registry/pods/default/b\0"[..])
        );
        assert_eq!(
            decode_continue(&t, b"/registry/secrets/")
                .err()
                .map(|e| e.reason),
            Some(Reason::BadRequest)
        );
        assert_eq!(
            decode_continue("%%%", b"/").err().map(|e| e.reason),
            Some(Reason::BadRequest)
        );
    }
}
