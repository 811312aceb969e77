//! The multi-version key-value store with etcd's revision semantics, on RocksDB.
//!
//! Every write transaction gets the next revision; each key records its
//! create revision, mod revision and version; a delete leaves a tombstone so
//! that reads at an older revision still see the key. Compaction forgets the
//! versions no read can ask for any more. Applying commands is deterministic:
//! every master produces the same revisions and the same events.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::engine::{self, Db, Record, CF_KV, CF_LEASE, CF_LEASE_KEYS, CF_REV, CF_SM_META};
use crate::kv::*;

mod apply;
mod compact;
mod index;
mod once;
mod txn;

use crate::types::{
    Command, CommandResult, Entry, LogId, MemberAddrs, NodeId, Outcome, StoredMembership,
};
pub use once::{OnceLimits, OnceWindow};

pub const META_APPLIED: &[u8] = b"applied";
pub const META_MEMBERSHIP: &[u8] = b"membership";
pub const META_REVISION: &[u8] = b"revision";
pub const META_COMPACT: &[u8] = b"compact_revision";
pub const META_CLUSTER_ID: &[u8] = b"cluster_id";
pub const META_MEMBER_PREFIX: &[u8] = b"member/";
/// `(log index, last sub-command written)` while a batched entry is half applied.
pub const META_BATCH_PROGRESS: &[u8] = b"batch_progress";
fn ser<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serialize(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt state-machine data: {0}")]
    Corrupt(String),
    #[error(
        "the data was written in format {found}, which this master does not know \
         (it reads formats 1 to {known}): it needs a newer Flotilla"
    )]
    UnknownFormat { found: u32, known: u32 },
    #[error("the thread reading the store failed: {0}")]
    ReadThread(String),
    #[error("the snapshot was no longer wanted: nothing holds it any more")]
    Abandoned,
}

/// What applying one entry changed, beyond its result: the watch events and
/// the lease and compaction changes other parts of the master react to.
#[derive(Debug, Default)]
pub struct Effects {
    pub revision: i64,
    pub events: Vec<Event>,
    /// Events of this command not in `events`: a command that changes
    /// more keys than [`txn::EVENTS_CARRIED_MAX`] hands none to the
    /// watchers, which read its revision from history instead.
    pub in_history: Option<InHistory>,
    pub leases_granted: Vec<(i64, i64)>,
    pub leases_revoked: Vec<i64>,
    pub compacted_to: Option<i64>,
    pub members_changed: bool,
    /// The window of remembered request ids as this command leaves it.
    /// `apply` starts every command with the window of the commands before
    /// it (which may not be written yet); `None` only outside `apply`.
    pub once: Option<OnceWindow>,
    /// The cluster id this command set.
    pub cluster_id: Option<u64>,
    /// The `once/` keys of the request ids this command remembered or forgot.
    pub(crate) once_keys: Vec<Vec<u8>>,
    /// What this command changed of the key index, in order (taken in
    /// once its write is in the database).
    pub(crate) key_changes: Vec<index::KeyChange>,
}

/// The events of a command left in history (see [`Effects::in_history`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InHistory {
    /// How many.
    pub count: usize,
    /// The least and the greatest of their keys.
    pub first: Vec<u8>,
    pub last: Vec<u8>,
}

impl InHistory {
    /// Count one more event, on `key`.
    pub(crate) fn add(this: &mut Option<InHistory>, key: &[u8]) {
        match this {
            None => {
                *this = Some(InHistory {
                    count: 1,
                    first: key.to_vec(),
                    last: key.to_vec(),
                })
            }
            Some(h) => h.merge(InHistory {
                count: 1,
                first: key.to_vec(),
                last: key.to_vec(),
            }),
        }
    }

    /// Count `other`'s events too.
    pub(crate) fn merge(&mut self, other: InHistory) {
        self.count += other.count;
        if other.first < self.first {
            self.first = other.first;
        }
        if other.last > self.last {
            self.last = other.last;
        }
    }
}

