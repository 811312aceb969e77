//! A leader restarted after a power loss that took the tail of its log:
//! three masters in this process, stopped, one follower's log given the
//! entries its leader replicated under its term and then lost, restarted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::EntryPayload;

use crate::engine::{self, CF_RAFT_LOG};
use crate::kv::{KeyValue, RangeRequest};
use crate::log_store::last_log_id;
use crate::server::{start, RunningMaster};
use crate::tests::common::put_cmd;
use crate::types::{Entry, LogId, Outcome};
use crate::{Master, MasterConfig};

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Three masters founding a cluster in `dir`.
fn founding(dir: &Path) -> Vec<MasterConfig> {
    let names = ["m0", "m1", "m2"];
    let peers: Vec<SocketAddr> = names
        .iter()
        .map(|_| local(flotilla_testkit::ports::free_port()))
        .collect();
    let initial: Vec<(String, String)> = names
        .iter()
        .zip(&peers)
        .map(|(n, p)| (n.to_string(), p.to_string()))
        .collect();
    names
        .iter()
        .zip(&peers)
        .map(|(n, p)| {
            let client = local(flotilla_testkit::ports::free_port());
            let mut cfg = MasterConfig::new(n, dir.join(n), client, *p);
            cfg.initial_cluster = initial.clone();
            cfg
        })
        .collect()
}

async fn start_all(cfgs: &[MasterConfig]) -> Vec<RunningMaster> {
    let mut running = Vec::new();
    for cfg in cfgs {
        running.push(start(cfg.clone()).await.expect("start a master"));
    }
    running
}

/// Stop every master and wait until its database is closed (the next open
/// of its folder succeeds).
async fn stop_all(running: Vec<RunningMaster>, dirs: &[PathBuf]) {
    for r in running {
        r.shutdown().await;
    }
    for d in dirs {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match engine::open(&d.join("db")) {
                Ok(db) => {
                    drop(db);
                    break;
                }
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "{}: still open 20 s after the stop: {e}",
                        d.display()
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The master leading now, once one does.
async fn leader(masters: &[&Master]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(i) = masters
            .iter()
            .position(|m| m.leadership().borrow().is_some())
        {
            return i;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Write `key` through whichever master leads, until one takes it.
async fn put(masters: &[&Master], key: &str) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let l = leader(masters).await;
        match masters[l].propose(put_cmd(key, "v")).await {
            Ok(r) if matches!(r.outcome, Outcome::Txn(Ok(_))) => return r.revision,
            r => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "put {key}: no leader took it in 20 s (last: {r:?})"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Every key of `m`'s replica, with its revisions.
fn contents(m: &Master) -> Vec<KeyValue> {
    m.range(&RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    })
    .expect("read the replica")
    .kvs
}

/// Wait until every master has applied `rev` (and nothing more comes).
async fn all_at(masters: &[&Master], rev: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !masters.iter().all(|m| m.revision() >= rev) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "revision {rev} not applied everywhere in 20 s: {:?}",
            masters.iter().map(|m| m.revision()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Give the follower in `dir` the entries `ghosts` after its last, under
/// the leader id of that last entry: entries its leader appended and
/// replicated before its own fsync, then lost in a power loss.
fn add_ghost_entries(dir: &Path, ghosts: &[&str]) -> LogId {
    let db = engine::open(&dir.join("db")).expect("open the follower's store");
    let last = last_log_id(&db)
        .expect("read the log")
        .expect("the log has entries");
    let mut batch = rocksdb::WriteBatch::default();
    for (i, g) in ghosts.iter().enumerate() {
        let log_id = LogId {
            leader_id: last.leader_id,
            index: last.index + 1 + i as u64,
        };
        let e = Entry {
            log_id,
            payload: EntryPayload::Normal(put_cmd(g, "lost")),
        };
        batch.put_cf(
            engine::cf(&db, CF_RAFT_LOG),
            log_id.index.to_be_bytes(),
            bincode::serialize(&e).expect("encode an entry"),
        );
    }
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo).expect("write the entries");
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_restarted_after_losing_its_logs_tail_leads_only_in_a_new_term() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfgs = founding(dir.path());
    let dirs: Vec<PathBuf> = cfgs.iter().map(|c| c.data_dir.clone()).collect();

    let running = start_all(&cfgs).await;
    let masters: Vec<&Master> = running.iter().map(|r| &r.master).collect();
    let mut rev = 0;
    for k in ["a", "b", "c"] {
        rev = put(&masters, k).await;
    }
    all_at(&masters, rev).await;
    let l = leader(&masters).await;
    let term = masters[l].leadership().borrow().unwrap_or_default();
    let f = (l + 1) % 3;
    stop_all(running, &dirs).await;

    // The follower holds three entries of the leader's term that the
    // leader's log no longer has.
    let last = add_ghost_entries(&dirs[f], &["ghost1", "ghost2", "ghost3"]);
    assert_eq!(
        last.leader_id.term, term,
        "the follower's last entry is of the leader's term"
    );

    // The leader first, so that it could lead on before the others stir.
    let mut order = vec![l];
    order.extend((0..3).filter(|i| *i != l));
    let mut by_index: Vec<Option<RunningMaster>> = (0..3).map(|_| None).collect();
    for i in order {
        by_index[i] = Some(start(cfgs[i].clone()).await.expect("restart a master"));
    }
    let running: Vec<RunningMaster> = by_index.into_iter().flatten().collect();
    let masters: Vec<&Master> = running.iter().map(|r| &r.master).collect();

    let mut rev = 0;
    for k in ["after1", "after2", "after3", "after4"] {
        rev = put(&masters, k).await;
    }
    all_at(&masters, rev).await;
    // Whoever leads, every replica holds the same keys at the same
    // revisions: the ghosts everywhere (a new leader that had them) or
    // nowhere (one that replaced them).
    let want = contents(masters[0]);
    for (i, m) in masters.iter().enumerate().skip(1) {
        let got = contents(m);
        let names = |kvs: &[KeyValue]| -> Vec<String> {
            kvs.iter()
                .map(|kv| format!("{}@{}", String::from_utf8_lossy(&kv.key), kv.mod_revision))
                .collect()
        };
        assert_eq!(
            names(&got),
            names(&want),
            "master {i}'s replica differs from master 0's"
        );
    }
    for k in ["after1", "after4"] {
        assert!(
            want.iter().any(|kv| kv.key == k.as_bytes()),
            "{k} is missing: {:?}",
            want.iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
                .collect::<Vec<_>>()
        );
    }
    // And it is led in a new term.
    let l2 = leader(&masters).await;
    let term2 = masters[l2].leadership().borrow().unwrap_or_default();
    assert!(
        term2 > term,
        "the restarted cluster leads in term {term2}, the term before the stop was {term}"
    );

    stop_all(running, &dirs).await;
}

#[test]
fn only_a_leaders_own_committed_vote_comes_back_uncommitted() {
    use crate::log_store::restarted_vote;
    use crate::types::Vote;
    let mut led = Vote::new(7, 1);
    led.commit();
    assert_eq!(restarted_vote(led, 1), Vote::new(7, 1), "the leader's own");
    let mut followed = Vote::new(7, 2);
    followed.commit();
    assert_eq!(restarted_vote(followed, 1), followed, "a follower's");
    let asked = Vote::new(7, 1);
    assert_eq!(restarted_vote(asked, 1), asked, "a candidate's");
}
