//! The watch cache: one follower of the store per kind on each master,
//! shared by every watch and list of that kind.
//!
//! A cache starts with a range of the kind at the store's revision, then
//! follows the store's changes from the next one. It keeps every object of
//! the kind as it is at the cache's revision (its bytes as served made
//! once: the stored bytes, checked, with the resourceVersion spliced in;
//! lists are served from them; decoded only if a selector or a lookup
//! needs it) and a bounded window of recent events,
//! which it fans out to the watchers; they only filter (namespace,
//! selectors). A watch that starts inside the window is served from it; one
//! that starts before (or after the cache failed) falls back to a follower
//! of its own, which reads the store's history (and ends with Gone when
//! that is compacted).
//!
//! Gap-free joins: events are appended and broadcast under one lock, and a
//! watcher copies the window and subscribes under that same lock, so it gets
//! every event from its start exactly once. A list copies its range of the
//! objects and the revision they are at under that lock too.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use flotilla_objects::api::ApiError;
use flotilla_objects::registry::ResourceInfo;
use serde_json::Value;
use tokio::sync::{broadcast, watch, Notify};

use crate::api::json::{not_json, served_bytes};
use crate::api::{kind_prefix, with_rv};
use crate::store::{prefix_end, Change, Kv, Store, WatchMsg};

/// One object as the cache keeps it: its bytes as served (the stored bytes
/// with the resourceVersion spliced in), made once for every list and watch
/// that sends it, and the object decoded from them on first use. Only
/// selectors and a few lookups need the decoded form, so a cache whose
/// watchers and lists take whole objects never builds it: a pod's tree of
/// maps cost more to build than everything else the cache does with it, and
/// several times its bytes to keep.
#[derive(Debug)]
pub struct CachedObject {
    /// The store key (its namespace part filters namespaced lists and watches).
    pub key: Vec<u8>,
    /// The object as JSON (its members in any order); always valid JSON.
    pub bytes: Bytes,
    object: OnceLock<Value>,
}

impl CachedObject {
    pub fn new(key: Vec<u8>, object: Value) -> Result<CachedObject, ApiError> {
        let bytes = serde_json::to_vec(&object)
            .map_err(|e| ApiError::internal(format!("serializing an object: {e}")))?;
        Ok(CachedObject {
            key,
            bytes: Bytes::from(bytes),
            object: OnceLock::from(object),
        })
    }

    /// A stored object, with its resourceVersion (the key's mod revision).
    pub fn from_kv(kv: &Kv) -> Result<CachedObject, ApiError> {
        CachedObject::stored(kv.key.clone(), &kv.value, kv.mod_revision)
            .map_err(|e| not_json(&kv.key, e))
    }

    /// An object as stored, at revision `rev`: its bytes the stored ones,
    /// checked, with the resourceVersion spliced in, and the object decoded
    /// only when that does not fit ([`served_bytes`]).
    fn stored(key: Vec<u8>, value: &[u8], rev: i64) -> Result<CachedObject, String> {
        let (bytes, object) = served_bytes(value, rev)?;
        Ok(CachedObject {
            key,
            bytes: Bytes::from(bytes),
            object: object.map_or_else(OnceLock::new, OnceLock::from),
        })
    }

    /// The object, decoded on first use.
    pub fn object(&self) -> &Value {
        self.object.get_or_init(|| {
            // `bytes` were checked or made by serde_json: this does not fail.
            serde_json::from_slice(&self.bytes).unwrap_or_else(|e| {
                tracing::error!(key = %String::from_utf8_lossy(&self.key), error = %e, "a cached object's bytes do not decode");
                Value::Null
            })
        })
    }
}

/// One change of one object, made once for every watcher.
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: i64,
    /// The object after the change (for a delete: its last state), with
    /// resourceVersion set to the change's revision.
    pub obj: Arc<CachedObject>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<CachedObject>>,
    pub deleted: bool,
}

/// What the cache broadcasts.
#[derive(Debug, Clone)]
pub enum Msg {
    Event(Arc<CachedEvent>),
    /// The cache stopped (its follower failed): watchers must resume elsewhere.
    Closed,
}

struct Window {
    events: VecDeque<Arc<CachedEvent>>,
    /// Every event with a revision at or above this is in `events` (or yet to come).
    floor: i64,
    /// Every revision below this has been processed.
    next: i64,
    closed: bool,
    /// Every object at revision `next - 1`; None until the first range is in.
    objects: Option<BTreeMap<Vec<u8>, Arc<CachedObject>>>,
}

