//! Raft's log and vote on RocksDB, with group commit.
//!
//! `append` writes the entries (visible to readers at once) and hands the
//! flush callback to a syncer thread; the syncer fsyncs the WAL once for
//! every append queued behind it and only then tells openraft the entries are
//! durable. A vote is written with a synced write before `save_vote` returns.
//! So a follower acknowledges an entry only once it is on disk, and many
//! concurrent writers share one fsync.
//!
//! The leader's own appends are the exception: they are reported flushed as
//! soon as they are written, so that openraft replicates them while the
//! leader fsyncs; [`Durability`] keeps every effect of such an entry (its
//! application, its commit index on the wire) behind the leader's fsync.
//!
//! The log is never purged past what the state machine has applied: openraft
//! 0.9 asks for the purge of everything a received snapshot covers as soon as
//! it hands the snapshot to the state machine, before the install is done. A
//! crash in between would leave a log purged past the state machine, which no
//! restart can replay. [`InstallGate`] holds such a purge until the install
//! has finished.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{WriteBatch, WriteOptions};

use crate::durable::Durability;
use crate::engine::{self, Db, CF_RAFT_LOG, CF_RAFT_META};
use crate::types::{Entry, LogId, NodeId, StorageError, StorageIOError, TypeConfig, Vote};

const META_VOTE: &[u8] = b"vote";
const META_PURGED: &[u8] = b"last_purged";
const META_COMMITTED: &[u8] = b"committed";

/// The vote a master restarts with: the stored one, except that a leader's
/// own committed vote comes back uncommitted.
///
/// openraft 0.9 restarts a master whose committed vote is its own as the
/// leader of that term at once. Here that is unsafe: a leader replicates its
/// entries before its own fsync ([`Durability`]), so a power loss can take
/// from its log entries that a follower already holds under the same term.
/// Leading on in that term, it would write other entries at those indexes
/// with the same log ids, which the follower takes for the ones it has
/// (Raft's log matching rests on a log id naming one entry): the
/// replicas diverge. Uncommitted, the vote still binds this master's own
/// vote in that term, and the master must win an election in a new term,
/// whose entries replace the lost term's at any index they meet. A chaos
/// run (`power-loss`, seeds 306 and 308) showed it: a leader restarted
/// after losing 1-2 KiB of its WAL and its replicas then differed.
pub(crate) fn restarted_vote(stored: Vote, me: NodeId) -> Vote {
    if stored.committed && stored.leader_id.node_id == me {
        Vote::new(stored.leader_id.term, me)
    } else {
        stored
    }
}

/// Bytes written to the log, and a wake-up when a snapshot is due by size:
/// once the log has grown by the threshold since the last snapshot's view
/// was taken. (When each snapshot wrote the whole state to a file, the next
/// one waited for the log to grow by that file's size too; a snapshot is
/// now a pinned view, which writes nothing until a follower needs it, so a
/// large state costs no more to snapshot than a small one.)
#[derive(Debug)]
pub struct LogBytes {
    since_purge: AtomicU64,
    /// All bytes appended since this master started.
    written: AtomicU64,
    /// The value of `written` at which a snapshot is due.
    due: AtomicU64,
    threshold: u64,
    crossed: tokio::sync::Notify,
}

impl LogBytes {
    fn new(threshold: u64) -> Self {
        LogBytes {
            since_purge: AtomicU64::new(0),
            written: AtomicU64::new(0),
            due: AtomicU64::new(threshold),
            threshold,
            crossed: tokio::sync::Notify::new(),
        }
    }

    fn added(&self, n: u64) {
        self.since_purge.fetch_add(n, Ordering::Relaxed);
        let now = self.written.fetch_add(n, Ordering::Relaxed) + n;
        if self.threshold == 0 {
            return;
        }
        let due = self.due.load(Ordering::Relaxed);
        // Ask again one threshold later if no snapshot reports back (a
        // build refused while another runs, or one that failed).
        if now >= due
            && self
                .due
                .compare_exchange(
                    due,
                    now + self.threshold,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.crossed.notify_one();
        }
    }

