//! Shared informers: one list-then-watch cache per kind, with per-object
//! events and indexes, shared by every controller that reads that kind.
//!
//! An [`Informer`] lists its kind, then watches from the list's revision,
//! and relists when the watch is told its start is compacted (Gone). A
//! relist is diffed against the cache, so that subscribers see it as the
//! individual changes it amounts to. Subscribers get [`Change`]s in the
//! order the cache applied them; one that falls behind is told so
//! ([`Change::Lagged`]) and must look at the whole cache again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use flotilla_client::watcher::{watch_loop, Step};
use flotilla_client::{Api, Event};
use flotilla_objects::api::{ListParams, ObjectApi};
use flotilla_objects::Resource;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// An object's place in its kind: namespace ("" for cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectRef {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn of<K: Resource>(k: &K) -> Self {
        Self::new(&k.meta().namespace, &k.meta().name)
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One change the cache applied.
#[derive(Debug)]
pub enum Change<K> {
    Added(Arc<K>),
    Updated {
        old: Arc<K>,
        new: Arc<K>,
    },
    /// The object's last state.
    Deleted(Arc<K>),
    /// This subscriber fell behind and missed changes: look at everything.
    Lagged,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Added(k) => Change::Added(k.clone()),
            Change::Updated { old, new } => Change::Updated {
                old: old.clone(),
                new: new.clone(),
            },
            Change::Deleted(k) => Change::Deleted(k.clone()),
            Change::Lagged => Change::Lagged,
        }
    }
}

/// A function that files an object under index values.
pub type IndexFn<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// Built-in index: by namespace.
pub const BY_NAMESPACE: &str = "namespace";
/// Built-in index: by the uid of each owner.
pub const BY_OWNER: &str = "owner";
/// Built-in index: by each `key=value` label.
pub const BY_LABEL: &str = "label";

struct Index<K> {
    func: IndexFn<K>,
    /// Unordered: a hash insert per object and value, where a B-tree of
    /// every pod of a namespace compared namespace and name strings ~40
    /// times per insert (6% of a leader's CPU under pod creates).
    entries: HashMap<String, HashSet<ObjectRef>>,
}

struct State<K> {
    objects: BTreeMap<ObjectRef, Arc<K>>,
    indexes: HashMap<String, Index<K>>,
    resource_version: String,
}

impl<K> State<K> {
    fn index_add(&mut self, key: &ObjectRef, k: &K) {
        for ix in self.indexes.values_mut() {
            for v in (ix.func)(k) {
                ix.entries.entry(v).or_default().insert(key.clone());
            }
        }
    }

    fn index_remove(&mut self, key: &ObjectRef, k: &K) {
        for ix in self.indexes.values_mut() {
            for v in (ix.func)(k) {
                if let Some(set) = ix.entries.get_mut(&v) {
                    set.remove(key);
                    if set.is_empty() {
                        ix.entries.remove(&v);
                    }
                }
            }
        }
    }
}

struct Shared<K> {
    state: RwLock<State<K>>,
    events: broadcast::Sender<Change<K>>,
    synced: watch::Sender<bool>,
    /// Stops the informer's task when the last handle goes.
    stop: CancellationToken,
}

impl<K> Drop for Shared<K> {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A shared, indexed cache of one kind. Cheap to clone; the watch stops
/// when the last clone is dropped.
pub struct Informer<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            shared: self.shared.clone(),
        }
    }
}

/// Events kept for subscribers that are slow to read.
const EVENT_BUFFER: usize = 16 * 1024;

impl<K: Resource> Informer<K> {
    /// Start mirroring every object of `K` that `api` serves.
    pub fn spawn(api: Arc<dyn ObjectApi>) -> Self {
        Self::spawn_with(api, ListParams::default())
    }

