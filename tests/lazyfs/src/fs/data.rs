//! File data: open and release, read, write, size changes (truncation and
//! fallocate's zeroing), and fsync, which makes a file's pending data
//! durable. Also the power-loss report and the flush at shutdown.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::time::SystemTime;

use fuser::{Errno, FileType};
use tracing::warn;

use super::nodes::Node;
use super::{Res, State};
use crate::overlay::Overlay;
use crate::report::Report;
use crate::sys;

/// An open regular file.
#[derive(Debug)]
pub(super) struct OpenFile {
    pub(super) ino: u64,
    /// Opened with `O_APPEND`: writes go to the logical end.
    pub(super) append: bool,
}

/// Opens the data descriptor of a regular file if it is not open yet.
fn ensure_data(node: &mut Node) -> Res<()> {
    if node.data.is_some() {
        return Ok(());
    }
    if node.kind != FileType::RegularFile {
        return Err(if node.kind == FileType::Directory {
            Errno::EISDIR
        } else {
            Errno::EINVAL
        });
    }
    let (fd, writable) = match sys::reopen(node.path.as_fd(), libc::O_RDWR) {
        Ok(fd) => (fd, true),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EROFS | libc::ETXTBSY | libc::EPERM)
            ) =>
        {
            (sys::reopen(node.path.as_fd(), libc::O_RDONLY)?, false)
        }
        Err(e) => return Err(e.into()),
    };
    node.data = Some(File::from(fd));
    node.data_writable = writable;
    Ok(())
}

/// The overlay of a regular file, started over the backing size if absent.
fn overlay_mut(node: &mut Node) -> Res<&mut Overlay> {
    if node.kind != FileType::RegularFile {
        return Err(Errno::EINVAL);
    }
    if node.overlay.is_none() {
        let st = sys::fstat(node.path.as_fd())?;
        node.overlay = Some(Overlay::new(st.st_size.max(0) as u64));
    }
    node.overlay.as_mut().ok_or(Errno::EIO)
}

