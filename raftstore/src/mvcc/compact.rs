//! Physical compaction: removing the versions that a logical compaction
//! (a replicated [`crate::types::Command::Compact`]) made unreachable.
//!
//! It runs on its own thread beside applies and reads, and in several write
//! batches, so every state between two batches is visible to readers (and
//! is what a crash leaves on disk). The rule that keeps those states
//! correct: a key's versions are deleted oldest first, and a tombstone is
//! deleted last, after every version it hides. A read therefore never finds
//! an older version of a deleted key, an apply never computes a version or
//! a create revision from one, and a checkpoint never ships one. Readers
//! of history that lose a version meanwhile report the revision compacted
//! (see [`KvStore::history`]).

use std::collections::BTreeSet;

use rocksdb::WriteBatch;

use super::{KvStore, StoreError};
use crate::engine::{self, Record, CF_KV, CF_REV};

/// Deletes per write batch.
const FLUSH_EVERY: usize = 1024;

impl KvStore {
    /// Physically remove what compaction up to `upto` made unreachable: every
    /// version superseded at or below `upto`, tombstones below it, and the
    /// event history below it. What history from `upto` itself needs stays:
    /// the record of an event at `upto` and the version before it. Safe beside concurrent applies and reads
    /// (see the module doc); an interrupted run leaves a correct state that
    /// the next run finishes.
    pub fn compact_physical(&self, upto: i64) -> Result<Compacted, StoreError> {
        self.compact_physical_observed(upto, FLUSH_EVERY, &mut |_| true)
    }

    /// [`KvStore::compact_physical`] with at most about `flush_every`
    /// deletes per write, calling `after_write` after each write; when it
    /// returns false the compaction stops there, as a crash would stop it.
    /// For tests of the states between two writes.
    ///
    /// Only keys with an event in the history still stored at or below
    /// `upto` are looked at: a key that changed at no revision since the
    /// last finished compaction has nothing more to remove (that one left
    /// its newest version and removed the rest), so the work is the writes
    /// since then, not the whole keyspace. The history below `upto` is
    /// removed last, so an interrupted run leaves the events that the next
    /// run needs.
    #[doc(hidden)]
    pub fn compact_physical_observed(
        &self,
        upto: i64,
        flush_every: usize,
        after_write: &mut dyn FnMut(&KvStore) -> bool,
    ) -> Result<Compacted, StoreError> {
        let _guard = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.db();
        let kvcf = engine::cf(db, CF_KV);
        let revcf = engine::cf(db, CF_REV);
        let mut out = Deleter {
            store: self,
            batch: WriteBatch::default(),
            flush_every: flush_every.max(1),
            removed: 0,
            after_write,
        };
        let mut keys_examined = 0u64;
        let fresh = self.fresh.take_upto(upto);
        let last_event = engine::rev_key(upto, u32::MAX);
        let mut events = db.raw_iterator_cf(revcf);
        events.seek_to_first();
        loop {
            // The next keys that changed (a bounded set at a time: a first
            // compaction of a long history may name millions).
            let mut keys = BTreeSet::new();
            while let (Some(k), Some(v)) = (events.key(), events.value()) {
                if k > &last_event[..] || keys.len() >= KEYS_PER_PASS {
                    break;
                }
                let (rev, _) = engine::decode_rev_key(k)
                    .ok_or_else(|| StoreError::Corrupt("rev key".into()))?;
                if fresh.binary_search(&rev).is_err() {
                    let (_, ukey) = v
                        .split_first()
                        .ok_or_else(|| StoreError::Corrupt("rev value".into()))?;
                    keys.insert(ukey.to_vec());
                }
                events.next();
            }
            events.status()?;
            if keys.is_empty() {
                break;
            }
            // What earlier passes removed is written first, so that a key
            // named again in this pass is not counted again.
            if !out.flush()? {
                return Ok(out.done(keys_examined));
            }
            let mut versions = db.raw_iterator_cf_opt(kvcf, engine::versions_of_one_key());
            for key in keys {
                keys_examined += 1;
                let mut doomed = doomed_versions(&mut versions, &key, upto)?;
                if !out.delete_oldest_first(&mut doomed)? {
                    return Ok(out.done(keys_examined));
                }
            }
        }
        if !out.flush()? {
            return Ok(out.done(keys_examined));
        }
        db.delete_range_cf(revcf, engine::rev_key(0, 0), engine::rev_key(upto, 0))?;
        Ok(out.done(keys_examined))
    }
}

/// Revisions at which every event made a key's first version (a put of
/// version 1), noted as they are applied: physical compaction skips their
/// events. Such a put superseded no version, and any tombstone before it
/// (a delete, then the key made again) has its own event, still stored
/// while the tombstone is (compaction removes a tombstone and the history
/// up to it together, and keeps both at its own revision). So a key named
/// only by such events has nothing to remove. Where every put makes a new
/// key (`etcdctl check perf`, a benchmark's fills, pod creates), the seek
/// per key compaction made found nothing: it was a tenth of three
/// masters' CPU at 1,000 clients of puts of new keys (bench/RESULTS.md).
///
/// Memory only, and only ever a shortcut: a revision not noted (applied
/// before this master started, past the bound, or in a command with any
/// other event) is looked at as before.
#[derive(Debug, Default)]
pub(crate) struct FreshRevisions(std::sync::Mutex<std::collections::VecDeque<i64>>);

