//! Get and list: one object, or every object of a kind (in a namespace),
//! through selectors and in pages that are all read at the revision of the
//! first.

use std::sync::Arc;

use base64::Engine;
use flotilla_objects::api::{ApiError, ListParams, Reason};
use flotilla_objects::registry::ResourceInfo;
use flotilla_objects::selector::{FieldSelector, Selector};
use serde_json::{json, Value};

use super::json::{decode, not_json, served_bytes};
use super::{check_name_param, kind_prefix, object_key, store_err, ApiServer};
use crate::store::{key_after, prefix_end, Kv, StoreError};
use crate::watch_cache::{CachedObject, KindCache};

/// Keys read per store page while listing with selectors.
const LIST_BATCH: usize = 500;

#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Value>,
    pub resource_version: i64,
    pub continue_token: String,
}

pub(crate) struct ContinueToken {
    pub revision: i64,
    pub start: Vec<u8>,
}

pub(crate) fn encode_continue(revision: i64, start: &[u8]) -> String {
    let j = json!({"v": 1, "rv": revision, "start": String::from_utf8_lossy(start)});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(j.to_string())
}

pub(crate) fn decode_continue(token: &str, prefix: &[u8]) -> Result<ContinueToken, ApiError> {
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
pub(crate) fn collection(
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

pub(crate) fn matches(l: &Selector, f: &FieldSelector, v: &Value) -> bool {
    // The labels are read in place (a copy into a map per object was 60%
    // of the masters' CPU in a list through a label selector).
    let labels = v
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    let label = |k: &str| {
        labels
            .and_then(|m| m.get(k))
            .map(|v| v.as_str().unwrap_or(""))
    };
    (l.is_empty() || l.matches_with(label)) && (f.is_empty() || f.matches(v))
}

/// Whether selectors take a cached object; the object is decoded only when
/// there is a selector to apply.
pub(crate) fn selected(l: &Selector, f: &FieldSelector, o: &CachedObject) -> bool {
    (l.is_empty() && f.is_empty()) || matches(l, f, o.object())
}

impl ApiServer {
    // ---- get / list ----

    pub async fn get(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Value, ApiError> {
        decode(&self.get_kv(info, ns, name, serializable).await?)
    }

    /// [`ApiServer::get`] as the JSON a client is sent: the stored bytes,
    /// checked, with the resourceVersion spliced in, rather than the object
    /// decoded and serialized again (as lists and watches send it).
    pub async fn get_served(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Vec<u8>, ApiError> {
        let kv = self.get_kv(info, ns, name, serializable).await?;
        let (bytes, _) =
            served_bytes(&kv.value, kv.mod_revision).map_err(|e| not_json(&kv.key, e))?;
        Ok(bytes)
    }

    async fn get_kv(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        name: &str,
        serializable: bool,
    ) -> Result<Kv, ApiError> {
        let ns = self.object_ns(info, ns)?;
        check_name_param("name", name)?;
        self.read(&object_key(info, &ns, name), !serializable)
            .await?
            .ok_or_else(|| ApiError::not_found(&info.qualified_name(), name))
    }

    /// List objects (in one namespace, or all with ""), at one revision
    /// across pages (see [`ApiServer::list_raw`]).
    #[tracing::instrument(level = "debug", skip(self, o), fields(kind = info.kind))]
    pub async fn list(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        o: &ListParams,
    ) -> Result<ListResult, ApiError> {
        let l = self.list_raw(info, ns, o).await?;
        Ok(ListResult {
            items: l.items.iter().map(|i| i.object().clone()).collect(),
            resource_version: l.resource_version,
            continue_token: l.continue_token,
        })
    }

    /// List objects as the watch cache keeps them (serialized once), with
    /// Kubernetes' resourceVersion semantics:
    ///
    /// - "" (a consistent read): the store's current revision is read
    ///   linearizably, and the list is served from the kind's watch cache
    ///   once the cache has reached it, or from the store if the cache does
    ///   not get there in time;
    /// - "0" (any; also a serializable list without a resourceVersion): from
    ///   the cache at once, or the local store while the cache loads;
    /// - N with resourceVersionMatch NotOlderThan (the default without a
    ///   limit): from the cache once it has reached N;
    /// - N with Exact (the default with a limit, as Kubernetes has it): at
    ///   revision N exactly, from the cache when it is there, else the store.
    ///
    /// A continue token pins the first page's revision: every page is read
    /// at it (from the cache while it is still there, else from the store).
    #[tracing::instrument(level = "debug", skip(self, o), fields(kind = info.kind))]
    pub async fn list_raw(
        &self,
        info: &'static ResourceInfo,
        ns: &str,
        o: &ListParams,
    ) -> Result<RawList, ApiError> {
        let (ls, fs, prefix) = collection(info, ns, &o.label_selector, &o.field_selector)?;
        let q = Query {
            ls,
            fs,
            end: prefix_end(&prefix),
            limit: if o.limit > 0 {
                o.limit as usize
            } else {
                usize::MAX
            },
            start: prefix.clone(),
        };
        let cache = self.caches.get(info);
        let wait = self.caches.fresh_timeout();
        match ReadAt::parse(o, &prefix)? {
            ReadAt::Any => {
                if let Some(l) = q.page_in_cache(&cache, None) {
                    return Ok(l);
                }
                self.list_store(&q, 0, false, false).await
            }
            ReadAt::Consistent => {
                let rev = self.store.current_revision().await.map_err(store_err)?;
                if cache.wait_for(rev, wait).await {
                    if let Some(l) = q.page_in_cache(&cache, None) {
                        if l.resource_version >= rev {
                            return Ok(l);
                        }
                    }
                }
                tracing::debug!(
                    kind = info.kind,
                    rev,
                    "consistent list from the store: the cache is not there yet"
                );
                self.list_store(&q, 0, true, false).await
            }
            ReadAt::NotOlderThan(rev) => {
                if cache.wait_for(rev, wait).await {
                    if let Some(l) = q.page_in_cache(&cache, None) {
                        if l.resource_version >= rev {
                            return Ok(l);
                        }
                    }
                }
                if self.store.revision() >= rev {
                    return self.list_store(&q, 0, false, false).await;
                }
                Err(too_large(rev, self.store.revision()))
            }
            ReadAt::Exact(rev) => {
                if let Some(l) = q.page_in_cache(&cache, Some(rev)) {
                    return Ok(l);
                }
                if self.store.revision() < rev && !cache.wait_for(rev, wait).await {
                    return Err(too_large(rev, self.store.revision()));
                }
                self.list_store(&q, rev, false, false).await
            }
            ReadAt::Continue(t) => {
                let q = Query {
                    start: t.start,
                    ..q
                };
                if let Some(l) = q.page_in_cache(&cache, Some(t.revision)) {
                    return Ok(l);
                }
                self.list_store(&q, t.revision, false, true).await
            }
        }
    }

    /// A list read from the store at `revision` (0: the latest).
    async fn list_store(
        &self,
        q: &Query,
        mut revision: i64,
        linearizable: bool,
        continued: bool,
    ) -> Result<RawList, ApiError> {
        let mut start = q.start.clone();
        let mut items = Vec::new();
        let mut linearizable = linearizable && revision == 0;
        loop {
            let batch = if q.limit == usize::MAX {
                0
            } else {
                LIST_BATCH.max(q.limit.saturating_add(1).min(10_000))
            };
            let page = match self
                .store
                .range(&start, &q.end, batch, revision, linearizable)
                .await
            {
                Ok(p) => p,
                Err(StoreError::Compacted { .. }) if continued => {
                    return Err(ApiError::new(
                        Reason::Gone,
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ))
                }
                Err(StoreError::Compacted { .. }) => {
                    return Err(ApiError::new(
                        Reason::Gone,
                        "The resourceVersion for the provided list is too old.",
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
                let obj = CachedObject::from_kv(kv)?;
                if !selected(&q.ls, &q.fs, &obj) {
                    continue;
                }
                items.push(Arc::new(obj));
                if items.len() == q.limit {
                    let more = i + 1 < n || page.more;
                    return Ok(page_of(items, revision, more));
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => start = key_after(&last.key),
                _ => break,
            }
        }
        Ok(page_of(items, revision, false))
    }
}

/// A list's items as the watch cache keeps them.
#[derive(Debug, Clone)]
pub struct RawList {
    pub items: Vec<Arc<CachedObject>>,
    pub resource_version: i64,
    pub continue_token: String,
}

/// The page `items` ends (a continue token after its last item if `more`).
fn page_of(items: Vec<Arc<CachedObject>>, revision: i64, more: bool) -> RawList {
    let continue_token = match items.last() {
        Some(last) if more => encode_continue(revision, &key_after(&last.key)),
        _ => String::new(),
    };
    RawList {
        items,
        resource_version: revision,
        continue_token,
    }
}

fn too_large(rev: i64, current: i64) -> ApiError {
    // Another master may be further along: the client may try it.
    ApiError::new(
        Reason::Unavailable,
        format!("Too large resource version: {rev}, current: {current}"),
    )
}

/// What a list reads: its range, selectors and page size.
struct Query {
    ls: Selector,
    fs: FieldSelector,
    start: Vec<u8>,
    end: Vec<u8>,
    /// usize::MAX: no limit.
    limit: usize,
}

impl Query {
    /// The page from the cache (at revision `exact` only, when given).
    fn page_in_cache(&self, cache: &KindCache, exact: Option<i64>) -> Option<RawList> {
        let filtered = !(self.ls.is_empty() && self.fs.is_empty());
        // Without selectors the page's items (and one more, to know whether
        // the list goes on) are taken under the cache's lock; with them,
        // the whole range, filtered outside it.
        let take = if filtered || self.limit == usize::MAX {
            0
        } else {
            self.limit + 1
        };
        let snap = cache.snapshot(&self.start, &self.end, take, exact)?;
        let mut items = Vec::new();
        let mut it = snap.objects.into_iter();
        for o in it.by_ref() {
            if !selected(&self.ls, &self.fs, &o) {
                continue;
            }
            if items.len() == self.limit {
                // One more item matches: the page ends before it.
                return Some(page_of(items, snap.revision, true));
            }
            items.push(o);
        }
        Some(page_of(items, snap.revision, snap.more))
    }
}

/// Where a list reads, from its resourceVersion, resourceVersionMatch and
/// continue token (validated as Kubernetes validates them).
enum ReadAt {
    Any,
    Consistent,
    NotOlderThan(i64),
    Exact(i64),
    Continue(ContinueToken),
}

impl ReadAt {
    fn parse(o: &ListParams, prefix: &[u8]) -> Result<ReadAt, ApiError> {
        let rv = o.resource_version.as_str();
        let m = o.resource_version_match.as_str();
        if !matches!(m, "" | "NotOlderThan" | "Exact") {
            return Err(ApiError::bad_request(format!(
                "resourceVersionMatch: Unsupported value: \"{m}\": supported values: \"Exact\", \"NotOlderThan\""
            )));
        }
        if !o.continue_token.is_empty() {
            if !m.is_empty() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if !rv.is_empty() && rv != "0" {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ));
            }
            return Ok(ReadAt::Continue(decode_continue(
                &o.continue_token,
                prefix,
            )?));
        }
        if rv.is_empty() {
            if !m.is_empty() {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            return Ok(if o.serializable {
                ReadAt::Any
            } else {
                ReadAt::Consistent
            });
        }
        let n: i64 = rv
            .parse()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
        Ok(match (n, m) {
            (0, "Exact") => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
                ))
            }
            (0, _) => ReadAt::Any,
            (n, "Exact") => ReadAt::Exact(n),
            (n, "NotOlderThan") => ReadAt::NotOlderThan(n),
            // Kubernetes' legacy rule: a limit without a match is exact.
            (n, _) if o.limit > 0 => ReadAt::Exact(n),
            (n, _) => ReadAt::NotOlderThan(n),
        })
    }
}
