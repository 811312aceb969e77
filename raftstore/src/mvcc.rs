//! The multi-version key-value store with etcd's revision semantics, on RocksDB.
//!
//! Every write transaction gets the next revision; each key records its
//! create revision, mod revision and version; a delete leaves a tombstone so
//! that reads at an older revision still see the key. Compaction forgets the
//! versions no read can ask for any more. Applying commands is deterministic:
//! every master produces the same revisions and the same events.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use rocksdb::WriteBatch;

use crate::engine::{self, Db, Record, CF_KV, CF_LEASE, CF_LEASE_KEYS, CF_REV, CF_SM_META};
use crate::kv::*;
use crate::types::{
    Command, CommandResult, Entry, LogId, MemberAddrs, NodeId, Outcome, StoredMembership,
};

pub const META_APPLIED: &[u8] = b"applied";
pub const META_MEMBERSHIP: &[u8] = b"membership";
pub const META_REVISION: &[u8] = b"revision";
pub const META_COMPACT: &[u8] = b"compact_revision";
pub const META_CLUSTER_ID: &[u8] = b"cluster_id";
pub const META_MEMBER_PREFIX: &[u8] = b"member/";
/// `(log index, last sub-command written)` while a batched entry is half applied.
pub const META_BATCH_PROGRESS: &[u8] = b"batch_progress";
/// Results of recently applied [`Command::Once`] commands: `once/` ++ id.
const META_ONCE_PREFIX: &[u8] = b"once/";
/// The order they were applied in: `oncelog/` ++ be(seq) → `once/` key.
const META_ONCE_LOG_PREFIX: &[u8] = b"oncelog/";
const META_ONCE_SEQ: &[u8] = b"once_seq";
/// How many applied request ids are remembered (retries happen within seconds).
const ONCE_WINDOW: i64 = 100_000;
/// Results larger than this are not kept for replay.
const ONCE_MAX_RESULT: usize = 64 * 1024;

fn once_key(id: (u64, u64)) -> Vec<u8> {
    let mut k = META_ONCE_PREFIX.to_vec();
    k.extend_from_slice(&id.0.to_be_bytes());
    k.extend_from_slice(&id.1.to_be_bytes());
    k
}

