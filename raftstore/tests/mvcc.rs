//! etcd's revision semantics, executed by the state machine directly.

use std::sync::Arc;

use flotilla_raftstore::engine;
use flotilla_raftstore::kv::*;
use flotilla_raftstore::mvcc::{KvStore, OnceLimits, RangeError};
use flotilla_raftstore::types::{Command, CommandResult, Entry, Outcome};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

struct T {
    _dir: tempfile::TempDir,
    store: Arc<KvStore>,
    index: u64,
}

impl T {
    fn new() -> T {
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
    fn reopen(self) -> T {
        let T { _dir, store, index } = self;
        drop(store);
        let db = engine::open(&_dir.path().join("db")).expect("reopen");
        T {
            store: Arc::new(KvStore::open(db).expect("store")),
            _dir,
            index,
        }
    }

    fn apply(&mut self, cmd: Command) -> (CommandResult, Vec<Event>) {
        self.apply_in_term(1, cmd)
    }

    /// Apply `cmd` as the leader of `term` would have it in its log entry.
    fn apply_in_term(&mut self, term: u64, cmd: Command) -> (CommandResult, Vec<Event>) {
        self.index += 1;
        let e = Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), self.index),
            payload: EntryPayload::Normal(cmd),
        };
        let (r, fx) = self.store.apply(&e).expect("apply");
        (r, fx.into_iter().flat_map(|f| f.events).collect())
    }

    fn txn(&mut self, t: TxnRequest) -> (Result<TxnResponse, KvError>, i64) {
        let (r, _) = self.apply(Command::Txn(t));
        match r.outcome {
            Outcome::Txn(x) => (x, r.revision),
            o => panic!("unexpected {o:?}"),
        }
    }

    fn put(&mut self, k: &str, v: &str) -> i64 {
        self.put_lease(k, v, 0)
    }

    fn put_lease(&mut self, k: &str, v: &str, lease: i64) -> i64 {
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

    fn del(&mut self, k: &str, end: &str) -> i64 {
        let d = DeleteRangeRequest {
            key: k.into(),
            range_end: end.into(),
            prev_kv: false,
        };
        let (r, rev) = self.txn(TxnRequest::single(RequestOp::DeleteRange(d)));
        r.expect("delete");
        rev
    }

    fn range(&self, k: &str, end: &str, rev: i64) -> Result<RangeResponse, RangeError> {
        self.store.range(&RangeRequest {
            key: k.into(),
            range_end: end.into(),
            revision: rev,
            ..Default::default()
        })
    }

    fn get(&self, k: &str, rev: i64) -> Option<KeyValue> {
        self.range(k, "", rev)
            .expect("range")
            .kvs
            .into_iter()
            .next()
    }
}

#[test]
fn revisions_versions_and_create_revisions_follow_etcd() {
    let mut t = T::new();
    assert_eq!(t.put("a", "1"), 2);
    assert_eq!(t.put("a", "2"), 3);
    assert_eq!(t.put("b", "x"), 4);
    assert_eq!(t.del("a", ""), 5);
    assert_eq!(t.put("a", "3"), 6);
    let a = t.get("a", 0).expect("a exists");
    assert_eq!(
        (
            a.create_revision,
            a.mod_revision,
            a.version,
            a.value.as_slice()
        ),
        (6, 6, 1, &b"3"[..])
    );
    let a2 = t.get("a", 3).expect("a at rev 3");
    assert_eq!(
        (
            a2.create_revision,
            a2.mod_revision,
            a2.version,
            a2.value.as_slice()
        ),
        (2, 3, 2, &b"2"[..])
    );
    assert!(t.get("a", 5).is_none(), "deleted at revision 5");
    assert_eq!(t.store.revision(), 6);
    // A delete of nothing writes nothing and does not move the revision.
    assert_eq!(t.del("zzz", ""), 6);
    assert!(matches!(
        t.range("a", "", 7),
        Err(RangeError::Kv(KvError::FutureRevision))
    ));
}