/// See [`KvStore::after_chunk`].
#[cfg(test)]
type ChunkHook = Box<dyn FnMut() -> Result<(), StoreError> + Send>;

pub struct KvStore {
    db: Db,
    revision: AtomicI64,
    compact_revision: AtomicI64,
    cluster_id: AtomicU64,
    /// The window of remembered [`Command::Once`] ids, as committed.
    once: Mutex<OnceWindow>,
    once_limits: Mutex<OnceLimits>,
    /// Revisions whose every event was a put, with the versions they
    /// superseded, which physical compaction need not look up
    /// ([`compact::Superseded`]).
    pub(crate) superseded: compact::Superseded,
    /// Every live key's newest revision, for the applies' reads.
    index: index::KeyIndex,
    /// The member directory, cached so that no service reads RocksDB for it.
    directory: std::sync::RwLock<Vec<(NodeId, MemberAddrs)>>,
    /// Held by physical compaction and by snapshot installation, which must not overlap.
    pub(crate) maintenance: Mutex<()>,
    /// Held shared by every read from outside the state machine, and
    /// exclusively by a snapshot install, so that no read sees a state
    /// half replaced (one that never existed). Applies need not take it:
    /// they run one after the other with installs, on Raft's state-machine
    /// task. Taken once per call: an inner read uses the `*_raw` functions.
    readers: std::sync::RwLock<()>,
    /// Times every state-machine commit, once set
    /// (`etcd_disk_backend_commit_duration_seconds`).
    commit_seconds: std::sync::OnceLock<flotilla_telemetry::prometheus::Histogram>,
    /// A delete at the end of its transaction writes its batch out each
    /// time it holds this many bytes (see [`txn::WRITE_CHUNK_BYTES`]).
    write_chunk_bytes: std::sync::atomic::AtomicUsize,
    /// The most events a command hands to the watchers (see
    /// [`txn::EVENTS_CARRIED_MAX`]).
    events_carried_max: std::sync::atomic::AtomicUsize,
    /// Held by every apply, and by whoever takes a view of the database
    /// outside the state machine's task (a backup), so that the view holds
    /// no entry in part (a large delete is written in several chunks).
    applying: Mutex<()>,
    /// Test-only hook, run after each chunk of a large delete is written;
    /// an error stops the apply there, as a crash would.
    #[cfg(test)]
    after_chunk: Mutex<Option<ChunkHook>>,
}

fn meta_i64(db: &Db, key: &[u8]) -> Result<i64, StoreError> {
    match db.get_cf(engine::cf(db, CF_SM_META), key)? {
        Some(v) => {
            Ok(i64::from_be_bytes(v.as_slice().try_into().map_err(
                |_| StoreError::Corrupt(format!("meta {:?}", key)),
            )?))
        }
        None => Ok(0),
    }
}

/// The id of the last log entry applied to the state machine in `db`.
pub fn applied_log_id(db: &Db) -> Result<Option<LogId>, StoreError> {
    match db.get_cf(engine::cf(db, CF_SM_META), META_APPLIED)? {
        Some(v) => bincode::deserialize(&v).map_err(|e| StoreError::Corrupt(e.to_string())),
        None => Ok(None),
    }
}

impl KvStore {
    /// Time every commit of the state machine into `h` from now on.
    pub fn observe_commits(&self, h: flotilla_telemetry::prometheus::Histogram) {
        let _ = self.commit_seconds.set(h);
    }

