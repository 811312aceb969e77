//! What the store-level nemeses need beyond processes and packets: the
//! masters' Raft positions (Maintenance.Status), filler writes that push
//! the log past what a cut-off follower holds (so that it must be sent a
//! snapshot), the files that show a snapshot being received, and
//! compactions.
//!
//! The filler's keys live under [`FILLER_PREFIX`], outside every
//! workload's prefix: no checker counts them, and the final comparison of
//! the replicas covers them like any other key.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
use flotilla_testkit::{connect, member_status, MemberStatus, Probe};

use crate::cluster::Target;

/// Keys the snapshot nemesis writes to lengthen the log.
pub const FILLER_PREFIX: &str = "jepsen-filler/";

/// How long one call of this module may take.
const CALL: Duration = Duration::from_secs(2);

/// Maintenance.Status of the master at `addr` (its place in the Raft log:
/// `raft_index`, `applied`).
pub async fn position(addr: &str) -> Result<MemberStatus> {
    member_status(addr, &Probe::new(CALL)).await
}

/// Log entries a follower cut off at the leader's index `i` must be behind
/// before the leader can only send it a snapshot: the log is purged behind
/// a snapshot taken every `snapshot_logs` entries, keeping a tail (Flotilla:
/// a tenth of `snapshot_logs`; etcd: 5,000 entries, its fixed
/// `SnapshotCatchUpEntries`). Two snapshot periods on top, so that a
/// snapshot is surely taken past the follower's index.
pub fn entries_to_force_snapshot(target: Target, snapshot_logs: u64) -> u64 {
    let tail = match target {
        Target::Flotilla => (snapshot_logs / 10).max(1),
        Target::Etcd => 5_000,
    };
    tail + 2 * snapshot_logs + 100
}

/// Writes filler keys through the master at `addr` until its log has grown
/// `entries` past `from`, or fails after `limit`. Values are 2 KiB, so that
/// the snapshot the follower will need is big enough (several MiB) to be
/// caught while it is transferred. Returns the puts made.
pub async fn fill_log(addr: &str, from: u64, entries: u64, limit: Duration) -> Result<u64> {
    let chan = connect(addr, &Probe::new(CALL)).await?;
    let done = Arc::new(AtomicBool::new(false));
    let puts = Arc::new(AtomicU64::new(0));
    let mut writers = tokio::task::JoinSet::new();
    // Few writers: Flotilla carries concurrent writes in one log entry
    // (group commit), and it is entries that count here.
    for w in 0..4u32 {
        let (chan, done, puts) = (chan.clone(), done.clone(), puts.clone());
        writers.spawn(async move {
            let mut kv = KvClient::new(chan);
            let value = vec![b'f'; 2048];
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                let put = kv.put(PutRequest {
                    key: format!("{FILLER_PREFIX}{w}/{n}").into_bytes(),
                    value: value.clone(),
                    ..Default::default()
                });
                match tokio::time::timeout(CALL, put).await {
                    Ok(Ok(_)) => {
                        puts.fetch_add(1, Ordering::Relaxed);
                        n += 1;
                    }
                    // A leader change under the filler: try again.
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
    }
    let deadline = tokio::time::Instant::now() + limit;
    let outcome = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        match position(addr).await {
            Ok(p) if p.raft_index >= from + entries => break Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                break Err(anyhow!(
                    "the log of {addr} did not grow {entries} entries past {from} in {limit:?} \
                     ({} filler puts)",
                    puts.load(Ordering::Relaxed)
                ))
            }
            _ => {}
        }
    };
    done.store(true, Ordering::Relaxed);
    while writers.join_next().await.is_some() {}
    outcome.map(|()| puts.load(Ordering::Relaxed))
}

/// The files in `data_dir` that show a snapshot being received from the
/// leader: Flotilla writes it to `snapshots/receiving.part`, then verifies
/// it as `snapshots/received.*` before installing it; etcd writes it to a
/// `tmp*` file in `member/snap/`, renamed `<index>.snap.db` until it
/// replaces the database.
pub fn snapshot_transfer_files(target: Target, data_dir: &Path) -> Vec<String> {
    let (dir, is_transfer): (_, fn(&str) -> bool) = match target {
        Target::Flotilla => (data_dir.join("snapshots"), |n| {
            n == "receiving.part" || n.starts_with("received")
        }),
        Target::Etcd => (data_dir.join("member").join("snap"), |n| {
            n.starts_with("tmp") || n.ends_with(".snap.db")
        }),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_transfer(n))
        .collect();
    found.sort();
    found
}

/// The store revision the master at `addr` reports (a linearizable read of
/// a key nobody writes).
pub async fn revision(addr: &str) -> Result<i64> {
    let mut kv = KvClient::new(connect(addr, &Probe::new(CALL)).await?);
    let r = tokio::time::timeout(
        CALL,
        kv.range(RangeRequest {
            key: b"jepsen-revision-probe".to_vec(),
            ..Default::default()
        }),
    )
    .await
    .context("range timed out")?
    .map_err(|s| anyhow!("range on {addr}: {:?}: {}", s.code(), s.message()))?
    .into_inner();
    r.header
        .map(|h| h.revision)
        .context("no header in the range answer")
}

/// Compacts the store at `revision` through the master at `addr`
/// (`physical`: answered once the compaction is done on that master).
pub async fn compact(addr: &str, revision: i64, physical: bool) -> Result<()> {
    if revision <= 0 {
        bail!("nothing to compact below revision {revision}");
    }
    let mut kv = KvClient::new(connect(addr, &Probe::new(CALL)).await?);
    tokio::time::timeout(CALL, kv.compact(CompactionRequest { revision, physical }))
        .await
        .context("compact timed out")?
        .map_err(|s| {
            anyhow!(
                "compact at {revision} on {addr}: {:?}: {}",
                s.code(),
                s.message()
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filler_outgrows_what_the_leader_keeps_behind_a_snapshot() {
        // Flotilla keeps a tenth of the period; etcd 5,000 entries.
        assert!(entries_to_force_snapshot(Target::Flotilla, 1000) > 1000 + 100);
        assert!(entries_to_force_snapshot(Target::Etcd, 1000) > 5000 + 1000);
    }

    #[test]
    fn transfer_files_are_told_apart_from_a_masters_own_snapshots() {
        let d = tempfile::tempdir().unwrap();
        let snaps = d.path().join("snapshots");
        std::fs::create_dir_all(&snaps).unwrap();
        std::fs::write(snaps.join("current.snap"), b"").unwrap();
        assert!(snapshot_transfer_files(Target::Flotilla, d.path()).is_empty());
        std::fs::write(snaps.join("receiving.part"), b"").unwrap();
        assert_eq!(
            snapshot_transfer_files(Target::Flotilla, d.path()),
            vec!["receiving.part".to_string()]
        );
        let snap = d.path().join("member").join("snap");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("db"), b"").unwrap();
        std::fs::write(snap.join("0000000000000002-0000000000000fa1.snap"), b"").unwrap();
        assert!(snapshot_transfer_files(Target::Etcd, d.path()).is_empty());
        std::fs::write(snap.join("0000000000001388.snap.db"), b"").unwrap();
        assert_eq!(snapshot_transfer_files(Target::Etcd, d.path()).len(), 1);
    }
}
