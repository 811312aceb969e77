//! The commands of a batched entry sharing RocksDB writes: independent ones
//! are written together, and the result is always that of applying them
//! one at a time.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::common::*;
use crate::kv::*;
use crate::types::{Command, CommandResult, Outcome};
use flotilla_telemetry::prometheus::{Histogram, HistogramOpts};

fn once(n: u64, cmd: Command) -> Command {
    Command::Once {
        id: (9, n),
        cmd: Box::new(cmd),
    }
}

fn at(ms: u64, cmd: Command) -> Command {
    Command::At {
        ms,
        cmd: Box::new(cmd),
    }
}

fn batch_results(r: CommandResult) -> Vec<CommandResult> {
    match r.outcome {
        Outcome::Batch(rs) => rs,
        other => panic!("not a batch outcome: {other:?}"),
    }
}

fn guarded_put(guard: &str, value: &str, key: &str) -> Command {
    Command::Txn(TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Value(value.into()),
            key: guard.into(),
            range_end: vec![],
        }],
        success: vec![RequestOp::Put(PutRequest {
            key: key.into(),
            value: b"guarded".to_vec(),
            ..Default::default()
        })],
        failure: vec![],
    })
}

#[test]
fn independent_commands_of_a_batch_share_one_write() {
    let mut t = T::new();
    let writes = Histogram::with_opts(HistogramOpts::new("commits", "commits")).expect("histogram");
    t.store.observe_commits(writes.clone());
    let puts = (0..50)
        .map(|i| once(i, put_cmd(&format!("k{i}"), "v")))
        .collect();
    let results = batch_results(t.apply(at(1_000, Command::Batch(puts))).0);
    assert_eq!(
        results.iter().map(|r| r.revision).collect::<Vec<_>>(),
        (2..52).collect::<Vec<_>>()
    );
    assert_eq!(
        writes.get_sample_count(),
        1,
        "50 independent puts, one write"
    );
    assert_eq!(t.store.revision(), 51);
    assert_eq!(t.get("k49", 0).expect("k49").mod_revision, 51);

    // Each command that reads a key written before it in the entry waits
    // for that write; the others join the next one.
    let cmds = vec![
        once(100, put_cmd("a", "1")),
        once(101, put_cmd("x", "1")),
        once(102, guarded_put("a", "1", "b")),
        once(103, put_cmd("y", "1")),
    ];
    let results = batch_results(t.apply(at(2_000, Command::Batch(cmds))).0);
    assert_eq!(
        results.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![52, 53, 54, 55]
    );
    assert_eq!(writes.get_sample_count(), 3, "two writes for this entry");
    assert_eq!(t.get("b", 0).expect("b was written").value, b"guarded");
    let t = t.reopen();
    assert_eq!(
        t.store.revision(),
        55,
        "the revision is written with the commands"
    );
}

#[test]
fn a_command_sees_the_writes_of_the_commands_before_it_in_its_entry() {
    let mut t = T::new();
    let del = |k: &str| {
        Command::Txn(TxnRequest::single(RequestOp::DeleteRange(
            DeleteRangeRequest {
                key: k.into(),
                range_end: vec![],
                prev_kv: false,
            },
        )))
    };
    let read = |k: &str| {
        Command::Txn(TxnRequest::single(RequestOp::Range(RangeRequest {
            key: k.into(),
            ..Default::default()
        })))
    };
    let cmds = vec![
        once(1, put_cmd("a", "1")),
        once(2, guarded_put("a", "1", "b")),
        once(3, del("a")),
        once(4, guarded_put("a", "1", "c")),
        // The same request id again in the same entry: a replay.
        once(1, put_cmd("a", "1")),
        once(5, read("b")),
        once(6, put_cmd("d", "1")),
    ];
    let results = batch_results(t.apply(at(1_000, Command::Batch(cmds))).0);
    assert_eq!(
        results.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![2, 3, 4, 4, 2, 4, 5]
    );
    assert!(t.get("a", 0).is_none(), "a was deleted");
    assert_eq!(t.get("b", 0).expect("b").value, b"guarded");
    assert!(t.get("c", 0).is_none(), "c's guard read a deleted key");
    assert!(matches!(results[4].outcome, Outcome::Replayed(_)));
    let Outcome::Txn(Ok(r)) = &results[5].outcome else {
        panic!("{:?}", results[5])
    };
    let ResponseOp::Range(r) = &r.responses[0] else {
        panic!("{r:?}")
    };
    assert_eq!(r.kvs[0].value, b"guarded", "the read saw b's put");
}

