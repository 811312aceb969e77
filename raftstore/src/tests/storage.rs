//! The RocksDB log and state machine against openraft's storage contract,
//! and the durability rule of the log.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::engine;
use crate::kv::{PutRequest, RangeRequest, RequestOp, TxnRequest};
use crate::lease::Lessor;
use crate::log_store::{InstallGate, LogStore};
use crate::mvcc::KvStore;
use crate::snapshot_data::SnapshotData;
use crate::state_machine::{Listeners, StateMachine};
use crate::types::{Command, Entry, Snapshot, StorageError, TypeConfig, Vote};
use crate::watch::{HubMsg, Published, WatchHub};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId, RaftSnapshotBuilder};

struct Builder;

fn open(dir: &std::path::Path) -> (LogStore, StateMachine) {
    let o = open_all(dir);
    (o.log, o.sm)
}

struct Opened {
    log: LogStore,
    sm: StateMachine,
    gate: Arc<InstallGate>,
    store: Arc<KvStore>,
    hub: Arc<WatchHub>,
}

fn open_all(dir: &std::path::Path) -> Opened {
    let db = engine::open(&dir.join("db")).expect("open rocksdb");
    let store = Arc::new(KvStore::open(db.clone()).expect("open kv store"));
    let (tx, _rx) = std::sync::mpsc::channel();
    let hub = Arc::new(WatchHub::default());
    let listeners = Listeners {
        hub: hub.clone(),
        lessor: Arc::new(Lessor::default()),
        compactor: tx,
        applies_held: tokio::sync::watch::channel(false).1,
    };
    let gate = Arc::new(InstallGate::default());
    let sm = StateMachine::new(
        store.clone(),
        dir.join("snapshots"),
        listeners,
        gate.clone(),
        None,
    )
    .expect("state machine");
    Opened {
        log: LogStore::new(db, gate.clone()),
        sm,
        gate,
        store,
        hub,
    }
}

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm) = open(dir.path());
        Ok((dir, log, sm))
    }
}

#[test]
fn rocksdb_store_passes_openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_is_acknowledged_only_after_a_wal_fsync_and_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut log, _sm) = open(dir.path());
        assert_eq!(log.fsyncs(), 0);
        let entries: Vec<Entry> = (1..=3)
            .map(|i| Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                payload: EntryPayload::Blank,
            })
            .collect();
        log.blocking_append(entries).await.expect("append");
        assert!(
            log.fsyncs() >= 1,
            "the append was acknowledged before any WAL fsync"
        );
    }
    // Reopen the same data dir: the entries are there.
    let (mut log, _sm) = open(dir.path());
    let state = openraft::storage::RaftLogStorage::get_log_state(&mut log)
        .await
        .expect("log state");
    assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leaders_own_appends_skip_the_wait_for_their_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The log of master 1.
    let (mut log, _sm) = open(dir.path());
    let e = |term: u64, node: u64, index: u64| Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, node), index),
        payload: EntryPayload::Blank,
    };
    assert!(!log.leaders_own(&[e(1, 1, 1)]), "no vote yet");
    log.save_vote(&Vote::new(1, 1)).await.expect("vote");
    assert!(
        !log.leaders_own(&[e(1, 1, 1)]),
        "a candidate's vote is not a leader's"
    );
    log.save_vote(&Vote::new_committed(1, 1))
        .await
        .expect("vote");
    assert!(log.leaders_own(&[e(1, 1, 1), e(1, 1, 2)]));
    assert!(
        !log.leaders_own(&[e(1, 1, 3), e(0, 2, 4)]),
        "not every entry is this leader's"
    );
    // Following master 2 in term 2, which sends back what master 1 made in term 1.
    log.save_vote(&Vote::new_committed(2, 2))
        .await
        .expect("vote");
    assert!(!log.leaders_own(&[e(1, 1, 1)]));
    assert!(!log.leaders_own(&[e(2, 2, 1)]));
    // Leading again in term 3: the append is reported before its fsync,
    // and the syncer still fsyncs it.
    log.save_vote(&Vote::new_committed(3, 1))
        .await
        .expect("vote");
    let durable = log.durability();
    log.blocking_append(vec![e(3, 1, 1), e(3, 1, 2)])
        .await
        .expect("append");
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        durable.wait_synced(LogId::new(CommittedLeaderId::new(3, 1), 2)),
    )
    .await
    .expect("the leader's append was never fsynced")
    .expect("fsync");
    assert!(log.fsyncs() >= 1);
}

