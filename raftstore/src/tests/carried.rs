//! Which events a command hands to the watchers with its revision, and
//! which it leaves for them to read from history (see
//! `txn::EVENTS_CARRIED_MAX`).

use super::common::*;
use crate::kv::*;
use crate::mvcc::InHistory;
use crate::types::{Command, Outcome};

/// `n` keys `k000`, `k001`, ... with values `v0`, `v1`, ...; their mod
/// revisions.
fn fill(t: &mut T, n: usize) -> Vec<i64> {
    (0..n)
        .map(|i| t.put(&format!("k{i:03}"), &format!("v{i}")))
        .collect()
}

fn delete_k(prev_kv: bool) -> Command {
    Command::Txn(TxnRequest::single(RequestOp::DeleteRange(
        DeleteRangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            prev_kv,
        },
    )))
}

fn deleted(r: &crate::types::CommandResult) -> DeleteRangeResponse {
    let Outcome::Txn(Ok(resp)) = &r.outcome else {
        panic!("not a transaction's success: {:?}", r.outcome)
    };
    let ResponseOp::DeleteRange(d) = &resp.responses[0] else {
        panic!("not a delete")
    };
    d.clone()
}

/// History's events at `rev` on `k...`: key, previous value and previous
/// mod revision of each, in order; all deletes.
fn history_at(t: &T, rev: i64) -> Vec<(String, String, i64)> {
    let (h, _) = t.store.history(rev, b"k", b"l", 10).expect("history");
    assert_eq!(h.len(), 1, "one revision");
    assert_eq!(h[0].0, rev);
    h[0].1.iter().map(deletion).collect()
}

/// A delete's key, and the value and mod revision it deleted.
fn deletion(e: &Event) -> (String, String, i64) {
    assert_eq!(e.kind, EventType::Delete);
    let p = e.prev_kv.as_ref().expect("a delete's previous value");
    (
        String::from_utf8_lossy(&e.kv.key).into_owned(),
        String::from_utf8_lossy(&p.value).into_owned(),
        p.mod_revision,
    )
}

fn expected(revs: &[i64]) -> Vec<(String, String, i64)> {
    (0..revs.len())
        .map(|i| (format!("k{i:03}"), format!("v{i}"), revs[i]))
        .collect()
}

#[test]
fn a_delete_of_more_keys_than_watchers_are_handed_leaves_its_events_in_history() {
    let mut t = T::new();
    t.store.set_events_carried_max(10);
    let revs = fill(&mut t, 30);
    let (r, fxs) = t.apply_effects(delete_k(false));
    assert_eq!(deleted(&r).deleted, 30);
    assert!(
        fxs.iter().all(|fx| fx.events.is_empty()),
        "events handed out"
    );
    let in_history: Vec<_> = fxs.iter().filter_map(|fx| fx.in_history.clone()).collect();
    assert_eq!(
        in_history,
        vec![InHistory {
            count: 30,
            first: b"k000".to_vec(),
            last: b"k029".to_vec(),
        }]
    );
    // Watchers that read the revision find every event, with the value
    // and the revision it deleted.
    assert_eq!(history_at(&t, r.revision), expected(&revs));
    assert_eq!(t.range("k", "l", 0).expect("range").count, 0);
}

#[test]
fn a_delete_of_few_keys_or_that_asks_for_previous_values_hands_its_events_out() {
    let mut t = T::new();
    t.store.set_events_carried_max(10);
    let revs = fill(&mut t, 10);
    let (r, fxs) = t.apply_effects(delete_k(false));
    assert_eq!(deleted(&r).deleted, 10);
    let events: Vec<_> = fxs.iter().flat_map(|fx| fx.events.clone()).collect();
    assert!(fxs.iter().all(|fx| fx.in_history.is_none()));
    let handed: Vec<_> = events.iter().map(deletion).collect();
    assert_eq!(handed, expected(&revs));

    // Asked for the previous values, a delete reads them all and hands
    // its events out, however many.
    let revs = fill(&mut t, 20);
    let (r, fxs) = t.apply_effects(delete_k(true));
    let d = deleted(&r);
    assert_eq!(d.deleted, 20);
    let prev: Vec<_> = d
        .prev_kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect();
    assert_eq!(prev, (0..20).map(|i| format!("v{i}")).collect::<Vec<_>>());
    assert_eq!(fxs.iter().map(|fx| fx.events.len()).sum::<usize>(), 20);
    assert!(fxs.iter().all(|fx| fx.in_history.is_none()));
    assert_eq!(history_at(&t, r.revision), expected(&revs));
}

