//! The on-disk format: log entries and command results written by this
//! format version (stored as a fixture) must still decode, and a database
//! of an unknown version is refused.

use std::path::PathBuf;

use crate::engine;
use crate::format;
use crate::kv::*;
use crate::mvcc::StoreError;
use crate::types::{Command, CommandResult, Entry, MasterNode, MemberAddrs, Outcome};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership};

/// One of every kind of log entry and of every command.
fn entries() -> Vec<Entry> {
    let put = RequestOp::Put(PutRequest {
        key: b"/registry/pods/default/web".to_vec(),
        value: b"{\"kind\":\"Pod\"}".to_vec(),
        lease: 7,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: false,
    });
    let txn = TxnRequest {
        compare: vec![
            Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Mod(12),
                key: b"a".to_vec(),
                range_end: vec![],
            },
            Compare {
                result: CompareResult::NotEqual,
                target: CompareTarget::Value(b"v".to_vec()),
                key: b"b".to_vec(),
                range_end: b"c".to_vec(),
            },
        ],
        success: vec![
            put.clone(),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"d".to_vec(),
                range_end: b"e".to_vec(),
                prev_kv: false,
            }),
            RequestOp::Range(RangeRequest {
                key: b"f".to_vec(),
                range_end: vec![0],
                limit: 10,
                revision: 3,
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Mod,
                keys_only: true,
                ..Default::default()
            }),
        ],
        failure: vec![RequestOp::Txn(TxnRequest::single(put))],
    };
    let commands = vec![
        Command::Txn(txn.clone()),
        Command::Compact { revision: 100 },
        Command::LeaseGrant { id: 7, ttl: 30 },
        Command::LeaseRevoke { id: 7 },
        Command::RegisterMember {
            id: 11,
            addrs: MemberAddrs {
                name: "m1".into(),
                peer_addr: "127.0.0.1:2380".into(),
                client_addr: "127.0.0.1:2379".into(),
            },
        },
        Command::UnregisterMember { id: 11 },
        Command::SetClusterId { id: 99 },
        Command::Once {
            id: (11, 12),
            cmd: Box::new(Command::Txn(txn.clone())),
        },
        Command::Batch(vec![
            Command::Compact { revision: 5 },
            Command::LeaseRevoke { id: 1 },
        ]),
        Command::Fenced {
            term: 4,
            cmd: Box::new(Command::Txn(txn)),
        },
        Command::At {
            ms: 1_764_000_000_000,
            cmd: Box::new(Command::Batch(vec![Command::SetClusterId { id: 1 }])),
        },
    ];
    let log_id = |i| LogId::new(CommittedLeaderId::new(3, 11), i);
    let mut out = vec![
        Entry {
            log_id: log_id(1),
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id: log_id(2),
            payload: EntryPayload::Membership(Membership::new(
                vec![[11u64, 12].into_iter().collect()],
                [
                    (
                        11u64,
                        MasterNode {
                            name: "m1".into(),
                            peer_addr: "127.0.0.1:2380".into(),
                        },
                    ),
                    (
                        12u64,
                        MasterNode {
                            name: "m2".into(),
                            peer_addr: "127.0.0.1:12380".into(),
                        },
                    ),
                ]
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>(),
            )),
        },
    ];
    for (i, c) in commands.into_iter().enumerate() {
        out.push(Entry {
            log_id: log_id(3 + i as u64),
            payload: EntryPayload::Normal(c),
        });
    }
    out
}

/// One of every kind of result (kept for replays in the state machine).
fn results() -> Vec<CommandResult> {
    let kv = KeyValue {
        key: b"a".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 2,
        value: b"v".to_vec(),
        lease: 0,
    };
    let txn = TxnResponse {
        succeeded: true,
        responses: vec![
            ResponseOp::Range(RangeResponse {
                kvs: vec![kv.clone()],
                more: true,
                count: 4,
            }),
            ResponseOp::Put(PutResponse {
                prev_kv: Some(kv.clone()),
            }),
            ResponseOp::DeleteRange(DeleteRangeResponse {
                deleted: 1,
                prev_kvs: vec![kv],
            }),
            ResponseOp::Txn(TxnResponse::default()),
        ],
    };
    let r = |outcome| CommandResult {
        revision: 42,
        outcome,
    };
    vec![
        r(Outcome::Txn(Ok(txn))),
        r(Outcome::Txn(Err(KvError::Compacted {
            compact_revision: 9,
        }))),
        r(Outcome::Done(Ok(()))),
        r(Outcome::Done(Err(KvError::InvalidArgument("x".into())))),
        r(Outcome::LeaseGranted(Ok((7, 30)))),
        r(Outcome::LeaseGranted(Err(KvError::LeaseExists))),
        r(Outcome::Batch(vec![r(Outcome::Done(Ok(())))])),
        r(Outcome::Replayed(Box::new(r(Outcome::Done(Ok(())))))),
        r(Outcome::Fenced { term: 4 }),
        r(Outcome::Txn(Err(KvError::TooManyRequests))),
    ]
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Each value as the log store (or the state machine) writes it, in one file.
fn check_fixture<T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(
    name: &str,
    values: &[T],
) {
    let encoded: Vec<Vec<u8>> = values
        .iter()
        .map(|v| bincode::serialize(v).expect("encode"))
        .collect();
    let path = fixture(name);
    if std::env::var_os("FLOTILLA_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, bincode::serialize(&encoded).expect("encode")).expect("write");
    }
    let stored: Vec<Vec<u8>> =
        bincode::deserialize(&std::fs::read(&path).expect("read the fixture")).expect("fixture");
    assert_eq!(
        stored.len(),
        values.len(),
        "{name}: a value was added or lost"
    );
    for (i, (raw, want)) in stored.iter().zip(values).enumerate() {
        let got: T = bincode::deserialize(raw)
            .unwrap_or_else(|e| panic!("{name}[{i}] written in format 1 no longer decodes: {e}"));
        assert_eq!(
            format!("{got:?}"),
            format!("{want:?}"),
            "{name}[{i}] decodes to something else"
        );
    }
    assert_eq!(
        stored, encoded,
        "{name}: the encoding of format {} changed; raise format::FORMAT_VERSION and keep reading this one",
        format::FORMAT_VERSION
    );
}

#[test]
fn log_entries_written_in_format_1_still_decode() {
    check_fixture("log-entries-v1.bin", &entries());
}

#[test]
fn command_results_written_in_format_1_still_decode() {
    check_fixture("command-results-v1.bin", &results());
}

#[test]
fn a_database_of_an_unknown_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = engine::open(&dir.path().join("db")).expect("open");
    assert_eq!(
        format::check(&db).expect("new database"),
        format::FORMAT_VERSION
    );
    assert_eq!(format::check(&db).expect("known"), format::FORMAT_VERSION);
    format::mark(&db, format::FORMAT_VERSION + 1).expect("mark");
    match format::check(&db) {
        Err(e @ StoreError::UnknownFormat { .. }) => {
            assert!(e.to_string().contains("newer Flotilla"), "{e}")
        }
        other => panic!("a newer format was accepted: {other:?}"),
    }
}
