//! Applying commands: batches, request ids and their window, fencing.

use super::common::*;
use crate::engine;
use crate::kv::*;
use crate::mvcc::StoreError;
use crate::types::{Command, Outcome};

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
            crate::mvcc::META_BATCH_PROGRESS,
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

#[test]
fn a_failed_transaction_that_shares_a_write_leaves_out_only_its_own_writes() {
    let put = |k: &str, lease: i64| {
        RequestOp::Put(PutRequest {
            key: k.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
    };
    let mut t = T::new();
    // Three point commands share one write; the second fails after its
    // first put (lease 42 does not exist).
    let (r, _) = t.apply(Command::Batch(vec![
        Command::Txn(TxnRequest::single(put("a", 0))),
        Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![put("d", 0), put("e", 42)],
            failure: vec![],
        }),
        Command::Txn(TxnRequest::single(put("f", 0))),
    ]));
    let Outcome::Batch(results) = r.outcome else {
        panic!("not a batch outcome")
    };
    assert_eq!(
        results[1].outcome,
        Outcome::Txn(Err(KvError::LeaseNotFound))
    );
    assert_eq!(t.get("a", 0).expect("a").mod_revision, 2);
    assert!(t.get("d", 0).is_none() && t.get("e", 0).is_none());
    assert_eq!(t.get("f", 0).expect("f").mod_revision, 3);
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
fn request_ids_are_forgotten_after_the_time_bound_and_a_full_window_refuses_new_ones() {
    let mut t = T::new();
    t.small_window(1000, 2);
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

#[test]
fn commands_that_may_visit_any_number_of_keys_are_told_apart() {
    let del = |end: &str| {
        Command::Txn(TxnRequest::single(RequestOp::DeleteRange(
            DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: end.into(),
                prev_kv: false,
            },
        )))
    };
    let guarded_put = |end: &str| {
        Command::Txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Mod(0),
                key: b"a".to_vec(),
                range_end: end.into(),
            }],
            success: vec![RequestOp::Put(PutRequest {
                key: b"a".to_vec(),
                ..Default::default()
            })],
            failure: vec![],
        })
    };
    // One key each: applied inline.
    assert!(!put_cmd("a", "v").unbounded());
    assert!(!del("").unbounded());
    assert!(!guarded_put("").unbounded());
    assert!(!Command::Batch(vec![put_cmd("a", "v"), del("")]).unbounded());
    // A prefix, a comparison over a range, a lease's keys: not inline.
    assert!(del("\0").unbounded());
    assert!(guarded_put("b").unbounded());
    assert!(Command::LeaseRevoke { id: 7 }.unbounded());
    assert!(Command::Batch(vec![put_cmd("a", "v"), del("b")]).unbounded());
    assert!(Command::Once {
        id: (1, 1),
        cmd: Box::new(del("b")),
    }
    .unbounded());
}

/// The events written under revision `rev`, read through `it`, an
/// iterator of the `rev` family (of the database or of a view).
fn events_at(mut it: rocksdb::DBRawIterator<'_>, rev: i64) -> Vec<(u32, Vec<u8>)> {
    it.seek(engine::rev_key(rev, 0));
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        match engine::decode_rev_key(k) {
            Some((r, sub)) if r == rev => out.push((sub, v.to_vec())),
            _ => break,
        }
        it.next();
    }
    out
}

/// The events written under revision `rev`, read from the database itself
/// (readers are kept to the store's revision).
fn raw_events_at(t: &T, rev: i64) -> Vec<(u32, Vec<u8>)> {
    let db = t.store.db();
    events_at(db.raw_iterator_cf(engine::cf(db, engine::CF_REV)), rev)
}

/// The events of deletes of `keys`, in order, as the `rev` family holds them.
fn deletes_of(keys: &[String]) -> Vec<(u32, Vec<u8>)> {
    let event = |k: &String| [&[1u8][..], k.as_bytes()].concat();
    (0..).zip(keys.iter().map(event)).collect()
}

/// Stop the next apply once `n` chunks of a large delete are written, as a
/// crash would.
fn crash_after_chunks(t: &T, n: usize) {
    let mut written = 0;
    t.store.after_chunk(move || {
        written += 1;
        if written >= n {
            return Err(StoreError::Corrupt("injected: crash after a chunk".into()));
        }
        Ok(())
    });
}

