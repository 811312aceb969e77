//! Transactions: compares, then the branch's reads and writes, executed at
//! one revision with the writes kept aside (and visible to the
//! transaction's own later reads) until it commits.

use std::collections::BTreeMap;

use rocksdb::WriteBatch;

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

/// One transaction being executed at revision `rev`: its writes are kept
/// aside (and visible to its own later reads) until it commits.
pub(super) struct TxnCtx<'a> {
    store: &'a KvStore,
    rev: i64,
    sub: u32,
    overlay: BTreeMap<Vec<u8>, Option<KeyValue>>,
    ops: Vec<WriteOp>,
    events: Vec<Event>,
}

impl<'a> TxnCtx<'a> {
    pub(super) fn new(store: &'a KvStore, rev: i64) -> Self {
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
            // As of the revision before this transaction's: a read-only
            // transaction is one snapshot even while writes are applied.
            None => self.store.get_at_raw(key, self.rev - 1),
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

    pub(super) fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, TxnFail> {
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

    pub(super) fn delete(
        &mut self,
        d: &DeleteRangeRequest,
    ) -> Result<DeleteRangeResponse, TxnFail> {
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
    pub(super) fn commit(self, batch: &mut WriteBatch, fx: &mut Effects) -> i64 {
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
        // The store's revision is written with the commands' write (see
        // `apply`), once for all the commands that share it.
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
        let _r = self.read_guard();
        let cur = self.revision();
        let mut tx = TxnCtx::new(self, cur + 1);
        match tx.txn(req) {
            Ok(r) => Ok((r, cur)),
            Err(TxnFail::Kv(e)) => Err(e.into()),
            Err(TxnFail::Store(e)) => Err(e.into()),
        }
    }
}