    /// Bytes written since the last purge.
    pub fn since_purge(&self) -> u64 {
        self.since_purge.load(Ordering::Relaxed)
    }

    /// All bytes written since this master started: a snapshot's mark of
    /// where its view was taken (see [`LogBytes::snapshot_taken`]).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// A snapshot's view was taken when [`LogBytes::written`] was `mark`:
    /// the next one is due once the log has grown by the threshold.
    pub fn snapshot_taken(&self, mark: u64) {
        if self.threshold > 0 {
            self.due
                .store(mark.saturating_add(self.threshold), Ordering::Relaxed);
        }
    }

    /// Resolves when a snapshot is due by size.
    pub async fn crossed(&self) {
        self.crossed.notified().await
    }
}

/// What the syncer thread is asked to fsync for.
enum Flush {
    /// A follower's append (or an append before this master leads):
    /// openraft learns of it once the fsync is done.
    Report(LogFlushed<TypeConfig>),
    /// The leader's own append, already reported: only [`Durability`] waits.
    Leader,
}

#[derive(Clone)]
pub struct LogStore {
    db: Db,
    /// This master's id: an append of entries this master made as the
    /// leader of its current (committed) vote is the leader's own.
    id: NodeId,
    /// The last vote saved (or read at start).
    vote: Arc<std::sync::Mutex<Option<Vote>>>,
    durable: Arc<Durability>,
    bytes: Arc<LogBytes>,
    syncer: mpsc::Sender<Flush>,
    /// WAL fsyncs completed, counted always; read by the tests ([`LogStore::fsyncs`]).
    #[cfg_attr(not(test), allow(dead_code))]
    synced: Arc<AtomicU64>,
    install: Arc<InstallGate>,
    /// Whether appends and votes are fsynced (always, but for
    /// `--unsafe-no-fsync`).
    fsync: bool,
}

/// Whether a received snapshot waits to be installed, shared by the state
/// machine (which receives and installs it) and the log (whose purge of what
/// the snapshot covers must wait for the install).
#[derive(Debug)]
pub struct InstallGate {
    pending: tokio::sync::watch::Sender<bool>,
    waiting: AtomicU64,
}

impl Default for InstallGate {
    fn default() -> Self {
        InstallGate {
            pending: tokio::sync::watch::channel(false).0,
            waiting: AtomicU64::new(0),
        }
    }
}

impl InstallGate {
    /// A snapshot is being received (and will be installed).
    pub fn receiving(&self) {
        self.pending.send_replace(true);
    }

    /// The received snapshot is installed (or its install failed).
    pub fn installed(&self) {
        self.pending.send_replace(false);
    }

    /// How many purges wait for an install now.
    #[cfg(test)]
    pub fn waiting_purges(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Wait until no received snapshot waits to be installed. Returns
    /// whether one did.
    async fn wait_installed(&self) -> bool {
        let mut rx = self.pending.subscribe();
        if !*rx.borrow() {
            return false;
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Err: the sender is gone, which cannot happen while `self` lives.
        let _ = rx.wait_for(|pending| !*pending).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        true
    }
}

/// Most log entries read on the caller's task rather than the blocking pool.
const INLINE_READ: u64 = 4;
/// Most bytes appended on the caller's task rather than the blocking pool.
const INLINE_WRITE_BYTES: u64 = 256 << 10;

fn idx_key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageIOError::write(&e).into())
}

impl LogStore {
    #[cfg(test)]
    pub fn new(db: Db, install: Arc<InstallGate>) -> Self {
        Self::with_fsync_histogram(db, 1, install, None, true)
            .unwrap_or_else(|e| panic!("opening the log: {e}"))
    }

