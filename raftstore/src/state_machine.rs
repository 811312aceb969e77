//! openraft's state machine over [`KvStore`], with snapshots that are
//! pinned views of it (see [`crate::snapshot_data`]), or the files received
//! from a leader.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::storage::RaftStateMachine;
use openraft::{OptionalSend, RaftSnapshotBuilder};

use crate::durable::Durability;
use crate::lease::Lessor;
use crate::log_store::{InstallGate, LogBytes};
use crate::mvcc::{Effects, InHistory, KvStore, StoreError};
use crate::snapshot;
use crate::snapshot_data::{PinnedView, SnapshotData};
use crate::types::{
    CommandResult, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, TypeConfig,
};
use crate::watch::{Published, WatchHub};

/// What the rest of the master learns from applied entries.
#[derive(Clone)]
pub struct Listeners {
    pub hub: Arc<WatchHub>,
    pub lessor: Arc<Lessor>,
    /// Compaction requests for the physical compactor thread.
    pub compactor: std::sync::mpsc::Sender<i64>,
    /// While true, no entry is applied (see [`crate::Master::hold_applies`]).
    pub applies_held: tokio::sync::watch::Receiver<bool>,
}

pub struct StateMachine {
    store: Arc<KvStore>,
    snap_dir: PathBuf,
    listeners: Listeners,
    install: Arc<InstallGate>,
    /// How far this master's log is fsynced: nothing past it is applied
    /// (see [`crate::durable`]). `None` only where entries are applied
    /// without a log (openraft's storage test suite).
    durable: Option<Arc<Durability>>,
    /// The log's size counter, told of each snapshot taken (see
    /// [`LogBytes`]). `None` where nothing takes snapshots by size.
    log_bytes: Option<Arc<LogBytes>>,
    /// The latest snapshot: what `get_current_snapshot` answers.
    current: Option<Current>,
}

/// The latest snapshot of a state machine.
enum Current {
    /// The snapshot received from a leader and installed last, kept in the
    /// file it was received in (until a snapshot is taken here).
    Received(SnapshotMeta),
    /// A view pinned here.
    Pinned(PinnedView),
}

/// Most commands applied on the state machine's task rather than the
/// blocking pool.
const INLINE_APPLY: usize = 4;

/// An apply slower than this is logged, with its parts (etcd warns of an
/// "apply request took too long" at 100 ms).
const SLOW_APPLY: Duration = Duration::from_millis(100);

/// How many client commands `entries` carry.
fn commands(entries: &[Entry]) -> usize {
    entries
        .iter()
        .map(|e| match &e.payload {
            openraft::EntryPayload::Normal(c) => c.count(),
            _ => 1,
        })
        .sum()
}

/// Whether any of `entries` may visit keys without bound.
fn unbounded(entries: &[Entry]) -> bool {
    entries.iter().any(|e| match &e.payload {
        openraft::EntryPayload::Normal(c) => c.unbounded(),
        _ => false,
    })
}

fn sm_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachine {
    pub fn new(
        store: Arc<KvStore>,
        snap_dir: PathBuf,
        listeners: Listeners,
        install: Arc<InstallGate>,
        durable: Option<Arc<Durability>>,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&snap_dir)
            .map_err(|e| StoreError::Corrupt(format!("snapshot dir: {e}")))?;
        snapshot::remove_leftovers(&snap_dir)?;
        // Finish an install that a crash interrupted.
        if snapshot::install_interrupted(store.db())? {
            let path = snap_dir.join(snapshot::CURRENT);
            tracing::warn!(path = %path.display(), "resuming an interrupted snapshot install");
            snapshot::install(&store, &path)?;
        }
        // The snapshot installed last, unless one was taken here since (a
        // view does not outlive its master: openraft takes one at start if
        // the log was purged).
        let path = snap_dir.join(snapshot::CURRENT);
        let current = match path.exists().then(|| snapshot::read_meta(&path)) {
            None => None,
            Some(Ok(meta)) => Some(Current::Received(meta)),
            Some(Err(e)) => {
                // Only a copy of a state the database holds.
                tracing::warn!(path = %path.display(), error = %e, "removing an unreadable snapshot");
                std::fs::remove_file(&path)
                    .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
                None
            }
        };
        Ok(StateMachine {
            store,
            snap_dir,
            listeners,
            install,
            durable,
            log_bytes: None,
            current,
        })
    }

    /// Tell `log_bytes` of every snapshot taken, so that the next one by
    /// size is due when the log has grown by the threshold since.
    pub fn report_snapshots_to(&mut self, log_bytes: Arc<LogBytes>) {
        self.log_bytes = Some(log_bytes);
    }

    /// Everything but the events, which [`Self::apply`] publishes for the
    /// whole apply at once.
    fn notify(&self, fx: Effects) {
        for (id, ttl) in fx.leases_granted {
            self.listeners.lessor.granted(id, ttl);
        }
        for id in fx.leases_revoked {
            self.listeners.lessor.revoked(id);
        }
        if let Some(rev) = fx.compacted_to {
            let _ = self.listeners.compactor.send(rev);
        }
    }
}