    /// Start mirroring the objects of `K` that match `params`' selectors.
    pub fn spawn_with(api: Arc<dyn ObjectApi>, params: ListParams) -> Self {
        let mut indexes: HashMap<String, Index<K>> = HashMap::new();
        let builtin: [(&str, IndexFn<K>); 3] = [
            (
                BY_NAMESPACE,
                Arc::new(|k: &K| vec![k.meta().namespace.clone()]),
            ),
            (
                BY_OWNER,
                Arc::new(|k: &K| {
                    k.meta()
                        .owner_references
                        .iter()
                        .map(|o| o.uid.clone())
                        .collect()
                }),
            ),
            (
                BY_LABEL,
                Arc::new(|k: &K| {
                    k.meta()
                        .labels
                        .iter()
                        .map(|(a, b)| format!("{a}={b}"))
                        .collect()
                }),
            ),
        ];
        for (name, func) in builtin {
            indexes.insert(
                name.to_string(),
                Index {
                    func,
                    entries: HashMap::new(),
                },
            );
        }
        let shared = Arc::new(Shared {
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                indexes,
                resource_version: String::new(),
            }),
            events: broadcast::channel(EVENT_BUFFER).0,
            synced: watch::channel(false).0,
            stop: CancellationToken::new(),
        });
        let weak = Arc::downgrade(&shared);
        let stop = shared.stop.clone();
        let api = Api::<K>::all_with(api);
        tokio::spawn(async move {
            tokio::select! {
                _ = run(api, params, weak) => {}
                _ = stop.cancelled() => {}
            }
        });
        Informer { shared }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State<K>> {
        self.shared.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Add an index (built over the objects already cached, then kept).
    pub fn add_index(&self, name: &str, func: IndexFn<K>) {
        let mut s = self.shared.state.write().unwrap_or_else(|e| e.into_inner());
        let mut entries: HashMap<String, HashSet<ObjectRef>> = HashMap::new();
        for (key, k) in &s.objects {
            for v in func(k) {
                entries.entry(v).or_default().insert(key.clone());
            }
        }
        s.indexes.insert(name.to_string(), Index { func, entries });
    }

    /// One object.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read()
            .objects
            .get(&ObjectRef::new(namespace, name))
            .cloned()
    }

    pub fn get_ref(&self, key: &ObjectRef) -> Option<Arc<K>> {
        self.read().objects.get(key).cloned()
    }

    /// Every object, ordered by namespace and name.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().objects.values().cloned().collect()
    }

    /// Every object's key.
    pub fn keys(&self) -> Vec<ObjectRef> {
        self.read().objects.keys().cloned().collect()
    }

    /// The objects filed under `value` in index `index` (none for an
    /// unknown index), ordered by namespace and name.
    pub fn by_index(&self, index: &str, value: &str) -> Vec<Arc<K>> {
        let s = self.read();
        let Some(keys) = s.indexes.get(index).and_then(|ix| ix.entries.get(value)) else {
            return Vec::new();
        };
        let mut keys: Vec<&ObjectRef> = keys.iter().collect();
        keys.sort_unstable();
        keys.into_iter()
            .filter_map(|k| s.objects.get(k).cloned())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision the cache reflects.
    pub fn resource_version(&self) -> String {
        self.read().resource_version.clone()
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> Subscription<K> {
        Subscription {
            rx: self.shared.events.subscribe(),
        }
    }

    pub fn is_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Wait until the first list has filled the cache; false on timeout.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.synced.subscribe();
        let ok = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await,
            Ok(Ok(_))
        );
        ok
    }

    /// Wait until the cache is synced and reflects at least `revision`.
    pub async fn wait_for_revision(&self, revision: i64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.subscribe();
        loop {
            let rv: i64 = self.resource_version().parse().unwrap_or(0);
            if self.is_synced() && rv >= revision {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            // A bookmark moves the revision without a change: look again
            // at least every 100 ms.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), rx.next()).await;
        }
    }
}

/// A subscriber's stream of changes.
pub struct Subscription<K> {
    rx: broadcast::Receiver<Change<K>>,
}

impl<K: Clone> Subscription<K> {
    /// The next change; None once the informer stopped.
    pub async fn next(&mut self) -> Option<Change<K>> {
        match self.rx.recv().await {
            Ok(c) => Some(c),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Change::Lagged),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

/// Apply a full list: replace the cache, emitting the differences.
fn replace<K: Resource>(shared: &Shared<K>, items: Vec<K>, rv: &str) {
    let mut s = shared.state.write().unwrap_or_else(|e| e.into_inner());
    let mut fresh: BTreeMap<ObjectRef, Arc<K>> = BTreeMap::new();
    for k in items {
        fresh.insert(ObjectRef::of(&k), Arc::new(k));
    }
    let old = std::mem::take(&mut s.objects);
    for ix in s.indexes.values_mut() {
        ix.entries.clear();
    }
    for (key, k) in &fresh {
        s.index_add(key, k);
    }
    let mut changes = Vec::new();
    for (key, new) in &fresh {
        match old.get(key) {
            None => changes.push(Change::Added(new.clone())),
            Some(o) if o.meta().resource_version != new.meta().resource_version => {
                changes.push(Change::Updated {
                    old: o.clone(),
                    new: new.clone(),
                })
            }
            Some(_) => {}
        }
    }
    for (key, o) in &old {
        if !fresh.contains_key(key) {
            changes.push(Change::Deleted(o.clone()));
        }
    }
    s.objects = fresh;
    if !rv.is_empty() {
        s.resource_version = rv.to_string();
    }
    for c in changes {
        // No subscriber is not an error.
        let _ = shared.events.send(c);
    }
    drop(s);
    shared.synced.send_replace(true);
}

/// Apply one watch event.
fn apply<K: Resource>(shared: &Shared<K>, ev: Event<K>) {
    let mut s = shared.state.write().unwrap_or_else(|e| e.into_inner());
    let change = match ev {
        Event::Added(k) | Event::Modified(k) => {
            let rv = k.meta().resource_version.clone();
            let key = ObjectRef::of(&k);
            let new = Arc::new(k);
            let old = s.objects.insert(key.clone(), new.clone());
            if let Some(o) = &old {
                s.index_remove(&key, o);
            }
            s.index_add(&key, &new);
            s.resource_version = rv;
            match old {
                Some(old) => Change::Updated { old, new },
                None => Change::Added(new),
            }
        }
        Event::Deleted(k) => {
            let rv = k.meta().resource_version.clone();
            let key = ObjectRef::of(&k);
            s.resource_version = rv;
            match s.objects.remove(&key) {
                Some(old) => {
                    s.index_remove(&key, &old);
                    Change::Deleted(Arc::new(k))
                }
                None => return,
            }
        }
        Event::Bookmark(rv) => {
            if !rv.is_empty() {
                s.resource_version = rv;
            }
            return;
        }
    };
    let _ = shared.events.send(change);
}

async fn run<K: Resource>(api: Api<K>, params: ListParams, shared: std::sync::Weak<Shared<K>>) {
    // Bookmarks every half second keep the cache's revision current while
    // nothing changes (see wait_for_revision).
    watch_loop(&api, &params, Duration::from_millis(500), |step| {
        let Some(sh) = shared.upgrade() else {
            return false;
        };
        match step {
            Step::Listed {
                items,
                resource_version,
            } => replace(&sh, items, &resource_version),
            Step::Event(ev) => apply(&sh, ev),
        }
        true
    })
    .await
}