    /// The log in `db`, timing every WAL fsync into `fsync` when given
    /// (`etcd_disk_wal_fsync_duration_seconds`). `sync` false: appends are
    /// written to the OS but not fsynced, and the vote is not a synced write
    /// (`--unsafe-no-fsync`, for tests only). The WAL is fsynced once
    /// here, so that what the log holds at start counts as durable.
    pub fn with_fsync_histogram(
        db: Db,
        id: NodeId,
        install: Arc<InstallGate>,
        fsync: Option<flotilla_telemetry::prometheus::Histogram>,
        sync: bool,
    ) -> Result<Self, StorageError> {
        db.flush_wal(sync)
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let durable = Arc::new(Durability::new(last_log_id(&db)?));
        let (tx, rx) = mpsc::channel::<Flush>();
        let sdb = Arc::downgrade(&db);
        let synced = Arc::new(AtomicU64::new(0));
        let s2 = synced.clone();
        let d2 = durable.clone();
        std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(sdb, rx, s2, d2, fsync, sync))
            .map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(LogStore {
            db,
            id,
            vote: Arc::default(),
            durable,
            bytes: Arc::new(LogBytes::new(0)),
            syncer: tx,
            synced,
            install,
            fsync: sync,
        })
    }

    /// Count the bytes appended, and wake the returned counter's waiter
    /// each time a snapshot is due by size (see [`LogBytes`]; a
    /// `threshold` of 0: never).
    pub fn snapshot_by_bytes(&mut self, threshold: u64) -> Arc<LogBytes> {
        self.bytes = Arc::new(LogBytes::new(threshold));
        self.bytes.clone()
    }

    /// How far the log is on disk (shared with the state machine and the transport).
    pub fn durability(&self) -> Arc<Durability> {
        self.durable.clone()
    }

    /// Whether `entries` are this master's own, appended as the leader of
    /// its current vote: the leader's entries carry its vote's leader id,
    /// and no follower receives entries of the term its own leader id has.
    pub(crate) fn leaders_own(&self, entries: &[Entry]) -> bool {
        let vote = self.vote.lock().unwrap_or_else(|p| p.into_inner());
        let Some(vote) = vote.as_ref() else {
            return false;
        };
        vote.committed
            && vote.leader_id.node_id == self.id
            && entries.iter().all(|e| e.log_id.leader_id == vote.leader_id)
    }

    /// How many WAL fsyncs have completed: every acknowledged append waited for one.
    #[cfg(test)]
    pub fn fsyncs(&self) -> u64 {
        self.synced.load(Ordering::SeqCst)
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        db: &Db,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let v = db
            .get_cf(engine::cf(db, CF_RAFT_META), key)
            .map_err(|e| StorageIOError::read(&e))?;
        match v {
            Some(v) => Ok(Some(
                bincode::deserialize(&v).map_err(|e| StorageIOError::read(&e))?,
            )),
            None => Ok(None),
        }
    }
}

/// The id of the last entry in the log (written, maybe not yet synced),
/// or of the last purged one when the log is empty.
pub fn last_log_id(db: &Db) -> Result<Option<LogId>, StorageError> {
    let mut it = db.raw_iterator_cf(engine::cf(db, CF_RAFT_LOG));
    it.seek_to_last();
    let last = match it.value() {
        Some(v) => {
            let e: Entry = bincode::deserialize(v).map_err(|e| StorageIOError::read_logs(&e))?;
            Some(e.log_id)
        }
        None => LogStore::get_meta(db, META_PURGED)?.flatten(),
    };
    it.status().map_err(|e| StorageIOError::read_logs(&e))?;
    Ok(last)
}