/// A snapshot taken: its view was pinned between two applies (see
/// [`RaftStateMachine::get_snapshot_builder`]), so building it is done.
pub struct SnapshotBuilder {
    taken: Result<PinnedView, String>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        match &self.taken {
            Ok(view) => Ok(Snapshot {
                meta: view.meta().clone(),
                snapshot: Box::new(SnapshotData::pinned(view.clone())),
            }),
            Err(e) => {
                Err(StorageIOError::write_snapshot(None, &std::io::Error::other(e.clone())).into())
            }
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.applied_state())
            .await
            .map_err(|e| StorageIOError::read_state_machine(&e))?
            .map_err(|e| StorageIOError::read_state_machine(&e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // A test's fault: applies wait while it holds them.
        if *self.listeners.applies_held.borrow() {
            let _ = self.listeners.applies_held.wait_for(|held| !*held).await;
        }
        // The leader reports its own appends before its fsync: wait for it.
        if let (Some(d), Some(last)) = (&self.durable, entries.last()) {
            d.wait_synced(last.log_id)
                .await
                .map_err(|e| StorageIOError::apply(last.log_id, &std::io::Error::other(e)))?;
        }
        let started = Instant::now();
        let first_index = entries.first().map(|e| e.log_id.index);
        let last_index = entries.last().map(|e| e.log_id.index);
        let n_commands = commands(&entries);
        let store = self.store.clone();
        let inline = n_commands <= INLINE_APPLY && !unbounded(&entries);
        let apply = move || -> Result<Vec<(CommandResult, Vec<Effects>)>, StoreError> {
            entries.iter().map(|e| store.apply(e)).collect()
        };
        // A few commands apply in tens of microseconds, less than a hop to
        // the blocking pool and back; larger batches go there, and so does
        // a command that may visit any number of keys (a range delete of
        // a hundred thousand keys held a Tokio worker for seconds, and the
        // master's appends and heartbeats behind it timed out).
        let applied = if inline {
            apply().map_err(sm_err)?
        } else {
            tokio::task::spawn_blocking(apply)
                .await
                .map_err(sm_err)?
                .map_err(sm_err)?
        };
        let written = started.elapsed();
        let mut results = Vec::with_capacity(applied.len());
        let mut events = 0;
        let mut revisions = Vec::new();
        for (r, fxs) in applied {
            for mut fx in fxs {
                let published = match fx.in_history.take() {
                    // The command's other events, if any, go by history too.
                    Some(mut h) => {
                        for e in fx.events.drain(..) {
                            h.merge(InHistory {
                                count: 1,
                                first: e.kv.key.clone(),
                                last: e.kv.key,
                            });
                        }
                        events += h.count;
                        Published::InHistory {
                            first: h.first,
                            last: h.last,
                        }
                    }
                    None => {
                        events += fx.events.len();
                        Published::Events(std::mem::take(&mut fx.events))
                    }
                };
                revisions.push((fx.revision, published));
                self.notify(fx);
            }
            results.push(r);
        }
        self.listeners.hub.publish(revisions);
        let took = started.elapsed();
        if took > SLOW_APPLY {
            tracing::warn!(
                first_index,
                last_index,
                commands = n_commands,
                events,
                applied_ms = written.as_millis() as u64,
                total_ms = took.as_millis() as u64,
                "apply took too long"
            );
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let id = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            .to_string();
        let db = self.store.db().clone();
        let dir = self.snap_dir.clone();
        // Marked with the view: the log written after the mark is what the
        // next snapshot will replace.
        let mark = self.log_bytes.as_ref().map(|b| b.written());
        // The view is taken here, between two applies: a RocksDB snapshot,
        // nothing read or written until a follower asks for it.
        let taken = match tokio::task::spawn_blocking(move || PinnedView::take(db, dir, id)).await {
            Ok(Ok(view)) => Ok(view),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("taking a snapshot view: {e}")),
        };
        match &taken {
            Ok(view) => {
                tracing::info!(last_log_id = ?view.meta().last_log_id, "snapshot taken");
                if let (Some(b), Some(mark)) = (&self.log_bytes, mark) {
                    b.snapshot_taken(mark);
                }
                // A received file this view supersedes is no longer needed
                // (an install interrupted by a crash is redone from it, but
                // this install is done).
                if matches!(self.current, Some(Current::Received(_))) {
                    let path = self.snap_dir.join(snapshot::CURRENT);
                    if let Err(e) = tokio::fs::remove_file(&path).await {
                        tracing::warn!(path = %path.display(), error = %e, "removing a superseded snapshot");
                    }
                }
                self.current = Some(Current::Pinned(view.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "taking a snapshot failed"),
        }
        SnapshotBuilder { taken }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        // From now on the log keeps what this snapshot will cover until it
        // is installed (see `InstallGate`).
        self.install.receiving();
        let path = self.snap_dir.join(snapshot::RECEIVING);
        let f = tokio::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(SnapshotData::file(f)))
    }

    #[tracing::instrument(level = "info", skip(self, snapshot))]
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let r = self.install_received(meta, snapshot).await;
        // Installed (durably: the install syncs), or failed, which stops Raft.
        self.install.installed();
        r
    }
    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        match &self.current {
            None => Ok(None),
            Some(Current::Pinned(view)) => Ok(Some(Snapshot {
                meta: view.meta().clone(),
                snapshot: Box::new(SnapshotData::pinned(view.clone())),
            })),
            Some(Current::Received(meta)) => {
                let path = self.snap_dir.join(snapshot::CURRENT);
                let file = tokio::fs::File::open(&path)
                    .await
                    .map_err(|e| StorageIOError::read_snapshot(None, &e))?;
                Ok(Some(Snapshot {
                    meta: meta.clone(),
                    snapshot: Box::new(SnapshotData::file(file)),
                }))
            }
        }
    }
}

