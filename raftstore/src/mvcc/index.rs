//! The key index: the newest revision of every live key, in memory, as
//! etcd keeps its tree index. Every write the log applies reads the
//! newest version of each key it names (a put its previous value, a
//! create's compare the key's absence); without the index each such read
//! made a RocksDB iterator and sought it: 14% of the masters' CPU samples
//! under single puts from 1,000 clients, 10.7% with the index, most of it
//! the point gets of keys that exist (bench/RESULTS.md). With it, a key not
//! in the index is not live (no read at all), and a key in it is one
//! point get of the version the index names.
//!
//! It holds the state of the store's published revision: it is built from
//! the database at open and after a snapshot install (versions above the
//! published revision, a large delete's chunks written before a crash, are
//! not), and changed only once a group of commands' write is in the
//! database, by the changes their transactions recorded. Only the state
//! machine's applies read it: a read from outside, at a revision of its
//! own, seeks as before.

use std::hash::BuildHasher;
use std::sync::Mutex;

use crate::engine::{self, Db, Record, CF_KV};

use super::StoreError;

/// One key's change, as a committed transaction leaves it: its new newest
/// revision, or `None` for a delete.
pub(crate) type KeyChange = (Vec<u8>, Option<i64>);

/// Live key -> the revision of its newest version, in hash maps
/// (foldhash), not a B-tree: a B-tree's lookup compares the key with one
/// boxed key per step, a cache miss each, and with 400,000 keys its
/// lookups and inserts took 8% of the masters' CPU under single puts,
/// more than the seeks they replaced saved (bench/RESULTS.md). A hash
/// map doubles as it grows, moving every entry in one insert: 100 ms at
/// a million keys of 36 bytes, 440 ms at 3.7 million. Split by hash into
/// [`SHARDS`] maps, each grows on its own, a 64th of that each time
/// (3 ms and 6-8 ms measured), spread over many applies.
struct Keys {
    hasher: hashbrown::DefaultHashBuilder,
    shards: Vec<hashbrown::HashMap<Box<[u8]>, i64>>,
}

/// How many maps the index is split into (a power of two).
const SHARDS: usize = 64;

impl Default for Keys {
    fn default() -> Self {
        Keys {
            hasher: hashbrown::DefaultHashBuilder::default(),
            shards: (0..SHARDS).map(|_| hashbrown::HashMap::new()).collect(),
        }
    }
}

impl Keys {
    fn shard(&self, key: &[u8]) -> usize {
        // The hash's top bits: each map hashes with a state of its own.
        (self.hasher.hash_one(key) >> (64 - SHARDS.trailing_zeros())) as usize
    }

    fn get(&self, key: &[u8]) -> Option<i64> {
        self.shards[self.shard(key)].get(key).copied()
    }

    fn insert(&mut self, key: Box<[u8]>, rev: i64) {
        let i = self.shard(&key);
        self.shards[i].insert(key, rev);
    }

    fn remove(&mut self, key: &[u8]) {
        let i = self.shard(key);
        self.shards[i].remove(key);
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }
}

#[derive(Default)]
pub(crate) struct KeyIndex {
    keys: Mutex<Keys>,
}

impl KeyIndex {
    fn keys(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revision of `key`'s newest version, if it is live.
    pub(crate) fn get(&self, key: &[u8]) -> Option<i64> {
        self.keys().get(key)
    }

    /// How many keys are live.
    pub(crate) fn len(&self) -> usize {
        self.keys().len()
    }

    /// Every entry, in key order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> std::collections::BTreeMap<Vec<u8>, i64> {
        let keys = self.keys();
        let all = keys.shards.iter().flat_map(|s| s.iter());
        all.map(|(k, v)| (k.to_vec(), *v)).collect()
    }

    /// Take in what committed transactions changed, in their order.
    pub(crate) fn apply(&self, changes: impl IntoIterator<Item = KeyChange>) {
        let mut keys = self.keys();
        for (key, rev) in changes {
            match rev {
                Some(rev) => {
                    keys.insert(key.into_boxed_slice(), rev);
                }
                None => {
                    keys.remove(&key);
                }
            }
        }
    }

    /// Rebuild from `db` as of `revision` (at open, after an install).
    pub(crate) fn rebuild(&self, db: &Db, revision: i64) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let built = build(db, revision)?;
        tracing::info!(
            keys = built.len(),
            revision,
            ms = started.elapsed().as_millis() as u64,
            "key index built"
        );
        *self.keys() = built;
        Ok(())
    }
}

/// Every live key at `revision` and the revision of its newest version:
/// one pass over the versions, newest first within each key, that skips
/// a key's older versions once its newest at `revision` is known.
fn build(db: &Db, revision: i64) -> Result<Keys, StoreError> {
    let kvcf = engine::cf(db, CF_KV);
    // One pass over everything: kept out of the block cache, which it
    // would fill with blocks no one asked for.
    let mut opts = engine::across_keys();
    opts.fill_cache(false);
    let mut it = db.raw_iterator_cf_opt(kvcf, opts);
    it.seek_to_first();
    let mut keys = Keys::default();
    // The encoded prefix of the key decided last, and how many of its
    // older versions were stepped over since.
    let mut decided: Vec<u8> = Vec::new();
    let mut skipped = 0u32;
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let prefix = engine::user_key_prefix(k);
        if !decided.is_empty() && prefix == decided.as_slice() {
            engine::past_older_version(&mut it, &mut skipped, || decided.clone());
            continue;
        }
        let (key, rev) =
            engine::decode_mvcc_key(k).ok_or_else(|| StoreError::Corrupt("kv key".into()))?;
        if rev > revision {
            // Written by a command not applied whole (a chunk of a large
            // delete before a crash): not part of the state yet.
            it.next();
            continue;
        }
        let rec = Record::decode_meta(v).ok_or_else(|| StoreError::Corrupt("kv record".into()))?;
        if !rec.tombstone {
            keys.insert(key.into_boxed_slice(), rev);
        }
        decided.clear();
        decided.extend_from_slice(prefix);
        skipped = 0;
        it.next();
    }
    it.status()?;
    Ok(keys)
}