/// Revisions noted at most; the oldest are dropped beyond (a store that
/// never compacts).
const FRESH_MAX: usize = 1 << 20;

impl FreshRevisions {
    /// Note the effects of the commands of one write, once written (one
    /// lock per write: this is on the apply's path).
    pub(super) fn note(&self, fxs: &[super::Effects]) {
        let mut fresh = fxs.iter().filter(|fx| {
            fx.in_history.is_none()
                && !fx.events.is_empty()
                && fx.events.iter().all(|e| {
                    e.kind == crate::kv::EventType::Put
                        && e.kv.version == 1
                        && e.kv.mod_revision == fx.revision
                })
        });
        let Some(first) = fresh.next() else {
            return;
        };
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for fx in std::iter::once(first).chain(fresh) {
            // Applied in order: each revision once, ascending.
            if q.back().is_some_and(|&last| last >= fx.revision) {
                continue;
            }
            if q.len() >= FRESH_MAX {
                q.pop_front();
            }
            q.push_back(fx.revision);
        }
    }

    /// The revisions noted up to `upto`, ascending, forgotten here.
    fn take_upto(&self, upto: i64) -> Vec<i64> {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.partition_point(|&r| r <= upto);
        q.drain(..n).collect()
    }

    /// Forget every revision noted (the state was replaced; a test's
    /// compaction that looks at every key).
    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Keys looked at per pass over the history.
const KEYS_PER_PASS: usize = 4096;

/// What a physical compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Versions removed.
    pub removed: u64,
    /// Keys whose versions were looked at.
    pub keys_examined: u64,
}

/// The versions of `key` that compaction up to `upto` removes, newest
/// first: every version superseded at or below `upto`, and a tombstone
/// below it. What history from `upto` itself needs stays: the record of an
/// event at `upto` and the version before it.
fn doomed_versions(
    it: &mut rocksdb::DBRawIterator<'_>,
    key: &[u8],
    upto: i64,
) -> Result<Vec<Vec<u8>>, StoreError> {
    // The encoding is prefix-free: a stored key that starts with this one's
    // encoding is a version of it (newest first).
    let prefix = engine::encoded_key(key);
    it.seek(&prefix);
    let mut doomed = Vec::new();
    // Versions at or below `upto` seen so far.
    let mut seen = 0usize;
    // The newest of them is at `upto` itself: its event (history may be
    // read from `upto`) needs the version before it.
    let mut keep_prev = false;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !k.starts_with(&prefix) {
            break;
        }
        let (_, rev) =
            engine::decode_mvcc_key(k).ok_or_else(|| StoreError::Corrupt("kv key".into()))?;
        if rev <= upto {
            if seen == 0 {
                // The newest version at or below `upto` is what reads at
                // `upto` see: kept, unless it is a tombstone older than
                // `upto` (one at `upto` is its own event's record).
                let rec =
                    Record::decode(v).ok_or_else(|| StoreError::Corrupt("kv record".into()))?;
                keep_prev = rev == upto;
                if rec.tombstone && !keep_prev {
                    doomed.push(k.to_vec());
                }
            } else if !(seen == 1 && keep_prev) {
                doomed.push(k.to_vec());
            }
            seen += 1;
        }
        it.next();
    }
    it.status()?;
    Ok(doomed)
}

/// Deletes in write batches of bounded size.
struct Deleter<'a> {
    store: &'a KvStore,
    batch: WriteBatch,
    flush_every: usize,
    removed: u64,
    after_write: &'a mut dyn FnMut(&KvStore) -> bool,
}

impl Deleter<'_> {
    /// Delete one key's doomed versions (given newest first) oldest first,
    /// so that the tombstone, the newest, goes last. False: stop.
    fn delete_oldest_first(&mut self, doomed: &mut Vec<Vec<u8>>) -> Result<bool, StoreError> {
        let kvcf = engine::cf(self.store.db(), CF_KV);
        while let Some(k) = doomed.pop() {
            self.batch.delete_cf(kvcf, k);
            self.removed += 1;
            if self.batch.len() >= self.flush_every && !self.flush()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn done(&self, keys_examined: u64) -> Compacted {
        Compacted {
            removed: self.removed,
            keys_examined,
        }
    }

    /// Write what is batched. False: stop.
    fn flush(&mut self) -> Result<bool, StoreError> {
        if self.batch.is_empty() {
            return Ok(true);
        }
        self.store.db().write(std::mem::take(&mut self.batch))?;
        Ok((self.after_write)(self.store))
    }
}
