//! The RocksDB log and state machine against openraft's storage contract,
//! and the durability rule of the log.

use std::sync::Arc;

use flotilla_raftstore::engine;
use flotilla_raftstore::lease::Lessor;
use flotilla_raftstore::log_store::LogStore;
use flotilla_raftstore::mvcc::KvStore;
use flotilla_raftstore::state_machine::{Listeners, StateMachine};
use flotilla_raftstore::types::{Entry, StorageError, TypeConfig};
use flotilla_raftstore::watch::WatchHub;
use openraft::storage::RaftLogStorageExt;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, LogId};

struct Builder;

fn open(dir: &std::path::Path) -> (LogStore, StateMachine) {
    let db = engine::open(&dir.join("db")).expect("open rocksdb");
    let store = Arc::new(KvStore::open(db.clone()).expect("open kv store"));
    let (tx, _rx) = std::sync::mpsc::channel();
    let listeners = Listeners {
        hub: Arc::new(WatchHub::default()),
        lessor: Arc::new(Lessor::default()),
        compactor: tx,
    };
    let sm = StateMachine::new(store, dir.join("snapshots"), listeners).expect("state machine");
    (LogStore::new(db), sm)
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
