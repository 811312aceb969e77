//! The key index (every live key's newest revision, in memory): it follows
//! every kind of write the log applies, is rebuilt alike at open, and a
//! wrong one is caught rather than believed. (Every apply in every test
//! also checks each read of the index against a seek of the store.)

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::common::*;
use crate::kv::*;
use crate::types::Command;

fn key(rng: &mut StdRng) -> Vec<u8> {
    format!("k{:02}", rng.gen_range(0..40)).into_bytes()
}

fn put(key: Vec<u8>, lease: i64) -> RequestOp {
    RequestOp::Put(PutRequest {
        key,
        value: b"v".to_vec(),
        lease,
        ..Default::default()
    })
}

/// A random command of the kinds that change keys: puts (some with a
/// lease), deletes of one key and of ranges, transactions whose compare
/// decides between a put and a delete, lease revokes, compactions and
/// batches of puts (whose commands may share a write).
fn random_command(rng: &mut StdRng, revision: i64) -> Command {
    let txn = |op| Command::Txn(TxnRequest::single(op));
    match rng.gen_range(0..10) {
        0..=2 => txn(put(key(rng), 0)),
        3 => txn(put(key(rng), 7)),
        4 => txn(RequestOp::DeleteRange(DeleteRangeRequest {
            key: key(rng),
            range_end: vec![],
            prev_kv: false,
        })),
        5 => {
            let (a, b) = (key(rng), key(rng));
            let (key, range_end) = if a <= b { (a, b) } else { (b, a) };
            txn(RequestOp::DeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: true,
            }))
        }
        6 => {
            let k = key(rng);
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Create(0),
                    key: k.clone(),
                    range_end: vec![],
                }],
                success: vec![put(k.clone(), 0), put(key(rng), 0)],
                failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
                    key: k,
                    range_end: vec![],
                    prev_kv: false,
                })],
            })
        }
        7 => Command::LeaseRevoke { id: 7 },
        8 => Command::Compact {
            revision: revision.max(2) - 1,
        },
        _ => Command::Batch(
            (0..rng.gen_range(1..8))
                .map(|_| txn(put(key(rng), 0)))
                .collect(),
        ),
    }
}

#[test]
fn the_key_index_follows_every_kind_of_write_and_is_rebuilt_alike_at_open() {
    let mut rng = StdRng::seed_from_u64(20);
    let mut t = T::new();
    for step in 0..600 {
        if t.store.lease_ttl(7).ok().flatten().is_none() {
            t.apply(Command::LeaseGrant { id: 7, ttl: 600 });
        }
        let cmd = random_command(&mut rng, t.store.revision());
        t.apply(cmd);
        t.assert_index_matches();
        if step % 97 == 96 {
            let before = t.store.indexed_keys();
            t = t.reopen();
            assert_eq!(t.store.indexed_keys(), before, "rebuilt at step {step}");
            t.assert_index_matches();
        }
    }
    assert!(
        t.store.live_keys() > 0,
        "the run must end with keys to index"
    );
}

#[test]
fn a_key_index_naming_a_version_the_store_lacks_stops_the_apply_as_corrupt() {
    let mut t = T::new();
    let rev = t.put("a", "1");
    t.store.set_indexed(b"a", Some(rev + 5));
    let err = t
        .try_apply(put_cmd("a", "2"))
        .expect_err("a version the store lacks");
    assert!(err.to_string().contains("key index"), "{err}");
    assert_eq!(t.store.revision(), rev, "nothing applied");
}

#[test]
#[should_panic(expected = "the key index and the store differ")]
fn a_key_index_missing_a_live_key_fails_the_tests_check() {
    let mut t = T::new();
    t.put("a", "1");
    t.store.set_indexed(b"a", None);
    t.put("a", "2");
}
