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
        let notes = self.superseded.take_upto(upto);
        let mut notes = notes.into_iter().peekable();
        // The revision whose note was taken last: its other events are covered.
        let mut noted_rev = None;
        let last_event = engine::rev_key(upto, u32::MAX);
        let mut events = db.raw_iterator_cf(revcf);
        events.seek_to_first();
        loop {
            // The next keys that changed (a bounded set at a time: a first
            // compaction of a long history may name millions), and the
            // versions that noted revisions superseded.
            let mut keys = BTreeSet::new();
            let mut superseded = Vec::new();
            while let (Some(k), Some(v)) = (events.key(), events.value()) {
                if k > &last_event[..] || keys.len() + superseded.len() >= KEYS_PER_PASS {
                    break;
                }
                let (rev, _) = engine::decode_rev_key(k)
                    .ok_or_else(|| StoreError::Corrupt("rev key".into()))?;
                let noted = noted_rev == Some(rev) || {
                    while notes.next_if(|(r, _)| *r < rev).is_some() {}
                    match notes.next_if(|(r, _)| *r == rev) {
                        Some((_, prevs)) => {
                            // What the event at `upto` superseded stays.
                            if rev < upto {
                                superseded.extend(prevs);
                            }
                            noted_rev = Some(rev);
                            true
                        }
                        None => false,
                    }
                };
                if !noted {
                    let (_, ukey) = v
                        .split_first()
                        .ok_or_else(|| StoreError::Corrupt("rev value".into()))?;
                    keys.insert(ukey.to_vec());
                }
                events.next();
            }
            events.status()?;
            if keys.is_empty() && superseded.is_empty() {
                break;
            }
            // What earlier passes removed is written first, so that a key
            // named again in this pass is not counted again.
            if !out.flush()? {
                return Ok(out.done(keys_examined));
            }
            // A key also looked up has all its doomed versions found below.
            superseded.retain(|(key, _)| !keys.contains(key));
            for (key, rev) in superseded {
                if !out.delete(engine::mvcc_key(&key, rev))? {
                    return Ok(out.done(keys_examined));
                }
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

/// Revisions at which every event was a put, noted as they are applied
/// with the versions those puts superseded: physical compaction deletes
/// those versions without looking the keys up. A put supersedes the live
/// version the apply read (its `prev_kv`), or no live version where it
/// made a key's first version.
///
/// That is all a compaction up to `upto` would find for such an event
/// below `upto`. Every version superseded below the last finished
/// compaction's revision is gone, and so is every tombstone below it but
/// one superseded exactly there (history read from that revision needs
/// it). A tombstone before a first version therefore either has its own
/// delete event in the history that is looked at, or was superseded at the
/// last compaction's revision, whose events stay in history and are looked
/// at again: a note of `upto` is used for nothing past the compaction that
/// takes it (a put at `upto` removes nothing now).
///
/// Where every put makes a new key (`etcdctl check perf`, a benchmark's
/// fills, pod creates) the seek per key found nothing, a tenth of three
/// masters' CPU at 1,000 clients of puts of new keys; where puts overwrite
/// random keys, the seek for the version to remove was 8%
/// (bench/RESULTS.md).
///
/// Memory only, and only ever a shortcut: a revision not noted (applied
/// before this master started, dropped past the bounds, or in a command
/// with any other event) is looked at as before, and a compaction that
/// fails leaves the history it would have removed, whose events the next
/// one looks at.
#[derive(Debug, Default)]
pub(crate) struct Superseded(std::sync::Mutex<Notes>);

/// One noted revision and the versions (user key, revision) it superseded.
type Note = (i64, Vec<(Vec<u8>, i64)>);

#[derive(Debug, Default)]
struct Notes {
    queue: std::collections::VecDeque<Note>,
    /// About the memory the queue holds.
    bytes: usize,
}

/// Revisions noted at most, and bytes of notes; the oldest are dropped
/// beyond (a store that never compacts).
const NOTES_MAX: usize = 1 << 20;
const NOTE_BYTES_MAX: usize = 64 << 20;

fn note_bytes(note: &Note) -> usize {
    let per_version = std::mem::size_of::<(Vec<u8>, i64)>();
    std::mem::size_of::<Note>()
        + note
            .1
            .iter()
            .map(|(k, _)| k.len() + per_version)
            .sum::<usize>()
}

impl Superseded {
    /// Note the effects of the commands of one write, once written (one
    /// lock per write: this is on the apply's path).
    pub(super) fn note(&self, fxs: &[super::Effects]) {
        let mut notes = fxs.iter().filter_map(|fx| {
            let all_puts = fx.in_history.is_none()
                && !fx.events.is_empty()
                && fx.events.iter().all(|e| {
                    e.kind == crate::kv::EventType::Put
                        && e.kv.mod_revision == fx.revision
                        // What a put superseded is older than its command
                        // (a transaction writes a key once).
                        && e.prev_kv.as_ref().is_none_or(|p| p.mod_revision < fx.revision)
                });
            all_puts.then(|| {
                let prevs = fx
                    .events
                    .iter()
                    .filter_map(|e| {
                        let p = e.prev_kv.as_ref()?;
                        Some((e.kv.key.clone(), p.mod_revision))
                    })
                    .collect();
                (fx.revision, prevs)
            })
        });
        let Some(first) = notes.next() else {
            return;
        };
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        for note in std::iter::once(first).chain(notes) {
            // Applied in order: each revision once, ascending.
            if q.queue.back().is_some_and(|(last, _)| *last >= note.0) {
                continue;
            }
            q.bytes += note_bytes(&note);
            q.queue.push_back(note);
            while q.queue.len() > NOTES_MAX || q.bytes > NOTE_BYTES_MAX {
                let Some(old) = q.queue.pop_front() else {
                    break;
                };
                q.bytes -= note_bytes(&old);
            }
        }
    }

    /// The notes of revisions up to `upto`, ascending, forgotten here. The
    /// note of `upto` itself goes too: the next compaction looks at that
    /// revision's keys (its event stays in history), for the version its
    /// event superseded, which stays now, may be a tombstone whose own
    /// event this compaction removes from history.
    fn take_upto(&self, upto: i64) -> Vec<Note> {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.queue.partition_point(|(r, _)| *r <= upto);
        let taken: Vec<Note> = q.queue.drain(..n).collect();
        q.bytes -= taken.iter().map(note_bytes).sum::<usize>();
        taken
    }

    /// Forget every revision noted (the state was replaced; a test's
    /// compaction that looks at every key).
    pub(crate) fn clear(&self) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.queue.clear();
        q.bytes = 0;
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
        while let Some(k) = doomed.pop() {
            if !self.delete(k)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Delete one version. False: stop.
    fn delete(&mut self, version: Vec<u8>) -> Result<bool, StoreError> {
        self.batch
            .delete_cf(engine::cf(self.store.db(), CF_KV), version);
        self.removed += 1;
        Ok(self.batch.len() < self.flush_every || self.flush()?)
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