#[test]
fn range_limit_count_sort_and_filters() {
    let mut t = T::new();
    for (k, v) in [("k1", "c"), ("k2", "a"), ("k3", "b"), ("l1", "z")] {
        t.put(k, v);
    }
    let r = t
        .store
        .range(&RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            limit: 2,
            ..Default::default()
        })
        .expect("range");
    assert_eq!(
        r.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b"k1".to_vec(), b"k2".to_vec()]
    );
    assert!(r.more);
    assert_eq!(r.count, 3);
    let r = t
        .store
        .range(&RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            sort_order: SortOrder::Descend,
            sort_target: SortTarget::Value,
            keys_only: true,
            ..Default::default()
        })
        .expect("range");
    assert_eq!(
        r.kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        vec![b"k1".to_vec(), b"k3".to_vec(), b"k2".to_vec()]
    );
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
    let all = t.range("\0", "\0", 0).expect("all");
    assert_eq!(all.count, 4);
    let r = t
        .store
        .range(&RangeRequest {
            key: b"k".to_vec(),
            range_end: b"\0".to_vec(),
            min_mod_revision: 4,
            count_only: true,
            ..Default::default()
        })
        .expect("range");
    assert!(r.kvs.is_empty());
    assert_eq!(r.count, 4, "count ignores filters and limits");
}

#[test]
fn txn_compares_choose_the_branch_and_see_their_own_writes() {
    let mut t = T::new();
    t.put("a", "1");
    let cmp = |v: &str| Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Value(v.into()),
        key: b"a".to_vec(),
        range_end: vec![],
    };
    let put = |k: &str, v: &str| {
        RequestOp::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })
    };
    let get = |k: &str| {
        RequestOp::Range(RangeRequest {
            key: k.into(),
            ..Default::default()
        })
    };
    let (r, rev) = t.txn(TxnRequest {
        compare: vec![cmp("1")],
        success: vec![put("b", "yes"), get("b")],
        failure: vec![put("b", "no")],
    });
    let r = r.expect("txn");
    assert!(r.succeeded);
    assert_eq!(rev, 3);
    match &r.responses[1] {
        ResponseOp::Range(rr) => assert_eq!(rr.kvs[0].value, b"yes"),
        o => panic!("{o:?}"),
    }
    let (r, _) = t.txn(TxnRequest {
        compare: vec![cmp("2")],
        success: vec![put("b", "yes2")],
        failure: vec![put("b", "no")],
    });
    assert!(!r.expect("txn").succeeded);
    assert_eq!(t.get("b", 0).expect("b").value, b"no");
    // Comparing the value of a missing key is false; its version is 0.
    let missing = Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Version(0),
        key: b"nope".to_vec(),
        range_end: vec![],
    };
    let (r, _) = t.txn(TxnRequest {
        compare: vec![missing],
        success: vec![],
        failure: vec![],
    });
    assert!(r.expect("txn").succeeded);
    // A failing operation aborts the whole transaction: nothing written, revision unchanged.
    let before = t.store.revision();
    let bad = RequestOp::Put(PutRequest {
        key: b"c".to_vec(),
        lease: 42,
        ..Default::default()
    });
    let (r, rev) = t.txn(TxnRequest {
        compare: vec![],
        success: vec![put("d", "1"), bad],
        failure: vec![],
    });
    assert_eq!(r, Err(KvError::LeaseNotFound));
    assert_eq!(rev, before);
    assert!(t.get("d", 0).is_none());
}

#[test]
fn compaction_refuses_old_revisions_and_keeps_the_state_at_the_compact_revision() {
    let mut t = T::new();
    for i in 0..5 {
        t.put("a", &format!("{i}"));
    }
    t.put("b", "1");
    t.del("b", "");
    t.put("c", "1");
    // revisions: a=2..6, b put=7, b del=8, c=9
    let (r, _) = t.apply(Command::Compact { revision: 8 });
    assert_eq!(r.outcome, Outcome::Done(Ok(())));
    assert!(matches!(
        t.range("a", "", 7),
        Err(RangeError::Kv(KvError::Compacted {
            compact_revision: 8
        }))
    ));
    let before = t
        .range("\0", "\0", 8)
        .expect("range at the compact revision");
    t.store.compact_physical(8).expect("physical compaction");
    let after = t
        .range("\0", "\0", 8)
        .expect("range at the compact revision");
    assert_eq!(before, after);
    assert_eq!(t.get("a", 8).expect("a").value, b"4");
    assert!(t.get("b", 8).is_none());
    assert!(matches!(
        t.store.history(7, b"\0", b"\0", 100),
        Err(RangeError::Kv(KvError::Compacted {
            compact_revision: 8
        }))
    ));
    let (h, next) = t
        .store
        .history(8, b"\0", b"\0", 100)
        .expect("history from the compact revision");
    assert_eq!(h.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![8, 9]);
    assert_eq!(next, 10);
    let (r, _) = t.apply(Command::Compact { revision: 5 });
    assert_eq!(
        r.outcome,
        Outcome::Done(Err(KvError::Compacted {
            compact_revision: 8
        }))
    );
    let (r, _) = t.apply(Command::Compact { revision: 100 });
    assert_eq!(r.outcome, Outcome::Done(Err(KvError::FutureRevision)));
}

