//! The fan-out of applied events to watchers on this master.
//!
//! Every applied revision is published once, with the others of its apply
//! (one message, and one wake of each watcher, per apply rather than per
//! revision); a watcher that falls behind (or sees the state replaced by a
//! snapshot) is told to resynchronise from the history in the store, so
//! that no watcher ever skips a revision.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};

use crate::kv::{in_range, range_meets, Event, KvError};
use crate::mvcc::RangeError;
use crate::node::Master;

#[derive(Debug, Clone)]
pub(crate) enum HubMsg {
    /// The revisions of one apply, oldest first, each with its events in
    /// order (none without events).
    Revisions(Arc<Vec<(i64, Published)>>),
    /// The state machine was replaced by a snapshot: re-read history.
    Reset,
}

/// What a revision hands the watchers.
#[derive(Debug, Clone)]
pub(crate) enum Published {
    /// Its events, in order.
    Events(Vec<Event>),
    /// Too many events to hand out (a delete of very many keys): the
    /// watchers whose range holds a key from `first` to `last` read them
    /// from history.
    InHistory { first: Vec<u8>, last: Vec<u8> },
}

pub(crate) struct WatchHub {
    tx: broadcast::Sender<HubMsg>,
}

impl Default for WatchHub {
    fn default() -> Self {
        Self::new(8192)
    }
}

impl WatchHub {
    pub fn new(capacity: usize) -> Self {
        WatchHub {
            tx: broadcast::channel(capacity).0,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubMsg> {
        self.tx.subscribe()
    }

    /// Publish the revisions of one apply, oldest first. Every watcher wakes
    /// once for them all: a wake per revision cost the leader about a tenth
    /// of its CPU under a load of small puts, for the object API's watch
    /// caches, whose ranges hold none of the keys (bench/RESULTS.md).
    pub fn publish(&self, mut revisions: Vec<(i64, Published)>) {
        revisions.retain(|(_, p)| !matches!(p, Published::Events(e) if e.is_empty()));
        if !revisions.is_empty() {
            // No receivers is not an error: nobody watches.
            let _ = self.tx.send(HubMsg::Revisions(Arc::new(revisions)));
        }
    }

    pub fn reset(&self) {
        let _ = self.tx.send(HubMsg::Reset);
    }
}

/// What a [`follow`] stream delivers.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// The events of one revision in the followed range, in order (each
    /// with its previous value).
    Events { revision: i64, events: Vec<Event> },
    /// The requested start is compacted away; the stream ends.
    Compacted { compact_revision: i64 },
    /// The history could not be read; the stream ends.
    Failed(String),
}

/// A stream of the events in `[key, end)` (etcd range rules), from revision
/// `from` on (0: from the next revision), ordered and gap-free.
pub struct Follower<T = WatchItem> {
    /// The store's revision when the stream was set up: with `from == 0`,
    /// the first event delivered is after it.
    pub start_revision: i64,
    /// Every revision below this one is in the channel or was received (or
    /// had nothing in the range): once a reader that loaded this value finds
    /// the channel empty, it has seen everything below it.
    pub next: Arc<AtomicI64>,
    pub rx: mpsc::Receiver<T>,
}

/// Events read from history per batch.
const HISTORY_BATCH: usize = 1000;

/// Follow a key range: replay history from `from`, then deliver live
/// revisions, falling back to history whenever the live fan-out lags or the
/// state is replaced by a snapshot. The task ends when the receiver is
/// dropped.
pub fn follow(m: &Master, key: Vec<u8>, end: Vec<u8>, from: i64, buffer: usize) -> Follower {
    follow_map(m, key, end, from, buffer, |item| item)
}

/// [`follow`], delivering each item as `map` turns it (so that a caller
/// with types of its own needs no second channel).
pub fn follow_map<T: Send + 'static>(
    m: &Master,
    key: Vec<u8>,
    end: Vec<u8>,
    from: i64,
    buffer: usize,
    map: fn(WatchItem) -> T,
) -> Follower<T> {
    // Subscribe before reading the revision, so that nothing falls between.
    let sub = m.hub.subscribe();
    let cur = m.store.revision();
    let next = Arc::new(AtomicI64::new(if from > 0 { from } else { cur + 1 }));
    let (tx, rx) = mpsc::channel(buffer.max(1));
    let spec = Range { key, end };
    let sink = Sink { tx, map };
    tokio::spawn(run(m.clone(), spec, sub, next.clone(), sink));
    Follower {
        start_revision: cur,
        next,
        rx,
    }
}

