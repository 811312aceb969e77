//! Backups and restores, as etcd operators know them.
//!
//! A backup (`etcdctl snapshot save FILE`, etcd's Maintenance.Snapshot) is a
//! snapshot file (the format of Raft's snapshots, checksummed) of a RocksDB
//! snapshot taken on the master asked, after a linearizable read barrier:
//! it holds every write acknowledged before the call, and writes go on
//! while it is taken and sent.
//!
//! A restore ([`restore`], `flotilla restore`) builds a new master's data
//! folder from such a file, like `etcdctl snapshot restore`: the keys,
//! revisions, leases and history are the backup's, but nothing of the old
//! cluster's identity is kept (membership, member directory, cluster id,
//! Raft log), so the restored masters found a new cluster with their
//! `--initial-cluster` and a new cluster id.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::{self, CF_KV, CF_LEASE, CF_SM_META, SM_CFS};
use crate::error::Error;
use crate::mvcc::{
    KvStore, StoreError, META_APPLIED, META_BATCH_PROGRESS, META_CLUSTER_ID, META_COMPACT,
    META_MEMBERSHIP, META_MEMBER_PREFIX, META_REVISION,
};
use crate::node::Master;
use crate::snapshot;

/// Take a backup on `master`: returns the file, open for reading and
/// already unlinked (nothing is left behind if the caller goes away), and
/// its size.
pub async fn save(master: &Master) -> Result<(File, u64), Error> {
    // Everything acknowledged before the call is applied here first.
    master.linearize().await?;
    let dir = master.cfg.data_dir.join("snapshots");
    let id = format!(
        "backup-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let out = dir.join(format!("{id}.backup{}", snapshot::BUILDING));
    let store = master.store.clone();
    tokio::task::spawn_blocking(move || -> Result<(File, u64), StoreError> {
        let res = (|| {
            // Between two applies: a large delete is written in chunks.
            let view = store.view_between_applies();
            snapshot::write_file(store.db(), &view, &out, id, &|| true)?;
            seal(&out)?;
            let f = File::open(&out).map_err(io)?;
            let len = f.metadata().map_err(io)?.len();
            Ok((f, len))
        })();
        // A crash here leaves the file, removed at the next start
        // (`snapshot::remove_leftovers`).
        let _ = std::fs::remove_file(&out);
        res
    })
    .await
    .map_err(|e| Error::Internal(format!("backup task: {e}")))?
    .map_err(Error::from)
}

/// etcd's backup files end with the SHA-256 of what comes before, and
/// their length is 32 more than a multiple of 512 (bbolt's pages), which
/// `etcdctl snapshot save` checks: pad the snapshot with zeros to a
/// multiple of 512 and append the digest.
fn seal(path: &Path) -> Result<(), StoreError> {
    use sha2::{Digest, Sha256};
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io)?;
    let len = f.seek(SeekFrom::End(0)).map_err(io)?;
    let pad = vec![0u8; ((512 - len % 512) % 512) as usize];
    h.update(&pad);
    f.write_all(&pad).map_err(io)?;
    f.write_all(&h.finalize()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Check the SHA-256 trailer of a sealed backup ([`seal`]); a snapshot
/// file without one (any other length) has only its CRC to check.
fn check_seal(path: &Path, len: u64) -> Result<bool, StoreError> {
    use sha2::{Digest, Sha256};
    use std::io::{Read, Seek, SeekFrom};
    if len % 512 != 32 {
        return Ok(false);
    }
    let mut f = File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    std::io::copy(&mut (&mut f).take(len - 32), &mut h).map_err(io)?;
    let mut want = [0u8; 32];
    f.seek(SeekFrom::Start(len - 32)).map_err(io)?;
    f.read_exact(&mut want).map_err(io)?;
    if h.finalize()[..] != want {
        return Err(StoreError::Corrupt(
            "backup SHA-256 mismatch: the file is damaged or truncated".into(),
        ));
    }
    Ok(true)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Corrupt(format!("backup i/o: {e}"))
}

/// What a backup file holds (`flotilla snapshot status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// CRC-32 of the file's contents (checked).
    pub crc: u32,
    /// The store's revision at the backup.
    pub revision: i64,
    /// The revision compacted to.
    pub compact_revision: i64,
    /// Keys that exist at `revision` (not deleted).
    pub keys: u64,
    /// Versions kept (the history since the compaction).
    pub versions: u64,
    pub leases: u64,
    pub bytes: u64,
    /// Whether it carried etcd's SHA-256 trailer (checked).
    pub sealed: bool,
}

/// Read and check a backup file; [`Summary`] of what it holds.
pub fn status(path: &Path) -> Result<Summary, StoreError> {
    let bytes = std::fs::metadata(path).map_err(io)?.len();
    let sealed = check_seal(path, bytes)?;
    let f = File::open(path).map_err(io)?;
    let mut revision = 0;
    let mut compact_revision = 0;
    let mut versions = 0u64;
    let mut leases = 0u64;
    let mut live: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut seen: Option<Vec<u8>> = None;
    let meta_i64 = |v: &[u8]| v.try_into().map(i64::from_be_bytes).unwrap_or(0);
    snapshot::walk(BufReader::new(f), |cf, k, v| {
        match SM_CFS[cf] {
            CF_SM_META if k == META_REVISION => revision = meta_i64(v),
            CF_SM_META if k == META_COMPACT => compact_revision = meta_i64(v),
            CF_KV => {
                versions += 1;
                // Versions of one key are newest first: the first says
                // whether the key exists now.
                if let Some((key, _)) = engine::decode_mvcc_key(k) {
                    if seen.as_deref() != Some(&key[..]) {
                        let tombstone = engine::Record::decode(v).is_none_or(|r| r.tombstone);
                        if !tombstone {
                            live.insert(key.clone());
                        }
                        seen = Some(key);
                    }
                }
            }
            CF_LEASE => leases += 1,
            _ => {}
        }
        Ok(())
    })
    .map(|crc| Summary {
        crc,
        revision,
        compact_revision,
        keys: live.len() as u64,
        versions,
        leases,
        bytes,
        sealed,
    })
}

/// Build a new master's data folder at `data_dir` (which must not hold a
/// database) from the backup at `backup`.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<Summary, StoreError> {
    let summary = status(backup)?;
    let db_path = data_dir.join("db");
    if db_path.exists() {
        return Err(StoreError::Corrupt(format!(
            "{} exists: restore into an empty data folder",
            db_path.display()
        )));
    }
    std::fs::create_dir_all(data_dir.join("snapshots")).map_err(io)?;
    let db = engine::open(&db_path)?;
    crate::format::check(&db)?;
    let store = KvStore::open(db.clone())?;
    snapshot::install(&store, backup)?;
    // Forget the old cluster: who its members were, its id, its log.
    let meta = engine::cf(&db, CF_SM_META);
    for k in [
        META_APPLIED,
        META_MEMBERSHIP,
        META_CLUSTER_ID,
        META_BATCH_PROGRESS,
    ] {
        db.delete_cf(meta, k)?;
    }
    let members: Vec<Box<[u8]>> = db
        .prefix_iterator_cf(meta, META_MEMBER_PREFIX)
        .filter_map(|r| r.ok())
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(META_MEMBER_PREFIX))
        .collect();
    for k in members {
        db.delete_cf(meta, k)?;
    }
    db.flush_wal(true)?;
    let fo = rocksdb::FlushOptions::default();
    for name in SM_CFS {
        db.flush_cf_opt(engine::cf(&db, name), &fo)?;
    }
    drop(store);
    drop(db);
    Ok(summary)
}