/// Apply `cmd`, which deletes `keys` keys from `k` to `l`, in chunks of
/// about 2 KB (some 20 tombstones each), and stop the apply after three of
/// them are written, as a crash would. Returns the revision it was
/// applied at, which readers do not see.
fn crash_between_chunks(t: &mut T, cmd: Command, keys: usize) -> i64 {
    let before = t.store.revision();
    let rev = before + 1;
    t.store.set_write_chunk_bytes(2048);
    crash_after_chunks(t, 3);
    let err = t.try_apply(cmd).expect_err("the injected crash");
    assert!(err.to_string().contains("injected"), "{err}");
    let written = raw_events_at(t, rev).len();
    assert!(
        written > 0 && written < keys,
        "the crash must fall between chunks: {written} of {keys} events written"
    );
    assert_eq!(t.store.revision(), before);
    assert_eq!(t.range("k", "l", 0).expect("range").count, keys as i64);
    rev
}

/// A delete of every key from `k` to `l`.
fn delete_all() -> Command {
    Command::Txn(TxnRequest::single(RequestOp::DeleteRange(
        DeleteRangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            prev_kv: false,
        },
    )))
}

#[test]
fn a_large_delete_is_written_in_chunks_unseen_until_applied_and_reapplied_alike_after_a_crash() {
    let mut t = T::new();
    let keys: Vec<String> = (0..300).map(|i| format!("k{i:03}")).collect();
    for k in &keys {
        t.put(k, &"v".repeat(100));
    }
    let before = t.store.revision();
    let rev = crash_between_chunks(&mut t, delete_all(), keys.len());
    // Readers see the store as it was: every key, and no event past it.
    let (history, next) = t.store.history(rev, b"\0", b"\0", 1000).expect("history");
    assert!(
        history.is_empty() && next == rev,
        "a partly written revision was read from history: {} revisions, next {next}",
        history.len()
    );

    // The restarted master applies the entry again: the same writes, each
    // key deleted once at the revision, in key order.
    // Its key index, rebuilt, holds every key: the chunks' tombstones
    // are above the store's revision.
    let mut t = t.reopen();
    t.assert_index_matches();
    assert_eq!(t.store.live_keys(), keys.len());
    t.store.set_write_chunk_bytes(2048);
    let (r, events) = t.try_apply(delete_all()).expect("re-applied");
    assert_eq!(r.revision, rev);
    t.assert_index_matches();
    assert_eq!(t.store.live_keys(), 0);
    let Outcome::Txn(Ok(resp)) = r.outcome else {
        panic!("not a transaction outcome")
    };
    let ResponseOp::DeleteRange(d) = &resp.responses[0] else {
        panic!("not a delete")
    };
    assert_eq!(d.deleted, 300);
    assert_eq!(events.len(), 300);
    assert_eq!(raw_events_at(&t, rev), deletes_of(&keys));
    let (history, _) = t.store.history(rev, b"\0", b"\0", 1000).expect("history");
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].1.len(), 300);
    assert_eq!(t.range("k", "l", 0).expect("range").count, 0);
    assert_eq!(
        t.get("k000", before)
            .expect("before the delete")
            .value
            .len(),
        100
    );
}

#[test]
fn a_delete_that_more_operations_follow_is_written_in_one_piece() {
    let mut t = T::new();
    for i in 0..100 {
        t.put(&format!("k{i:03}"), &"v".repeat(100));
    }
    t.store.set_write_chunk_bytes(1024);
    crash_after_chunks(&t, 1);
    // Not the transaction's last operation: a chunk written now could not
    // be undone if a later operation failed the transaction.
    let (r, events) = t
        .try_apply(Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"k".to_vec(),
                    range_end: b"l".to_vec(),
                    prev_kv: false,
                }),
                RequestOp::Put(PutRequest {
                    key: b"z".to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        }))
        .expect("applied in one write, no chunk");
    assert!(matches!(r.outcome, Outcome::Txn(Ok(_))));
    assert_eq!(events.len(), 101);
    assert_eq!(t.range("k", "l", 0).expect("range").count, 0);
}