/// Puts of 1 KB at log indexes `from` to `to`.
fn kb_puts(from: u64, to: u64) -> Vec<Entry> {
    (from..=to)
        .map(|i| put(i, format!("k{i}"), vec![b'v'; 1000]))
        .collect()
}

/// Whether the log's size counter asks for a snapshot now.
fn due(bytes: &crate::log_store::LogBytes) -> bool {
    use futures::FutureExt;
    bytes.crossed().now_or_never().is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_grows_past_its_byte_threshold_asks_for_a_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _sm) = open(dir.path());
    let bytes = log.snapshot_by_bytes(4096);
    log.blocking_append(kb_puts(1, 3)).await.expect("append");
    assert!(!due(&bytes), "3 KB written: below the threshold");
    log.blocking_append(kb_puts(4, 6)).await.expect("append");
    assert!(due(&bytes), "6 KB written: a snapshot is due");
    log.purge(LogId::new(CommittedLeaderId::new(2, 1), 6))
        .await
        .expect("purge");
    assert_eq!(bytes.since_purge(), 0);
    // No snapshot reported back: asked again one threshold later.
    log.blocking_append(kb_puts(7, 9)).await.expect("append");
    assert!(!due(&bytes), "3 KB more");
    log.blocking_append(kb_puts(10, 12)).await.expect("append");
    assert!(due(&bytes), "a threshold more: asked again");
}

/// A snapshot is a pinned view, which writes nothing: the next one by size
/// is due a threshold after the view, however large the state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_snapshot_the_next_is_due_once_the_log_grew_by_the_threshold() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, mut sm) = open(dir.path());
    let bytes = log.snapshot_by_bytes(4096);
    sm.report_snapshots_to(bytes.clone());
    // A state of 30 KB, written to the log and applied.
    log.blocking_append(kb_puts(1, 30)).await.expect("append");
    sm.apply(kb_puts(1, 30)).await.expect("apply");
    assert!(due(&bytes), "30 KB: due");
    let mark = bytes.written();
    let _snap = build_snapshot(&mut sm).await;
    assert!(!due(&bytes), "nothing written since the snapshot");
    log.blocking_append(kb_puts(31, 33)).await.expect("append");
    assert!(!due(&bytes), "3 KB since the snapshot");
    log.blocking_append(kb_puts(34, 36)).await.expect("append");
    let grown = bytes.written() - mark;
    assert!(grown >= 4096, "{grown} bytes");
    assert!(due(&bytes), "{grown} bytes since the snapshot: due");
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Blank,
    }
}

/// The revisions of one apply reach the watchers as one message, oldest
/// first, each with its own events: a message per revision woke every
/// watcher once per revision (about a tenth of a leader's CPU under small
/// puts). An entry without events publishes nothing.
#[tokio::test]
async fn one_apply_publishes_its_revisions_to_watchers_in_one_message_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = open_all(dir.path());
    let mut sub = o.hub.subscribe();
    let entries = vec![
        put(1, "a".into(), b"1".to_vec()),
        blank(2, 2),
        put(3, "b".into(), b"2".to_vec()),
        put(4, "a".into(), b"3".to_vec()),
    ];
    o.sm.apply(entries).await.expect("apply");
    let revisions = match sub.try_recv() {
        Ok(HubMsg::Revisions(r)) => r,
        other => panic!("expected the apply's revisions, got {other:?}"),
    };
    let seen: Vec<(i64, Vec<(String, String)>)> = revisions
        .iter()
        .map(|(rev, published)| {
            let Published::Events(events) = published else {
                panic!("revision {rev} left in history")
            };
            let evs = events
                .iter()
                .map(|e| {
                    (
                        String::from_utf8_lossy(&e.kv.key).into_owned(),
                        String::from_utf8_lossy(&e.kv.value).into_owned(),
                    )
                })
                .collect();
            (*rev, evs)
        })
        .collect();
    let first = o.store.revision() - 2;
    assert_eq!(
        seen,
        vec![
            (first, vec![("a".into(), "1".into())]),
            (first + 1, vec![("b".into(), "2".into())]),
            (first + 2, vec![("a".into(), "3".into())]),
        ]
    );
    assert!(
        matches!(
            sub.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "one apply, one message"
    );
}

