//! The node table: every backing object the kernel knows.
//!
//! Inodes: every backing object the kernel knows is held by an `O_PATH`
//! descriptor and keyed by the backing `(st_dev, st_ino)`. So a rename keeps
//! the pending data with the file, both names of a hard link share one inode
//! (and its pending data), and an unlinked file that is still open stays
//! readable. Node ids are handed out sequentially and never reused.
//!
//! Forgetting: a node lives while the kernel holds lookups on it, while it is
//! open, or while it has pending data. Pending data is dropped when the last
//! name of the file is gone and no handle is open on it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType};
use tracing::debug;

use super::attr::kind_from_mode;
use super::{Res, State, ROOT};
use crate::overlay::Overlay;
use crate::sys;

/// One backing object the kernel knows.
#[derive(Debug)]
pub(super) struct Node {
    /// Backing `(st_dev, st_ino)`.
    pub(super) key: (u64, u64),
    pub(super) kind: FileType,
    /// `O_PATH` descriptor of the backing object: pins it (and its inode
    /// number) while the node lives.
    pub(super) path: OwnedFd,
    /// Lookups the kernel holds (decremented by forget).
    pub(super) nlookup: u64,
    /// Open file handles.
    pub(super) open: u32,
    /// A read-write (or, failing that, read-only) descriptor of a regular
    /// file, while it is open or has pending data.
    pub(super) data: Option<File>,
    pub(super) data_writable: bool,
    /// Pending data and size; `None` when the backing file is all there is.
    pub(super) overlay: Option<Overlay>,
    /// Time of the last pending change, reported as mtime/ctime until the
    /// file is fsynced.
    pub(super) mtime: Option<SystemTime>,
}

impl Node {
    /// A node with one lookup, nothing open and nothing pending.
    fn new(key: (u64, u64), kind: FileType, path: OwnedFd) -> Node {
        Node {
            key,
            kind,
            path,
            nlookup: 1,
            open: 0,
            data: None,
            data_writable: false,
            overlay: None,
            mtime: None,
        }
    }
}

impl State {
    pub(super) fn new(backing: &Path) -> io::Result<State> {
        let root_path = sys::cstring(backing.as_os_str())?;
        let root = sys::open(&root_path, libc::O_PATH | libc::O_DIRECTORY)?;
        let st = sys::fstat(root.as_fd())?;
        let key = (st.st_dev, st.st_ino);
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(key, FileType::Directory, root));
        let mut by_key = HashMap::new();
        by_key.insert(key, ROOT);
        // SAFETY: geteuid/getegid cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(State {
            nodes,
            by_key,
            next_ino: ROOT + 1,
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
            fsyncs: 0,
            writes: 0,
            euid,
            egid,
        })
    }

    pub(super) fn node(&self, ino: u64) -> Res<&Node> {
        self.nodes.get(&ino).ok_or(Errno::ENOENT)
    }

    pub(super) fn node_mut(&mut self, ino: u64) -> Res<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    pub(super) fn dir(&self, ino: u64) -> Res<&Node> {
        let node = self.node(ino)?;
        if node.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok(node)
    }

    /// Adds one lookup to the node of the object behind `fd` (a new node if
    /// the object is new to the daemon) and returns its id.
    pub(super) fn register(&mut self, fd: OwnedFd) -> Res<u64> {
        let st = sys::fstat(fd.as_fd())?;
        let key = (st.st_dev, st.st_ino);
        if let Some(&ino) = self.by_key.get(&key) {
            if let Some(node) = self.nodes.get_mut(&ino) {
                node.nlookup += 1;
                return Ok(ino);
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes
            .insert(ino, Node::new(key, kind_from_mode(st.st_mode), fd));
        self.by_key.insert(key, ino);
        Ok(ino)
    }

    /// Looks `name` up in `parent` and counts a lookup: the reply to every
    /// entry-returning operation.
    pub(super) fn entry(&mut self, parent: u64, name: &OsStr) -> Res<FileAttr> {
        let cname = sys::cstring(name)?;
        let fd = sys::openat(
            self.dir(parent)?.path.as_fd(),
            &cname,
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )?;
        let ino = self.register(fd)?;
        match self.attr(ino) {
            Ok(attr) => Ok(attr),
            Err(e) => {
                self.forget(ino, 1);
                Err(e)
            }
        }
    }

    /// The node of the entry `name` in `parent`, if the daemon knows it.
    pub(super) fn child(&self, parent: u64, name: &OsStr) -> Option<u64> {
        let cname = sys::cstring(name).ok()?;
        let st = sys::lstatat(self.nodes.get(&parent)?.path.as_fd(), &cname).ok()?;
        self.by_key.get(&(st.st_dev, st.st_ino)).copied()
    }

    pub(super) fn forget(&mut self, ino: u64, n: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.nlookup = node.nlookup.saturating_sub(n);
            if node.nlookup == 0 {
                let pending = node.overlay.is_some();
                debug!(ino, pending, "the kernel forgot the inode");
            }
        }
        self.maybe_drop(ino);
    }

    /// Drops a node nothing refers to any more.
    pub(super) fn maybe_drop(&mut self, ino: u64) {
        if ino == ROOT {
            return;
        }
        let unused = self
            .nodes
            .get(&ino)
            .is_some_and(|n| n.nlookup == 0 && n.open == 0 && n.overlay.is_none());
        if unused {
            if let Some(node) = self.nodes.remove(&ino) {
                if self.by_key.get(&node.key) == Some(&ino) {
                    self.by_key.remove(&node.key);
                }
            }
        }
    }

    /// After a name of `ino` went away (unlink, rename over it) or a handle
    /// was closed: a file with no name left and no handle open can never be
    /// read again, so its pending data goes.
    pub(super) fn settle(&mut self, ino: u64) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        if node.open == 0 {
            let unlinked = sys::fstat(node.path.as_fd()).is_ok_and(|st| st.st_nlink == 0);
            if unlinked && node.overlay.take().is_some() {
                debug!(ino, "dropped the pending data of an unlinked file");
            }
            if unlinked {
                node.mtime = None;
            }
            if node.overlay.is_none() {
                node.data = None;
            }
        }
        self.maybe_drop(ino);
    }
}