/// A revoke deletes its lease's keys in chunks too (a lease of Kubernetes'
/// events holds up to a thousand keys; etcdctl's users may attach many
/// more). Its attachments, which say which keys those are and are not
/// versioned, go only with its last write: an apply again after a crash
/// between two chunks finds the same keys, and writes the same events.
#[test]
fn a_revoke_of_many_keys_is_written_in_chunks_and_reapplied_alike_after_a_crash() {
    let mut t = T::new();
    t.apply(Command::LeaseGrant { id: 7, ttl: 600 });
    let keys: Vec<String> = (0..300).map(|i| format!("k{i:03}")).collect();
    for k in &keys {
        t.put_lease(k, &"v".repeat(100), 7);
    }
    let rev = crash_between_chunks(&mut t, Command::LeaseRevoke { id: 7 }, keys.len());
    // Readers see the store as it was: the keys, the lease and its keys.
    assert_eq!(t.store.lease_keys(7).expect("lease keys").len(), 300);
    assert!(t.store.lease_ttl(7).expect("lease").is_some());

    // Applied again after the restart: every key deleted once, in key
    // order, and the lease and its attachments gone.
    let mut t = t.reopen();
    t.store.set_write_chunk_bytes(2048);
    let (r, events) = t
        .try_apply(Command::LeaseRevoke { id: 7 })
        .expect("re-applied");
    assert_eq!(r.revision, rev);
    assert!(
        matches!(r.outcome, Outcome::Done(Ok(()))),
        "{:?}",
        r.outcome
    );
    assert_eq!(events.len(), 300);
    assert_eq!(raw_events_at(&t, rev), deletes_of(&keys));
    assert_eq!(t.range("k", "l", 0).expect("range").count, 0);
    assert!(t.store.lease_keys(7).expect("lease keys").is_empty());
    assert!(t.store.lease_ttl(7).expect("lease").is_none());
}

/// A backup takes its view of the database outside the state machine's
/// task, and a lease's keys (not versioned) are read the same way: neither
/// may catch a large delete with some of its chunks written (a restored
/// backup would surface the orphan tombstones with its next write; a
/// lease would list keys that a read at the published revision still has).
#[test]
fn views_and_lease_keys_wait_until_a_chunked_delete_is_applied() {
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::Duration;
    let mut t = T::new();
    t.apply(Command::LeaseGrant { id: 7, ttl: 600 });
    for i in 0..300 {
        t.put_lease(&format!("k{i:03}"), &"v".repeat(100), 7);
    }
    let rev = t.store.revision() + 1;
    t.store.set_write_chunk_bytes(2048);
    // After the first chunk, the apply stays paused while other threads
    // ask for a view and for the lease's keys; neither may be answered
    // before the apply ends.
    type Early = Option<Result<(&'static str, usize), mpsc::RecvTimeoutError>>;
    let early: Arc<Mutex<Early>> = Arc::new(Mutex::new(None));
    let (tx, rx) = mpsc::channel::<(&'static str, usize)>();
    let rx = Arc::new(Mutex::new(rx));
    let weak = Arc::downgrade(&t.store);
    let (hook_early, hook_rx) = (early.clone(), rx.clone());
    t.store.after_chunk(move || {
        let mut early = hook_early.lock().expect("lock");
        if early.is_some() {
            return Ok(());
        }
        let store = weak.upgrade().expect("the store");
        let (s, view_tx) = (store.clone(), tx.clone());
        std::thread::spawn(move || {
            let view = s.view_between_applies();
            let it = view.raw_iterator_cf(engine::cf(s.db(), engine::CF_REV));
            let _ = view_tx.send(("events in the view", events_at(it, rev).len()));
        });
        let keys_tx = tx.clone();
        std::thread::spawn(move || {
            let n = store.lease_keys(7).expect("lease keys").len();
            let _ = keys_tx.send(("keys of the lease", n));
        });
        *early = Some(
            hook_rx
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_millis(300)),
        );
        Ok(())
    });
    t.try_apply(delete_all()).expect("applied");
    let early = early.lock().expect("lock").take().expect("the hook ran");
    assert!(
        early.is_err(),
        "answered in the middle of the apply: {early:?}"
    );
    let rx = rx.lock().expect("lock");
    let mut answers: Vec<_> = (0..2)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(20))
                .expect("answered once the apply ended")
        })
        .collect();
    answers.sort();
    assert_eq!(
        answers,
        vec![("events in the view", 300), ("keys of the lease", 0)],
        "each sees the delete whole"
    );
}