/// A revision with more events than a command hands out reaches the
/// watchers as a note to read it from history, with the least and the
/// greatest key of all its events (a put in the same transaction too).
#[tokio::test]
async fn a_revision_of_too_many_events_reaches_watchers_as_a_note_to_read_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = open_all(dir.path());
    o.store.set_events_carried_max(10);
    o.sm.apply((1..=30).map(|i| put(i, format!("k{i:03}"), b"v".to_vec())))
        .await
        .expect("apply");
    let mut sub = o.hub.subscribe();
    let txn = TxnRequest {
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"b".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            }),
            RequestOp::DeleteRange(crate::kv::DeleteRangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                prev_kv: false,
            }),
        ],
        ..Default::default()
    };
    let e = Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), 31),
        payload: EntryPayload::Normal(Command::Txn(txn)),
    };
    o.sm.apply([e]).await.expect("apply");
    match sub.try_recv() {
        Ok(HubMsg::Revisions(r)) => {
            assert_eq!(r.len(), 1);
            assert_eq!(r[0].0, o.store.revision());
            match &r[0].1 {
                Published::InHistory { first, last } => {
                    assert_eq!(
                        (first.as_slice(), last.as_slice()),
                        (&b"b"[..], &b"k030"[..])
                    );
                }
                other => panic!("events handed out: {other:?}"),
            }
        }
        other => panic!("expected the apply's revision, got {other:?}"),
    }
}

/// A snapshot of `sm` as it is now.
async fn build_snapshot(sm: &mut StateMachine) -> Snapshot {
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot")
}

/// The snapshot `sm` answers a follower with (there must be one).
async fn current_snapshot(sm: &mut StateMachine) -> Snapshot {
    sm.get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot")
}

/// A snapshot of a state machine that applied `entries` (with the folder
/// that holds it).
async fn snapshot_of(entries: Vec<Entry>) -> (tempfile::TempDir, Snapshot) {
    let src = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = open(src.path());
    sm.apply(entries).await.expect("apply");
    let snap = build_snapshot(&mut sm).await;
    (src, snap)
}

/// Receive `data` as the leader sends a snapshot: into the file the state
/// machine gives for it.
async fn receive(sm: &mut StateMachine, mut data: Box<SnapshotData>) -> Box<SnapshotData> {
    let mut file = sm.begin_receiving_snapshot().await.expect("receive");
    tokio::io::copy(&mut *data, &mut *file).await.expect("copy");
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_not_purged_past_a_received_snapshot_until_it_is_installed() {
    // A snapshot of a state machine that applied entries 1..=20.
    let (_src, snap) = snapshot_of((1..=20).map(|i| blank(2, i)).collect()).await;
    let covers = snap.meta.last_log_id.expect("snapshot log id");

    // A follower that has the first three entries receives it.
    let dst = tempfile::tempdir().expect("tempdir");
    let Opened {
        mut log,
        mut sm,
        gate,
        ..
    } = open_all(dst.path());
    log.blocking_append((1..=3).map(|i| blank(1, i)))
        .await
        .expect("append");
    let file = receive(&mut sm, snap.snapshot).await;

    // openraft asks for the purge of what the snapshot covers as soon as it
    // hands the snapshot to the state machine.
    let mut purging = log.clone();
    let purge = tokio::spawn(async move { purging.purge(covers).await });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while gate.waiting_purges() == 0 && !purge.is_finished() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the purge neither finished nor waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        !purge.is_finished(),
        "the log was purged past the state machine before the snapshot was installed"
    );
    // What a crash now would leave: a log that still has what the state
    // machine has not applied.
    let state = log.get_log_state().await.expect("log state");
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!((state.last_purged_log_id, applied), (None, None));

    let meta = snap.meta.clone();
    sm.install_snapshot(&meta, file).await.expect("install");
    purge.await.expect("purge task").expect("purge");
    let state = log.get_log_state().await.expect("log state");
    let (applied, _) = sm.applied_state().await.expect("applied");
    assert_eq!(state.last_purged_log_id, Some(covers));
    assert_eq!(applied, Some(covers));
}