impl StateMachine {
    async fn install_received(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let werr = |e: std::io::Error| StorageError::from(StorageIOError::write_snapshot(None, &e));
        let mut f = match snapshot.into_file() {
            Ok(f) => f,
            // A snapshot taken on a state machine (openraft's storage tests
            // install one directly): received first, as a leader's is.
            Err(mut data) => {
                let mut f = self.begin_receiving_snapshot().await?;
                tokio::io::copy(&mut data, &mut *f).await.map_err(werr)?;
                f.into_file()
                    .map_err(|_| werr(std::io::Error::other("not a file")))?
            }
        };
        f.flush().await.map_err(werr)?;
        f.seek(std::io::SeekFrom::Start(0)).await.map_err(werr)?;
        let std_file = f.into_std().await;
        let dir = self.snap_dir.clone();
        let store = self.store.clone();
        let installed = tokio::task::spawn_blocking(move || -> Result<SnapshotMeta, StoreError> {
            let path = snapshot::save_received(std_file, &dir)?;
            let _ = std::fs::remove_file(dir.join(snapshot::RECEIVING));
            snapshot::install(&store, &path)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        if installed.last_log_id != meta.last_log_id {
            return Err(StorageIOError::write_snapshot(
                None,
                &std::io::Error::other("snapshot meta does not match its data"),
            )
            .into());
        }
        self.current = Some(Current::Received(installed));
        let leases = self.store.leases().map_err(sm_err)?;
        self.listeners.lessor.reset(&leases);
        self.listeners.hub.reset();
        tracing::info!(last_log_id = ?meta.last_log_id, revision = self.store.revision(), "snapshot installed");
        Ok(())
    }
}
