//! Snapshot files: built by streaming a RocksDB checkpoint to disk, installed
//! by streaming a file into the database. Neither holds the snapshot in memory.
//!
//! Format: `FLTSNAP1`, u32 length + bincode [`SnapshotMeta`], then records
//! `[cf u8][key len u32][key][value len u32][value]`, a `0xFF` end marker,
//! and the CRC-32 of everything before it.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::WriteBatch;

use crate::engine::{self, Db, CF_RAFT_META, SM_CFS};
use crate::mvcc::{KvStore, StoreError, META_APPLIED, META_MEMBERSHIP};
use crate::types::{LogId, SnapshotMeta, StoredMembership};

const MAGIC: &[u8; 8] = b"FLTSNAP1";
const END: u8 = 0xFF;
const MARK_INSTALLING: &[u8] = b"installing_snapshot";
pub const CURRENT: &str = "current.snap";

fn corrupt(msg: impl Into<String>) -> StoreError {
    StoreError::Corrupt(msg.into())
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Corrupt(format!("snapshot i/o: {e}"))
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

struct CrcReader<R: Read> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
}

fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Build a snapshot file from a checkpoint directory; returns its meta.
/// The file is written beside `dest` and renamed over it once synced.
pub fn build_from_checkpoint(
    checkpoint: &Path,
    dest: &Path,
    snapshot_id: String,
) -> Result<SnapshotMeta, StoreError> {
    let db = engine::open_read_only(checkpoint)?;
    let smeta = engine::cf(&db, engine::CF_SM_META);
    let applied: Option<LogId> = match db.get_cf(smeta, META_APPLIED)? {
        Some(v) => bincode::deserialize(&v).map_err(|e| corrupt(e.to_string()))?,
        None => None,
    };
    let membership: StoredMembership = match db.get_cf(smeta, META_MEMBERSHIP)? {
        Some(v) => bincode::deserialize(&v).map_err(|e| corrupt(e.to_string()))?,
        None => StoredMembership::default(),
    };
    let meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id,
    };
    let tmp = dest.with_extension("building");
    let file = File::create(&tmp).map_err(io)?;
    let mut w = CrcWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        crc: crc32fast::Hasher::new(),
    };
    w.write_all(MAGIC).map_err(io)?;
    let m = bincode::serialize(&meta).map_err(|e| corrupt(e.to_string()))?;
    w.write_all(&(m.len() as u32).to_be_bytes()).map_err(io)?;
    w.write_all(&m).map_err(io)?;
    for (i, name) in SM_CFS.iter().enumerate() {
        let mut it = db.raw_iterator_cf(engine::cf(&db, name));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            w.write_all(&[i as u8]).map_err(io)?;
            w.write_all(&(k.len() as u32).to_be_bytes()).map_err(io)?;
            w.write_all(k).map_err(io)?;
            w.write_all(&(v.len() as u32).to_be_bytes()).map_err(io)?;
            w.write_all(v).map_err(io)?;
            it.next();
        }
        it.status()?;
    }
    w.write_all(&[END]).map_err(io)?;
    let crc = w.crc.clone().finalize();
    let mut inner = w.inner;
    inner.write_all(&crc.to_be_bytes()).map_err(io)?;
    let file = inner.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, dest).map_err(io)?;
    if let Some(dir) = dest.parent() {
        fsync_dir(dir)?;
    }
    Ok(meta)
}

/// Read the meta at the head of a snapshot file.
pub fn read_meta(path: &Path) -> Result<SnapshotMeta, StoreError> {
    let mut r = BufReader::new(File::open(path).map_err(io)?);
    read_header(&mut r)
}

fn read_header<R: Read>(r: &mut R) -> Result<SnapshotMeta, StoreError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(corrupt("not a Flotilla snapshot"));
    }
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(io)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > 64 << 20 {
        return Err(corrupt("snapshot meta too large"));
    }
    let mut m = vec![0u8; len];
    r.read_exact(&mut m).map_err(io)?;
    bincode::deserialize(&m).map_err(|e| corrupt(e.to_string()))
}

