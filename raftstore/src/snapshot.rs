//! Snapshot files: written by streaming a RocksDB snapshot (a point-in-time
//! view, taken between two applies without flushing anything) to disk when
//! a follower needs it (see [`crate::snapshot_data`]), installed by
//! streaming a received file into the database. Neither holds the snapshot
//! in memory.
//!
//! Format: `FLTSNAP1` (the format version is its last byte, see
//! [`crate::format`]), u32 length + bincode [`SnapshotMeta`], then records
//! `[cf u8][key len u32][key][value len u32][value]`, a `0xFF` end marker,
//! and the CRC-32 of everything before it.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::{WriteBatch, DB};

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

/// The meta of the snapshot that `view` (a snapshot of `db`) is.
pub fn view_meta(
    db: &DB,
    view: &rocksdb::Snapshot<'_>,
    snapshot_id: String,
) -> Result<SnapshotMeta, StoreError> {
    let smeta = engine::cf(db, engine::CF_SM_META);
    let applied: Option<LogId> = match view.get_cf(smeta, META_APPLIED)? {
        Some(v) => bincode::deserialize(&v).map_err(|e| corrupt(e.to_string()))?,
        None => None,
    };
    let membership: StoredMembership = match view.get_cf(smeta, META_MEMBERSHIP)? {
        Some(v) => bincode::deserialize(&v).map_err(|e| corrupt(e.to_string()))?,
        None => StoredMembership::default(),
    };
    Ok(SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id,
    })
}

/// Write a snapshot file of the state machine as `view` (a snapshot of
/// `db`) sees it at `out`; returns its meta. Writes to `db` go on
/// meanwhile: the view holds the versions it needs. The file is not
/// synced: it is sent and removed (a follower syncs what it receives).
/// Stops with an error once `keep_going` says no (checked every 1,024
/// records).
pub fn write_file(
    db: &DB,
    view: &rocksdb::Snapshot<'_>,
    out: &Path,
    snapshot_id: String,
    keep_going: &dyn Fn() -> bool,
) -> Result<SnapshotMeta, StoreError> {
    let meta = view_meta(db, view, snapshot_id)?;
    let file = File::create(out).map_err(io)?;
    let mut w = CrcWriter {
        inner: BufWriter::with_capacity(1 << 20, WritingBack::new(file)),
        crc: crc32fast::Hasher::new(),
    };
    w.write_all(MAGIC).map_err(io)?;
    let m = bincode::serialize(&meta).map_err(|e| corrupt(e.to_string()))?;
    w.write_all(&(m.len() as u32).to_be_bytes()).map_err(io)?;
    w.write_all(&m).map_err(io)?;
    let mut records = 0u32;
    for (i, name) in SM_CFS.iter().enumerate() {
        let mut opts = engine::across_keys();
        // A one-off scan: keep it out of the block cache.
        opts.fill_cache(false);
        let mut it = view.raw_iterator_cf_opt(engine::cf(db, name), opts);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            records = records.wrapping_add(1);
            if records.is_multiple_of(1024) && !keep_going() {
                return Err(StoreError::Abandoned);
            }
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
    inner.into_inner().map_err(|e| io(e.into_error()))?;
    Ok(meta)
}

/// Bytes written between two starts of write-back.
const WRITE_BACK_EVERY: u64 = 4 << 20;

/// A file whose dirty pages are sent to the disk as it is written, every
/// [`WRITE_BACK_EVERY`] bytes, without waiting (as RocksDB's
/// `bytes_per_sync`). A snapshot is the whole state, hundreds of megabytes:
/// left to one fsync at the end (as snapshots were), or to the kernel's
/// write-back of a large dirty file, that burst queued the Raft log's own
/// WAL fsyncs behind it for a second (appends to followers timed out).
struct WritingBack {
    file: File,
    /// Where the bytes not yet sent to the disk start.
    from: u64,
    written: u64,
}

impl WritingBack {
    fn new(file: File) -> Self {
        WritingBack {
            file,
            from: 0,
            written: 0,
        }
    }
}

impl Write for WritingBack {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.from >= WRITE_BACK_EVERY {
            use std::os::fd::AsRawFd;
            // Only starts the write-back; the final fsync waits for it.
            // SAFETY: a plain syscall on a descriptor this struct owns.
            let r = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.from as libc::off64_t,
                    (self.written - self.from) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            self.from = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The suffix of files being built (removed at start if a crash left them).
pub const BUILDING: &str = ".building";
/// Builds of older versions started from a RocksDB checkpoint directory of
/// this name (which pins SST files).
const CHECKPOINT: &str = "checkpoint-";

/// Remove what writes and receptions that a crash interrupted left in the
/// snapshot directory: partial files, views' files, and the checkpoints of
/// older versions' builds.
pub fn remove_leftovers(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with(CHECKPOINT) {
            tracing::info!(path = %path.display(), "removing a checkpoint left by a crash");
            fs::remove_dir_all(&path).map_err(io)?;
        } else if name.ends_with(BUILDING)
            || name == RECEIVING
            || crate::snapshot_data::is_dump(&name)
        {
            fs::remove_file(&path).map_err(io)?;
        }
    }
    Ok(())
}

/// Where a snapshot sent by the leader is received.
pub const RECEIVING: &str = "receiving.part";

/// Read the meta at the head of a snapshot file.
pub fn read_meta(path: &Path) -> Result<SnapshotMeta, StoreError> {
    let mut r = BufReader::new(File::open(path).map_err(io)?);
    read_header(&mut r)
}

fn read_header<R: Read>(r: &mut R) -> Result<SnapshotMeta, StoreError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        if magic.starts_with(&MAGIC[..7]) {
            return Err(corrupt(format!(
                "snapshot format {} is unknown to this master (it reads format 1): it needs a newer Flotilla",
                String::from_utf8_lossy(&magic[7..])
            )));
        }
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
    let mut crc = 0;
    for_each_record_crc(src, &mut f, &mut crc)
}

/// [`for_each_record`], also giving the checksum.
fn for_each_record_crc<R: Read>(
    src: R,
    f: &mut impl FnMut(usize, &[u8], &[u8]) -> Result<(), StoreError>,
    crc_out: &mut u32,
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
    *crc_out = expect;
    Ok(meta)
}

/// Walk every record of a snapshot stream, checking its structure and
/// checksum; returns the checksum.
pub fn walk<R: Read>(
    src: R,
    mut f: impl FnMut(usize, &[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<u32, StoreError> {
    let mut crc = 0;
    for_each_record_crc(src, &mut f, &mut crc)?;
    Ok(crc)
}

/// Verify a received snapshot stream and store it as the current snapshot.
pub fn save_received<R: Read>(src: R, dir: &Path) -> Result<PathBuf, StoreError> {
    let dest = dir.join(CURRENT);
    let tmp = dir.join(format!("received{BUILDING}"));
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
    // Current: the state machine is about to become this snapshot.
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
    let mut it = db.raw_iterator_cf_opt(cf, engine::across_keys());
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
    // No read may see the state half replaced: reads wait for the install.
    let _readers = store.block_readers();
    // Nor a backup's view.
    let _views = store.between_applies();
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
