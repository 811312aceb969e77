//! What openraft streams as a snapshot: a snapshot file (received from a
//! leader, or installed), or a view of this master's state pinned where
//! the snapshot was taken and written to a file only when a follower
//! first reads it.
//!
//! A snapshot is taken every few thousand entries, so that the log behind
//! it can be purged; a follower needs one only when it fell behind that
//! purge, or joins. Writing the whole state to a file at every snapshot
//! (as this store did) cost every master a dump of all of it, a cost that
//! grows with the state, for files that were almost never sent. A pinned
//! view costs a RocksDB snapshot (a sequence number that compaction keeps
//! the versions of): nothing is read or written until a follower asks.
//! What a view keeps alive is what the writes after it superseded, until
//! the next snapshot replaces it.
//!
//! A RocksDB snapshot borrows its database, so each view lives on a thread
//! of its own, which takes it, answers requests for its file, and lets it
//! go (removing the file) when the last handle to it is dropped.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::engine::Db;
use crate::mvcc::StoreError;
use crate::snapshot;
use crate::types::SnapshotMeta;

/// The suffix of a view's file: removed at start if a crash left one.
const DUMP: &str = ".dump";

type Reply = tokio::sync::oneshot::Sender<Result<PathBuf, String>>;

/// A view of the state machine pinned between two applies, with the meta
/// of the snapshot it is. Clones share the view and its file.
#[derive(Clone)]
pub struct PinnedView(Arc<Pinned>);

struct Pinned {
    meta: SnapshotMeta,
    /// Asks the view's thread for its file (written on the first ask).
    requests: Option<mpsc::Sender<Reply>>,
    /// Set when the last handle goes: a write under way stops.
    abandoned: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The last handle lets the view go before it returns, so that a master
/// that stops closes its database at once (the thread holds it).
impl Drop for Pinned {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for PinnedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinnedView")
            .field("last_log_id", &self.0.meta.last_log_id)
            .finish()
    }
}

impl PinnedView {
    /// Pin the state of `db` as it is now. The caller makes sure no apply
    /// runs meanwhile (the state machine's task calls it between two
    /// applies). Blocks until the view is taken; a file for it would be
    /// written in `dir`.
    pub fn take(db: Db, dir: PathBuf, snapshot_id: String) -> Result<PinnedView, StoreError> {
        let (meta_tx, meta_rx) = mpsc::channel();
        let (requests, asked) = mpsc::channel::<Reply>();
        let abandoned = Arc::new(AtomicBool::new(false));
        let stop = abandoned.clone();
        let thread = std::thread::Builder::new()
            .name("snapshot-view".into())
            .spawn(move || {
                let view = db.snapshot();
                let meta = match snapshot::view_meta(&db, &view, snapshot_id) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = meta_tx.send(Err(e));
                        return;
                    }
                };
                let path = dir.join(format!("view-{}{DUMP}", meta.snapshot_id));
                let _ = meta_tx.send(Ok(meta.clone()));
                drop(meta_tx);
                let mut written = false;
                // Until every handle is dropped.
                while let Ok(reply) = asked.recv() {
                    if !written {
                        let started = std::time::Instant::now();
                        let keep_going = || !stop.load(Ordering::Relaxed);
                        match snapshot::write_file(&db, &view, &path, meta.snapshot_id.clone(), &keep_going) {
                            Ok(_) => {
                                written = true;
                                tracing::info!(
                                    last_log_id = ?meta.last_log_id,
                                    ms = started.elapsed().as_millis() as u64,
                                    "snapshot written for a follower"
                                );
                            }
                            Err(e) => {
                                tracing::warn!(last_log_id = ?meta.last_log_id, error = %e, "writing a snapshot failed");
                                let _ = std::fs::remove_file(&path);
                                let _ = reply.send(Err(e.to_string()));
                                continue;
                            }
                        }
                    }
                    let _ = reply.send(Ok(path.clone()));
                }
                drop(view);
                // Readers that opened it keep reading what they opened.
                if written {
                    let _ = std::fs::remove_file(&path);
                }
            })
            .map_err(|e| StoreError::Corrupt(format!("starting a snapshot view: {e}")))?;
        let meta = meta_rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Corrupt(
                "the snapshot view's thread ended".into(),
            ))
        });
        match meta {
            Ok(meta) => Ok(PinnedView(Arc::new(Pinned {
                meta,
                requests: Some(requests),
                abandoned,
                thread: Some(thread),
            }))),
            Err(e) => {
                drop(requests);
                let _ = thread.join();
                Err(e)
            }
        }
    }

    pub fn meta(&self) -> &SnapshotMeta {
        &self.0.meta
    }

    /// The view's file, written on the first call, open for reading.
    async fn open(self) -> io::Result<tokio::fs::File> {
        let ended = || io::Error::other("the snapshot view's thread ended");
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0
            .requests
            .as_ref()
            .ok_or_else(ended)?
            .send(tx)
            .map_err(|_| ended())?;
        let path = rx.await.map_err(|_| ended())?.map_err(io::Error::other)?;
        tokio::fs::File::open(&path).await
    }
}