#[test]
fn history_replays_the_same_events_that_were_applied() {
    let mut t = T::new();
    let mut applied = Vec::new();
    for i in 0..50 {
        let k = format!("k{}", i % 7);
        let (r, evs) = if i % 5 == 4 {
            t.apply(Command::Txn(TxnRequest::single(RequestOp::DeleteRange(
                DeleteRangeRequest {
                    key: k.into(),
                    range_end: vec![],
                    prev_kv: false,
                },
            ))))
        } else {
            t.apply(Command::Txn(TxnRequest::single(RequestOp::Put(
                PutRequest {
                    key: k.into(),
                    value: vec![i as u8],
                    ..Default::default()
                },
            ))))
        };
        if !evs.is_empty() {
            applied.push((r.revision, evs));
        }
    }
    let mut replayed = Vec::new();
    let mut next = 1;
    loop {
        let (batch, after) = t.store.history(next, b"\0", b"\0", 7).expect("history");
        if batch.is_empty() {
            break;
        }
        replayed.extend(batch);
        next = after;
    }
    assert_eq!(
        replayed, applied,
        "replayed history differs from what was applied"
    );
}

#[test]
fn revoking_a_lease_deletes_its_keys_in_one_revision() {
    let mut t = T::new();
    let (r, _) = t.apply(Command::LeaseGrant { id: 7, ttl: 10 });
    assert_eq!(r.outcome, Outcome::LeaseGranted(Ok((7, 10))));
    let (r, _) = t.apply(Command::LeaseGrant { id: 7, ttl: 10 });
    assert_eq!(r.outcome, Outcome::LeaseGranted(Err(KvError::LeaseExists)));
    t.put_lease("x", "1", 7);
    t.put_lease("y", "1", 7);
    t.put("z", "1");
    assert_eq!(
        t.store.lease_keys(7).expect("keys"),
        vec![b"x".to_vec(), b"y".to_vec()]
    );
    let (r, evs) = t.apply(Command::LeaseRevoke { id: 7 });
    assert_eq!(r.revision, 5);
    assert_eq!(evs.len(), 2);
    assert!(evs
        .iter()
        .all(|e| e.kind == EventType::Delete && e.kv.mod_revision == 5));
    assert!(t.get("x", 0).is_none() && t.get("y", 0).is_none());
    assert!(t.get("z", 0).is_some());
    assert_eq!(t.store.lease_ttl(7).expect("ttl"), None);
    let (r, _) = t.apply(Command::LeaseRevoke { id: 7 });
    assert_eq!(r.outcome, Outcome::Done(Err(KvError::LeaseNotFound)));
}

#[test]
fn a_batch_applies_each_command_at_its_own_revision_and_resumes_after_a_crash() {
    let put = |k: &str| {
        Command::Txn(TxnRequest::single(RequestOp::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            ..Default::default()
        })))
    };
    let mut t = T::new();
    let (r, evs) = t.apply(Command::Batch(vec![put("a"), put("b"), put("a")]));
    let Outcome::Batch(results) = r.outcome else {
        panic!("not a batch outcome")
    };
    assert_eq!(
        results.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![2, 3, 4]
    );
    assert_eq!(evs.len(), 3);
    assert_eq!(t.get("a", 0).expect("a").version, 2);
    let (applied, _) = t.store.applied_state().expect("applied");
    assert_eq!(applied.map(|l| l.index), Some(1));

    // A master that crashed after writing the first two commands of entry 1
    // re-applies the entry and must not write them twice.
    let mut t = T::new();
    let meta = engine::cf(t.store.db(), engine::CF_SM_META);
    t.store
        .db()
        .put_cf(
            meta,
            flotilla_raftstore::mvcc::META_BATCH_PROGRESS,
            bincode_progress(1, 1),
        )
        .expect("marker");
    t.apply(Command::Batch(vec![put("a"), put("b"), put("c")]));
    assert!(
        t.get("a", 0).is_none() && t.get("b", 0).is_none(),
        "already-written commands were written again"
    );
    assert_eq!(t.get("c", 0).expect("c").mod_revision, 2);
}

