//! Transactions: compares, then the branch's reads and writes, executed at
//! one revision with the writes kept aside (and visible to the
//! transaction's own later reads) until it commits.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;

use super::index::KeyChange;
use super::*;

pub(super) enum TxnFail {
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

/// Where a transaction's writes go before it commits.
enum Writes<'a> {
    /// Straight into a batch that held nothing before the transaction:
    /// aborting empties it again. This spares a large transaction (a
    /// delete of many keys) a second copy of its writes.
    Direct(&'a mut WriteBatch),
    /// Kept aside, and added at commit to a batch that holds the writes of
    /// the commands before this one.
    Kept(Vec<WriteOp>, &'a mut WriteBatch),
}

/// Writes of at least this many bytes size their batch once, when they are
/// its first: RocksDB's batch otherwise grows by doubling, copying what it
/// holds into fresh memory each time.
const PRESIZE_BYTES: usize = 1 << 20;

/// A delete at the end of its transaction, whose writes go straight into
/// their batch, writes the batch out each time it holds this many bytes.
/// A delete of many keys (etcdctl check perf l's last, about 200,000) was
/// one write of 150 MB, and every log append of the master (Raft's log
/// shares the database) waited seconds behind it: followers' appends timed
/// out and a leader was deposed. The chunks stay invisible until the
/// command's revision is published: every read is of a revision at most
/// the store's, and the transaction's own reads are of the one before its
/// own, so that a crash in the middle re-applies the entry to the same
/// writes (see `KvStore::apply`).
pub(super) const WRITE_CHUNK_BYTES: usize = 4 << 20;

/// The most events one command hands to the watchers with its revision. A
/// command that writes in chunks (see [`WRITE_CHUNK_BYTES`]) and changes
/// more keys than this hands none: the watchers whose range it touches
/// read its revision from history, a bounded batch at a time, with the
/// previous values they need. Its delete then reads no value it does not
/// return: `etcdctl check perf --load=l`'s last delete (about 220,000
/// values of 1 KiB) held every deleted value in memory until the apply
/// ended, and a quarter of the leader's CPU in it went to the kernel's
/// zeroing of those fresh pages (bench/RESULTS.md). etcd's watch server,
/// too, reads a previous value only for a watcher that asks for one.
pub(super) const EVENTS_CARRIED_MAX: usize = 10_000;

/// One transaction being executed at revision `rev`: its writes go to its
/// batch (and are visible to its own later reads) and count only if it
/// commits.
pub(super) struct TxnCtx<'a> {
    store: &'a KvStore,
    rev: i64,
    sub: u32,
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    writes: Writes<'a>,
    events: Vec<Event>,
    /// Whether the log applies it (see [`Self::applied`]): a large last
    /// operation may write its batch out in chunks, and the newest
    /// versions are read through the key index.
    applied: bool,
    /// The lease whose keys this transaction deletes to revoke it (0:
    /// none). Their attachments are left for the revoke's last write.
    revoking: i64,
    /// Events written but not kept in `events` (see
    /// [`EVENTS_CARRIED_MAX`]).
    elided: Option<InHistory>,
    /// Whether the deletes of a revoke keep their events out of `events`.
    eliding: bool,
    /// What the transaction changes of the key index, in order.
    key_changes: Vec<KeyChange>,
}

impl<'a> TxnCtx<'a> {
    /// A transaction whose writes go to `batch`, after what it holds.
    pub(super) fn new(store: &'a KvStore, rev: i64, batch: &'a mut WriteBatch) -> Self {
        let writes = if batch.is_empty() {
            Writes::Direct(batch)
        } else {
            Writes::Kept(Vec::new(), batch)
        };
        TxnCtx {
            store,
            rev,
            sub: 0,
            overlay: BTreeMap::new(),
            writes,
            events: Vec::new(),
            applied: false,
            revoking: 0,
            elided: None,
            eliding: false,
            key_changes: Vec::new(),
        }
    }

    /// A transaction the log applies (never one that must write nothing):
    /// its last operation may write its batch out in chunks (see
    /// [`WRITE_CHUNK_BYTES`]), and it reads the newest versions of keys
    /// through the key index.
    pub(super) fn applied(mut self) -> Self {
        self.applied = true;
        self
    }

