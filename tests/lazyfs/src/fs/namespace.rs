//! Names: creating objects (create, mknod, mkdir, symlink, link), removing
//! and moving them (unlink, rmdir, rename), and open directories (a snapshot
//! of the entries, and fsyncdir). These reach the backing folder at once.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::DirEntryExt;
use std::path::Path;

use fuser::{Errno, FileAttr, FileType, RenameFlags, Request};
use tracing::warn;

use super::{Res, State};
use crate::sys;

/// An open directory: a snapshot of its entries and a descriptor to fsync.
#[derive(Debug)]
pub(super) struct OpenDir {
    pub(super) entries: Vec<(u64, FileType, OsString)>,
    pub(super) dir: File,
}

impl State {
    /// Gives a new object to the caller, as a kernel filesystem would (the
    /// daemon runs as root); a setgid parent keeps its group.
    pub(super) fn own(&self, req: &Request, parent: u64, name: &OsStr) {
        let parent_setgid = self
            .node(parent)
            .ok()
            .and_then(|p| sys::fstat(p.path.as_fd()).ok())
            .is_some_and(|st| st.st_mode & libc::S_ISGID != 0);
        let uid = (req.uid() != self.euid).then_some(req.uid());
        let gid = (req.gid() != self.egid && !parent_setgid).then_some(req.gid());
        if uid.is_none() && gid.is_none() {
            return;
        }
        let result = sys::cstring(name).and_then(|cname| {
            let dir = self
                .dir(parent)
                .map_err(|e| io::Error::from_raw_os_error(e.code()))?;
            let fd = sys::openat(dir.path.as_fd(), &cname, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            sys::chown_fd(fd.as_fd(), uid, gid)
        });
        if let Err(e) = result {
            warn!(
                ?name,
                "cannot give the new object to uid {uid:?} gid {gid:?}: {e}"
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Res<(FileAttr, u64)> {
        let cname = sys::cstring(name)?;
        let oflags = libc::O_CREAT | libc::O_RDWR | libc::O_NOFOLLOW | (flags & libc::O_EXCL);
        let data = sys::openat(
            self.dir(parent)?.path.as_fd(),
            &cname,
            oflags,
            mode & !umask & 0o7777,
        )?;
        let path = sys::reopen(data.as_fd(), libc::O_PATH)?;
        self.own(req, parent, name);
        let ino = self.register(path)?;
        let node = self.node_mut(ino)?;
        if node.data.is_none() || !node.data_writable {
            node.data = Some(File::from(data));
            node.data_writable = true;
        }
        let fh = match self.new_handle(ino, flags) {
            Ok(fh) => fh,
            Err(e) => {
                self.forget(ino, 1);
                return Err(e);
            }
        };
        match self.attr(ino) {
            Ok(attr) => Ok((attr, fh)),
            Err(e) => {
                self.release(ino, Some(fh));
                self.forget(ino, 1);
                Err(e)
            }
        }
    }

    pub(super) fn mknod(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Res<FileAttr> {
        let cname = sys::cstring(name)?;
        let dir = self.dir(parent)?.path.as_fd();
        let perm = mode & !umask & 0o7777;
        if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
            sys::openat(
                dir,
                &cname,
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                perm,
            )?;
        } else {
            sys::mknodat(dir, &cname, (mode & libc::S_IFMT) | perm, u64::from(rdev))?;
        }
        self.own(req, parent, name);
        self.entry(parent, name)
    }

    pub(super) fn mkdir(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Res<FileAttr> {
        let cname = sys::cstring(name)?;
        sys::mkdirat(
            self.dir(parent)?.path.as_fd(),
            &cname,
            mode & !umask & 0o7777,
        )?;
        self.own(req, parent, name);
        self.entry(parent, name)
    }

    pub(super) fn symlink(
        &mut self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        target: &Path,
    ) -> Res<FileAttr> {
        let cname = sys::cstring(name)?;
        let ctarget = sys::cstring(target.as_os_str())?;
        sys::symlinkat(&ctarget, self.dir(parent)?.path.as_fd(), &cname)?;
        self.own(req, parent, name);
        self.entry(parent, name)
    }

    pub(super) fn unlink(&mut self, parent: u64, name: &OsStr, dir_flag: i32) -> Res<()> {
        let cname = sys::cstring(name)?;
        let victim = self.child(parent, name);
        sys::unlinkat(self.dir(parent)?.path.as_fd(), &cname, dir_flag)?;
        if let Some(ino) = victim {
            self.settle(ino);
        }
        Ok(())
    }

    pub(super) fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        let supported = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        if !supported.contains(flags) {
            return Err(Errno::EINVAL);
        }
        let cname = sys::cstring(name)?;
        let cnewname = sys::cstring(newname)?;
        let replaced = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            None
        } else {
            self.child(newparent, newname)
        };
        sys::renameat2(
            self.dir(parent)?.path.as_fd(),
            &cname,
            self.dir(newparent)?.path.as_fd(),
            &cnewname,
            flags.bits(),
        )?;
        if let Some(ino) = replaced {
            self.settle(ino);
        }
        Ok(())
    }

    pub(super) fn link(&mut self, ino: u64, newparent: u64, newname: &OsStr) -> Res<FileAttr> {
        let cname = sys::cstring(newname)?;
        let node = self.node(ino)?;
        if node.kind == FileType::Directory {
            return Err(Errno::EPERM);
        }
        sys::link_fd(node.path.as_fd(), self.dir(newparent)?.path.as_fd(), &cname)?;
        self.node_mut(ino)?.nlookup += 1;
        match self.attr(ino) {
            Ok(attr) => Ok(attr),
            Err(e) => {
                self.forget(ino, 1);
                Err(e)
            }
        }
    }

    pub(super) fn opendir(&mut self, ino: u64) -> Res<u64> {
        let node = self.dir(ino)?;
        let dir = File::from(sys::reopen(
            node.path.as_fd(),
            libc::O_RDONLY | libc::O_DIRECTORY,
        )?);
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (ino, FileType::Directory, OsString::from("..")),
        ];
        let dev = sys::fstat(dir.as_fd())?.st_dev;
        for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
            let entry = entry?;
            let kind = entry
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            // The node id where the daemon knows the object (it is what
            // stat reports as st_ino), else the backing inode number.
            let id = self
                .by_key
                .get(&(dev, entry.ino()))
                .copied()
                .unwrap_or(entry.ino());
            entries.push((id, kind, entry.file_name()));
        }
        let fh = self.new_fh();
        self.dirs.insert(fh, OpenDir { entries, dir });
        Ok(fh)
    }

    pub(super) fn fsyncdir(&mut self, ino: u64, fh: u64, datasync: bool) -> Res<()> {
        let reopened;
        let dir = match self.dirs.get(&fh) {
            Some(d) => &d.dir,
            None => {
                reopened = File::from(sys::reopen(
                    self.dir(ino)?.path.as_fd(),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )?);
                &reopened
            }
        };
        if datasync {
            dir.sync_data()?;
        } else {
            dir.sync_all()?;
        }
        Ok(())
    }
}