    pub fn open(db: Db) -> Result<Self, StoreError> {
        let s = KvStore {
            revision: AtomicI64::new(0),
            compact_revision: AtomicI64::new(0),
            cluster_id: AtomicU64::new(0),
            once: Mutex::new(OnceWindow::default()),
            once_limits: Mutex::new(OnceLimits::default()),
            superseded: compact::Superseded::default(),
            index: index::KeyIndex::default(),
            directory: std::sync::RwLock::new(Vec::new()),
            maintenance: Mutex::new(()),
            readers: std::sync::RwLock::new(()),
            commit_seconds: std::sync::OnceLock::new(),
            write_chunk_bytes: std::sync::atomic::AtomicUsize::new(txn::WRITE_CHUNK_BYTES),
            events_carried_max: std::sync::atomic::AtomicUsize::new(txn::EVENTS_CARRIED_MAX),
            applying: Mutex::new(()),
            #[cfg(test)]
            after_chunk: Mutex::new(None),
            db,
        };
        s.reload()?;
        Ok(s)
    }

    /// Re-read the in-memory copies of the metadata (after a snapshot install).
    pub fn reload(&self) -> Result<(), StoreError> {
        self.revision
            .store(meta_i64(&self.db, META_REVISION)?.max(1), Ordering::SeqCst);
        self.compact_revision
            .store(meta_i64(&self.db, META_COMPACT)?, Ordering::SeqCst);
        self.cluster_id.store(
            meta_i64(&self.db, META_CLUSTER_ID)? as u64,
            Ordering::SeqCst,
        );
        let window = self.load_once_window()?;
        *self.once.lock().unwrap_or_else(|p| p.into_inner()) = window;
        self.superseded.clear();
        self.index.rebuild(&self.db, self.revision())?;
        let dir = self.members_from_db()?;
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = dir;
        Ok(())
    }