struct Range {
    key: Vec<u8>,
    end: Vec<u8>,
}

struct Sink<T> {
    tx: mpsc::Sender<T>,
    map: fn(WatchItem) -> T,
}

impl<T> Sink<T> {
    async fn put(&self, item: WatchItem) -> bool {
        self.tx.send((self.map)(item)).await.is_ok()
    }
}

async fn send<T>(tx: &Sink<T>, spec: &Range, revision: i64, events: &[Event]) -> bool {
    let evs: Vec<Event> = events
        .iter()
        .filter(|e| in_range(&e.kv.key, &spec.key, &spec.end))
        .cloned()
        .collect();
    if evs.is_empty() {
        return true;
    }
    tx.put(WatchItem::Events {
        revision,
        events: evs,
    })
    .await
}

/// Send history from `next` up to the current revision. Returns false when
/// the stream ended.
async fn catch_up<T>(m: &Master, tx: &Sink<T>, spec: &Range, next: &AtomicI64) -> bool {
    loop {
        let from = next.load(Ordering::Acquire);
        if from > m.store.revision() {
            return true;
        }
        let store = m.store.clone();
        let (k, e) = (spec.key.clone(), spec.end.clone());
        let res =
            tokio::task::spawn_blocking(move || store.history(from, &k, &e, HISTORY_BATCH)).await;
        match res {
            Ok(Ok((batches, after))) => {
                for (rev, evs) in &batches {
                    if !send(tx, spec, *rev, evs).await {
                        return false;
                    }
                }
                if after <= from {
                    return true;
                }
                next.store(after, Ordering::Release);
            }
            Ok(Err(RangeError::Kv(KvError::Compacted { compact_revision }))) => {
                let _ = tx.put(WatchItem::Compacted { compact_revision }).await;
                return false;
            }
            Ok(Err(e)) => {
                let _ = tx
                    .put(WatchItem::Failed(format!("reading watch history: {e}")))
                    .await;
                return false;
            }
            Err(e) => {
                let _ = tx.put(WatchItem::Failed(e.to_string())).await;
                return false;
            }
        }
    }
}

/// Deliver the revisions of one apply that `next` has not reached, filling
/// a gap before them from history. Returns false when the stream ended.
async fn deliver<T>(
    m: &Master,
    tx: &Sink<T>,
    spec: &Range,
    next: &AtomicI64,
    revisions: &[(i64, Published)],
) -> bool {
    for (revision, published) in revisions {
        let revision = *revision;
        let want = next.load(Ordering::Acquire);
        if revision < want {
            continue;
        }
        if revision > want {
            // Something was not seen live: fill the gap from history.
            if !catch_up(m, tx, spec, next).await {
                return false;
            }
            if revision < next.load(Ordering::Acquire) {
                continue;
            }
        }
        match published {
            Published::Events(events) => {
                if !send(tx, spec, revision, events).await {
                    return false;
                }
                next.store(revision + 1, Ordering::Release);
            }
            Published::InHistory { first, last } => {
                if range_meets(first, last, &spec.key, &spec.end) {
                    // Read from history, with this revision (and any after
                    // it that is applied by now).
                    if !catch_up(m, tx, spec, next).await {
                        return false;
                    }
                } else {
                    next.store(revision + 1, Ordering::Release);
                }
            }
        }
    }
    true
}

async fn run<T>(
    m: Master,
    spec: Range,
    mut sub: broadcast::Receiver<HubMsg>,
    next: Arc<AtomicI64>,
    tx: Sink<T>,
) {
    let compacted = m.store.compact_revision();
    if next.load(Ordering::Acquire) < compacted {
        let _ = tx
            .put(WatchItem::Compacted {
                compact_revision: compacted,
            })
            .await;
        return;
    }
    if !catch_up(&m, &tx, &spec, &next).await {
        return;
    }
    loop {
        tokio::select! {
            msg = sub.recv() => match msg {
                Ok(HubMsg::Revisions(revisions)) => {
                    if !deliver(&m, &tx, &spec, &next, &revisions).await {
                        return;
                    }
                }
                Ok(HubMsg::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    sub = m.hub.subscribe();
                    if !catch_up(&m, &tx, &spec, &next).await { return }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tx.tx.closed() => return,
        }
    }
}