/// Wait for flush requests; fsync the WAL once for all that are queued;
/// publish how far the log is durable; answer them.
fn sync_loop(
    db: std::sync::Weak<rocksdb::DB>,
    rx: mpsc::Receiver<Flush>,
    synced: Arc<AtomicU64>,
    durable: Arc<Durability>,
    fsync: Option<flotilla_telemetry::prometheus::Histogram>,
    sync: bool,
) {
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        while let Ok(more) = rx.try_recv() {
            pending.push(more);
        }
        let res = loop {
            // Everything written before this mark is covered by the fsync.
            let mark = durable.mark();
            // The sync thread must not keep the database open after the store is dropped.
            let started = std::time::Instant::now();
            let res = match db.upgrade() {
                Some(db) => db.flush_wal(sync).map_err(|e| e.to_string()),
                None => Err("database closed".to_string()),
            };
            match &res {
                Ok(()) => {
                    if let Some(h) = &fsync {
                        h.observe(started.elapsed().as_secs_f64());
                    }
                    synced.fetch_add(1, Ordering::SeqCst);
                    // A truncation meanwhile: fsync again from a fresh mark.
                    if !durable.synced(mark) {
                        continue;
                    }
                }
                Err(e) => durable.failed(format!("fsync of the Raft log failed: {e}")),
            }
            break res;
        };
        for f in pending {
            if let Flush::Report(cb) = f {
                cb.log_io_completed(res.clone().map_err(std::io::Error::other));
            }
        }
    }
}

