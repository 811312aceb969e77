//! Compaction: logical (refused reads) and physical (what a running or
//! interrupted removal of old versions lets readers see).

use super::common::*;
use crate::engine;
use crate::kv::*;
use crate::mvcc::{KvStore, RangeError};
use crate::types::{Command, Outcome};

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

/// Every version of `key` still stored, newest first.
fn stored_versions(store: &KvStore, key: &[u8]) -> Vec<i64> {
    let db = store.db();
    let mut it = db.raw_iterator_cf_opt(engine::cf(db, engine::CF_KV), engine::across_keys());
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

#[test]
fn physical_compaction_looks_only_at_the_keys_written_since_the_last_one() {
    let mut t = T::new();
    for v in ["1", "2"] {
        for i in 0..500 {
            t.put(&format!("k{i:03}"), v);
        }
    }
    let first_upto = t.put("x", "1");
    t.apply(Command::Compact {
        revision: first_upto,
    });
    // Without the notes of puts (as on a restarted master), which spare
    // the lookups this test counts.
    t.store.superseded.clear();
    let first = t.store.compact_physical(first_upto).expect("compaction");
    // The 500 k keys (each named twice) and x.
    assert_eq!((first.removed, first.keys_examined), (500, 501));

    // Ten keys change: the next compaction looks at them and at x (whose
    // event at the last compact revision is history kept for watchers), not
    // at the 490 others.
    let mut newest = Vec::new();
    for i in 0..10 {
        newest.push(t.put(&format!("k{i:03}"), "3"));
    }
    let upto = t.put("x", "2");
    t.apply(Command::Compact { revision: upto });
    t.store.superseded.clear();
    let second = t.store.compact_physical(upto).expect("compaction");
    assert_eq!(
        second.keys_examined, 11,
        "the compaction looked at keys that did not change"
    );
    // x keeps the version before its event at `upto` (history from `upto`
    // needs it).
    assert_eq!(second.removed, 10);
    for (i, rev) in newest.iter().enumerate() {
        assert_eq!(
            stored_versions(&t.store, format!("k{i:03}").as_bytes()),
            vec![*rev]
        );
    }
    assert_eq!(stored_versions(&t.store, b"x"), vec![upto, first_upto]);
    assert_eq!(stored_versions(&t.store, b"k100").len(), 1);
    assert_eq!(t.get("k100", 0).expect("k100").value, b"2");
}

/// Every record of column family `cf`, in order.
fn dump(store: &KvStore, cf: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = store.db();
    let mut it = db.raw_iterator_cf_opt(engine::cf(db, cf), engine::across_keys());
    it.seek_to_first();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        out.push((k.to_vec(), v.to_vec()));
        it.next();
    }
    out
}

#[test]
fn compaction_from_notes_of_puts_leaves_what_looking_at_every_key_leaves() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    for seed in 0..8 {
        let mut rng = StdRng::seed_from_u64(seed);
        // `a` compacts with its notes of what puts superseded, `b` without
        // them (it looks at every key written, as before): both must keep
        // the same versions and history.
        let (mut a, mut b) = (T::new(), T::new());
        let (mut examined_a, mut examined_b) = (0, 0);
        let mut keys = 0usize;
        for _round in 0..6 {
            for _ in 0..150 {
                let old = format!("k{:04}", rng.gen_range(0..keys.max(1)));
                let new = format!("k{keys:04}");
                let op = rng.gen_range(0..10);
                for t in [&mut a, &mut b] {
                    match op {
                        // A new key (its first version).
                        0..=3 => {
                            t.put(&new, "v1");
                        }
                        // A new version of a key, maybe deleted (then it
                        // is made again after its tombstone).
                        4..=6 => {
                            t.put(&old, "v2");
                        }
                        7 => {
                            t.del(&old, "");
                        }
                        // Two keys at one revision: a new one, and a new
                        // one beside an old one.
                        _ => {
                            let put = |k: &str| {
                                RequestOp::Put(PutRequest {
                                    key: k.as_bytes().to_vec(),
                                    value: b"v3".to_vec(),
                                    ..Default::default()
                                })
                            };
                            let second = if op == 8 {
                                format!("{new}b")
                            } else {
                                old.clone()
                            };
                            let (r, _) = t.txn(TxnRequest {
                                compare: vec![],
                                success: vec![put(&new), put(&second)],
                                failure: vec![],
                            });
                            r.expect("txn");
                        }
                    }
                }
                if op <= 3 || op >= 8 {
                    keys += 1;
                }
            }
            // At the last revision, or a little below it: the version an
            // event at the compaction's revision superseded stays, and is
            // removed by the next compaction.
            let upto = a.store.revision() - rng.gen_range(0..3) * rng.gen_range(0..8);
            assert_eq!(a.store.revision(), b.store.revision());
            for t in [&mut a, &mut b] {
                t.apply(Command::Compact { revision: upto });
            }
            b.store.superseded.clear();
            let ca = a.store.compact_physical(upto).expect("compaction");
            let cb = b.store.compact_physical(upto).expect("compaction");
            assert_eq!(ca.removed, cb.removed, "seed {seed}");
            assert_eq!(dump(&a.store, engine::CF_KV), dump(&b.store, engine::CF_KV));
            assert_eq!(
                dump(&a.store, engine::CF_REV),
                dump(&b.store, engine::CF_REV)
            );
            examined_a += ca.keys_examined;
            examined_b += cb.keys_examined;
        }
        // Only keys deleted (a tenth of the commands) and those at the
        // compactions' revisions are looked up.
        assert!(
            examined_a * 4 < examined_b,
            "seed {seed}: the keys of noted puts were looked at ({examined_a} keys against {examined_b})"
        );
    }
}
