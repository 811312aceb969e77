//! The mount point's life around the daemon: detaching dead mounts left by a
//! killed daemon, checking the folder before mounting, and waiting until the
//! mount answers.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{umount2, MntFlags};
use thiserror::Error;

use crate::sys;

/// Why a folder cannot be mounted on.
#[derive(Debug, Error)]
pub enum MountPointError {
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("{0}: not empty (the mount point must be an empty directory)")]
    NotEmpty(PathBuf),
    #[error("{0}: already a live FUSE mount (is another flotilla-lazyfs running on it?)")]
    AlreadyMounted(PathBuf),
    #[error(
        "the mount point {mount} and the backing folder {backing} must not contain each other"
    )]
    Nested { mount: PathBuf, backing: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MountPointError + '_ {
    move |source| MountPointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// True if `path` is the root of a FUSE filesystem that answers.
pub fn is_live_fuse(path: &Path) -> bool {
    sys::cstring(path.as_os_str())
        .and_then(|p| sys::statfs_type(&p))
        .is_ok_and(|t| t == sys::FUSE_SUPER_MAGIC)
}

/// True if `path` is a FUSE mount whose daemon is gone: it answers
/// "Transport endpoint is not connected". (statfs always asks the daemon,
/// where stat may be answered from the kernel's attribute cache.)
pub fn is_dead_fuse(path: &Path) -> bool {
    sys::cstring(path.as_os_str())
        .and_then(|p| sys::statfs_type(&p))
        .is_err_and(|e| e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Detaches (`umount2(MNT_DETACH)`) every dead FUSE mount stacked on `path`.
/// Returns how many were detached.
pub fn detach_dead(path: &Path) -> Result<usize, MountPointError> {
    let mut detached = 0;
    for _ in 0..64 {
        match is_dead_fuse(path) {
            true => {
                umount2(path, MntFlags::MNT_DETACH).map_err(|e| io_err(path)(e.into()))?;
                detached += 1;
            }
            false => break,
        }
    }
    Ok(detached)
}

/// Detaches every mount stacked on `path`, dead or alive (the `unmount`
/// subcommand; `umount -l` does the same). Returns how many.
pub fn unmount_all(path: &Path) -> io::Result<usize> {
    let mut detached = 0;
    for _ in 0..64 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => detached += 1,
            // Not (or no longer) a mount point.
            Err(nix::errno::Errno::EINVAL) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(detached)
}

/// Makes `mount` ready to mount on: detaches dead mounts, then checks that
/// it is an empty directory that is not a live mount and does not nest
/// with `backing`. Returns the canonical mount path.
pub fn prepare(mount: &Path, backing: &Path) -> Result<PathBuf, MountPointError> {
    let detached = detach_dead(mount)?;
    if detached > 0 {
        tracing::info!(mount = %mount.display(), detached, "detached dead FUSE mount(s)");
    }
    let meta = std::fs::metadata(mount).map_err(io_err(mount))?;
    if !meta.is_dir() {
        return Err(MountPointError::NotADirectory(mount.to_owned()));
    }
    if is_live_fuse(mount) {
        return Err(MountPointError::AlreadyMounted(mount.to_owned()));
    }
    let mut entries = std::fs::read_dir(mount).map_err(io_err(mount))?;
    if entries.next().is_some() {
        return Err(MountPointError::NotEmpty(mount.to_owned()));
    }
    let backing_meta = std::fs::metadata(backing).map_err(io_err(backing))?;
    if !backing_meta.is_dir() {
        return Err(MountPointError::NotADirectory(backing.to_owned()));
    }
    let mount_c = mount.canonicalize().map_err(io_err(mount))?;
    let backing_c = backing.canonicalize().map_err(io_err(backing))?;
    if mount_c.starts_with(&backing_c) || backing_c.starts_with(&mount_c) {
        return Err(MountPointError::Nested {
            mount: mount_c,
            backing: backing_c,
        });
    }
    Ok(mount_c)
}

/// Polls until `path` is a FUSE mount that answers statfs, `give_up()` says
/// stop, or `timeout` passes.
pub fn wait_live(path: &Path, timeout: Duration, give_up: impl Fn() -> bool) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if is_live_fuse(path) {
            return Ok(());
        }
        if give_up() {
            return Err(io::Error::other(
                "the FUSE session ended before the mount answered",
            ));
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} did not answer as a FUSE mount within {timeout:?}",
                    path.display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