fn bincode_progress(index: u64, sub: usize) -> Vec<u8> {
    let mut v = index.to_le_bytes().to_vec();
    v.extend_from_slice(&(sub as u64).to_le_bytes());
    v
}

#[test]
fn a_replayed_request_id_changes_nothing_and_never_moves_the_revision_back() {
    let put = |k: &str, v: &str| {
        Command::Txn(TxnRequest::single(RequestOp::Put(PutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })))
    };
    let once = |id: u64, cmd: Command| Command::Once {
        id: (9, id),
        cmd: Box::new(cmd),
    };
    let mut t = T::new();
    let (first, _) = t.apply(once(1, put("a", "1")));
    assert_eq!(first.revision, 2);
    t.put("b", "1"); // revision 3
                     // The same request again (a retry after an ambiguous failure): the first
                     // result is replayed, nothing is written, the revision stays.
    let (again, evs) = t.apply(once(1, put("a", "1")));
    assert_eq!(again.unwrap_replay(), (first.clone(), true));
    assert!(evs.is_empty());
    assert_eq!(
        t.get("a", 0).expect("a").version,
        1,
        "a replayed put was applied twice"
    );
    assert_eq!(t.store.revision(), 3, "a replay moved the revision back");
    // And inside a batch, with a new write after the replay.
    let (r, _) = t.apply(Command::Batch(vec![
        once(1, put("a", "1")),
        once(2, put("c", "1")),
    ]));
    let Outcome::Batch(results) = r.outcome else {
        panic!("not a batch outcome")
    };
    assert_eq!(results[0].clone().unwrap_replay(), (first, true));
    assert_eq!(
        results[1].revision, 4,
        "a write after a replay reused a revision"
    );
}

#[test]
fn a_request_id_whose_compares_failed_is_not_remembered() {
    // One API call retries its read-modify-write rounds under one request
    // id: a round whose compares fail wrote nothing, so a later round (or a
    // retry of the call) under the same id must run, and once one round
    // wrote, every later one replays it.
    let guarded = |expect_absent: bool, v: &str| {
        Command::Txn(TxnRequest {
            compare: vec![Compare {
                key: b"k".to_vec(),
                range_end: vec![],
                result: if expect_absent {
                    CompareResult::Equal
                } else {
                    CompareResult::Greater
                },
                target: CompareTarget::Create(0),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: b"k".to_vec(),
                value: v.into(),
                ..Default::default()
            })],
            failure: vec![],
        })
    };
    let once = |cmd: Command| Command::Once {
        id: (9, 77),
        cmd: Box::new(cmd),
    };
    let mut t = T::new();
    // "k exists" is false: nothing written, nothing remembered.
    let (r, _) = t.apply(once(guarded(false, "x")));
    assert!(matches!(r.outcome, Outcome::Txn(Ok(ref x)) if !x.succeeded));
    // The next round under the same id sees the compare hold and writes.
    let (r, evs) = t.apply(once(guarded(true, "y")));
    let (r, replayed) = r.unwrap_replay();
    assert!(!replayed);
    assert!(matches!(r.outcome, Outcome::Txn(Ok(ref x)) if x.succeeded));
    assert_eq!(evs.len(), 1);
    // From now on the id is a replay, whatever the command says.
    let (again, evs) = t.apply(once(guarded(true, "z")));
    assert_eq!(again.unwrap_replay(), (r, true));
    assert!(evs.is_empty());
    assert_eq!(t.get("k", 0).expect("k").value, b"y".to_vec());
}

/// Every version of `key` still stored, newest first.
fn stored_versions(store: &KvStore, key: &[u8]) -> Vec<i64> {
    let db = store.db();
    let mut it = db.raw_iterator_cf(engine::cf(db, engine::CF_KV));
    it.seek(engine::encoded_key(key));
    let mut out = Vec::new();
    while let Some(k) = it.key() {
        match engine::decode_mvcc_key(k) {
            Some((u, rev)) if u == key => out.push(rev),
            _ => break,
        }
        it.next();
    }
    out
}

