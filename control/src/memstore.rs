//! An in-memory [`Store`] with the replicated store's semantics: one
//! revision per transaction, conditional writes, request ids applied at most
//! once, fencing by term, gap-free watches from any retained revision, and
//! compaction.
//!
//! For tests of the API server, the controller runtime and the controllers
//! without processes. It can also play a lagging master: with
//! [`MemStore::lag_reads_at`], reads that are not linearizable see an older
//! revision, as a follower that has not caught up would.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::store::{
    Change, Cond, Kv, Op, Page, RequestId, Store, StoreError, Txn, TxnResult, WatchMsg, WatchStream,
};

/// Changes by revision, and the revision they were read at.
type History = Vec<(i64, Vec<Change>)>;

#[derive(Debug, Clone)]
struct Version {
    revision: i64,
    create_revision: i64,
    /// None: deleted at `revision`.
    value: Option<Vec<u8>>,
}

#[derive(Default)]
struct State {
    /// Every key's versions, oldest first.
    keys: BTreeMap<Vec<u8>, Vec<Version>>,
    /// The changes of each revision, for watches.
    history: BTreeMap<i64, Vec<Change>>,
    revision: i64,
    compacted: i64,
    /// Request ids that committed: their revision and main key.
    applied: HashMap<RequestId, (i64, Vec<u8>)>,
    /// The current leadership term (fenced writes must carry it).
    term: u64,
    /// Non-linearizable reads are served at this revision when set.
    lagging_at: Option<i64>,
    /// Fail every call with Unavailable (a master without quorum).
    unavailable: bool,
    /// Watches end, and new ones fail, while this is set (a master that
    /// restarts under its watchers).
    watches_paused: bool,
}

impl State {
    fn at(&self, key: &[u8], rev: i64) -> Option<Kv> {
        let vs = self.keys.get(key)?;
        let v = vs.iter().rev().find(|v| v.revision <= rev)?;
        let value = v.value.clone()?;
        Some(Kv {
            key: key.to_vec(),
            value,
            create_revision: v.create_revision,
            mod_revision: v.revision,
            stale: false,
        })
    }

    fn holds(&self, c: &Cond) -> bool {
        let cur = |k: &[u8]| self.at(k, self.revision);
        match c {
            Cond::Absent(k) => cur(k).is_none(),
            Cond::Present(k) => cur(k).is_some(),
            Cond::ModRevision(k, r) => cur(k).map(|kv| kv.mod_revision) == Some(*r),
        }
    }
}