/// Walk every record of a snapshot stream, checking structure and checksum.
fn for_each_record<R: Read>(
    src: R,
    mut f: impl FnMut(usize, &[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<SnapshotMeta, StoreError> {
    let mut r = CrcReader {
        inner: BufReader::with_capacity(1 << 20, src),
        crc: crc32fast::Hasher::new(),
    };
    let meta = read_header(&mut r)?;
    let mut key = Vec::new();
    let mut val = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(io)?;
        if tag[0] == END {
            break;
        }
        let cf = tag[0] as usize;
        if cf >= SM_CFS.len() {
            return Err(corrupt(format!("unknown column family {cf} in snapshot")));
        }
        for buf in [&mut key, &mut val] {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).map_err(io)?;
            let len = u32::from_be_bytes(len) as usize;
            if len > 256 << 20 {
                return Err(corrupt("snapshot record too large"));
            }
            buf.resize(len, 0);
            r.read_exact(buf).map_err(io)?;
        }
        f(cf, &key, &val)?;
    }
    let expect = r.crc.clone().finalize();
    let mut crc = [0u8; 4];
    r.inner.read_exact(&mut crc).map_err(io)?;
    if u32::from_be_bytes(crc) != expect {
        return Err(corrupt("snapshot checksum mismatch"));
    }
    Ok(meta)
}

/// Verify a received snapshot stream and store it as the current snapshot.
pub fn save_received<R: Read>(src: R, dir: &Path) -> Result<PathBuf, StoreError> {
    let dest = dir.join(CURRENT);
    let tmp = dir.join("received.building");
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp).map_err(io)?);
    // Copy while checking: records are re-serialised exactly as read.
    let mut tee = TeeReader {
        inner: src,
        out: &mut out,
        err: None,
    };
    let res = for_each_record(&mut tee, |_, _, _| Ok(()));
    if let Some(e) = tee.err.take() {
        return Err(io(e));
    }
    res?;
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, &dest).map_err(io)?;
    fsync_dir(dir)?;
    Ok(dest)
}

struct TeeReader<'a, R: Read, W: Write> {
    inner: R,
    out: &'a mut W,
    err: Option<std::io::Error>,
}

impl<R: Read, W: Write> Read for TeeReader<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            self.err = Some(std::io::Error::new(e.kind(), e.to_string()));
            return Err(e);
        }
        Ok(n)
    }
}

fn clear_cf(db: &Db, name: &str) -> Result<(), StoreError> {
    let cf = engine::cf(db, name);
    let mut it = db.raw_iterator_cf(cf);
    it.seek_to_first();
    let first = it.key().map(|k| k.to_vec());
    it.seek_to_last();
    let last = it.key().map(|k| k.to_vec());
    it.status()?;
    if let (Some(first), Some(last)) = (first, last) {
        db.delete_range_cf(cf, &first, &last)?;
        db.delete_cf(cf, &last)?;
    }
    Ok(())
}

/// Replace the state machine with the snapshot at `path`. A marker makes a
/// crash half-way resume the install at the next start.
pub fn install(store: &KvStore, path: &Path) -> Result<SnapshotMeta, StoreError> {
    let _guard = store.maintenance.lock().unwrap_or_else(|p| p.into_inner());
    let db = store.db();
    let mut wo = rocksdb::WriteOptions::default();
    wo.set_sync(true);
    db.put_cf_opt(engine::cf(db, CF_RAFT_META), MARK_INSTALLING, b"1", &wo)?;
    for name in SM_CFS {
        clear_cf(db, name)?;
    }
    let mut batch = WriteBatch::default();
    let mut bytes = 0usize;
    let meta = for_each_record(File::open(path).map_err(io)?, |cf, k, v| {
        batch.put_cf(engine::cf(db, SM_CFS[cf]), k, v);
        bytes += k.len() + v.len();
        if bytes > 4 << 20 {
            db.write(std::mem::take(&mut batch))?;
            bytes = 0;
        }
        Ok(())
    })?;
    db.write(batch)?;
    db.flush_wal(true)?;
    db.delete_cf_opt(engine::cf(db, CF_RAFT_META), MARK_INSTALLING, &wo)?;
    store.reload()?;
    Ok(meta)
}

/// True when a previous install was interrupted and must be redone.
pub fn install_interrupted(db: &Db) -> Result<bool, StoreError> {
    Ok(db
        .get_cf(engine::cf(db, CF_RAFT_META), MARK_INSTALLING)?
        .is_some())
}