    /// Delete the keys attached to lease `id`, to revoke it: a revoke of a
    /// lease with many keys writes its batch out in chunks as a large
    /// delete does. The keys are distinct and none is read again, and
    /// nothing can fail the revoke once they are deleted. Their
    /// attachments are not deleted here: an apply again after a crash
    /// between two chunks reads them (they are not versioned) to find the
    /// same keys, so the caller deletes them all in the revoke's last
    /// write.
    pub(super) fn revoke(&mut self, id: i64, keys: Vec<Vec<u8>>) -> Result<(), TxnFail> {
        self.revoking = id;
        self.eliding = self.applied && keys.len() > self.store.events_carried_max();
        for key in keys {
            let d = DeleteRangeRequest {
                key,
                range_end: vec![],
                prev_kv: false,
            };
            self.delete(&d, false)?;
        }
        Ok(())
    }

    fn put_op(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        match &mut self.writes {
            Writes::Direct(b) => b.put_cf(engine::cf(self.store.db(), cf), key, value),
            Writes::Kept(ops, _) => ops.push(WriteOp::Put(cf, key, value)),
        }
    }

    fn delete_op(&mut self, cf: &'static str, key: Vec<u8>) {
        match &mut self.writes {
            Writes::Direct(b) => b.delete_cf(engine::cf(self.store.db(), cf), key),
            Writes::Kept(ops, _) => ops.push(WriteOp::Delete(cf, key)),
        }
    }

    /// Make room for `ops` more writes of about `bytes` bytes.
    fn reserve(&mut self, ops: usize, bytes: usize) {
        match &mut self.writes {
            Writes::Direct(b) if b.is_empty() && bytes >= PRESIZE_BYTES => {
                **b = WriteBatch::with_capacity_bytes(bytes);
            }
            Writes::Direct(_) => {}
            Writes::Kept(v, _) => v.reserve(ops),
        }
    }

    /// Write the transaction's next event to the revision log: its type and
    /// key, under its revision and place in the transaction.
    fn log_event(&mut self, kind: EventType, key: &[u8]) {
        let mut ev = Vec::with_capacity(1 + key.len());
        // As `KvStore::history` reads it back.
        ev.push(match kind {
            EventType::Put => 0,
            EventType::Delete => 1,
        });
        ev.extend_from_slice(key);
        self.put_op(CF_REV, engine::rev_key(self.rev, self.sub).to_vec(), ev);
        self.sub += 1;
    }

    /// Write the batch out once it holds `chunk` bytes (see
    /// [`WRITE_CHUNK_BYTES`]). Only for the transaction's last operation,
    /// after which nothing can fail it: what is written is not undone.
    fn write_out_if_full(&mut self, chunk: usize) -> Result<(), StoreError> {
        let Writes::Direct(b) = &mut self.writes else {
            return Ok(());
        };
        if b.size_in_bytes() < chunk {
            return Ok(());
        }
        let full = std::mem::replace(*b, WriteBatch::with_capacity_bytes(chunk + CHUNK_SLACK));
        self.store.db().write(full)?;
        self.store.chunk_written()
    }

    /// Undo the transaction's writes (a failed transaction changes nothing).
    pub(super) fn abort(self) {
        if let Writes::Direct(b) = self.writes {
            b.clear();
        }
    }

    fn latest(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        match self.overlay.get(key) {
            Some(v) => Ok(v.clone()),
            None if self.applied => {
                let found = self.store.latest_indexed(key)?;
                // Every test that applies a write checks the index.
                #[cfg(test)]
                assert_eq!(
                    found,
                    self.store.get_at_raw(key, self.rev - 1)?,
                    "the key index and the store differ on {key:?} at revision {}",
                    self.rev - 1
                );
                Ok(found)
            }
            // As of the revision before this transaction's: a read-only
            // transaction is one snapshot even while writes are applied.
            None => self.store.get_at_raw(key, self.rev - 1),
        }
    }

    /// Live keys in a range as this transaction sees them (store plus its
    /// own writes).
    fn live_range(&self, key: &[u8], end: &[u8]) -> Result<Vec<KeyValue>, StoreError> {
        Ok(self.live_range_some_values(key, end, usize::MAX)?.0)
    }

