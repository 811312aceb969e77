//! Attributes: the backing `stat` converted for FUSE, with a file's pending
//! size and mtime laid over it, and setattr (mode, owner, times, size).

use std::os::fd::AsFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};

use super::{Res, State};
use crate::sys::{self, TimeSpec};

pub(super) fn kind_from_mode(mode: libc::mode_t) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn system_time(sec: i64, nsec: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
    let t = if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(sec as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(sec.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

fn timespec(t: SystemTime) -> libc::timespec {
    let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
        Err(e) => {
            let d = e.duration();
            let mut sec = -(d.as_secs() as i64);
            let mut nsec = d.subsec_nanos() as i64;
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            (sec, nsec)
        }
    };
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    }
}

fn time_spec(t: Option<TimeOrNow>) -> TimeSpec {
    match t {
        None => TimeSpec::Omit,
        Some(TimeOrNow::Now) => TimeSpec::Now,
        Some(TimeOrNow::SpecificTime(t)) => TimeSpec::At(timespec(t)),
    }
}

fn attr_from_stat(ino: u64, st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        atime: system_time(st.st_atime, st.st_atime_nsec),
        mtime: system_time(st.st_mtime, st.st_mtime_nsec),
        ctime: system_time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_from_mode(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

impl State {
    pub(super) fn attr(&self, ino: u64) -> Res<FileAttr> {
        let node = self.node(ino)?;
        let st = sys::fstat(node.path.as_fd())?;
        let mut attr = attr_from_stat(ino, &st);
        if let Some(ov) = &node.overlay {
            attr.size = ov.size();
            attr.blocks = attr.blocks.max(ov.size().div_ceil(512));
        }
        if let Some(t) = node.mtime {
            attr.mtime = t;
            attr.ctime = attr.ctime.max(t);
        }
        Ok(attr)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Res<FileAttr> {
        let node = self.node(ino)?;
        let is_symlink = node.kind == FileType::Symlink;
        if let Some(mode) = mode {
            if is_symlink {
                return Err(Errno::EOPNOTSUPP);
            }
            sys::chmod_fd(node.path.as_fd(), mode)?;
        }
        if uid.is_some() || gid.is_some() {
            sys::chown_fd(node.path.as_fd(), uid, gid)?;
        }
        if atime.is_some() || mtime.is_some() {
            // Times of a symlink itself cannot be set through its O_PATH fd;
            // nothing in a database needs them.
            if !is_symlink {
                sys::utimens_fd(node.path.as_fd(), time_spec(atime), time_spec(mtime))?;
            }
        }
        if let Some(size) = size {
            self.truncate(ino, size)?;
        }
        if mtime.is_some() {
            // An explicit mtime wins over the time of the pending writes.
            self.node_mut(ino)?.mtime = None;
        }
        self.attr(ino)
    }
}