#[test]
fn physical_compaction_never_exposes_an_older_version_of_a_deleted_key_even_after_a_crash() {
    let mut t = T::new();
    for i in 0..40 {
        t.put("k", &format!("v{i}"));
    }
    t.put("j", "1");
    t.del("k", "");
    let upto = t.put("l", "1");
    t.apply(Command::Compact { revision: upto });
    // Small writes, so that there are many states between two writes; the
    // compaction is cut short (a crash) after the third.
    let mut writes = 0;
    let mut seen_states = 0;
    t.store
        .compact_physical_observed(upto, 7, &mut |s: &KvStore| {
            writes += 1;
            let k = s.get_latest(b"k").expect("read");
            assert!(
                k.is_none(),
                "after write {writes} of the compaction the deleted key is back: {k:?}"
            );
            let all = s
                .range(&RangeRequest {
                    key: b"\0".to_vec(),
                    range_end: b"\0".to_vec(),
                    ..Default::default()
                })
                .expect("range");
            assert_eq!(all.count, 2, "only j and l exist");
            seen_states += 1;
            writes < 3
        })
        .expect("compaction");
    assert_eq!(seen_states, 3, "the compaction was not cut short");
    let mut t = t.reopen();
    assert!(
        t.get("k", 0).is_none(),
        "the deleted key is back after a crash"
    );
    let rev = t.put("k", "new");
    let k = t.get("k", 0).expect("k");
    assert_eq!(
        (k.version, k.create_revision),
        (1, rev),
        "a key put after its delete starts again at version 1"
    );
    // The next run (a restart resumes it) finishes what the crash left.
    t.store.compact_physical(upto).expect("compaction");
    assert_eq!(stored_versions(&t.store, b"k"), vec![rev]);
}

#[test]
fn watch_history_read_during_compaction_reports_compacted_rather_than_a_delete_without_its_value() {
    let mut t = T::new();
    t.put("k", "1");
    t.put("k", "2");
    let deleted_at = t.del("k", "");
    let upto = t.put("x", "1");
    // A watcher reads history from `deleted_at`, allowed when it checked
    // (the compaction to `upto` not applied yet), while the physical
    // compaction runs: history is read between each two of its writes (one
    // delete per write).
    let mut checked = 0;
    t.store
        .compact_physical_observed(upto, 1, &mut |s: &KvStore| {
            match s.history(deleted_at, b"\0", b"\0", 100) {
                Ok((h, _)) => {
                    for (rev, evs) in h {
                        for e in evs {
                            assert!(
                                e.kind != EventType::Delete || e.prev_kv.is_some(),
                                "a delete at {rev} without its previous value: a watcher would \
                                 silently miss it"
                            );
                        }
                    }
                }
                Err(RangeError::Kv(KvError::Compacted { .. })) => {}
                Err(e) => panic!("history: {e}"),
            }
            checked += 1;
            true
        })
        .expect("compaction");
    assert!(checked >= 3, "history was read in only {checked} states");
}

fn put_cmd(k: &str, v: &str) -> Command {
    Command::Txn(TxnRequest::single(RequestOp::Put(PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })))
}

#[test]
fn a_fenced_command_is_applied_only_in_the_term_it_was_fenced_with() {
    let mut t = T::new();
    let fenced = |term: u64, cmd: Command| Command::Fenced {
        term,
        cmd: Box::new(cmd),
    };
    // Proposed by the leader of term 3, in term 3: applied.
    let (r, evs) = t.apply_in_term(3, fenced(3, put_cmd("a", "1")));
    assert!(matches!(r.outcome, Outcome::Txn(Ok(_))), "{r:?}");
    assert_eq!(evs.len(), 1);
    // The leader of term 3, deposed, has its write reach the log of term 4
    // (forwarded to or retried on the new leader): refused, nothing written.
    let (r, evs) = t.apply_in_term(4, fenced(3, put_cmd("a", "2")));
    assert_eq!(r.outcome, Outcome::Fenced { term: 3 });
    assert!(evs.is_empty());
    assert_eq!(t.get("a", 0).expect("a").value, b"1");
    // Inside a request id, a refusal is not remembered: the id stays free.
    let once = |cmd| Command::Once {
        id: (7, 7),
        cmd: Box::new(cmd),
    };
    let (r, _) = t.apply_in_term(4, once(fenced(3, put_cmd("a", "3"))));
    assert_eq!(r.outcome, Outcome::Fenced { term: 3 });
    let (r, _) = t.apply_in_term(4, once(fenced(4, put_cmd("a", "4"))));
    assert!(matches!(r.outcome, Outcome::Txn(Ok(_))), "{r:?}");
    assert_eq!(t.get("a", 0).expect("a").value, b"4");
    // And in a batch, each command is judged on its own.
    let (r, _) = t.apply_in_term(
        5,
        Command::Batch(vec![
            fenced(4, put_cmd("b", "x")),
            fenced(5, put_cmd("c", "y")),
        ]),
    );
    let Outcome::Batch(rs) = r.outcome else {
        panic!("not a batch outcome")
    };
    assert_eq!(rs[0].outcome, Outcome::Fenced { term: 4 });
    assert!(t.get("b", 0).is_none());
    assert!(t.get("c", 0).is_some());
}

