//! etcd's revision semantics, executed by the state machine directly.

use super::common::*;
use crate::engine;
use crate::kv::*;
use crate::mvcc::RangeError;
use crate::types::{Command, Outcome};

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
    // Nor does it appear once the next command takes the revision it would
    // have had.
    t.put("e", "1");
    assert!(
        t.get("d", 0).is_none(),
        "a failed transaction's write leaked"
    );
}

#[test]
fn a_txn_reads_its_own_deletes_and_the_writes_of_its_nested_txns() {
    let mut t = T::new();
    for k in ["a", "b", "c"] {
        t.put(k, "old");
    }
    let range = || {
        RequestOp::Range(RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            ..Default::default()
        })
    };
    let put = |k: &str| {
        RequestOp::Put(PutRequest {
            key: k.into(),
            value: b"new".to_vec(),
            ..Default::default()
        })
    };
    let keys = |r: &ResponseOp| match r {
        ResponseOp::Range(rr) => rr
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect::<Vec<_>>(),
        o => panic!("not a range: {o:?}"),
    };
    let nested = |ops: Vec<RequestOp>| {
        RequestOp::Txn(TxnRequest {
            compare: vec![],
            success: ops,
            failure: vec![],
        })
    };
    let (r, rev) = t.txn(TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                prev_kv: true,
            }),
            range(),
            put("b"),
            range(),
            // The last write of a nested transaction is read by what
            // follows it in the enclosing one.
            nested(vec![put("x")]),
            range(),
            nested(vec![nested(vec![RequestOp::DeleteRange(
                DeleteRangeRequest {
                    key: b"b".to_vec(),
                    ..Default::default()
                },
            )])]),
            range(),
        ],
        failure: vec![],
    });
    let r = r.expect("txn");
    match &r.responses[0] {
        ResponseOp::DeleteRange(d) => {
            assert_eq!(d.deleted, 3);
            assert_eq!(d.prev_kvs.len(), 3);
            assert!(d.prev_kvs.iter().all(|kv| kv.value == b"old"));
        }
        o => panic!("not a delete: {o:?}"),
    }
    assert!(keys(&r.responses[1]).is_empty());
    assert_eq!(keys(&r.responses[3]), ["b"]);
    assert_eq!(keys(&r.responses[5]), ["b", "x"]);
    assert_eq!(keys(&r.responses[7]), ["x"]);
    // And what it wrote is what the store holds after it.
    assert_eq!(rev, 5);
    assert!(t.get("a", 0).is_none() && t.get("b", 0).is_none());
    assert_eq!(t.get("x", 0).expect("x").value, b"new");
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
fn a_point_read_is_answered_in_place_unless_a_snapshot_install_keeps_readers_out() {
    let mut t = T::new();
    t.put("a", "1");
    t.put("a", "2");
    t.put("b", "x");
    t.del("b", "");
    let point = |key: &str, revision: i64, count_only: bool| RangeRequest {
        key: key.as_bytes().to_vec(),
        revision,
        count_only,
        ..Default::default()
    };
    // In place, the same answers as on a blocking thread: the newest
    // version, an older one, a deleted key, a count, a future revision.
    for r in [
        point("a", 0, false),
        point("a", 2, false),
        point("b", 0, false),
        point("b", 4, false),
        point("a", 0, true),
        point("zzz", 0, false),
    ] {
        let here = t
            .store
            .range_if_point(&r)
            .expect("a point read runs in place");
        assert_eq!(
            here.expect("read"),
            t.store.range(&r).expect("read"),
            "{r:?}"
        );
    }
    assert!(matches!(
        t.store.range_if_point(&point("a", 99, false)),
        Some(Err(RangeError::Kv(KvError::FutureRevision)))
    ));
    // The range from a key to the next key after it (the key and a zero
    // byte), as the object API reads one object, is a point read too.
    let next = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"a\0".to_vec(),
        limit: 1,
        ..Default::default()
    };
    let here = t.store.range_if_point(&next).expect("in place");
    assert_eq!(here.expect("read"), t.store.range(&next).expect("read"));
    // A range of several keys goes to a blocking thread, and so does every
    // key from the empty one on (an end of a lone zero byte).
    for (key, end) in [(&b"a"[..], &b"c"[..]), (b"", b"\0"), (b"a", b"b\0")] {
        let many = RangeRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            ..Default::default()
        };
        assert!(t.store.range_if_point(&many).is_none(), "{many:?}");
    }
    // While an install keeps readers out, an async caller must not wait.
    let held = t.store.block_readers();
    assert!(t.store.range_if_point(&point("a", 0, false)).is_none());
    drop(held);
    assert!(t.store.range_if_point(&point("a", 0, false)).is_some());
}