    /// Masters' registered addresses (cached copy of the replicated directory).
    pub fn members(&self) -> Vec<(NodeId, MemberAddrs)> {
        self.directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The revision of the last write applied on this master. As in etcd, an
    /// empty store is at revision 1 and the first write gets revision 2.
    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::SeqCst)
    }

    /// How many keys are live at the store's revision (from the key index).
    pub fn live_keys(&self) -> usize {
        self.index.len()
    }

    /// The key index's every entry (tests: compared with the store's).
    #[cfg(test)]
    pub(crate) fn indexed_keys(&self) -> std::collections::BTreeMap<Vec<u8>, i64> {
        self.index.entries()
    }

    /// Set one entry of the key index (tests: a wrong index).
    #[cfg(test)]
    pub(crate) fn set_indexed(&self, key: &[u8], rev: Option<i64>) {
        self.index.apply([(key.to_vec(), rev)]);
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision.load(Ordering::SeqCst)
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::SeqCst)
    }

    pub fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        let applied = applied_log_id(&self.db)?;
        let membership = match self.db.get_cf(meta, META_MEMBERSHIP)? {
            Some(v) => bincode::deserialize(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn members_from_db(&self) -> Result<Vec<(NodeId, MemberAddrs)>, StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        let mut it = self.db.raw_iterator_cf(meta);
        it.seek(META_MEMBER_PREFIX);
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !k.starts_with(META_MEMBER_PREFIX) {
                break;
            }
            let id = k[META_MEMBER_PREFIX.len()..]
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("member key".into()))?;
            let addrs: MemberAddrs =
                bincode::deserialize(v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push((id, addrs));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    // ---------------------------------------------------------------- reads

    fn read_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.readers.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_chunk_bytes(&self) -> usize {
        self.write_chunk_bytes.load(Ordering::Relaxed)
    }

    fn events_carried_max(&self) -> usize {
        self.events_carried_max.load(Ordering::Relaxed)
    }

    /// After a chunk of a large delete is written (see
    /// [`txn::WRITE_CHUNK_BYTES`]): in tests, the hook may stop the apply.
    fn chunk_written(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        if let Some(f) = self
            .after_chunk
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            return f();
        }
        Ok(())
    }

    /// Run `f` after each chunk of a large delete is written; an error it
    /// returns stops the apply there (tests: a crash).
    #[cfg(test)]
    pub(crate) fn after_chunk(&self, f: impl FnMut() -> Result<(), StoreError> + Send + 'static) {
        *self.after_chunk.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// Held by every apply, and by a reader outside the state machine's
    /// task that must see no entry in part: a large delete is written in
    /// several chunks, and a snapshot install replaces the state in pieces.
    pub(crate) fn between_applies(&self) -> std::sync::MutexGuard<'_, ()> {
        self.applying.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A point-in-time view of the database between two applies, for a
    /// reader outside the state machine's task (a backup): an entry is in
    /// it whole or not at all. Waits for the apply under way.
    pub(crate) fn view_between_applies(&self) -> rocksdb::SnapshotWithThreadMode<'_, rocksdb::DB> {
        let _between = self.between_applies();
        self.db.snapshot()
    }

    /// Write large deletes out in chunks of `bytes` (tests: small ones).
    #[cfg(test)]
    pub(crate) fn set_write_chunk_bytes(&self, bytes: usize) {
        self.write_chunk_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Hand at most `n` events of a command to the watchers (tests: few).
    #[cfg(test)]
    pub(crate) fn set_events_carried_max(&self, n: usize) {
        self.events_carried_max.store(n, Ordering::Relaxed);
    }

    /// Keep every reader out while the state is replaced (a snapshot install).
    pub(crate) fn block_readers(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.readers.write().unwrap_or_else(|p| p.into_inner())
    }

    fn check_revision(&self, rev: i64) -> Result<i64, KvError> {
        let cur = self.revision();
        if rev <= 0 {
            return Ok(cur);
        }
        if rev > cur {
            return Err(KvError::FutureRevision);
        }
        let compacted = self.compact_revision();
        if rev < compacted {
            return Err(KvError::Compacted {
                compact_revision: compacted,
            });
        }
        Ok(rev)
    }

    /// The newest version of `key` at or below `rev`, tombstones excluded.
    #[cfg(test)]
    pub fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, StoreError> {
        let _r = self.read_guard();
        self.get_at_raw(key, rev)
    }

    fn get_at_raw(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, StoreError> {
        let kvcf = engine::cf(&self.db, CF_KV);
        let mut it = self
            .db
            .raw_iterator_cf_opt(kvcf, engine::versions_of_one_key());
        let target = engine::mvcc_key(key, rev);
        it.seek(&target);
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            // A version of this key, not the next key's (no decoding).
            if let Some(mrev) = engine::mvcc_rev_of(k, &target) {
                let rec =
                    Record::decode(v).ok_or_else(|| StoreError::Corrupt("kv record".into()))?;
                if rec.tombstone {
                    return Ok(None);
                }
                return Ok(Some(to_kv(key.to_vec(), mrev, rec)));
            }
        }
        it.status()?;
        Ok(None)
    }

    /// The newest version of `key` as the state machine's applies see it,
    /// tombstones excluded: through the key index (see [`index`]), not a
    /// seek. Only for the applies, on the state at the store's revision
    /// plus the commands applied but not yet written, none of which wrote
    /// `key` (see `apply::Group::admits`).
    fn latest_indexed(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        let Some(rev) = self.index.get(key) else {
            return Ok(None);
        };
        let raw = self
            .db
            .get_pinned_cf(engine::cf(&self.db, CF_KV), engine::mvcc_key(key, rev))?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the key index names revision {rev} of a key the store does not hold"
                ))
            })?;
        let rec = Record::decode(&raw).ok_or_else(|| StoreError::Corrupt("kv record".into()))?;
        if rec.tombstone {
            return Err(StoreError::Corrupt(format!(
                "the key index names revision {rev} of a key, a tombstone in the store"
            )));
        }
        Ok(Some(to_kv(key.to_vec(), rev, rec)))
    }

    #[cfg(test)]
    pub fn get_latest(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.get_at(key, i64::MAX)
    }

    /// Live keys in `[key, end)` at `rev`, in key order. With `limit` > 0 at
    /// most that many are returned, but all are counted. The first `values`
    /// returned carry their values, the rest only their keys and metadata.
    fn scan(
        &self,
        key: &[u8],
        end: &[u8],
        rev: i64,
        limit: usize,
        values: usize,
        mut keep: impl FnMut(&KeyValue) -> bool,
    ) -> Result<(Vec<KeyValue>, i64), StoreError> {
        if one_key(key, end) {
            let kv = self.get_at_raw(key, rev)?;
            let mut out = Vec::new();
            let mut count = 0;
            if let Some(mut kv) = kv {
                count = 1;
                if keep(&kv) {
                    if values == 0 {
                        kv.value.clear();
                    }
                    out.push(kv);
                }
            }
            return Ok((out, count));
        }
        let kvcf = engine::cf(&self.db, CF_KV);
        let mut it = self.db.raw_iterator_cf_opt(kvcf, engine::across_keys());
        let unbounded = end == [0];
        it.seek(engine::encoded_key(key));
        let mut out = Vec::new();
        let mut count = 0i64;
        let mut decided: Option<Vec<u8>> = None;
        let mut skipped = 0u32;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (ukey, mrev) =
                engine::decode_mvcc_key(k).ok_or_else(|| StoreError::Corrupt("kv key".into()))?;
            if !unbounded && ukey.as_slice() >= end {
                break;
            }
            if decided.as_deref() == Some(ukey.as_slice()) {
                engine::past_older_version(&mut it, &mut skipped, || engine::encoded_key(&ukey));
                continue;
            }
            if mrev > rev {
                it.next();
                continue;
            }
            skipped = 0;
            let rec = if out.len() < values {
                Record::decode(v)
            } else {
                Record::decode_meta(v)
            }
            .ok_or_else(|| StoreError::Corrupt("kv record".into()))?;
            if !rec.tombstone {
                count += 1;
                let kv = to_kv(ukey.clone(), mrev, rec);
                if (limit == 0 || out.len() < limit) && keep(&kv) {
                    out.push(kv);
                }
            }
            decided = Some(ukey);
            it.next();
        }
        it.status()?;
        Ok((out, count))
    }

    /// A range read as etcd serves it, at the request's revision.
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, RangeError> {
        let _r = self.read_guard();
        self.range_raw(r)
    }

    /// [`Store::range`] on the caller's thread, if it is a read of one key
    /// (a single seek, which costs less than handing it to another thread)
    /// and no reader is kept out (a snapshot install keeps them out for as
    /// long as it takes, and an async caller must not wait for that).
    /// `None`: call [`Store::range`] on a blocking thread instead.
    pub fn range_if_point(&self, r: &RangeRequest) -> Option<Result<RangeResponse, RangeError>> {
        if !one_key(&r.key, &r.range_end) {
            return None;
        }
        let _r = match self.readers.try_read() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(self.range_raw(r))
    }

    fn range_raw(&self, r: &RangeRequest) -> Result<RangeResponse, RangeError> {
        let rev = self.check_revision(r.revision)?;
        let natural = matches!(
            (r.sort_order, r.sort_target),
            (SortOrder::None | SortOrder::Ascend, SortTarget::Key)
        );
        let filter = |kv: &KeyValue| passes_filters(r, kv);
        if natural {
            // Fetch one beyond the limit to learn whether there are more.
            let want = if r.limit > 0 { r.limit as usize + 1 } else { 0 };
            // Key order already: finish_range only trims.
            let values = if r.keys_only { 0 } else { usize::MAX };
            let (kvs, count) = self.scan(&r.key, &r.range_end, rev, want, values, filter)?;
            return Ok(finish_range(r, kvs, count));
        }
        let (kvs, count) = self.scan(&r.key, &r.range_end, rev, 0, usize::MAX, filter)?;
        Ok(finish_range(r, kvs, count))
    }

    /// Events in `[from, ..]` on keys in `[key, end)`, grouped by revision, at
    /// most about `max_events` of them. Returns the events and the next
    /// revision to ask for.
    pub fn history(
        &self,
        from: i64,
        key: &[u8],
        end: &[u8],
        max_events: usize,
    ) -> Result<(History, i64), RangeError> {
        let _r = self.read_guard();
        let compacted = self.compact_revision();
        if from < compacted {
            return Err(KvError::Compacted {
                compact_revision: compacted,
            }
            .into());
        }
        // Only revisions readers may see: a large delete writes its events
        // in several chunks before its revision is published.
        let cur = self.revision();
        let revcf = engine::cf(&self.db, CF_REV);
        let mut it = self.db.raw_iterator_cf(revcf);
        it.seek(engine::rev_key(from, 0));
        let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
        let mut n = 0usize;
        let mut next = from;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (rev, _sub) =
                engine::decode_rev_key(k).ok_or_else(|| StoreError::Corrupt("rev key".into()))?;
            if rev > cur || (n >= max_events && rev != next - 1) {
                break;
            }
            next = rev + 1;
            let (kind, ukey) = v
                .split_first()
                .ok_or_else(|| StoreError::Corrupt("rev value".into()))?;
            if !in_range(ukey, key, end) {
                it.next();
                continue;
            }
            let ev = self.event_at(rev, *kind, ukey)?;
            match out.last_mut() {
                Some((r, evs)) if *r == rev => evs.push(ev),
                _ => out.push((rev, vec![ev])),
            }
            n += 1;
            it.next();
        }
        it.status().map_err(StoreError::from)?;
        Ok((out, next.max(from)))
    }

    /// The event of `ukey` at `rev` (`kind` 0: put, 1: delete), with its
    /// previous version. Physical compaction may run meanwhile: when the
    /// version at `rev` or the one before it is gone (a delete always has a
    /// previous version, and so has a put of a version above 1), the
    /// revision is reported compacted, never returned incomplete (a watcher
    /// must get every event, or be told it cannot).
    fn event_at(&self, rev: i64, kind: u8, ukey: &[u8]) -> Result<Event, RangeError> {
        let gone = || -> RangeError {
            KvError::Compacted {
                compact_revision: self.compact_revision(),
            }
            .into()
        };
        let raw = self
            .db
            .get_cf(engine::cf(&self.db, CF_KV), engine::mvcc_key(ukey, rev))
            .map_err(StoreError::from)?;
        let rec = match raw {
            Some(raw) => {
                Record::decode(&raw).ok_or_else(|| StoreError::Corrupt("kv record".into()))?
            }
            None => return Err(gone()),
        };
        // Read after the version itself: compaction deletes a key's versions
        // oldest first, so if this one is still there, the previous is too
        // unless compaction has passed it.
        let prev = self.get_at_raw(ukey, rev - 1)?;
        if kind == 0 {
            if prev.is_none() && rec.version > 1 {
                return Err(gone());
            }
            Ok(Event {
                kind: EventType::Put,
                kv: to_kv(ukey.to_vec(), rev, rec),
                prev_kv: prev,
            })
        } else {
            if prev.is_none() {
                return Err(gone());
            }
            Ok(Event {
                kind: EventType::Delete,
                kv: KeyValue {
                    key: ukey.to_vec(),
                    mod_revision: rev,
                    ..Default::default()
                },
                prev_kv: prev,
            })
        }
    }

    pub fn lease_ttl(&self, id: i64) -> Result<Option<i64>, StoreError> {
        let _r = self.read_guard();
        self.lease_ttl_raw(id)
    }

    fn lease_ttl_raw(&self, id: i64) -> Result<Option<i64>, StoreError> {
        Ok(self
            .db
            .get_cf(engine::cf(&self.db, CF_LEASE), engine::lease_key(id))?
            .and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes)))
    }

    pub fn leases(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let _r = self.read_guard();
        let mut it = self.db.raw_iterator_cf(engine::cf(&self.db, CF_LEASE));
        it.seek_to_first();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let id = k
                .try_into()
                .map(u64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("lease".into()))?;
            let ttl = v
                .try_into()
                .map(i64::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("lease".into()))?;
            out.push((id as i64, ttl));
            it.next();
        }
        it.status()?;
        Ok(out)
    }

    pub fn lease_keys(&self, id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let _r = self.read_guard();
        // The attachments are not versioned: read them between two
        // applies, or a large delete written in chunks is seen in part.
        let _between = self.between_applies();
        self.lease_keys_raw(id)
    }

    fn lease_keys_raw(&self, id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut it = self.db.raw_iterator_cf(engine::cf(&self.db, CF_LEASE_KEYS));
        let prefix = engine::lease_key(id);
        it.seek(prefix);
        let mut out = Vec::new();
        while let Some(k) = it.key() {
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(k[8..].to_vec());
            it.next();
        }
        it.status()?;
        Ok(out)
    }
}