/// Where a cache is, for lists waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The revision the objects are at (while `ready`).
    revision: i64,
    ready: bool,
    closed: bool,
}

/// The cache of one kind.
pub struct KindCache {
    window: Mutex<Window>,
    tx: broadcast::Sender<Msg>,
    progress: watch::Sender<Progress>,
    /// Asks the follower task to note the store's progress now (a list
    /// waits for a revision that may hold no change of this kind).
    wake: Notify,
}

/// A watcher's start in a cache.
pub struct Joined {
    /// Buffered events at or after the requested revision.
    pub backlog: Vec<Arc<CachedEvent>>,
    pub rx: broadcast::Receiver<Msg>,
}

/// Objects of a range at one revision, in key order.
pub struct Snapshot {
    pub revision: i64,
    pub objects: Vec<Arc<CachedObject>>,
    /// More objects follow in the range than `objects` holds.
    pub more: bool,
}

/// A change as an event; `known` is the object's last state in the cache.
fn cached(revision: i64, c: Change, known: Option<Arc<CachedObject>>) -> Option<CachedEvent> {
    let prev_of = |key: &[u8], prev: Option<Kv>| -> Option<Arc<CachedObject>> {
        known.clone().or_else(|| {
            let kv = prev?;
            CachedObject::stored(key.to_vec(), &kv.value, kv.mod_revision)
                .ok()
                .map(Arc::new)
        })
    };
    let (obj, prev, deleted) = match c {
        Change::Put { kv, prev } => {
            let prev = prev_of(&kv.key, prev);
            (
                CachedObject::stored(kv.key, &kv.value, revision).ok()?,
                prev,
                false,
            )
        }
        Change::Delete { key, prev } => {
            // Without the object's last state the event cannot be filtered.
            let p = prev_of(&key, prev)?;
            let obj = with_rv(p.object().clone(), revision);
            (CachedObject::new(key, obj).ok()?, Some(p), true)
        }
    };
    Some(CachedEvent {
        revision,
        obj: Arc::new(obj),
        prev,
        deleted,
    })
}