fn read_range(db: &Db, start: u64, end: Option<u64>) -> Result<Vec<Entry>, StorageError> {
    let cf = engine::cf(db, CF_RAFT_LOG);
    let mut it = db.raw_iterator_cf(cf);
    it.seek(idx_key(start));
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        let idx = u64::from_be_bytes(k.try_into().map_err(|e| StorageIOError::read_logs(&e))?);
        if end.is_some_and(|e| idx >= e) {
            break;
        }
        out.push(bincode::deserialize(v).map_err(|e| StorageIOError::read_logs(&e))?);
        it.next();
    }
    it.status().map_err(|e| StorageIOError::read_logs(&e))?;
    Ok(out)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => Some(x + 1),
            Bound::Excluded(x) => Some(*x),
            Bound::Unbounded => None,
        };
        // A few entries inline: those replication and apply ask for in
        // steady state were just written and are in the memtable, and a hop
        // to another thread and back cost more than the read. A long range
        // (a follower catching up, the apply of a restart) goes to the
        // blocking pool: it may be megabytes to read and decode.
        if end.is_some_and(|e| e.saturating_sub(start) <= INLINE_READ) {
            return read_range(&self.db, start, end);
        }
        let db = self.db.clone();
        blocking(move || read_range(&db, start, end)).await?
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged: Option<LogId> = Self::get_meta(&db, META_PURGED)?.flatten();
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last_log_id(&db)?,
            })
        })
        .await?
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let db = self.db.clone();
        let v = bincode::serialize(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        let sync = self.fsync;
        blocking(move || {
            let mut wo = WriteOptions::default();
            wo.set_sync(sync);
            db.put_cf_opt(engine::cf(&db, CF_RAFT_META), META_VOTE, v, &wo)
                .map_err(|e| StorageError::from(StorageIOError::write_vote(&e)))
        })
        .await??;
        *self.vote.lock().unwrap_or_else(|p| p.into_inner()) = Some(*vote);
        Ok(())
    }

    /// The vote as stored, but that a master that led when it stopped
    /// restarts as a candidate of its term (see [`restarted_vote`]).
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let db = self.db.clone();
        let stored: Option<Vote> = blocking(move || Self::get_meta(&db, META_VOTE)).await??;
        let vote = stored.map(|v| restarted_vote(v, self.id));
        if let Some(s) = stored.filter(|s| Some(*s) != vote) {
            tracing::info!(
                stored = %s,
                "this master led when it stopped: it stands for election in a new term rather than lead on in its old one, whose last entries it may have lost"
            );
        }
        *self.vote.lock().unwrap_or_else(|p| p.into_inner()) = vote;
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let v = bincode::serialize(&committed).map_err(|e| StorageIOError::write(&e))?;
        // Inline: an unsynced put, done on every commit by RaftCore.
        let db = &self.db;
        db.put_cf(engine::cf(db, CF_RAFT_META), META_COMMITTED, v)
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let db = self.db.clone();
        blocking(move || Ok(Self::get_meta::<Option<LogId>>(&db, META_COMMITTED)?.flatten()))
            .await?
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let own = self.leaders_own(&entries);
        let mut batch = WriteBatch::default();
        let cf = engine::cf(&self.db, CF_RAFT_LOG);
        let mut bytes = 0;
        for e in &entries {
            let v = bincode::serialize(e)
                .map_err(|err| StorageIOError::write_log_entry(e.log_id, &err))?;
            bytes += v.len() as u64;
            batch.put_cf(cf, idx_key(e.log_id.index), v);
        }
        // An unsynced write (the syncer fsyncs): inline, cheaper than a hop
        // to the blocking pool and back on every append, unless it is large
        // (a follower catching up is sent many batches at once).
        if bytes <= INLINE_WRITE_BYTES {
            self.db
                .write(batch)
                .map_err(|e| StorageIOError::write_logs(&e))?;
        } else {
            let db = self.db.clone();
            blocking(move || db.write(batch).map_err(|e| StorageIOError::write_logs(&e))).await??;
        }
        self.durable.wrote(last);
        self.bytes.added(bytes);
        // Durable once the syncer's next fsync returns. The leader's own
        // entries are reported at once: openraft replicates them while the
        // syncer fsyncs, and `Durability` holds back their effects.
        let flush = if own {
            callback.log_io_completed(Ok(()));
            Flush::Leader
        } else {
            Flush::Report(callback)
        };
        if let Err(mpsc::SendError(f)) = self.syncer.send(flush) {
            let stopped = "log sync thread stopped";
            self.durable.failed(stopped.into());
            if let Flush::Report(cb) = f {
                cb.log_io_completed(Err(std::io::Error::other(stopped)));
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        let last = blocking(move || {
            db.delete_range_cf(
                engine::cf(&db, CF_RAFT_LOG),
                idx_key(log_id.index),
                idx_key(u64::MAX),
            )
            .map_err(|e| StorageIOError::write_logs(&e))?;
            // The last index itself is not covered by the half-open range.
            db.delete_cf(engine::cf(&db, CF_RAFT_LOG), idx_key(u64::MAX))
                .map_err(|e| StorageIOError::write_logs(&e))?;
            last_log_id(&db)
        })
        .await??;
        self.durable.truncated(last);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        let applied = || {
            let db = db.clone();
            async move {
                blocking(move || crate::mvcc::applied_log_id(&db))
                    .await?
                    .map_err(|e| StorageError::from(StorageIOError::read_state_machine(&e)))
            }
        };
        // What a received snapshot covers: wait for its install (openraft
        // sends nothing else to the log meanwhile, so no entry beyond the
        // snapshot is acknowledged before the snapshot is durable).
        if applied().await? < Some(log_id)
            && self.install.wait_installed().await
            && applied().await? < Some(log_id)
        {
            // The install failed (which stops Raft): keep the log.
            return Err(StorageIOError::write_logs(&std::io::Error::other(
                "not purging the log past what the state machine has applied",
            ))
            .into());
        }
        let v = bincode::serialize(&Some(log_id)).map_err(|e| StorageIOError::write(&e))?;
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.put_cf(engine::cf(&db, CF_RAFT_META), META_PURGED, v);
            batch.delete_range_cf(
                engine::cf(&db, CF_RAFT_LOG),
                idx_key(0),
                idx_key(log_id.index + 1),
            );
            db.write(batch)
                .map_err(|e| StorageError::from(StorageIOError::write_logs(&e)))
        })
        .await??;
        self.bytes.since_purge.store(0, Ordering::Relaxed);
        Ok(())
    }
}