/// The in-memory store; cheap to clone (clones share the data).
#[derive(Clone)]
pub struct MemStore {
    state: Arc<Mutex<State>>,
    rev_tx: Arc<watch::Sender<i64>>,
    /// Bumped to end every open watch.
    watch_epoch: Arc<watch::Sender<u64>>,
    /// While set, watches deliver nothing new (a master whose watchers lag).
    watches_held: Arc<watch::Sender<bool>>,
    max_value: usize,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store at revision 1 (as etcd and the replicated store start).
    pub fn new() -> Self {
        MemStore {
            state: Arc::new(Mutex::new(State {
                revision: 1,
                ..Default::default()
            })),
            rev_tx: Arc::new(watch::channel(1).0),
            watch_epoch: Arc::new(watch::channel(0).0),
            watches_held: Arc::new(watch::channel(false).0),
            max_value: 1536 * 1024,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set the leadership term fenced writes are checked against.
    pub fn set_term(&self, term: u64) {
        self.lock().term = term;
    }

    /// Serve reads that are not linearizable at `revision` (None: current).
    pub fn lag_reads_at(&self, revision: Option<i64>) {
        self.lock().lagging_at = revision;
    }

    /// Make every call fail with Unavailable (or serve again).
    pub fn set_unavailable(&self, down: bool) {
        self.lock().unavailable = down;
    }

    /// Hold every watch where it is (nothing new is delivered, and its
    /// progress stays) until called with false: watchers, and the watch
    /// caches, lag behind the store's revision.
    pub fn hold_watches(&self, held: bool) {
        self.watches_held.send_replace(held);
    }

    /// End every open watch, and fail new ones until called with false.
    pub fn pause_watches(&self, paused: bool) {
        self.lock().watches_paused = paused;
        if paused {
            self.watch_epoch.send_modify(|e| *e += 1);
        }
    }

    /// Forget history below `revision`.
    pub fn compact(&self, revision: i64) {
        let mut s = self.lock();
        let revision = revision.min(s.revision);
        if revision <= s.compacted {
            return;
        }
        s.compacted = revision;
        s.history = s.history.split_off(&revision);
        for vs in s.keys.values_mut() {
            // Keep the newest version at or below the compaction point (a
            // read there still needs it), and everything after it.
            let keep_from = vs.iter().rposition(|v| v.revision <= revision).unwrap_or(0);
            vs.drain(..keep_from);
        }
        s.keys.retain(|_, vs| {
            !(vs.len() == 1 && vs[0].value.is_none() && vs[0].revision <= revision)
        });
    }

    /// The raw value of a key now (for tests that look at what is stored).
    pub fn get_raw(&self, key: &[u8]) -> Option<Vec<u8>> {
        let s = self.lock();
        s.at(key, s.revision).map(|kv| kv.value)
    }

    /// Every live key with a prefix (for tests).
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        let s = self.lock();
        s.keys
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| s.at(k, s.revision).is_some())
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn apply(&self, t: Txn) -> Result<TxnResult, StoreError> {
        let mut s = self.lock();
        if s.unavailable {
            return Err(StoreError::Unavailable("store unavailable (test)".into()));
        }
        if let Some(fence) = t.fence {
            if fence != s.term {
                return Err(StoreError::Fenced { term: fence });
            }
        }
        if let Some(id) = t.request {
            if let Some((revision, key)) = s.applied.get(&id) {
                return Ok(TxnResult::Replayed {
                    revision: *revision,
                    key: key.clone(),
                });
            }
        }
        if !t.conds.iter().all(|c| s.holds(c)) {
            return Ok(TxnResult::Failed);
        }
        let rev = s.revision + 1;
        let mut changes = Vec::new();
        let mut main = Vec::new();
        for op in t.ops {
            match op {
                Op::Put(key, value) => {
                    if value.len() > self.max_value {
                        return Err(StoreError::TooLarge);
                    }
                    let prev = s.at(&key, rev - 1);
                    let create_revision = prev.as_ref().map_or(rev, |p| p.create_revision);
                    s.keys.entry(key.clone()).or_default().push(Version {
                        revision: rev,
                        create_revision,
                        value: Some(value.clone()),
                    });
                    main = key.clone();
                    changes.push(Change::Put {
                        kv: Kv {
                            key,
                            value,
                            create_revision,
                            mod_revision: rev,
                            stale: false,
                        },
                        prev,
                    });
                }
                Op::Delete(key) => {
                    main = key.clone();
                    if let Some(prev) = s.at(&key, rev - 1) {
                        s.keys.entry(key.clone()).or_default().push(Version {
                            revision: rev,
                            create_revision: 0,
                            value: None,
                        });
                        changes.push(Change::Delete {
                            key,
                            prev: Some(prev),
                        });
                    }
                }
            }
        }
        if changes.is_empty() {
            // A transaction that changes nothing makes no revision (etcd's rule).
            return Ok(TxnResult::Committed(s.revision));
        }
        s.revision = rev;
        s.history.insert(rev, changes);
        if let Some(id) = t.request {
            s.applied.insert(id, (rev, main));
        }
        drop(s);
        self.rev_tx.send_replace(rev);
        Ok(TxnResult::Committed(rev))
    }
}

#[async_trait::async_trait]
impl Store for MemStore {
    async fn range(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        revision: i64,
        linearizable: bool,
    ) -> Result<Page, StoreError> {
        let s = self.lock();
        if s.unavailable {
            return Err(StoreError::Unavailable("store unavailable (test)".into()));
        }
        let current = match s.lagging_at {
            Some(r) if !linearizable => r.min(s.revision),
            _ => s.revision,
        };
        let rev = if revision > 0 { revision } else { current };
        if rev < s.compacted {
            return Err(StoreError::Compacted {
                compact_revision: s.compacted,
            });
        }
        let mut kvs = Vec::new();
        let mut more = false;
        let all = end == [0];
        for k in s.keys.range(start.to_vec()..).map(|(k, _)| k) {
            if !all && k.as_slice() >= end {
                break;
            }
            if let Some(kv) = s.at(k, rev) {
                if limit > 0 && kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(kv);
            }
        }
        Ok(Page {
            kvs,
            more,
            revision: rev,
        })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        self.apply(txn)
    }