impl KindCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish(&self, w: &Window) {
        let p = Progress {
            revision: w.next - 1,
            ready: w.objects.is_some(),
            closed: w.closed,
        };
        self.progress.send_if_modified(|old| {
            let changed = *old != p;
            *old = p;
            changed
        });
    }

    /// Start watching at revision `from`: None when the window does not
    /// reach back that far, when `from` is compacted away in the store (the
    /// watch must then end with Gone, as it would without the cache), or
    /// when the cache is closed.
    pub fn join(&self, from: i64, compacted: i64) -> Option<Joined> {
        let w = self.lock();
        if w.closed || from < w.floor || from < compacted {
            return None;
        }
        let backlog = w
            .events
            .iter()
            .filter(|e| e.revision >= from)
            .cloned()
            .collect();
        Some(Joined {
            backlog,
            rx: self.tx.subscribe(),
        })
    }

    /// The revision up to which a watcher that has drained `rx` has seen
    /// everything; None while it still has events queued.
    pub fn progress(&self, rx: &broadcast::Receiver<Msg>) -> Option<i64> {
        let w = self.lock();
        (rx.is_empty() && !w.closed).then_some(w.next - 1)
    }

    /// The revision the cache's objects are at; None while it loads, or
    /// once it has closed.
    pub fn revision(&self) -> Option<i64> {
        let p = *self.progress.borrow();
        (p.ready && !p.closed).then_some(p.revision)
    }

    /// The objects in `[start, end)` as they are now (only at revision
    /// `exact`, when given): at most `limit` of them (0: all). None while the
    /// cache loads, once it has closed, or when it is not at `exact`.
    pub fn snapshot(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        exact: Option<i64>,
    ) -> Option<Snapshot> {
        let w = self.lock();
        let objects = w.objects.as_ref().filter(|_| !w.closed)?;
        let revision = w.next - 1;
        if exact.is_some_and(|r| r != revision) {
            return None;
        }
        let upper = if end == [0] {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let mut it = objects
            .range::<[u8], _>((Bound::Included(start), upper))
            .map(|(_, o)| o.clone());
        let taken: Vec<_> = if limit == 0 {
            it.by_ref().collect()
        } else {
            it.by_ref().take(limit).collect()
        };
        let more = it.next().is_some();
        Some(Snapshot {
            revision,
            objects: taken,
            more,
        })
    }

    /// Wait until the cache's objects are at `revision` or later, for at
    /// most `timeout`. False when it did not get there in time, or loads
    /// or closes meanwhile.
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> bool {
        let mut rx = self.progress.subscribe();
        let reached = |p: &Progress| p.closed || (p.ready && p.revision >= revision);
        if reached(&rx.borrow_and_update()) {
            return self.revision().is_some_and(|r| r >= revision);
        }
        // The revision may hold no change of this kind: have the follower
        // note the store's progress instead of waiting for its next tick.
        self.wake.notify_one();
        let _ = tokio::time::timeout(timeout, rx.wait_for(reached)).await;
        self.revision().is_some_and(|r| r >= revision)
    }

    fn load(&self, objects: BTreeMap<Vec<u8>, Arc<CachedObject>>) {
        let mut w = self.lock();
        w.objects = Some(objects);
        self.publish(&w);
    }

    /// `key`'s object as the cache holds it now: None while the cache
    /// loads, once it has closed, or when it does not hold `key` (it may
    /// lag the store).
    pub fn object(&self, key: &[u8]) -> Option<Arc<CachedObject>> {
        let w = self.lock();
        w.objects.as_ref().filter(|_| !w.closed)?.get(key).cloned()
    }

    fn known(&self, key: &[u8]) -> Option<Arc<CachedObject>> {
        self.lock().objects.as_ref()?.get(key).cloned()
    }

    fn append(&self, revision: i64, events: Vec<CachedEvent>, capacity: usize) {
        let mut w = self.lock();
        for e in events {
            let e = Arc::new(e);
            if let Some(objects) = w.objects.as_mut() {
                if e.deleted {
                    objects.remove(&e.obj.key);
                } else {
                    objects.insert(e.obj.key.clone(), e.obj.clone());
                }
            }
            w.events.push_back(e.clone());
            // No receiver is not an error: nobody watches right now.
            let _ = self.tx.send(Msg::Event(e));
        }
        while w.events.len() > capacity {
            if let Some(old) = w.events.pop_front() {
                w.floor = w.floor.max(old.revision + 1);
            }
        }
        w.next = w.next.max(revision + 1);
        self.publish(&w);
    }

    fn advance(&self, next: i64) {
        let mut w = self.lock();
        w.next = w.next.max(next);
        self.publish(&w);
    }

    fn close(&self) {
        let mut w = self.lock();
        w.closed = true;
        let _ = self.tx.send(Msg::Closed);
        self.publish(&w);
    }
}

/// One kind's cache, as the metrics report it.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheStats {
    pub resource: &'static str,
    /// Events kept at most.
    pub capacity: usize,
    /// Events kept now.
    pub events: usize,
    /// Events taken in since the master started.
    pub received: u64,
    /// Revisions the cache is behind the store's (0 for a closed cache,
    /// which is restarted by the next watch).
    pub lag: i64,
}

/// Every kind's cache on this master, made on first use.
pub struct WatchCaches {
    store: Arc<dyn Store>,
    caches: Mutex<HashMap<&'static str, Arc<KindCache>>>,
    /// Events each kind's caches took in, across restarts of its cache.
    received: Mutex<HashMap<&'static str, Arc<AtomicU64>>>,
    /// Events kept per kind.
    capacity: usize,
    /// How long a list waits for a cache to reach the revision it needs
    /// before it reads the store instead.
    fresh_timeout: Mutex<Duration>,
}

/// How often an idle cache notes the store's progress (for bookmarks).
const PROGRESS_TICK: Duration = Duration::from_millis(100);
/// Broadcast slots per kind: a watcher further behind is resumed.
const FANOUT: usize = 4096;
/// How long a list waits for a cache to reach its revision (Kubernetes'
/// cacher waits 3 s too) before it reads the store.
const FRESH_TIMEOUT: Duration = Duration::from_secs(3);

impl WatchCaches {
    pub fn new(store: Arc<dyn Store>, capacity: usize) -> Self {
        WatchCaches {
            store,
            caches: Mutex::new(HashMap::new()),
            received: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            fresh_timeout: Mutex::new(FRESH_TIMEOUT),
        }
    }

