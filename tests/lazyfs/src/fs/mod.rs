//! The filesystem: a mirror of the backing folder in which file data is
//! pending (held in memory, see [`crate::overlay`]) until the file is
//! fsynced, while metadata operations go to the backing folder at once.
//!
//! Everything the daemon knows is one [`State`] behind one lock; [`LazyFs`]
//! (handed to `fuser`) and [`Control`] (kept by the daemon, for signals and
//! shutdown) share it. The `impl State` blocks are split by concern:
//!
//! - `nodes`: the node table: backing objects held by `O_PATH` descriptors,
//!   keyed by `(st_dev, st_ino)`, lookup counts, forgetting;
//! - `attr`: attributes: the backing `stat` with pending size and mtime laid
//!   over, and setattr;
//! - `data`: file data: open file handles, read, write, truncation and
//!   fallocate's zeroing, fsync and the flush at shutdown, and the
//!   power-loss report;
//! - `namespace`: names: create, mknod, mkdir, symlink, unlink, rename,
//!   link, and open directories;
//! - `ops`: the FUSE operations (`impl Filesystem for LazyFs`), which lock
//!   the state, call into the modules above and turn the results into
//!   replies.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fuser::{Errno, INodeNo};

use crate::report::Report;

mod attr;
mod data;
mod namespace;
mod nodes;
mod ops;

use data::OpenFile;
use namespace::OpenDir;
use nodes::Node;

/// How long the kernel may cache entries and attributes by default. Every
/// change goes through this mount, so caching is safe; after a power loss
/// the mount is new and so are its caches.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

const ROOT: u64 = INodeNo::ROOT.0;

/// Everything the daemon knows, behind one lock.
#[derive(Debug)]
pub struct State {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    next_ino: u64,
    files: HashMap<u64, OpenFile>,
    dirs: HashMap<u64, OpenDir>,
    next_fh: u64,
    fsyncs: u64,
    writes: u64,
    euid: u32,
    egid: u32,
}

type Res<T> = Result<T, Errno>;

impl State {
    /// A new file or directory handle number (never reused).
    fn new_fh(&mut self) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        fh
    }
}

/// The filesystem handed to `fuser`.
#[derive(Debug)]
pub struct LazyFs {
    state: Arc<Mutex<State>>,
    /// Entry and attribute timeout given to the kernel.
    ttl: Duration,
    /// See [`LazyFs::with_slow_fsync`].
    slow_fsync: Option<SlowFsync>,
}

/// A disk whose fsyncs take a random time up to a bound.
#[derive(Debug)]
struct SlowFsync {
    max: Duration,
    /// xorshift64 state: which delay comes next.
    rng: AtomicU64,
}

impl SlowFsync {
    fn next_delay(&self) -> Duration {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        let micros = u64::try_from(self.max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(x % micros.saturating_add(1))
    }
}

/// The daemon's handle on the filesystem state, for signals and shutdown.
#[derive(Debug, Clone)]
pub struct Control {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Control {
    /// Flushes every file with pending state; returns (flushed, failed).
    pub fn flush_all(&self) -> (usize, usize) {
        lock(&self.state).flush_all()
    }

    /// The power-loss report.
    pub fn report(&self) -> Report {
        lock(&self.state).report()
    }

    /// The files with unsynced data or size, and their pending bytes.
    pub fn dirty_files(&self) -> Vec<(String, u64)> {
        lock(&self.state).dirty_files()
    }
}

impl LazyFs {
    /// A filesystem mirroring `backing`, and a control handle on it. `ttl`
    /// is how long the kernel may cache entries and attributes.
    pub fn new(backing: &Path, ttl: Duration) -> io::Result<(LazyFs, Control)> {
        let state = Arc::new(Mutex::new(State::new(backing)?));
        Ok((
            LazyFs {
                state: Arc::clone(&state),
                ttl,
                slow_fsync: None,
            },
            Control { state },
        ))
    }

    /// Make every fsync of a file take a random time up to `max` (seeded
    /// by `seed`) before the file's pending data is durable and it returns,
    /// as on a slow disk; other requests are served meanwhile, and a power
    /// cut in that time loses the data. The chaos tests use it to widen the
    /// window in which a Raft leader has replicated entries that it has
    /// not yet fsynced.
    pub fn with_slow_fsync(mut self, max: Duration, seed: u64) -> LazyFs {
        if !max.is_zero() {
            self.slow_fsync = Some(SlowFsync {
                max,
                // xorshift never leaves 0.
                rng: AtomicU64::new(seed | 1),
            });
        }
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}