fn put(index: u64, key: String, value: Vec<u8>) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(2, 1), index),
        payload: EntryPayload::Normal(Command::Txn(TxnRequest::single(RequestOp::Put(
            PutRequest {
                key: key.into_bytes(),
                value,
                ..Default::default()
            },
        )))),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_read_sees_a_half_installed_snapshot() {
    // The snapshot: 300 keys of 32 KiB (the install writes them in several
    // batches). The follower has the first 100 of them.
    let key = |i: usize| format!("k{i:03}");
    let (_src, snap) = snapshot_of(
        (0..300)
            .map(|i| put(i as u64 + 1, key(i), vec![b'n'; 32 << 10]))
            .collect(),
    )
    .await;
    let dst = tempfile::tempdir().expect("tempdir");
    let Opened { mut sm, store, .. } = open_all(dst.path());
    sm.apply((0..100).map(|i| put(i as u64 + 1, key(i), b"old".to_vec())))
        .await
        .expect("apply");

    // A serializable reader counts the keys while the snapshot is installed.
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, done) = (store.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            let mut reads = 0u64;
            while !done.load(Ordering::SeqCst) || reads == 0 {
                let r = store
                    .range(&RangeRequest {
                        key: b"k".to_vec(),
                        range_end: b"l".to_vec(),
                        count_only: true,
                        ..Default::default()
                    })
                    .expect("range");
                seen.insert(r.count);
                reads += 1;
            }
            (seen, reads)
        })
    };
    let file = receive(&mut sm, snap.snapshot).await;
    sm.install_snapshot(&snap.meta, file)
        .await
        .expect("install");
    done.store(true, Ordering::SeqCst);
    let (seen, reads) = reader.join().expect("reader");
    assert!(
        seen.iter().all(|c| *c == 100 || *c == 300),
        "{reads} reads saw key counts {seen:?}: states that never existed"
    );
    assert_eq!(keys_from_k_to_l(&store), 300);
}