    fn watch(&self, start: &[u8], end: &[u8], from: i64) -> WatchStream {
        let (start, end) = (start.to_vec(), end.to_vec());
        let current = self.lock().revision;
        let next = Arc::new(AtomicI64::new(if from > 0 { from } else { current + 1 }));
        let (tx, rx) = mpsc::channel(64);
        let (state, mut revs, progress) =
            (self.state.clone(), self.rev_tx.subscribe(), next.clone());
        let mut epoch = self.watch_epoch.subscribe();
        let mut held = self.watches_held.subscribe();
        let paused = self.lock().watches_paused;
        tokio::spawn(async move {
            if paused {
                let _ = tx
                    .send(WatchMsg::Failed("watches are paused (test)".into()))
                    .await;
                return;
            }
            let in_range = |k: &[u8]| k >= start.as_slice() && (end == [0] || k < end.as_slice());
            loop {
                if held.wait_for(|h| !*h).await.is_err() {
                    return;
                }
                // Mark the revision seen before reading, so that a write
                // after the read wakes the wait below.
                revs.borrow_and_update();
                let from = progress.load(Ordering::Acquire);
                let batch: Result<(History, i64), i64> = {
                    let s = state.lock().unwrap_or_else(|e| e.into_inner());
                    if from < s.compacted {
                        Err(s.compacted)
                    } else {
                        Ok((
                            s.history
                                .range(from..)
                                .map(|(r, cs)| (*r, cs.clone()))
                                .collect(),
                            s.revision,
                        ))
                    }
                };
                let (batch, read_at) = match batch {
                    Ok(b) => b,
                    Err(compact_revision) => {
                        let _ = tx.send(WatchMsg::Compacted { compact_revision }).await;
                        return;
                    }
                };
                for (revision, changes) in batch {
                    let changes: Vec<Change> = changes
                        .into_iter()
                        .filter(|c| match c {
                            Change::Put { kv, .. } => in_range(&kv.key),
                            Change::Delete { key, .. } => in_range(key),
                        })
                        .collect();
                    if !changes.is_empty()
                        && tx
                            .send(WatchMsg::Changes { revision, changes })
                            .await
                            .is_err()
                    {
                        return;
                    }
                    progress.store(revision + 1, Ordering::Release);
                }
                // Everything up to the revision read is queued.
                progress.fetch_max(read_at + 1, Ordering::AcqRel);
                tokio::select! {
                    r = revs.changed() => if r.is_err() { return },
                    _ = tx.closed() => return,
                    // Ended from outside: the channel closes.
                    _ = epoch.changed() => return,
                }
            }
        });
        WatchStream {
            start_revision: current,
            progress: next,
            rx,
        }
    }

    fn revision(&self) -> i64 {
        self.lock().revision
    }

    async fn current_revision(&self) -> Result<i64, StoreError> {
        let s = self.lock();
        if s.unavailable {
            return Err(StoreError::Unavailable("store unavailable (test)".into()));
        }
        Ok(s.revision)
    }

    fn compact_revision(&self) -> i64 {
        self.lock().compacted
    }

    fn max_value_bytes(&self) -> usize {
        self.max_value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Op {
        Op::Put(k.as_bytes().to_vec(), v.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn revisions_conditions_replays_and_fences() {
        let s = MemStore::new();
        let r = s.txn(Txn::new(vec![], vec![put("a", "1")])).await.unwrap();
        assert_eq!(r, TxnResult::Committed(2));
        let failed = s
            .txn(Txn::new(
                vec![Cond::Absent(b"a".to_vec())],
                vec![put("a", "2")],
            ))
            .await
            .unwrap();
        assert_eq!(failed, TxnResult::Failed);
        let id = RequestId(1, 2);
        let mut t = Txn::new(
            vec![Cond::ModRevision(b"a".to_vec(), 2)],
            vec![put("a", "3")],
        );
        t.request = Some(id);
        assert_eq!(s.txn(t.clone()).await.unwrap(), TxnResult::Committed(3));
        assert_eq!(
            s.txn(t).await.unwrap(),
            TxnResult::Replayed {
                revision: 3,
                key: b"a".to_vec()
            }
        );
        s.set_term(7);
        let mut f = Txn::new(vec![], vec![put("b", "1")]);
        f.fence = Some(6);
        assert!(matches!(
            s.txn(f.clone()).await,
            Err(StoreError::Fenced { term: 6 })
        ));
        f.fence = Some(7);
        assert_eq!(s.txn(f).await.unwrap(), TxnResult::Committed(4));
    }

    #[tokio::test]
    async fn watches_are_gap_free_and_end_gone_when_compacted() {
        let s = MemStore::new();
        for i in 0..5 {
            s.txn(Txn::new(vec![], vec![put("k", &i.to_string())]))
                .await
                .unwrap();
        }
        let mut w = s.watch(b"k", b"l", 3);
        for rev in 3..=6 {
            match w.rx.recv().await {
                Some(WatchMsg::Changes { revision, .. }) => assert_eq!(revision, rev),
                other => panic!("{other:?}"),
            }
        }
        s.txn(Txn::new(vec![], vec![Op::Delete(b"k".to_vec())]))
            .await
            .unwrap();
        match w.rx.recv().await {
            Some(WatchMsg::Changes {
                revision: 7,
                changes,
            }) => {
                assert!(matches!(&changes[0], Change::Delete { prev: Some(_), .. }))
            }
            other => panic!("{other:?}"),
        }
        s.compact(6);
        let mut old = s.watch(b"k", b"l", 2);
        assert!(matches!(
            old.rx.recv().await,
            Some(WatchMsg::Compacted {
                compact_revision: 6
            })
        ));
        let p = s.range(b"k", b"l", 0, 5, true).await;
        assert!(matches!(p, Err(StoreError::Compacted { .. })));
    }

    #[tokio::test]
    async fn a_lagging_copy_serves_old_reads_unless_linearizable() {
        let s = MemStore::new();
        s.txn(Txn::new(vec![], vec![put("a", "1")])).await.unwrap();
        s.lag_reads_at(Some(1));
        assert!(s
            .range(b"a", b"b", 0, 0, false)
            .await
            .unwrap()
            .kvs
            .is_empty());
        assert_eq!(s.range(b"a", b"b", 0, 0, true).await.unwrap().kvs.len(), 1);
    }
}
