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
    pub fn compact_physical(&self, upto: i64) -> Result<u64, StoreError> {
        self.compact_physical_observed(upto, FLUSH_EVERY, &mut |_| true)
    }

    /// [`KvStore::compact_physical`] with at most about `flush_every`
    /// deletes per write, calling `after_write` after each write; when it
    /// returns false the compaction stops there, as a crash would stop it.
    /// For tests of the states between two writes.
    #[doc(hidden)]
    pub fn compact_physical_observed(
        &self,
        upto: i64,
        flush_every: usize,
        after_write: &mut dyn FnMut(&KvStore) -> bool,
    ) -> Result<u64, StoreError> {
        let _guard = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let db = self.db();
        let kvcf = engine::cf(db, CF_KV);
        let mut out = Deleter {
            store: self,
            batch: WriteBatch::default(),
            flush_every: flush_every.max(1),
            removed: 0,
            after_write,
        };
        let mut it = db.raw_iterator_cf(kvcf);
        it.seek_to_first();
        let mut current: Option<Vec<u8>> = None;
        // The current key's versions to delete, newest first.
        let mut doomed: Vec<Vec<u8>> = Vec::new();
        // Versions of the current key at or below `upto` seen so far.
        let mut seen = 0usize;
        // The newest of them is at `upto` itself: its event (history may be
        // read from `upto`) needs the version before it.
        let mut keep_prev = false;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (ukey, rev) =
                engine::decode_mvcc_key(k).ok_or_else(|| StoreError::Corrupt("kv key".into()))?;
            if current.as_deref() != Some(ukey.as_slice()) {
                if !out.delete_oldest_first(&mut doomed)? {
                    return Ok(out.removed);
                }
                current = Some(ukey);
                seen = 0;
                keep_prev = false;
            }
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
        if !out.delete_oldest_first(&mut doomed)? || !out.flush()? {
            return Ok(out.removed);
        }
        let revcf = engine::cf(db, CF_REV);
        db.delete_range_cf(revcf, engine::rev_key(0, 0), engine::rev_key(upto, 0))?;
        Ok(out.removed)
    }
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

    /// Write what is batched. False: stop.
    fn flush(&mut self) -> Result<bool, StoreError> {
        if self.batch.is_empty() {
            return Ok(true);
        }
        self.store.db().write(std::mem::take(&mut self.batch))?;
        Ok((self.after_write)(self.store))
    }
}
