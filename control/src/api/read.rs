//! Get and list: one object, or every object of a kind (in a namespace),
//! through selectors and in pages that are all read at the revision of the
//! first.

use base64::Engine;
use flotilla_objects::api::{ApiError, ListParams, Reason};
use flotilla_objects::registry::ResourceInfo;
use flotilla_objects::selector::{FieldSelector, Selector};
use serde_json::{json, Value};

use super::json::{decode, labels_of};
use super::{check_name_param, kind_prefix, object_key, store_err, ApiServer};
use crate::store::{key_after, prefix_end, StoreError};

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
    (l.is_empty() || l.matches(&labels_of(v))) && (f.is_empty() || f.matches(v))
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
}