/// The task that asks a view's thread for its file and opens it. A reader
/// that goes before the file is open stops it (and the write stops if
/// nothing else holds the view).
struct Opening(tokio::task::JoinHandle<io::Result<tokio::fs::File>>);

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum State {
    Open(tokio::fs::File),
    Pinned {
        view: PinnedView,
        /// The task that asks for the file and opens it.
        opening: Option<Opening>,
        /// A seek asked for before the file was open.
        seek: Option<io::SeekFrom>,
    },
}

/// openraft's snapshot data: a file, or a pinned view that becomes one on
/// its first read or seek. Only a file can be written (a snapshot being
/// received).
pub struct SnapshotData {
    state: State,
}

impl SnapshotData {
    pub fn file(f: tokio::fs::File) -> Self {
        SnapshotData {
            state: State::Open(f),
        }
    }

    pub fn pinned(view: PinnedView) -> Self {
        SnapshotData {
            state: State::Pinned {
                view,
                opening: None,
                seek: None,
            },
        }
    }

    /// The file, if this is one already (a snapshot received).
    pub fn into_file(self) -> Result<tokio::fs::File, Self> {
        match self.state {
            State::Open(f) => Ok(f),
            state => Err(SnapshotData { state }),
        }
    }

    /// The file, once open, with the seek asked for before it was.
    fn poll_file(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut tokio::fs::File>> {
        if let State::Pinned {
            view,
            opening,
            seek,
        } = &mut self.state
        {
            let task = opening.get_or_insert_with(|| Opening(tokio::spawn(view.clone().open())));
            let mut file = ready!(Pin::new(&mut task.0).poll(cx)).map_err(io::Error::other)??;
            let pending = seek.take();
            if let Some(pos) = pending {
                Pin::new(&mut file).start_seek(pos)?;
            }
            self.state = State::Open(file);
        }
        match &mut self.state {
            State::Open(f) => Poll::Ready(Ok(f)),
            State::Pinned { .. } => Poll::Ready(Err(io::Error::other("snapshot file not open"))),
        }
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let f = ready!(self.get_mut().poll_file(cx))?;
        Pin::new(f).poll_read(cx, buf)
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: io::SeekFrom) -> io::Result<()> {
        match &mut self.get_mut().state {
            State::Open(f) => Pin::new(f).start_seek(position),
            State::Pinned { seek, .. } => {
                *seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let f = ready!(self.get_mut().poll_file(cx))?;
        Pin::new(f).poll_complete(cx)
    }
}

fn read_only() -> io::Error {
    io::Error::other("a snapshot taken on this master is read-only")
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().state {
            State::Open(f) => Pin::new(f).poll_write(cx, buf),
            State::Pinned { .. } => Poll::Ready(Err(read_only())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Open(f) => Pin::new(f).poll_flush(cx),
            State::Pinned { .. } => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Open(f) => Pin::new(f).poll_shutdown(cx),
            State::Pinned { .. } => Poll::Ready(Ok(())),
        }
    }
}

/// Whether `name` is a view's file (left by a crash if found at start).
pub fn is_dump(name: &str) -> bool {
    name.ends_with(DUMP)
}