    /// How long a list waits for a cache to reach the revision it needs.
    pub fn fresh_timeout(&self) -> Duration {
        *self.fresh_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set that wait (tests).
    pub fn set_fresh_timeout(&self, d: Duration) {
        *self.fresh_timeout.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    /// What each kind's cache holds now, for the metrics.
    pub fn stats(&self) -> Vec<CacheStats> {
        let store_revision = self.store.revision();
        let caches = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        let received = self.received.lock().unwrap_or_else(|e| e.into_inner());
        caches
            .iter()
            .map(|(resource, c)| {
                let w = c.lock();
                CacheStats {
                    resource,
                    capacity: self.capacity,
                    events: w.events.len(),
                    received: received
                        .get(resource)
                        .map_or(0, |r| r.load(Ordering::Relaxed)),
                    lag: if w.closed {
                        0
                    } else {
                        (store_revision - (w.next - 1)).max(0)
                    },
                }
            })
            .collect()
    }

    /// The cache of `info`'s kind (all namespaces), started if needed.
    pub fn get(&self, info: &'static ResourceInfo) -> Arc<KindCache> {
        let mut m = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = m.get(info.plural) {
            if !c.lock().closed {
                return c.clone();
            }
        }
        let start = self.store.revision() + 1;
        let cache = Arc::new(KindCache {
            window: Mutex::new(Window {
                events: VecDeque::new(),
                floor: start,
                next: start,
                closed: false,
                objects: None,
            }),
            tx: broadcast::channel(FANOUT).0,
            progress: watch::channel(Progress {
                revision: start - 1,
                ready: false,
                closed: false,
            })
            .0,
            wake: Notify::new(),
        });
        m.insert(info.plural, cache.clone());
        let prefix = kind_prefix(info, "");
        let end = prefix_end(&prefix);
        let stream = self.store.watch(&prefix, &end, start);
        let received = self
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(info.plural)
            .or_default()
            .clone();
        let (c, capacity, kind, store) =
            (cache.clone(), self.capacity, info.kind, self.store.clone());
        tokio::spawn(async move {
            // The objects at the revision before the follower's first one.
            match load(store.as_ref(), &prefix, &end, start - 1).await {
                Ok(objects) => c.load(objects),
                Err(e) => {
                    tracing::warn!(kind, error = %e.message, "watch cache could not list its kind; restarting it");
                    c.close();
                    return;
                }
            }
            let mut rx = stream.rx;
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(WatchMsg::Changes { revision, changes }) => {
                            // A change that cannot be read (a delete of an
                            // object neither the cache nor the change has, an
                            // object that is not JSON) must not be skipped: the
                            // cache closes, and its watchers resume from the
                            // store, which ends them with Gone if the event is
                            // unreadable there too.
                            let Some(evs) = events(&c, revision, changes) else {
                                tracing::warn!(kind, revision, "watch cache met a change it cannot read; restarting it");
                                break;
                            };
                            received.fetch_add(evs.len() as u64, Ordering::Relaxed);
                            c.append(revision, evs, capacity);
                        }
                        Some(WatchMsg::Compacted { compact_revision }) => {
                            tracing::warn!(kind, compact_revision, "watch cache fell behind compaction; restarting it");
                            break;
                        }
                        Some(WatchMsg::Failed(e)) => {
                            tracing::warn!(kind, error = %e, "watch cache follower failed; restarting it");
                            break;
                        }
                        None => break,
                    },
                    _ = tick.tick() => note_progress(&c, &stream.progress, &rx),
                    _ = c.wake.notified() => note_progress(&c, &stream.progress, &rx),
                }
            }
            c.close();
        });
        cache
    }
}

/// Every object in `[start, end)` at `revision`, read from the store (local).
async fn load(
    store: &dyn Store,
    start: &[u8],
    end: &[u8],
    revision: i64,
) -> Result<BTreeMap<Vec<u8>, Arc<CachedObject>>, ApiError> {
    let page = store
        .range(start, end, 0, revision, false)
        .await
        .map_err(crate::api::store_err)?;
    page.kvs
        .iter()
        .map(|kv| Ok((kv.key.clone(), Arc::new(CachedObject::from_kv(kv)?))))
        .collect()
}