/// Events grouped by revision, oldest first.
pub type History = Vec<(i64, Vec<Event>)>;

/// Why a read failed: the request (etcd's error) or the store.
#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn to_kv(key: Vec<u8>, mod_revision: i64, rec: Record) -> KeyValue {
    KeyValue {
        key,
        create_revision: rec.create_revision,
        mod_revision,
        version: rec.version,
        value: rec.value,
        lease: rec.lease,
    }
}

fn passes_filters(r: &RangeRequest, kv: &KeyValue) -> bool {
    (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
        && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
        && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
        && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
}

/// Sort, limit and trim a full result set as the request asks.
fn finish_range(r: &RangeRequest, mut kvs: Vec<KeyValue>, count: i64) -> RangeResponse {
    let order = if r.sort_order == SortOrder::None && r.sort_target != SortTarget::Key {
        SortOrder::Ascend
    } else {
        r.sort_order
    };
    if order != SortOrder::None {
        kvs.sort_by(|a, b| {
            let o = match r.sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                o.reverse()
            } else {
                o
            }
        });
    }
    // As etcd: a count-only read returns no keys, so none more either.
    let more = !r.count_only && r.limit > 0 && kvs.len() > r.limit as usize;
    if more {
        kvs.truncate(r.limit as usize);
    }
    if r.count_only {
        kvs.clear();
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse { kvs, more, count }
}

impl KvStore {
    /// CRC-32 of every live MVCC version at or below `rev`, for comparing replicas.
    pub fn hash_kv(&self, rev: i64) -> Result<u32, StoreError> {
        let _r = self.read_guard();
        let mut h = crc32fast::Hasher::new();
        let mut it = self
            .db
            .raw_iterator_cf_opt(engine::cf(&self.db, CF_KV), engine::across_keys());
        it.seek_to_first();
        let compacted = self.compact_revision();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if let Some((_, r)) = engine::decode_mvcc_key(k) {
                if r <= rev && r >= compacted {
                    h.update(k);
                    h.update(v);
                }
            }
            it.next();
        }
        it.status()?;
        Ok(h.finalize())
    }

    /// Bytes the database takes on disk (SST files) and in memtables.
    pub fn db_size(&self) -> (i64, i64) {
        let mut total = 0u64;
        let mut live = 0u64;
        for name in engine::SM_CFS
            .iter()
            .chain([engine::CF_RAFT_LOG, engine::CF_RAFT_META].iter())
        {
            let cf = engine::cf(&self.db, name);
            total += self
                .db
                .property_int_value_cf(cf, "rocksdb.total-sst-files-size")
                .ok()
                .flatten()
                .unwrap_or(0);
            total += self
                .db
                .property_int_value_cf(cf, "rocksdb.cur-size-all-mem-tables")
                .ok()
                .flatten()
                .unwrap_or(0);
            live += self
                .db
                .property_int_value_cf(cf, "rocksdb.estimate-live-data-size")
                .ok()
                .flatten()
                .unwrap_or(0);
        }
        (total as i64, live as i64)
    }
}