/// Up to `size` bytes of a file with nothing pending.
fn read_plain(file: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size];
    let mut done = 0;
    while done < size {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

impl State {
    pub(super) fn truncate(&mut self, ino: u64, size: u64) -> Res<()> {
        let node = self.node_mut(ino)?;
        match node.kind {
            FileType::RegularFile => {}
            FileType::Directory => return Err(Errno::EISDIR),
            _ => return Err(Errno::EINVAL),
        }
        if node.overlay.is_none() && sys::fstat(node.path.as_fd())?.st_size.max(0) as u64 == size {
            return Ok(());
        }
        let ov = overlay_mut(node)?;
        ov.set_size(size);
        if ov.is_dirty() {
            node.mtime = Some(SystemTime::now());
        } else {
            node.overlay = None;
            node.mtime = None;
        }
        Ok(())
    }

    /// Zeros `[offset, offset + len)`: pending zeros inside the current size;
    /// past it, a size change (which reads as zeros) unless `keep_size`.
    pub(super) fn zero_range(
        &mut self,
        ino: u64,
        offset: u64,
        len: u64,
        keep_size: bool,
    ) -> Res<()> {
        let node = self.node_mut(ino)?;
        let ov = overlay_mut(node)?;
        let size = ov.size();
        let end = offset.saturating_add(len);
        let inside_end = end.min(size);
        if inside_end > offset {
            let zeros = usize::try_from(inside_end - offset).map_err(|_| Errno::EFBIG)?;
            ov.write(offset, &vec![0u8; zeros]);
        }
        if !keep_size && end > size {
            ov.set_size(end);
        }
        if ov.is_dirty() {
            node.mtime = Some(SystemTime::now());
        }
        Ok(())
    }

    /// Makes a file's pending state durable: the overlay goes to the backing
    /// file, which is then fsynced.
    pub(super) fn flush_node(&mut self, ino: u64, datasync: bool) -> Res<()> {
        let node = self.node_mut(ino)?;
        if node.kind != FileType::RegularFile {
            return Ok(());
        }
        let dirty = node.overlay.as_ref().is_some_and(Overlay::is_dirty);
        if !dirty && node.data.is_none() {
            node.overlay = None;
            node.mtime = None;
            // Nothing pending and not open: the backing was synced when
            // its data was last written.
            self.maybe_drop(ino);
            return Ok(());
        }
        if dirty && node.data.is_some() && !node.data_writable {
            node.data = None;
        }
        ensure_data(node)?;
        if dirty && !node.data_writable {
            return Err(Errno::EROFS);
        }
        let Some(file) = node.data.as_mut() else {
            return Err(Errno::EIO);
        };
        if dirty {
            if let Some(ov) = &node.overlay {
                ov.apply(file).map_err(|e| {
                    warn!(ino, "writing pending data to the backing file: {e}");
                    Errno::from(e)
                })?;
            }
        }
        if datasync {
            file.sync_data()?;
        } else {
            file.sync_all()?;
        }
        node.overlay = None;
        node.mtime = None;
        if node.open == 0 {
            node.data = None;
        }
        self.maybe_drop(ino);
        Ok(())
    }

    /// Flushes every file with pending state (orderly shutdown).
    pub fn flush_all(&mut self) -> (usize, usize) {
        let pending: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.overlay.is_some())
            .map(|(ino, _)| *ino)
            .collect();
        let mut failed = 0;
        for ino in &pending {
            if let Err(e) = self.flush_node(*ino, false) {
                warn!(ino, "flush at shutdown failed: {e:?}");
                failed += 1;
            }
        }
        (pending.len() - failed, failed)
    }

    /// What a power loss now would lose, and the counters so far.
    pub fn report(&self) -> Report {
        let mut report = Report {
            fsyncs: self.fsyncs,
            writes: self.writes,
            ..Report::default()
        };
        for ov in self.nodes.values().filter_map(|n| n.overlay.as_ref()) {
            if ov.is_dirty() {
                report.files_with_unsynced += 1;
                report.unsynced_bytes += ov.pending_bytes();
            }
        }
        report
    }

    /// The files a power cut at this instant changes, with their pending
    /// bytes (backing paths, through `/proc/self/fd`; `?` if unnamed).
    pub fn dirty_files(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .nodes
            .values()
            .filter_map(|n| {
                let ov = n.overlay.as_ref().filter(|ov| ov.is_dirty())?;
                let link = format!("/proc/self/fd/{}", n.path.as_raw_fd());
                let name = std::fs::read_link(link)
                    .map_or_else(|_| "?".to_string(), |p| p.display().to_string());
                Some((name, ov.pending_bytes()))
            })
            .collect();
        out.sort();
        out
    }

    pub(super) fn open(&mut self, ino: u64, flags: i32) -> Res<u64> {
        ensure_data(self.node_mut(ino)?)?;
        self.new_handle(ino, flags)
    }

    /// One more open handle on `ino` (whose data descriptor is ready):
    /// applies `O_TRUNC` and returns the handle. On failure nothing stays
    /// counted.
    pub(super) fn new_handle(&mut self, ino: u64, flags: i32) -> Res<u64> {
        self.node_mut(ino)?.open += 1;
        if flags & libc::O_TRUNC != 0 {
            if let Err(e) = self.truncate(ino, 0) {
                self.release(ino, None);
                return Err(e);
            }
        }
        let fh = self.new_fh();
        self.files.insert(
            fh,
            OpenFile {
                ino,
                append: flags & libc::O_APPEND != 0,
            },
        );
        Ok(fh)
    }

    pub(super) fn release(&mut self, ino: u64, fh: Option<u64>) {
        let ino = fh
            .and_then(|fh| self.files.remove(&fh))
            .map_or(ino, |f| f.ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.open = node.open.saturating_sub(1);
        }
        self.settle(ino);
    }

    pub(super) fn read(&mut self, ino: u64, offset: u64, size: u32) -> Res<Vec<u8>> {
        let node = self.node_mut(ino)?;
        ensure_data(node)?;
        let Some(file) = node.data.as_ref() else {
            return Err(Errno::EIO);
        };
        let data = match &node.overlay {
            Some(ov) => ov.read(file, offset, size as usize)?,
            None => read_plain(file, offset, size as usize)?,
        };
        Ok(data)
    }

    pub(super) fn write(
        &mut self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        cache: bool,
    ) -> Res<u32> {
        let append = !cache && self.files.get(&fh).is_some_and(|f| f.append);
        let len = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        offset
            .checked_add(data.len() as u64)
            .filter(|end| *end <= i64::MAX as u64)
            .ok_or(Errno::EFBIG)?;
        let node = self.node_mut(ino)?;
        let ov = overlay_mut(node)?;
        let at = if append { ov.size() } else { offset };
        ov.write(at, data);
        node.mtime = Some(SystemTime::now());
        self.writes += 1;
        Ok(len)
    }
}