/// The events of one revision's changes (None: one cannot be read), each
/// with the object's state before it.
fn events(c: &KindCache, revision: i64, changes: Vec<Change>) -> Option<Vec<CachedEvent>> {
    // A key changed twice in one revision: its second change follows the first.
    let mut in_revision: HashMap<Vec<u8>, Option<Arc<CachedObject>>> = HashMap::new();
    let mut out = Vec::with_capacity(changes.len());
    for ch in changes {
        let key = match &ch {
            Change::Put { kv, .. } => kv.key.clone(),
            Change::Delete { key, .. } => key.clone(),
        };
        let known = match in_revision.get(&key) {
            Some(k) => k.clone(),
            None => c.known(&key),
        };
        let ev = cached(revision, ch, known)?;
        in_revision.insert(key, (!ev.deleted).then(|| ev.obj.clone()));
        out.push(ev);
    }
    Some(out)
}

/// Note the follower's progress: load it before looking at the channel; if
/// that is empty, everything below it is processed.
fn note_progress(
    c: &KindCache,
    progress: &std::sync::atomic::AtomicI64,
    rx: &tokio::sync::mpsc::Receiver<WatchMsg>,
) {
    let p = progress.load(Ordering::Acquire);
    if rx.is_empty() {
        c.advance(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::json::served;

    /// Stored bytes give the object and bytes that decoding them would, with
    /// the decoding put off only where splicing is exact.
    #[test]
    fn a_stored_object_is_served_as_decoding_it_would_and_decoded_only_when_asked() {
        let cases: &[(&str, bool)] = &[
            (
                r#"{"kind":"Pod","metadata":{"name":"a","labels":{"x":"y"}},"spec":{"template":{"metadata":{"resourceVersion":"9"}}}}"#,
                true,
            ),
            (r#"{"metadata":{}}"#, true),
            (
                r#" { "a" : [1, {"metadata": {}}], "metadata" : { "name" : "n\"x" } } "#,
                true,
            ),
            // Splicing would give the member twice: decoded instead.
            (r#"{"metadata":{"name":"a","resourceVersion":"5"}}"#, false),
            (r#"{"metadata":{"name":"a","resourceVersion":null}}"#, false),
            (
                r#"{"metadata":{"name":"a","resourceV\u0065rsion":"5"}}"#,
                false,
            ),
            (
                r#"{"metadata":{"name":"a"},"metadata":{"name":"b"}}"#,
                false,
            ),
            (r#"{"meta\u0064ata":{"name":"a"}}"#, false),
            (r#"{"metadata":[]}"#, false),
            (r#"{"metadata":"x"}"#, false),
            (r#"{"name":"no metadata"}"#, false),
            (r#"[{"metadata":{}}]"#, false),
            (r#""a string""#, false),
        ];
        for (stored, lazy) in cases {
            let c = CachedObject::stored(b"/k".to_vec(), stored.as_bytes(), 42)
                .unwrap_or_else(|e| panic!("{stored}: {e}"));
            assert_eq!(
                c.object.get().is_none(),
                *lazy,
                "{stored}: decoded when made"
            );
            let (object, bytes) = served(stored.as_bytes(), 42).expect("served");
            let from_bytes: Value = serde_json::from_slice(&c.bytes).expect("valid JSON");
            let expected: Value = serde_json::from_slice(&bytes).expect("valid JSON");
            assert_eq!(from_bytes, expected, "{stored}: bytes");
            assert_eq!(c.object(), &object, "{stored}: object");
        }
        for bad in [
            &b"{\"metadata\":{}"[..],
            b"not json",
            b"{\"metadata\":{\"a\":\"\xff\"}}",
            b"{\"metadata\":{},\"b\":[\"\\ud800\"]}",
            b"{\"metadata\":{},\"b\":\"\\q\"}",
            b"{\"metadata\":{},\"b\":\"tab\there\"}",
            b"{\"metadata\":{}} x",
            b"{\"metadata\":{},\"b\":1e400}",
            b"{\"metadata\":{\"n\":-1e999}}",
        ] {
            let made = CachedObject::stored(b"/k".to_vec(), bad, 1);
            assert!(made.is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!(
            "{{\"metadata\":{{}},\"b\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(CachedObject::stored(b"/k".to_vec(), deep.as_bytes(), 1).is_err());
    }
}