#[test]
fn the_cluster_id_is_set_once_and_only_by_a_written_command() {
    let mut t = T::new();
    assert_eq!(t.store.cluster_id(), 0);
    t.apply(Command::SetClusterId { id: 42 });
    assert_eq!(t.store.cluster_id(), 42);
    t.apply(Command::SetClusterId { id: 43 });
    assert_eq!(t.store.cluster_id(), 42);
    let t = t.reopen();
    assert_eq!(t.store.cluster_id(), 42);
}

#[test]
fn a_read_only_txn_reads_one_revision_even_while_writes_are_applied() {
    let mut t = T::new();
    t.put("a", "1");
    let cmp = Compare {
        result: CompareResult::Equal,
        target: CompareTarget::Value(b"1".to_vec()),
        key: b"a".to_vec(),
        range_end: vec![],
    };
    let get = RequestOp::Range(RangeRequest {
        key: b"a".to_vec(),
        ..Default::default()
    });
    let req = TxnRequest {
        compare: vec![cmp],
        success: vec![get.clone()],
        failure: vec![get],
    };
    // An apply in progress: its version of `a` (revision 3) is written,
    // the store's revision not moved yet. A read-only transaction now reads
    // revision 2, its compares as much as its ranges.
    let db = t.store.db();
    let rec = engine::Record {
        tombstone: false,
        create_revision: 2,
        version: 2,
        lease: 0,
        value: b"2".to_vec(),
    };
    db.put_cf(
        engine::cf(db, engine::CF_KV),
        engine::mvcc_key(b"a", 3),
        rec.encode(),
    )
    .expect("write");
    let (resp, rev) = t.store.read_only_txn(&req).expect("txn");
    assert_eq!(rev, 2);
    let ResponseOp::Range(r) = &resp.responses[0] else {
        panic!("not a range")
    };
    assert_eq!(
        (resp.succeeded, r.kvs[0].value.as_slice()),
        (true, &b"1"[..]),
        "the compare and the range of one read-only transaction read different revisions"
    );
}

#[test]
fn request_ids_are_forgotten_after_the_time_bound_and_a_full_window_refuses_new_ones() {
    let mut t = T::new();
    t.store.set_once_limits(OnceLimits {
        keep_ms: 1000,
        max_ids: 2,
        max_bytes: 1 << 20,
    });
    // Entries as a leader writes them: stamped with its clock.
    let mut at = |ms: u64, n: u64, k: &str| {
        let once = Command::Once {
            id: (1, n),
            cmd: Box::new(put_cmd(k, "v")),
        };
        t.apply(Command::At {
            ms,
            cmd: Box::new(once),
        })
        .0
        .outcome
    };
    assert!(matches!(at(10_000, 1, "a"), Outcome::Txn(Ok(_))));
    assert!(matches!(at(10_100, 2, "b"), Outcome::Txn(Ok(_))));
    // A retry within the window replays.
    assert!(matches!(at(10_200, 1, "a"), Outcome::Replayed(_)));
    // A third id while both are young: remembering it would forget one
    // whose retry could then apply twice. Refused, nothing written.
    assert_eq!(
        at(10_300, 3, "c"),
        Outcome::Txn(Err(KvError::TooManyRequests))
    );
    assert!(matches!(at(10_400, 1, "a"), Outcome::Replayed(_)));
    // Log time passes id 1's bound: it is forgotten, id 3 fits.
    assert!(matches!(at(11_050, 3, "c"), Outcome::Txn(Ok(_))));
    // And past id 2's: id 1, long forgotten, is a new request again.
    assert!(matches!(at(11_200, 1, "a"), Outcome::Txn(Ok(_))));
    let t = t.reopen();
    // The window survives a restart: id 3 is still remembered.
    let mut t = t;
    let r = t
        .apply(Command::At {
            ms: 11_300,
            cmd: Box::new(Command::Once {
                id: (1, 3),
                cmd: Box::new(put_cmd("c", "v")),
            }),
        })
        .0;
    assert!(matches!(r.outcome, Outcome::Replayed(_)), "{r:?}");
    assert_eq!(t.get("c", 0).expect("c").version, 1);
}