/// How many keys in [k, l) `store` holds.
fn keys_from_k_to_l(store: &KvStore) -> i64 {
    store
        .range(&RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .expect("range")
        .count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_before_an_install_never_replaces_it_and_a_crashs_leftovers_go_at_start() {
    let (_src, newer) = snapshot_of((1..=20).map(|i| blank(2, i)).collect()).await;

    let dst = tempfile::tempdir().expect("tempdir");
    let mut o = open_all(dst.path());
    o.sm.apply((1..=5).map(|i| blank(1, i)))
        .await
        .expect("apply");
    // A snapshot is taken at entry 5, and its builder (openraft's spawned
    // task) finishes only after ...
    let mut slow = o.sm.get_snapshot_builder().await;
    // ... the leader's newer snapshot is received and installed.
    let file = receive(&mut o.sm, newer.snapshot).await;
    o.sm.install_snapshot(&newer.meta, file)
        .await
        .expect("install");
    let built = slow.build_snapshot().await.expect("slow build");
    assert_eq!(built.meta.last_log_id.map(|l| l.index), Some(5));
    let current = current_snapshot(&mut o.sm).await;
    assert_eq!(
        current.meta.last_log_id, newer.meta.last_log_id,
        "an older snapshot replaced the installed one"
    );

    // What a crash in the middle of a write leaves: a checkpoint (pinning
    // SST files, from older versions), a partial file and a view's file.
    // They go at the next start; the snapshot installed last stays current.
    let snaps = dst.path().join("snapshots");
    std::fs::create_dir_all(snaps.join("checkpoint-1")).expect("mkdir");
    std::fs::write(snaps.join("checkpoint-1").join("000001.sst"), b"x").expect("write");
    std::fs::write(snaps.join("current.snap.1.building"), b"x").expect("write");
    std::fs::write(snaps.join("view-1.dump"), b"x").expect("write");
    // A snapshot taken holds the database open until it is dropped.
    drop((slow, built, o));
    let mut o = open_all(dst.path());
    let mut left: Vec<String> = std::fs::read_dir(&snaps)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["current.snap".to_string()]);
    let current = current_snapshot(&mut o.sm).await;
    assert_eq!(current.meta.last_log_id, newer.meta.last_log_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_taken_without_flushing_and_holds_the_state_it_was_taken_at() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Opened { mut sm, store, .. } = open_all(dir.path());
    sm.apply((1..=50).map(|i| put(i, format!("k{i:03}"), b"v1".to_vec())))
        .await
        .expect("apply");
    let db = store.db().clone();
    let sst_files = || {
        db.live_files()
            .expect("live files")
            .iter()
            .filter(|f| f.column_family_name == engine::CF_KV)
            .count()
    };
    let before = sst_files();

    // The view is taken between two applies; the ones after it are not in it.
    let mut builder = sm.get_snapshot_builder().await;
    sm.apply((51..=60).map(|i| put(i, format!("k{i:03}"), b"v2".to_vec())))
        .await
        .expect("apply");
    let snap = builder.build_snapshot().await.expect("build");
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(50));
    // A checkpoint flushed the memtables first (an SST file more), and the
    // state machine's applies waited for that flush.
    assert_eq!(
        sst_files(),
        before,
        "building a snapshot flushed the memtable"
    );

    // Installed elsewhere, it holds the 50 keys, not the 10 written after.
    let dst = tempfile::tempdir().expect("tempdir");
    let Opened {
        sm: mut other,
        store: other_store,
        ..
    } = open_all(dst.path());
    let file = receive(&mut other, snap.snapshot).await;
    other
        .install_snapshot(&snap.meta, file)
        .await
        .expect("install");
    assert_eq!(keys_from_k_to_l(&other_store), 50);
}

/// The files in a state machine's snapshot folder.
fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("snapshots"))
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_writes_nothing_until_read_once_and_its_file_goes_with_its_last_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Opened { mut sm, .. } = open_all(dir.path());
    sm.apply((1..=50).map(|i| put(i, format!("k{i:03}"), b"v1".to_vec())))
        .await
        .expect("apply");
    let taken = build_snapshot(&mut sm).await;
    sm.apply((51..=60).map(|i| put(i, format!("k{i:03}"), b"v2".to_vec())))
        .await
        .expect("apply");
    assert_eq!(
        snapshot_files(dir.path()),
        Vec::<String>::new(),
        "taking a snapshot wrote a file"
    );

    // A follower asks: the file is written then, as the view saw the state.
    let current = current_snapshot(&mut sm).await;
    assert_eq!(current.meta, taken.meta);
    let dst = tempfile::tempdir().expect("tempdir");
    let Opened {
        sm: mut other,
        store: other_store,
        ..
    } = open_all(dst.path());
    let file = receive(&mut other, current.snapshot).await;
    let written = snapshot_files(dir.path());
    assert_eq!(written.len(), 1, "{written:?}");
    assert!(written[0].ends_with(".dump"), "{written:?}");
    other
        .install_snapshot(&taken.meta, file)
        .await
        .expect("install");
    assert_eq!(keys_from_k_to_l(&other_store), 50);

    // A second reader reads the same file, written once, from its start.
    let mut again = current_snapshot(&mut sm).await;
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut *again.snapshot, &mut bytes)
        .await
        .expect("read");
    let path = dir.path().join("snapshots").join(&written[0]);
    assert_eq!(bytes, std::fs::read(&path).expect("the view's file"));
    assert_eq!(snapshot_files(dir.path()), written);

    // Replaced by a newer snapshot and no longer read, the view and its
    // file go.
    drop((taken, again));
    let _newer = build_snapshot(&mut sm).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the file of a snapshot nobody holds is still there"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(snapshot_files(dir.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_write_stops_once_nobody_wants_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Opened { mut sm, store, .. } = open_all(dir.path());
    sm.apply((1..=3000).map(|i| put(i, format!("k{i:05}"), b"v".to_vec())))
        .await
        .expect("apply");
    let db = store.db();
    let view = db.snapshot();
    let out = dir.path().join("abandoned.dump");
    let r = crate::snapshot::write_file(db, &view, &out, "1".into(), &|| false);
    assert!(
        matches!(r, Err(crate::mvcc::StoreError::Abandoned)),
        "{r:?}"
    );
    let r = crate::snapshot::write_file(db, &view, &out, "1".into(), &|| true);
    assert_eq!(r.expect("written").last_log_id.map(|l| l.index), Some(3000));
}
