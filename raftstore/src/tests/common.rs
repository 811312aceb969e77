//! The test store shared by the state-machine tests: a KvStore in a
//! temporary folder, fed log entries one at a time.
#![allow(dead_code)]

use std::sync::Arc;

use crate::engine;
use crate::kv::*;
use crate::mvcc::{Effects, KvStore, RangeError, StoreError};
use crate::types::{Command, CommandResult, Entry, Outcome};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

pub struct T {
    _dir: tempfile::TempDir,
    pub store: Arc<KvStore>,
    index: u64,
}

impl T {
    pub fn new() -> T {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = engine::open(&dir.path().join("db")).expect("open");
        T {
            store: Arc::new(KvStore::open(db).expect("store")),
            _dir: dir,
            index: 0,
        }
    }

    /// Close the store and open it again from disk, as a restart after a
    /// crash would (a killed process keeps its unsynced writes in the page
    /// cache, and so does a closed database).
    pub fn reopen(self) -> T {
        let T { _dir, store, index } = self;
        drop(store);
        let db = engine::open(&_dir.path().join("db")).expect("reopen");
        T {
            store: Arc::new(KvStore::open(db).expect("store")),
            _dir,
            index,
        }
    }

    /// Bound the window of remembered request ids to `max_ids` ids kept
    /// `keep_ms` of log time (results of up to 1 MiB).
    pub fn small_window(&self, keep_ms: u64, max_ids: i64) {
        self.store.set_once_limits(crate::mvcc::OnceLimits {
            keep_ms,
            max_ids,
            max_bytes: 1 << 20,
        });
    }

    pub fn apply(&mut self, cmd: Command) -> (CommandResult, Vec<Event>) {
        self.apply_in_term(1, cmd)
    }

    /// Apply `cmd` as the leader of `term` would have it in its log entry.
    pub fn apply_in_term(&mut self, term: u64, cmd: Command) -> (CommandResult, Vec<Event>) {
        self.try_apply_in_term(term, cmd).expect("apply")
    }

    /// Apply `cmd` as the next entry, which stays the next one if the apply
    /// fails (a master re-applies it after a restart).
    pub fn try_apply(&mut self, cmd: Command) -> Result<(CommandResult, Vec<Event>), StoreError> {
        self.try_apply_in_term(1, cmd)
    }

    fn try_apply_in_term(
        &mut self,
        term: u64,
        cmd: Command,
    ) -> Result<(CommandResult, Vec<Event>), StoreError> {
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), self.index + 1),
            payload: EntryPayload::Normal(cmd),
        };
        let (r, fx) = self.store.apply(&e)?;
        self.index += 1;
        Ok((r, fx.into_iter().flat_map(|f| f.events).collect()))
    }

    /// Apply `cmd` as the next entry: its result and every effect.
    pub fn apply_effects(&mut self, cmd: Command) -> (CommandResult, Vec<Effects>) {
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index + 1),
            payload: EntryPayload::Normal(cmd),
        };
        let out = self.store.apply(&e).expect("apply");
        self.index += 1;
        out
    }

    pub fn txn(&mut self, t: TxnRequest) -> (Result<TxnResponse, KvError>, i64) {
        let (r, _) = self.apply(Command::Txn(t));
        match r.outcome {
            Outcome::Txn(x) => (x, r.revision),
            o => panic!("unexpected {o:?}"),
        }
    }

    pub fn put(&mut self, k: &str, v: &str) -> i64 {
        self.put_lease(k, v, 0)
    }

    pub fn put_lease(&mut self, k: &str, v: &str, lease: i64) -> i64 {
        let p = PutRequest {
            key: k.into(),
            value: v.into(),
            lease,
            ..Default::default()
        };
        let (r, rev) = self.txn(TxnRequest::single(RequestOp::Put(p)));
        r.expect("put");
        rev
    }

    pub fn del(&mut self, k: &str, end: &str) -> i64 {
        let d = DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: false,
        };
        let (r, rev) = self.txn(TxnRequest::single(RequestOp::DeleteRange(d)));
        r.expect("delete");
        rev
    }

    pub fn range(&self, k: &str, end: &str, rev: i64) -> Result<RangeResponse, RangeError> {
        self.store.range(&RangeRequest {
            key: k.into(),
            range_end: end.into(),
            revision: rev,
            ..Default::default()
        })
    }

    /// The key index holds every live key at its newest revision, and
    /// nothing else (read from the store by a range of every key).
    pub fn assert_index_matches(&self) {
        let all = self.store.range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        });
        let live: std::collections::BTreeMap<Vec<u8>, i64> = all
            .expect("range of every key")
            .kvs
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect();
        assert_eq!(
            self.store.indexed_keys(),
            live,
            "the key index and the store differ"
        );
        assert_eq!(self.store.live_keys(), live.len());
    }

    pub fn get(&self, k: &str, rev: i64) -> Option<KeyValue> {
        self.range(k, "", rev)
            .expect("range")
            .kvs
            .into_iter()
            .next()
    }
}

pub fn put_cmd(k: &str, v: &str) -> Command {
    Command::Txn(TxnRequest::single(RequestOp::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })))
}