    /// [`Self::live_range`], where only the first `values` keys read from
    /// the store carry their values; true beside them if some do not.
    fn live_range_some_values(
        &self,
        key: &[u8],
        end: &[u8],
        values: usize,
    ) -> Result<(Vec<KeyValue>, bool), StoreError> {
        if end.is_empty() {
            return Ok((self.latest(key)?.into_iter().collect(), false));
        }
        let (kvs, _) = self
            .store
            .scan(key, end, self.rev - 1, 0, values, |_| true)?;
        let partial = kvs.len() > values;
        if self.overlay.is_empty() {
            return Ok((kvs, partial));
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
        Ok((merged.into_values().collect(), partial))
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

    /// Run `req`; `last` says that nothing of the enclosing transaction
    /// runs after it (so its last write need not be readable).
    pub(super) fn txn(&mut self, req: &TxnRequest, last: bool) -> Result<TxnResponse, TxnFail> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        let branch = if ok { &req.success } else { &req.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for (i, op) in branch.iter().enumerate() {
            let tail = last && i + 1 == branch.len();
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range(r)?),
                RequestOp::Put(p) => ResponseOp::Put(self.put(p, !tail)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d, !tail)?),
                RequestOp::Txn(t) => ResponseOp::Txn(self.txn(t, tail)?),
            });
        }
        Ok(TxnResponse {
            succeeded: ok,
            responses,
        })
    }

    fn range(&self, r: &RangeRequest) -> Result<RangeResponse, TxnFail> {
        // A single key at the transaction's revision is read as its own
        // writes are (the store's published revision may lag behind the
        // commands applied with this one but not yet written).
        let point = r.revision <= 0 && r.range_end.is_empty();
        if !point && (r.revision > 0 || self.overlay.is_empty()) {
            let mut r2 = r.clone();
            if r2.revision <= 0 {
                r2.revision = self.rev - 1;
            }
            if r2.revision == 0 {
                // An empty store: nothing to read yet.
                return Ok(finish_range(r, vec![], 0));
            }
            return Ok(self.store.range_raw(&r2)?);
        }
        let all = self.live_range(&r.key, &r.range_end)?;
        let count = all.len() as i64;
        let kvs = all.into_iter().filter(|kv| passes_filters(r, kv)).collect();
        Ok(finish_range(r, kvs, count))
    }

    /// Write `p`; `read_after` says that more of the transaction runs after
    /// it, and may read what it wrote.
    fn put(&mut self, p: &PutRequest, read_after: bool) -> Result<PutResponse, TxnFail> {
        let prev = self.latest(&p.key)?;
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(KvError::KeyNotFound.into());
        }
        let lease = if p.ignore_lease {
            prev.as_ref().map_or(0, |kv| kv.lease)
        } else {
            p.lease
        };
        if lease != 0 && self.store.lease_ttl_raw(lease)?.is_none() {
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
        self.put_op(CF_KV, engine::mvcc_key(&p.key, self.rev), rec.encode());
        self.log_event(EventType::Put, &p.key);
        if self.applied {
            self.key_changes.push((p.key.clone(), Some(self.rev)));
        }
        let old_lease = prev.as_ref().map_or(0, |kv| kv.lease);
        if old_lease != 0 && old_lease != lease {
            self.delete_op(CF_LEASE_KEYS, engine::lease_attach_key(old_lease, &p.key));
        }
        if lease != 0 {
            self.put_op(
                CF_LEASE_KEYS,
                engine::lease_attach_key(lease, &p.key),
                vec![],
            );
        }
        if read_after {
            self.overlay.insert(p.key.clone(), Some(kv.clone()));
        }
        self.events.push(Event {
            kind: EventType::Put,
            kv,
            prev_kv: prev.clone(),
        });
        Ok(PutResponse {
            prev_kv: if p.prev_kv { prev } else { None },
        })
    }

    /// Delete `d`'s range; `read_after` as for [`Self::put`].
    pub(super) fn delete(
        &mut self,
        d: &DeleteRangeRequest,
        read_after: bool,
    ) -> Result<DeleteRangeResponse, TxnFail> {
        // Nothing reads after the transaction's last operation, and nothing
        // fails it: its writes may go out in chunks.
        let chunk = (self.applied && !read_after).then(|| self.store.write_chunk_bytes());
        // Such a delete of very many keys hands the watchers no events (see
        // [`EVENTS_CARRIED_MAX`]): unless the request asks for the previous
        // values, it reads only the values that its events may carry.
        let carried = match chunk {
            Some(_) if !d.prev_kv => self.store.events_carried_max(),
            _ => usize::MAX,
        };
        let (live, partial) = self.live_range_some_values(&d.key, &d.range_end, carried)?;
        let deleted = live.len() as i64;
        let elide = self.eliding || partial;
        // A large delete is one command: size its writes once, and move
        // each live pair into its event rather than copy its value.
        let bytes: usize = live
            .iter()
            .map(|kv| engine::encoded_len(&kv.key) + kv.key.len() + TOMBSTONE_WRITE_BYTES)
            .sum();
        let bytes = chunk.map_or(bytes, |c| bytes.min(c + CHUNK_SLACK));
        self.reserve(2 * live.len(), bytes);
        if !elide {
            self.events.reserve(live.len());
        }
        let mut prev_kvs = Vec::new();
        if d.prev_kv {
            prev_kvs.reserve(live.len());
        }
        for kv in live {
            let rec = Record {
                tombstone: true,
                create_revision: 0,
                version: 0,
                lease: 0,
                value: vec![],
            };
            self.put_op(CF_KV, engine::mvcc_key(&kv.key, self.rev), rec.encode());
            self.log_event(EventType::Delete, &kv.key);
            if self.applied {
                self.key_changes.push((kv.key.clone(), None));
            }
            if kv.lease != 0 && kv.lease != self.revoking {
                self.delete_op(CF_LEASE_KEYS, engine::lease_attach_key(kv.lease, &kv.key));
            }
            if read_after {
                self.overlay.insert(kv.key.clone(), None);
            }
            if d.prev_kv {
                prev_kvs.push(kv.clone());
            }
            if elide {
                InHistory::add(&mut self.elided, &kv.key);
            } else {
                self.events.push(Event {
                    kind: EventType::Delete,
                    kv: KeyValue {
                        key: kv.key.clone(),
                        mod_revision: self.rev,
                        ..Default::default()
                    },
                    prev_kv: Some(kv),
                });
            }
            if let Some(c) = chunk {
                self.write_out_if_full(c)?;
            }
        }
        Ok(DeleteRangeResponse { deleted, prev_kvs })
    }

    /// Add the writes to the batch; returns the store revision after them.
    pub(super) fn commit(self, fx: &mut Effects) -> i64 {
        if self.events.is_empty() && self.elided.is_none() {
            // No key changed: nothing was written (every write has its
            // event), and the revision stays.
            let rev = self.rev - 1;
            self.abort();
            return rev;
        }
        if let Writes::Kept(ops, batch) = self.writes {
            let db = self.store.db();
            for op in ops {
                match op {
                    WriteOp::Put(cf, k, v) => batch.put_cf(engine::cf(db, cf), k, v),
                    WriteOp::Delete(cf, k) => batch.delete_cf(engine::cf(db, cf), k),
                }
            }
        }
        // The store's revision is written with the commands' write (see
        // `apply`), once for all the commands that share it.
        if fx.events.is_empty() {
            fx.events = self.events;
        } else {
            fx.events.extend(self.events);
        }
        if fx.key_changes.is_empty() {
            fx.key_changes = self.key_changes;
        } else {
            fx.key_changes.extend(self.key_changes);
        }
        if let Some(h) = self.elided {
            match &mut fx.in_history {
                Some(all) => all.merge(h),
                None => fx.in_history = Some(h),
            }
        }
        self.rev
    }
}

/// A tombstone's two writes beside its encoded key and the key in its
/// event: the revision of its MVCC key, its record, its event's revision
/// key and type, and the batch's framing of both.
const TOMBSTONE_WRITE_BYTES: usize = 64;

/// Room in a chunk's batch beyond [`WRITE_CHUNK_BYTES`] for the write that
/// crosses it.
const CHUNK_SLACK: usize = 64 << 10;

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
        let _r = self.read_guard();
        let cur = self.revision();
        // Writes nothing: its batch is never written.
        let mut scratch = WriteBatch::default();
        let mut tx = TxnCtx::new(self, cur + 1, &mut scratch);
        match tx.txn(req, true) {
            Ok(r) => Ok((r, cur)),
            Err(TxnFail::Kv(e)) => Err(e.into()),
            Err(TxnFail::Store(e)) => Err(e.into()),
        }
    }
}