/// A transaction that puts keys and then deletes many: the deletes are
/// left in history, and the state machine sends the whole revision that
/// way (see `state_machine`), the puts' events with it.
#[test]
fn a_transaction_that_writes_then_deletes_many_keys_leaves_the_deletes_in_history() {
    let mut t = T::new();
    t.store.set_events_carried_max(10);
    let revs = fill(&mut t, 30);
    let put = |k: &str| {
        RequestOp::Put(PutRequest {
            key: k.into(),
            value: b"1".to_vec(),
            ..Default::default()
        })
    };
    let cmd = Command::Txn(TxnRequest {
        success: vec![
            put("j"),
            put("m"),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                prev_kv: false,
            }),
        ],
        ..Default::default()
    });
    let (r, fxs) = t.apply_effects(cmd);
    let Outcome::Txn(Ok(resp)) = &r.outcome else {
        panic!("{:?}", r.outcome)
    };
    let ResponseOp::DeleteRange(d) = &resp.responses[2] else {
        panic!("not a delete")
    };
    assert_eq!(d.deleted, 30);
    let fx = &fxs[0];
    assert_eq!(fx.in_history.as_ref().map(|h| h.count), Some(30));
    assert_eq!(fx.events.len(), 2, "the puts");
    let (h, _) = t
        .store
        .history(r.revision, b"\0", b"\0", 10)
        .expect("history");
    let keys: Vec<_> = h[0].1.iter().map(|e| e.kv.key.clone()).collect();
    let mut want = vec![b"j".to_vec(), b"m".to_vec()];
    want.extend((0..30).map(|i| format!("k{i:03}").into_bytes()));
    assert_eq!(keys, want);
    assert_eq!(history_at(&t, r.revision), expected(&revs));
}

#[test]
fn a_revoke_of_more_keys_than_watchers_are_handed_leaves_its_events_in_history() {
    let mut t = T::new();
    t.store.set_events_carried_max(10);
    t.apply(Command::LeaseGrant { id: 7, ttl: 600 });
    let revs: Vec<i64> = (0..30)
        .map(|i| t.put_lease(&format!("k{i:03}"), &format!("v{i}"), 7))
        .collect();
    let (r, fxs) = t.apply_effects(Command::LeaseRevoke { id: 7 });
    assert!(
        matches!(r.outcome, Outcome::Done(Ok(()))),
        "{:?}",
        r.outcome
    );
    assert!(fxs.iter().all(|fx| fx.events.is_empty()));
    assert_eq!(
        fxs.iter()
            .filter_map(|fx| fx.in_history.as_ref())
            .map(|h| h.count)
            .sum::<usize>(),
        30
    );
    assert_eq!(history_at(&t, r.revision), expected(&revs));
}

/// A large delete under a request id is remembered like any write: a
/// retry is answered with the first result and deletes nothing again.
#[test]
fn a_retried_large_delete_is_answered_from_its_first_result() {
    let mut t = T::new();
    t.store.set_events_carried_max(10);
    fill(&mut t, 30);
    let once = || Command::Once {
        id: (9, 1),
        cmd: Box::new(delete_k(false)),
    };
    let (first, _) = t.apply(once());
    let (again, _) = t.apply(once());
    let (replayed, was) = again.unwrap_replay();
    assert!(was, "not answered from the first result");
    assert_eq!(replayed, first);
}
