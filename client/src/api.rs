//! Typed calls: `Api::<Pod>::namespaced(client, "default").get("web")`.
//!
//! An [`Api`] works over any [`ObjectApi`]: the gRPC [`Client`] on a node or
//! in `flt`, or the API server itself, in process, for the controllers on a
//! master (one code path for validation and admission either way).

use std::marker::PhantomData;
use std::sync::Arc;

use flotilla_objects::api::{DeleteParams, EventType, ListParams, ObjectApi, WatchParams};
use flotilla_objects::Resource;
use futures::StreamExt;
use serde_json::Value;

use crate::client::Client;
use crate::error::ApiError;

/// The calls of the object API for one kind, in one namespace (or all).
pub struct Api<K> {
    api: Arc<dyn ObjectApi>,
    namespace: String,
    _kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            api: self.api.clone(),
            namespace: self.namespace.clone(),
            _kind: PhantomData,
        }
    }
}

/// A typed list.
#[derive(Debug, Clone)]
pub struct List<K> {
    pub items: Vec<K>,
    pub resource_version: String,
    pub continue_token: String,
}

/// A typed watch event.
#[derive(Debug, Clone)]
pub enum Event<K> {
    Added(K),
    Modified(K),
    Deleted(K),
    /// Everything up to this resourceVersion has been seen.
    Bookmark(String),
}

fn decode<K: Resource>(v: Value) -> Result<K, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::internal(format!("decoding a {}: {e}", K::info().kind)))
}

fn decode_bytes<K: Resource>(b: &[u8]) -> Result<K, ApiError> {
    serde_json::from_slice(b)
        .map_err(|e| ApiError::internal(format!("decoding a {}: {e}", K::info().kind)))
}

/// A typed object as the API takes it: with its apiVersion and kind.
pub fn encode<K: Resource>(k: &K) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(k)
        .map_err(|e| ApiError::internal(format!("encoding a {}: {e}", K::info().kind)))?;
    if let Some(m) = v.as_object_mut() {
        let info = K::info();
        m.insert("apiVersion".into(), Value::String(info.api_version()));
        m.insert("kind".into(), Value::String(info.kind.to_string()));
    }
    Ok(v)
}

impl<K: Resource> Api<K> {
    /// Objects of a namespaced kind in `namespace`, through the masters.
    pub fn namespaced(client: Client, namespace: &str) -> Self {
        Self::namespaced_with(Arc::new(client), namespace)
    }

    /// Objects in every namespace, or of a cluster-scoped kind, through the masters.
    pub fn all(client: Client) -> Self {
        Self::namespaced(client, "")
    }

    /// Objects in `namespace` through any implementation of the object API.
    pub fn namespaced_with(api: Arc<dyn ObjectApi>, namespace: &str) -> Self {
        Api {
            api,
            namespace: namespace.to_string(),
            _kind: PhantomData,
        }
    }

    /// Every namespace (or a cluster-scoped kind) through any implementation.
    pub fn all_with(api: Arc<dyn ObjectApi>) -> Self {
        Self::namespaced_with(api, "")
    }

    /// The object API underneath.
    pub fn object_api(&self) -> &Arc<dyn ObjectApi> {
        &self.api
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn ns_of<'a>(&'a self, k: &'a K) -> &'a str {
        if k.meta().namespace.is_empty() {
            &self.namespace
        } else {
            &k.meta().namespace
        }
    }

    pub async fn get(&self, name: &str) -> Result<K, ApiError> {
        decode(
            self.api
                .get(K::info().plural, &self.namespace, name, false)
                .await?,
        )
    }

    /// Read from the master asked, possibly stale.
    pub async fn get_serializable(&self, name: &str) -> Result<K, ApiError> {
        decode(
            self.api
                .get(K::info().plural, &self.namespace, name, true)
                .await?,
        )
    }

    pub async fn list(&self, p: &ListParams) -> Result<List<K>, ApiError> {
        let l = self.api.list(K::info().plural, &self.namespace, p).await?;
        Ok(List {
            items: l.items.into_iter().map(decode).collect::<Result<_, _>>()?,
            resource_version: l.resource_version,
            continue_token: l.continue_token,
        })
    }

    /// Every page, at one revision.
    pub async fn list_all(&self, p: &ListParams) -> Result<List<K>, ApiError> {
        let l = crate::client::list_all(self.api.as_ref(), K::info().plural, &self.namespace, p)
            .await?;
        Ok(List {
            items: l.items.into_iter().map(decode).collect::<Result<_, _>>()?,
            resource_version: l.resource_version,
            continue_token: l.continue_token,
        })
    }

    pub async fn create(&self, k: &K) -> Result<K, ApiError> {
        let w = self
            .api
            .create(K::info().plural, self.ns_of(k), encode(k)?, false)
            .await?;
        decode(w.object)
    }

    /// Replace metadata and spec; `k`'s resourceVersion, when set, must be current.
    pub async fn replace(&self, k: &K) -> Result<K, ApiError> {
        let w = self
            .api
            .update(K::info().plural, self.ns_of(k), encode(k)?, false, false)
            .await?;
        decode(w.object)
    }

    /// Replace only the status.
    pub async fn replace_status(&self, k: &K) -> Result<K, ApiError> {
        let w = self
            .api
            .update(K::info().plural, self.ns_of(k), encode(k)?, true, false)
            .await?;
        decode(w.object)
    }

    /// JSON merge patch.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<K, ApiError> {
        let w = self
            .api
            .patch(
                K::info().plural,
                &self.namespace,
                name,
                patch.clone(),
                false,
                false,
            )
            .await?;
        decode(w.object)
    }

    pub async fn patch_status(&self, name: &str, patch: &Value) -> Result<K, ApiError> {
        let w = self
            .api
            .patch(
                K::info().plural,
                &self.namespace,
                name,
                patch.clone(),
                true,
                false,
            )
            .await?;
        decode(w.object)
    }

    /// Delete; returns the object and whether it is gone (false: it waits
    /// for finalizers or its grace period).
    pub async fn delete(&self, name: &str, p: &DeleteParams) -> Result<(K, bool), ApiError> {
        let (v, gone) = self
            .api
            .delete(K::info().plural, &self.namespace, name, p)
            .await?;
        Ok((decode(v)?, gone))
    }

    pub async fn watch(
        &self,
        p: &WatchParams,
    ) -> Result<impl futures::Stream<Item = Result<Event<K>, ApiError>> + Send, ApiError> {
        let s = self.api.watch(K::info().plural, &self.namespace, p).await?;
        Ok(s.map(|item| {
            let ev = item?;
            Ok(match ev.kind {
                EventType::Added => Event::Added(decode_bytes(&ev.object)?),
                EventType::Modified => Event::Modified(decode_bytes(&ev.object)?),
                EventType::Deleted => Event::Deleted(decode_bytes(&ev.object)?),
                EventType::Bookmark => {
                    let v: Value = serde_json::from_slice(&ev.object).unwrap_or(Value::Null);
                    Event::Bookmark(
                        v.pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    )
                }
            })
        }))
    }
}