fn once_log_key(seq: i64) -> Vec<u8> {
    let mut k = META_ONCE_LOG_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn ser<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serialize(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt state-machine data: {0}")]
    Corrupt(String),
}

/// What applying one entry changed, beyond its result: the watch events and
/// the lease and compaction changes other parts of the master react to.
#[derive(Debug, Default)]
pub struct Effects {
    pub revision: i64,
    pub events: Vec<Event>,
    pub leases_granted: Vec<(i64, i64)>,
    pub leases_revoked: Vec<i64>,
    pub compacted_to: Option<i64>,
    pub members_changed: bool,
    /// The new count of applied request ids, when this command had one.
    pub once_seq: Option<i64>,
}

pub struct KvStore {
    db: Db,
    revision: AtomicI64,
    compact_revision: AtomicI64,
    cluster_id: AtomicU64,
    /// How many [`Command::Once`] ids have been applied (deterministic).
    once_seq: AtomicI64,
    /// The member directory, cached so that no service reads RocksDB for it.
    directory: std::sync::RwLock<Vec<(NodeId, MemberAddrs)>>,
    /// Held by physical compaction and by snapshot installation, which must not overlap.
    pub(crate) maintenance: Mutex<()>,
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

impl KvStore {
    pub fn open(db: Db) -> Result<Self, StoreError> {
        let s = KvStore {
            revision: AtomicI64::new(0),
            compact_revision: AtomicI64::new(0),
            cluster_id: AtomicU64::new(0),
            once_seq: AtomicI64::new(0),
            directory: std::sync::RwLock::new(Vec::new()),
            maintenance: Mutex::new(()),
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
        self.once_seq
            .store(meta_i64(&self.db, META_ONCE_SEQ)?, Ordering::SeqCst);
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

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision.load(Ordering::SeqCst)
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id.load(Ordering::SeqCst)
    }

    pub fn applied_state(&self) -> Result<(Option<LogId>, StoredMembership), StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        let applied = match self.db.get_cf(meta, META_APPLIED)? {
            Some(v) => bincode::deserialize(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            None => None,
        };
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
    pub fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<KeyValue>, StoreError> {
        let kvcf = engine::cf(&self.db, CF_KV);
        let mut it = self.db.raw_iterator_cf(kvcf);
        it.seek(engine::mvcc_key(key, rev));
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            if let Some((ukey, mrev)) = engine::decode_mvcc_key(k) {
                if ukey == key {
                    let rec =
                        Record::decode(v).ok_or_else(|| StoreError::Corrupt("kv record".into()))?;
                    if rec.tombstone {
                        return Ok(None);
                    }
                    return Ok(Some(to_kv(ukey, mrev, rec)));
                }
            }
        }
        it.status()?;
        Ok(None)
    }

    pub fn get_latest(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.get_at(key, i64::MAX)
    }

    /// Live keys in `[key, end)` at `rev`, in key order. With `limit` > 0 at
    /// most that many are returned, but all are counted.
    fn scan(
        &self,
        key: &[u8],
        end: &[u8],
        rev: i64,
        limit: usize,
        keys_only: bool,
        mut keep: impl FnMut(&KeyValue) -> bool,
    ) -> Result<(Vec<KeyValue>, i64), StoreError> {
        if end.is_empty() {
            let kv = self.get_at(key, rev)?;
            let mut out = Vec::new();
            let mut count = 0;
            if let Some(mut kv) = kv {
                count = 1;
                if keep(&kv) {
                    if keys_only {
                        kv.value.clear();
                    }
                    out.push(kv);
                }
            }
            return Ok((out, count));
        }
        let kvcf = engine::cf(&self.db, CF_KV);
        let mut it = self.db.raw_iterator_cf(kvcf);
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
                skipped += 1;
                if skipped > 8 {
                    // Many old versions: jump past them all.
                    let mut next = engine::encoded_key(&ukey);
                    next.extend_from_slice(&[0xFF; 9]);
                    it.seek(&next);
                    skipped = 0;
                } else {
                    it.next();
                }
                continue;
            }
            if mrev > rev {
                it.next();
                continue;
            }
            skipped = 0;
            let rec = Record::decode(v).ok_or_else(|| StoreError::Corrupt("kv record".into()))?;
            if !rec.tombstone {
                count += 1;
                let mut kv = to_kv(ukey.clone(), mrev, rec);
                if (limit == 0 || out.len() < limit) && keep(&kv) {
                    if keys_only {
                        kv.value.clear();
                    }
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
            let (kvs, count) = self.scan(&r.key, &r.range_end, rev, want, r.keys_only, filter)?;
            return Ok(finish_range(r, kvs, count));
        }
        let (kvs, count) = self.scan(&r.key, &r.range_end, rev, 0, false, filter)?;
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
        let compacted = self.compact_revision();
        if from < compacted {
            return Err(KvError::Compacted {
                compact_revision: compacted,
            }
            .into());
        }
        let revcf = engine::cf(&self.db, CF_REV);
        let mut it = self.db.raw_iterator_cf(revcf);
        it.seek(engine::rev_key(from, 0));
        let mut out: Vec<(i64, Vec<Event>)> = Vec::new();
        let mut n = 0usize;
        let mut next = from;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (rev, _sub) =
                engine::decode_rev_key(k).ok_or_else(|| StoreError::Corrupt("rev key".into()))?;
            if n >= max_events && rev != next - 1 {
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

    fn event_at(&self, rev: i64, kind: u8, ukey: &[u8]) -> Result<Event, RangeError> {
        let prev = self.get_at(ukey, rev - 1)?;
        if kind == 0 {
            let raw = self
                .db
                .get_cf(engine::cf(&self.db, CF_KV), engine::mvcc_key(ukey, rev))
                .map_err(StoreError::from)?;
            let Some(raw) = raw else {
                // Compacted while we read: never skip silently.
                return Err(KvError::Compacted {
                    compact_revision: self.compact_revision(),
                }
                .into());
            };
            let rec =
                Record::decode(&raw).ok_or_else(|| StoreError::Corrupt("kv record".into()))?;
            Ok(Event {
                kind: EventType::Put,
                kv: to_kv(ukey.to_vec(), rev, rec),
                prev_kv: prev,
            })
        } else {
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
        Ok(self
            .db
            .get_cf(engine::cf(&self.db, CF_LEASE), engine::lease_key(id))?
            .and_then(|v| v.as_slice().try_into().ok().map(i64::from_be_bytes)))
    }

    pub fn leases(&self) -> Result<Vec<(i64, i64)>, StoreError> {
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

    // ---------------------------------------------------------------- writes

    /// Apply one committed log entry. Writes are not synced here: the log is
    /// durable, and a state machine that lost its tail re-applies it.
    pub fn apply(&self, entry: &Entry) -> Result<(CommandResult, Vec<Effects>), StoreError> {
        if let openraft::EntryPayload::Normal(Command::Batch(cmds)) = &entry.payload {
            return self.apply_batch(entry.log_id, cmds);
        }
        let meta = engine::cf(&self.db, CF_SM_META);
        let mut batch = WriteBatch::default();
        let log_id = Some(entry.log_id);
        batch.put_cf(meta, META_APPLIED, ser(&log_id)?);
        let mut effects = Effects::default();
        let result = match &entry.payload {
            openraft::EntryPayload::Blank => CommandResult {
                revision: self.revision(),
                outcome: Outcome::Done(Ok(())),
            },
            openraft::EntryPayload::Membership(m) => {
                let sm = StoredMembership::new(log_id, m.clone());
                batch.put_cf(meta, META_MEMBERSHIP, ser(&sm)?);
                CommandResult {
                    revision: self.revision(),
                    outcome: Outcome::Done(Ok(())),
                }
            }
            openraft::EntryPayload::Normal(cmd) => self.execute(cmd, &mut batch, &mut effects)?,
        };
        self.commit_write(batch, &result, &mut effects)?;
        Ok((result, vec![effects]))
    }

    /// Apply the commands of one batched entry in order, each with its own
    /// revision. Each command is written on its own, with a progress marker,
    /// and the entry counts as applied only with the last: a crash in the
    /// middle re-applies the entry and skips what was already written.
    fn apply_batch(
        &self,
        log_id: LogId,
        cmds: &[Command],
    ) -> Result<(CommandResult, Vec<Effects>), StoreError> {
        let meta = engine::cf(&self.db, CF_SM_META);
        let done: Option<(u64, usize)> = match self.db.get_cf(meta, META_BATCH_PROGRESS)? {
            Some(v) => {
                Some(bincode::deserialize(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?)
            }
            None => None,
        };
        let skip_through = done.filter(|(idx, _)| *idx == log_id.index).map(|(_, i)| i);
        let mut results = Vec::with_capacity(cmds.len());
        let mut all = Vec::with_capacity(cmds.len());
        for (i, cmd) in cmds.iter().enumerate() {
            if skip_through.is_some_and(|d| i <= d) {
                results.push(CommandResult::default());
                continue;
            }
            let mut batch = WriteBatch::default();
            if i + 1 == cmds.len() {
                batch.put_cf(meta, META_APPLIED, ser(&Some(log_id))?);
                batch.delete_cf(meta, META_BATCH_PROGRESS);
            } else {
                batch.put_cf(meta, META_BATCH_PROGRESS, ser(&(log_id.index, i))?);
            }
            let mut fx = Effects::default();
            let result = match cmd {
                Command::Batch(_) => CommandResult {
                    revision: self.revision(),
                    outcome: Outcome::Done(Err(KvError::InvalidArgument(
                        "batches do not nest".into(),
                    ))),
                },
                cmd => self.execute(cmd, &mut batch, &mut fx)?,
            };
            self.commit_write(batch, &result, &mut fx)?;
            results.push(result);
            all.push(fx);
        }
        if cmds.is_empty() {
            let mut batch = WriteBatch::default();
            batch.put_cf(meta, META_APPLIED, ser(&Some(log_id))?);
            self.db.write(batch)?;
        }
        Ok((
            CommandResult {
                revision: self.revision(),
                outcome: Outcome::Batch(results),
            },
            all,
        ))
    }

    fn commit_write(
        &self,
        batch: WriteBatch,
        result: &CommandResult,
        effects: &mut Effects,
    ) -> Result<(), StoreError> {
        self.db.write(batch)?;
        effects.revision = result.revision;
        if let Some(c) = effects.compacted_to {
            self.compact_revision.store(c, Ordering::SeqCst);
        }
        // A replayed request reports the revision it was first applied at:
        // the store's revision never moves back.
        self.revision.fetch_max(result.revision, Ordering::SeqCst);
        if let Some(seq) = effects.once_seq {
            self.once_seq.store(seq, Ordering::SeqCst);
        }
        if effects.members_changed {
            let dir = self.members_from_db()?;
            *self.directory.write().unwrap_or_else(|p| p.into_inner()) = dir;
        }
        Ok(())
    }

    fn execute(
        &self,
        cmd: &Command,
        batch: &mut WriteBatch,
        fx: &mut Effects,
    ) -> Result<CommandResult, StoreError> {
        let cur = self.revision();
        let meta = engine::cf(&self.db, CF_SM_META);
        let done = |revision, r| CommandResult {
            revision,
            outcome: Outcome::Done(r),
        };
        Ok(match cmd {
            Command::Txn(req) => {
                let mut tx = TxnCtx::new(self, cur + 1);
                match tx.txn(req) {
                    Ok(resp) => {
                        let rev = tx.commit(batch, fx);
                        CommandResult {
                            revision: rev,
                            outcome: Outcome::Txn(Ok(resp)),
                        }
                    }
                    Err(TxnFail::Kv(e)) => CommandResult {
                        revision: cur,
                        outcome: Outcome::Txn(Err(e)),
                    },
                    Err(TxnFail::Store(e)) => return Err(e),
                }
            }
            Command::Compact { revision } => {
                let compacted = self.compact_revision();
                if *revision <= compacted {
                    done(
                        cur,
                        Err(KvError::Compacted {
                            compact_revision: compacted,
                        }),
                    )
                } else if *revision > cur {
                    done(cur, Err(KvError::FutureRevision))
                } else {
                    batch.put_cf(meta, META_COMPACT, revision.to_be_bytes());
                    fx.compacted_to = Some(*revision);
                    done(cur, Ok(()))
                }
            }
            Command::LeaseGrant { id, ttl } => {
                if self.lease_ttl(*id)?.is_some() {
                    CommandResult {
                        revision: cur,
                        outcome: Outcome::LeaseGranted(Err(KvError::LeaseExists)),
                    }
                } else {
                    batch.put_cf(
                        engine::cf(&self.db, CF_LEASE),
                        engine::lease_key(*id),
                        ttl.to_be_bytes(),
                    );
                    fx.leases_granted.push((*id, *ttl));
                    CommandResult {
                        revision: cur,
                        outcome: Outcome::LeaseGranted(Ok((*id, *ttl))),
                    }
                }
            }
            Command::LeaseRevoke { id } => {
                if self.lease_ttl(*id)?.is_none() {
                    done(cur, Err(KvError::LeaseNotFound))
                } else {
                    let mut tx = TxnCtx::new(self, cur + 1);
                    for key in self.lease_keys(*id)? {
                        let d = DeleteRangeRequest {
                            key,
                            range_end: vec![],
                            prev_kv: false,
                        };
                        match tx.delete(&d) {
                            Ok(_) => {}
                            Err(TxnFail::Store(e)) => return Err(e),
                            Err(TxnFail::Kv(e)) => return Err(StoreError::Corrupt(e.to_string())),
                        }
                    }
                    let rev = tx.commit(batch, fx);
                    let lk = engine::cf(&self.db, CF_LEASE_KEYS);
                    let start = engine::lease_key(*id);
                    let end = engine::lease_key(id.wrapping_add(1));
                    if (*id as u64) < u64::MAX {
                        batch.delete_range_cf(lk, start, end);
                    }
                    batch.delete_cf(engine::cf(&self.db, CF_LEASE), engine::lease_key(*id));
                    fx.leases_revoked.push(*id);
                    done(rev, Ok(()))
                }
            }
            Command::RegisterMember { id, addrs } => {
                let mut k = META_MEMBER_PREFIX.to_vec();
                k.extend_from_slice(&id.to_be_bytes());
                batch.put_cf(
                    meta,
                    k,
                    bincode::serialize(addrs).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                );
                fx.members_changed = true;
                done(cur, Ok(()))
            }
            Command::UnregisterMember { id } => {
                let mut k = META_MEMBER_PREFIX.to_vec();
                k.extend_from_slice(&id.to_be_bytes());
                batch.delete_cf(meta, k);
                fx.members_changed = true;
                done(cur, Ok(()))
            }
            Command::Batch(_) => done(
                cur,
                Err(KvError::InvalidArgument("batches do not nest".into())),
            ),
            Command::Once { id, cmd } => {
                let key = once_key(*id);
                if let Some(v) = self.db.get_cf(meta, &key)? {
                    // Applied before: replay the first result, change nothing.
                    let first: CommandResult =
                        bincode::deserialize(&v).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    return Ok(CommandResult {
                        revision: first.revision,
                        outcome: Outcome::Replayed(Box::new(first)),
                    });
                }
                let events_before = fx.events.len();
                let result = match cmd.as_ref() {
                    Command::Once { .. } | Command::Batch(_) => done(
                        cur,
                        Err(KvError::InvalidArgument("request ids do not nest".into())),
                    ),
                    inner => self.execute(inner, batch, fx)?,
                };
                let wrote = fx.events.len() > events_before;
                // Only a transaction that wrote something is remembered: one
                // whose compares failed, that was refused, or that wrote
                // nothing did nothing, so applying its id again later is as
                // if it were applied only then. That lets one API call retry
                // its read-modify-write rounds under one id, of which at
                // most one ever writes.
                if matches!(&result.outcome, Outcome::Txn(_)) && !wrote {
                    return Ok(result);
                }
                let mut stored = ser(&result)?;
                if stored.len() > ONCE_MAX_RESULT {
                    stored = ser(&CommandResult {
                        revision: result.revision,
                        outcome: Outcome::Done(Err(KvError::InvalidArgument(
                            "the request was applied, but its result is too large to report again"
                                .into(),
                        ))),
                    })?;
                }
                batch.put_cf(meta, &key, stored);
                let seq = self.once_seq.load(Ordering::SeqCst) + 1;
                batch.put_cf(meta, META_ONCE_SEQ, seq.to_be_bytes());
                batch.put_cf(meta, once_log_key(seq), &key);
                if seq > ONCE_WINDOW {
                    let old = once_log_key(seq - ONCE_WINDOW);
                    if let Some(old_key) = self.db.get_cf(meta, &old)? {
                        batch.delete_cf(meta, old_key);
                    }
                    batch.delete_cf(meta, old);
                }
                fx.once_seq = Some(seq);
                result
            }
            Command::SetClusterId { id } => {
                if self.cluster_id() == 0 {
                    batch.put_cf(meta, META_CLUSTER_ID, id.to_be_bytes());
                    self.cluster_id.store(*id, Ordering::SeqCst);
                }
                done(cur, Ok(()))
            }
        })
    }

    /// Physically remove what compaction up to `upto` made unreachable: every
    /// version superseded at or below `upto`, tombstones at or below it, and
    /// the event history below it. Safe beside concurrent applies: it only
    /// deletes versions no permitted read can see.
    pub fn compact_physical(&self, upto: i64) -> Result<u64, StoreError> {
        let _guard = self.maintenance.lock().unwrap_or_else(|p| p.into_inner());
        let kvcf = engine::cf(&self.db, CF_KV);
        let mut it = self.db.raw_iterator_cf(kvcf);
        it.seek_to_first();
        let mut batch = WriteBatch::default();
        let mut current: Option<Vec<u8>> = None;
        let mut kept = false;
        let mut removed = 0u64;
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let (ukey, rev) =
                engine::decode_mvcc_key(k).ok_or_else(|| StoreError::Corrupt("kv key".into()))?;
            if current.as_deref() != Some(ukey.as_slice()) {
                current = Some(ukey);
                kept = false;
            }
            if rev <= upto {
                if !kept {
                    kept = true;
                    if Record::decode(v).map(|r| r.tombstone).unwrap_or(false) {
                        batch.delete_cf(kvcf, k);
                        removed += 1;
                    }
                } else {
                    batch.delete_cf(kvcf, k);
                    removed += 1;
                }
            }
            if batch.len() >= 1024 {
                self.db.write(std::mem::take(&mut batch))?;
            }
            it.next();
        }
        it.status()?;
        self.db.write(batch)?;
        let revcf = engine::cf(&self.db, CF_REV);
        self.db
            .delete_range_cf(revcf, engine::rev_key(0, 0), engine::rev_key(upto, 0))?;
        Ok(removed)
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
    let more = r.limit > 0 && kvs.len() > r.limit as usize;
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

enum TxnFail {
    Kv(KvError),
    Store(StoreError),
}

impl From<StoreError> for TxnFail {
    fn from(e: StoreError) -> Self {
        TxnFail::Store(e)
    }
}

impl From<KvError> for TxnFail {
    fn from(e: KvError) -> Self {
        TxnFail::Kv(e)
    }
}

impl From<RangeError> for TxnFail {
    fn from(e: RangeError) -> Self {
        match e {
            RangeError::Kv(k) => TxnFail::Kv(k),
            RangeError::Store(s) => TxnFail::Store(s),
        }
    }
}

enum WriteOp {
    Put(&'static str, Vec<u8>, Vec<u8>),
    Delete(&'static str, Vec<u8>),
}

/// One transaction being executed at revision `rev`: its writes are kept
/// aside (and visible to its own later reads) until it commits.
struct TxnCtx<'a> {
    store: &'a KvStore,
    rev: i64,
    sub: u32,
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    ops: Vec<WriteOp>,
    events: Vec<Event>,
}

impl<'a> TxnCtx<'a> {
    fn new(store: &'a KvStore, rev: i64) -> Self {
        TxnCtx {
            store,
            rev,
            sub: 0,
            overlay: BTreeMap::new(),
            ops: Vec::new(),
            events: Vec::new(),
        }
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.store.get_latest(key),
        }
    }

    /// Live keys in a range as this transaction sees them (store plus its own writes).
    fn live_range(&self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        if end.is_empty() {
            return Ok(self.latest(key)?.into_iter().collect());
        }
        let (kvs, _) = self
            .store
            .scan(key, end, self.rev - 1, 0, false, |_| true)?;
        if self.overlay.is_empty() {
            return Ok(kvs);
        }
        let mut merged: BTreeMap<Vec<u8>, KeyValue> =
            kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
        for (k, v) in &self.overlay {
            if in_range(k, key, end) {
                match v {
                    Some(kv) => {
                        merged.insert(k.clone(), kv.clone());
                    }
                    None => {
                        merged.remove(k);
                    }
                }
            }
        }
        Ok(merged.into_values().collect())
    }

    fn compare(&self, c: &Compare) -> Result<bool, StoreError> {
        let kvs = self.live_range(&c.key, &c.range_end)?;
        if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return Ok(false);
            }
            return Ok(compare_kv(c, &KeyValue::default()));
        }
        Ok(kvs.iter().all(|kv| compare_kv(c, kv)))
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, TxnFail> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        let branch = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.txn(t)?),
            });
        }
        Ok(TxnResponse {
            succeeded: ok,
            responses,
        })
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, TxnFail> {
        if r.revision > 0 || self.overlay.is_empty() {
            let mut r2 = r.clone();
            if r2.revision <= 0 {
                r2.revision = self.rev - 1;
            }
            if r2.revision == 0 {
                // An empty store: nothing to read yet.
                return Ok(finish_range(r, vec![], 0));
            }
            return Ok(self.store.range(&r2)?);
        }
        let all = self.live_range(&r.key, &r.range_end)?;
        let count = all.len() as i64;
        let kvs = all.into_iter().filter(|kv| passes_filters(r, kv)).collect();
        Ok(finish_range(r, kvs, count))
    }

    fn put(&mut self, p: &PutRequest) -> Result<PutResponse, TxnFail> {
        let prev = self.latest(&p.key)?;
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(KvError::KeyNotFound.into());
        }
        let lease = if p.ignore_lease {
            prev.as_ref().map_or(0, |kv| kv.lease)
        } else {
            p.lease
        };
        if lease != 0 && self.store.lease_ttl(lease)?.is_none() {
            return Err(KvError::LeaseNotFound.into());
        }
        let value = if p.ignore_value {
            prev.as_ref().map(|kv| kv.value.clone()).unwrap_or_default()
        } else {
            p.value.clone()
        };
        let kv = KeyValue {
            key: p.key.clone(),
            create_revision: prev.as_ref().map_or(self.rev, |kv| kv.create_revision),
            mod_revision: self.rev,
            version: prev.as_ref().map_or(1, |kv| kv.version + 1),
            value,
            lease,
        };
        let rec = Record {
            tombstone: false,
            create_revision: kv.create_revision,
            version: kv.version,
            lease,
            value: kv.value.clone(),
        };
        self.ops.push(WriteOp::Put(
            CF_KV,
            engine::mvcc_key(&p.key, self.rev),
            rec.encode(),
        ));
        let mut ev = vec![0u8];
        ev.extend_from_slice(&p.key);
        self.ops.push(WriteOp::Put(
            CF_REV,
            engine::rev_key(self.rev, self.sub).to_vec(),
            ev,
        ));
        self.sub += 1;
        let old_lease = prev.as_ref().map_or(0, |kv| kv.lease);
        if old_lease != 0 && old_lease != lease {
            self.ops.push(WriteOp::Delete(
                CF_LEASE_KEYS,
                engine::lease_attach_key(old_lease, &p.key),
            ));
        }
        if lease != 0 {
            self.ops.push(WriteOp::Put(
                CF_LEASE_KEYS,
                engine::lease_attach_key(lease, &p.key),
                vec![],
            ));
        }
        self.overlay.insert(p.key.clone(), Some(kv.clone()));
        self.events.push(Event {
            kind: EventType::Put,
            kv,
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    fn delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse, TxnFail> {
        let live = self.live_range(&d.key, &d.range_end)?;
        let deleted = live.len() as i64;
        for kv in &live {
            let rec = Record {
                tombstone: true,
                create_revision: 0,
                version: 0,
                lease: 0,
                value: vec![],
            };
            self.ops.push(WriteOp::Put(
                CF_KV,
                engine::mvcc_key(&kv.key, self.rev),
                rec.encode(),
            ));
            let mut ev = vec![1u8];
            ev.extend_from_slice(&kv.key);
            self.ops.push(WriteOp::Put(
                CF_REV,
                engine::rev_key(self.rev, self.sub).to_vec(),
                ev,
            ));
            self.sub += 1;
            if kv.lease != 0 {
                self.ops.push(WriteOp::Delete(
                    CF_LEASE_KEYS,
                    engine::lease_attach_key(kv.lease, &kv.key),
                ));
            }
            self.overlay.insert(kv.key.clone(), None);
            self.events.push(Event {
                kind: EventType::Delete,
                kv: KeyValue {
                    key: kv.key.clone(),
                    mod_revision: self.rev,
                    ..Default::default()
                },
                prev_kv: Some(kv.clone()),
            });
        }
        Ok(DeleteRangeResponse {
            deleted,
            prev_kvs: if d.prev_kv { live } else { vec![] },
        })
    }

    /// Move the writes into `batch`; returns the store revision after them.
    fn commit(self, batch: &mut WriteBatch, fx: &mut Effects) -> i64 {
        if self.events.is_empty() {
            return self.rev - 1;
        }
        let db = self.store.db();
        for op in self.ops {
            match op {
                WriteOp::Put(cf, k, v) => batch.put_cf(engine::cf(db, cf), k, v),
                WriteOp::Delete(cf, k) => batch.delete_cf(engine::cf(db, cf), k),
            }
        }
        batch.put_cf(
            engine::cf(db, CF_SM_META),
            META_REVISION,
            self.rev.to_be_bytes(),
        );
        fx.events.extend(self.events);
        self.rev
    }
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering as O;
    let ord = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
    };
    match c.result {
        CompareResult::Equal => ord == O::Equal,
        CompareResult::NotEqual => ord != O::Equal,
        CompareResult::Greater => ord == O::Greater,
        CompareResult::Less => ord == O::Less,
    }
}

impl KvStore {
    /// Run a transaction that writes nothing against the current state,
    /// without going through the log. Returns the response and the revision read.
    pub fn read_only_txn(&self, req: &TxnRequest) -> Result<(TxnResponse, i64), RangeError> {
        let cur = self.revision();
        let mut tx = TxnCtx::new(self, cur + 1);
        match tx.txn(req) {
            Ok(r) => Ok((r, cur)),
            Err(TxnFail::Kv(e)) => Err(e.into()),
            Err(TxnFail::Store(e)) => Err(e.into()),
        }
    }

    /// CRC-32 of every live MVCC version at or below `rev`, for comparing replicas.
    pub fn hash_kv(&self, rev: i64) -> Result<u32, StoreError> {
        let mut h = crc32fast::Hasher::new();
        let mut it = self.db.raw_iterator_cf(engine::cf(&self.db, CF_KV));
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