#[test]
fn a_full_window_of_request_ids_refuses_within_one_entry_too() {
    let mut t = T::new();
    t.small_window(1000, 2);
    let cmds = vec![
        once(1, put_cmd("a", "v")),
        once(2, put_cmd("b", "v")),
        once(1, put_cmd("a", "v")),
        once(3, put_cmd("c", "v")),
    ];
    let results = batch_results(t.apply(at(10_000, Command::Batch(cmds))).0);
    assert!(matches!(results[2].outcome, Outcome::Replayed(_)));
    assert_eq!(
        results[3].outcome,
        Outcome::Txn(Err(KvError::TooManyRequests))
    );
    // Log time passes both ids' bound: the next entry forgets them.
    let cmds = vec![once(3, put_cmd("c", "v")), once(1, put_cmd("a", "v"))];
    let results = batch_results(t.apply(at(11_500, Command::Batch(cmds))).0);
    assert!(results
        .iter()
        .all(|r| matches!(r.outcome, Outcome::Txn(Ok(_)))));
    assert_eq!(t.get("a", 0).expect("a").version, 2);
}

/// A random command on a few keys: puts, deletes, guarded puts, reads,
/// request ids (some repeated), now and then a range delete or a lease.
fn random_command(rng: &mut StdRng, next_id: &mut u64) -> Command {
    let key = |rng: &mut StdRng| format!("k{}", rng.gen_range(0..6));
    let cmd = match rng.gen_range(0..20) {
        0..=7 => put_cmd(&key(rng), &rng.gen_range(0..3).to_string()),
        8..=9 => Command::Txn(TxnRequest::single(RequestOp::DeleteRange(
            DeleteRangeRequest {
                key: key(rng).into(),
                range_end: vec![],
                prev_kv: true,
            },
        ))),
        10..=12 => {
            let g = key(rng);
            guarded_put(&g, &rng.gen_range(0..3).to_string(), &key(rng))
        }
        13 => Command::Txn(TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Version(rng.gen_range(0..3)),
                key: key(rng).into(),
                range_end: vec![],
            }],
            success: vec![RequestOp::Range(RangeRequest {
                key: key(rng).into(),
                ..Default::default()
            })],
            failure: vec![RequestOp::Put(PutRequest {
                key: key(rng).into(),
                value: b"f".to_vec(),
                prev_kv: true,
                ..Default::default()
            })],
        }),
        14 => Command::Txn(TxnRequest::single(RequestOp::DeleteRange(
            DeleteRangeRequest {
                key: b"k2".to_vec(),
                range_end: b"k4".to_vec(),
                prev_kv: false,
            },
        ))),
        15 => Command::LeaseGrant {
            id: rng.gen_range(1..3),
            ttl: 30,
        },
        16 => Command::Txn(TxnRequest::single(RequestOp::Put(PutRequest {
            key: key(rng).into(),
            value: b"l".to_vec(),
            lease: rng.gen_range(1..3),
            ..Default::default()
        }))),
        17 => Command::LeaseRevoke {
            id: rng.gen_range(1..3),
        },
        _ => put_cmd(&key(rng), "x"),
    };
    if rng.gen_bool(0.8) {
        let id = if *next_id > 1 && rng.gen_bool(0.15) {
            rng.gen_range(1..*next_id)
        } else {
            *next_id += 1;
            *next_id
        };
        once(id, cmd)
    } else {
        cmd
    }
}

#[test]
fn a_batch_leaves_the_state_and_results_of_its_commands_applied_one_by_one() {
    for seed in 0..8u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut batched = T::new();
        let mut single = T::new();
        batched.small_window(2_000, 12);
        single.small_window(2_000, 12);
        let mut next_id = 0;
        for entry in 0..40u64 {
            let ms = 1_000 + entry * 300;
            let n = rng.gen_range(1..30);
            let cmds: Vec<Command> = (0..n)
                .map(|_| random_command(&mut rng, &mut next_id))
                .collect();
            let together = batch_results(batched.apply(at(ms, Command::Batch(cmds.clone()))).0);
            let alone: Vec<CommandResult> = cmds
                .into_iter()
                .map(|c| single.apply(at(ms, Command::Batch(vec![c]))).0)
                .flat_map(batch_results)
                .collect();
            assert_eq!(together, alone, "seed {seed}, entry {entry}");
            assert_eq!(batched.store.revision(), single.store.revision());
        }
        let rev = single.store.revision();
        assert_eq!(
            batched.store.hash_kv(rev).expect("hash"),
            single.store.hash_kv(rev).expect("hash"),
            "seed {seed}"
        );
        let all = |t: &T| t.range("\0", "\0", 0).expect("range").kvs;
        assert_eq!(all(&batched), all(&single), "seed {seed}");
        let batched = batched.reopen();
        let single = single.reopen();
        assert_eq!(batched.store.revision(), single.store.revision());
        assert_eq!(all(&batched), all(&single), "seed {seed}, reopened");
    }
}
