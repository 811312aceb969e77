//! List-then-watch caches: a [`Reflector`] keeps a [`Cache`] of one kind
//! equal to the store, relisting when its watch is told the start revision
//! is Gone ([`crate::watcher`]). Agents, proxies and `flt` read caches, not
//! the store; the controllers on the masters read the runtime's informers.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_objects::api::ListParams;
use flotilla_objects::Resource;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{Api, Event};
use crate::watcher::{watch_loop, Step};

/// (namespace, name)
pub type ObjectKey = (String, String);

/// A read-only view of the objects a reflector mirrors.
pub struct Cache<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<K> {
    objects: RwLock<BTreeMap<ObjectKey, Arc<K>>>,
    resource_version: RwLock<String>,
    ready: watch::Sender<bool>,
    /// Bumped on every change: controllers wait on it.
    changes: watch::Sender<u64>,
}

fn key_of<K: Resource>(k: &K) -> ObjectKey {
    (k.meta().namespace.clone(), k.meta().name.clone())
}

impl<K: Resource> Cache<K> {
    fn new() -> Self {
        Cache {
            inner: Arc::new(Inner {
                objects: RwLock::new(BTreeMap::new()),
                resource_version: RwLock::new(String::new()),
                ready: watch::channel(false).0,
                changes: watch::channel(0).0,
            }),
        }
    }

    /// One object ("" namespace for cluster-scoped kinds).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let m = self.inner.objects.read().unwrap_or_else(|e| e.into_inner());
        m.get(&(namespace.to_string(), name.to_string())).cloned()
    }

    /// Every object, ordered by namespace and name.
    pub fn list(&self) -> Vec<Arc<K>> {
        let m = self.inner.objects.read().unwrap_or_else(|e| e.into_inner());
        m.values().cloned().collect()
    }

    /// The objects of one namespace.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        let m = self.inner.objects.read().unwrap_or_else(|e| e.into_inner());
        m.range((namespace.to_string(), String::new())..)
            .take_while(|((ns, _), _)| ns == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.inner
            .objects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision the cache reflects.
    pub fn resource_version(&self) -> String {
        self.inner
            .resource_version
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Wait until the first list has filled the cache; false on timeout.
    pub async fn wait_until_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.ready.subscribe();
        let ok = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await,
            Ok(Ok(_))
        );
        ok
    }

    /// A receiver that changes whenever the cache does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn bump(&self) {
        self.inner.changes.send_modify(|n| *n += 1);
    }

    fn set_rv(&self, rv: &str) {
        if !rv.is_empty() {
            *self
                .inner
                .resource_version
                .write()
                .unwrap_or_else(|e| e.into_inner()) = rv.to_string();
        }
    }

    fn replace(&self, items: Vec<K>, rv: &str) {
        let map: BTreeMap<_, _> = items
            .into_iter()
            .map(|k| (key_of(&k), Arc::new(k)))
            .collect();
        *self
            .inner
            .objects
            .write()
            .unwrap_or_else(|e| e.into_inner()) = map;
        self.set_rv(rv);
        self.inner.ready.send_replace(true);
        self.bump();
    }

    fn apply(&self, ev: Event<K>) {
        match ev {
            Event::Added(k) | Event::Modified(k) => {
                let rv = k.meta().resource_version.clone();
                self.inner
                    .objects
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key_of(&k), Arc::new(k));
                self.set_rv(&rv);
            }
            Event::Deleted(k) => {
                let rv = k.meta().resource_version.clone();
                self.inner
                    .objects
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&key_of(&k));
                self.set_rv(&rv);
            }
            Event::Bookmark(rv) => {
                self.set_rv(&rv);
                return;
            }
        }
        self.bump();
    }
}

/// Keeps a [`Cache`] in step with the store; stops when dropped.
pub struct Reflector<K> {
    cache: Cache<K>,
    task: JoinHandle<()>,
}

impl<K> Drop for Reflector<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K: Resource> Reflector<K> {
    /// Start mirroring the objects `api` reaches that match `params`'
    /// selectors.
    pub fn spawn(api: Api<K>, params: ListParams) -> Self {
        let cache = Cache::new();
        let task = tokio::spawn(run(api, params, cache.clone()));
        Reflector { cache, task }
    }

    pub fn cache(&self) -> Cache<K> {
        self.cache.clone()
    }

    pub async fn wait_until_ready(&self, timeout: Duration) -> bool {
        self.cache.wait_until_ready(timeout).await
    }
}

async fn run<K: Resource>(api: Api<K>, params: ListParams, cache: Cache<K>) {
    watch_loop(&api, &params, Duration::ZERO, |step| {
        match step {
            Step::Listed {
                items,
                resource_version,
            } => cache.replace(items, &resource_version),
            Step::Event(ev) => cache.apply(ev),
        }
        true
    })
    .await
}
