//! The watch cache: one follower of the store per kind on each master,
//! shared by every watch of that kind.
//!
//! Each stored change is decoded and serialized once, kept in a bounded
//! window of recent events, and fanned out to the watchers, which only
//! filter (namespace, selectors). A watch that starts inside the window is
//! served from it; one that starts before (or after the cache failed) falls
//! back to a follower of its own, which reads the store's history (and ends
//! with Gone when that is compacted).
//!
//! Gap-free joins: events are appended and broadcast under one lock, and a
//! watcher copies the window and subscribes under that same lock, so it gets
//! every event from its start exactly once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flotilla_objects::registry::ResourceInfo;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::api::{kind_prefix, with_rv};
use crate::store::{prefix_end, Change, Kv, Store, WatchMsg};

/// One change of one object, decoded once (None: it cannot be read).
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: i64,
    /// The store key (its namespace part filters namespaced watches).
    pub key: Vec<u8>,
    /// The object after the change (for a delete: its last state), with
    /// resourceVersion set to the change's revision.
    pub object: Value,
    /// The object before the change, if it existed.
    pub prev: Option<Value>,
    pub deleted: bool,
    /// `object`, serialized.
    pub bytes: Bytes,
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
}

/// The cache of one kind.
pub struct KindCache {
    window: Mutex<Window>,
    tx: broadcast::Sender<Msg>,
}

/// A watcher's start in a cache.
pub struct Joined {
    /// Buffered events at or after the requested revision.
    pub backlog: Vec<Arc<CachedEvent>>,
    pub rx: broadcast::Receiver<Msg>,
}

fn parse(kv: &Kv) -> Option<Value> {
    serde_json::from_slice(&kv.value).ok()
}

fn cached(revision: i64, c: Change) -> Option<CachedEvent> {
    let (key, object, prev, deleted) = match c {
        Change::Put { kv, prev } => {
            let obj = with_rv(parse(&kv)?, revision);
            (kv.key, obj, prev.as_ref().and_then(parse), false)
        }
        Change::Delete { key, prev } => {
            let p = parse(prev.as_ref()?)?;
            (key, with_rv(p.clone(), revision), Some(p), true)
        }
    };
    let bytes = Bytes::from(serde_json::to_vec(&object).ok()?);
    Some(CachedEvent {
        revision,
        key,
        object,
        prev,
        deleted,
        bytes,
    })
}

impl KindCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|e| e.into_inner())
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

    fn append(&self, revision: i64, events: Vec<CachedEvent>, capacity: usize) {
        let mut w = self.lock();
        for e in events {
            let e = Arc::new(e);
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
    }

    fn advance(&self, next: i64) {
        let mut w = self.lock();
        w.next = w.next.max(next);
    }

    fn close(&self) {
        let mut w = self.lock();
        w.closed = true;
        let _ = self.tx.send(Msg::Closed);
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
}

/// How often an idle cache notes the store's progress (for bookmarks).
const PROGRESS_TICK: Duration = Duration::from_millis(100);
/// Broadcast slots per kind: a watcher further behind is resumed.
const FANOUT: usize = 4096;

impl WatchCaches {
    pub fn new(store: Arc<dyn Store>, capacity: usize) -> Self {
        WatchCaches {
            store,
            caches: Mutex::new(HashMap::new()),
            received: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
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
            }),
            tx: broadcast::channel(FANOUT).0,
        });
        m.insert(info.plural, cache.clone());
        let prefix = kind_prefix(info, "");
        let stream = self.store.watch(&prefix, &prefix_end(&prefix), start);
        let received = self
            .received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(info.plural)
            .or_default()
            .clone();
        let (c, capacity, kind) = (cache.clone(), self.capacity, info.kind);
        tokio::spawn(async move {
            let mut rx = stream.rx;
            let mut tick = tokio::time::interval(PROGRESS_TICK);
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(WatchMsg::Changes { revision, changes }) => {
                            // A change that cannot be read (a delete without
                            // the object's last version, an object that is not
                            // JSON) must not be skipped: the cache closes, and
                            // its watchers resume from the store, which ends
                            // them with Gone if the event is unreadable there too.
                            let evs: Option<Vec<CachedEvent>> = changes.into_iter().map(|ch| cached(revision, ch)).collect();
                            let Some(evs) = evs else {
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
                    _ = tick.tick() => {
                        // Load the follower's progress before looking at the
                        // channel: if it is empty, everything below is processed.
                        let p = stream.progress.load(Ordering::Acquire);
                        if rx.is_empty() {
                            c.advance(p);
                        }
                    }
                }
            }
            c.close();
        });
        cache
    }
}
