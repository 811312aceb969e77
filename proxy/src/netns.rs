//! The node's network namespace, when the proxy runs outside it
//! (`--netns`): commands enter it before exec, and the userspace data path
//! runs on a runtime whose threads all live in it (sockets stay in the
//! namespace they were made in).

use std::path::{Path, PathBuf};

/// Enter `ns` on the calling thread.
pub fn enter(ns: &Path) -> std::io::Result<()> {
    let f = std::fs::File::open(ns)?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// A command that runs in `ns` (None: this process's namespace).
pub fn command(ns: Option<&Path>, program: &str) -> std::io::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(program);
    if let Some(ns) = ns {
        let fd = std::fs::File::open(ns)?;
        // SAFETY: setns(2) is async-signal-safe; the fd is opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
    }
    Ok(cmd)
}

/// A multi-thread runtime whose every thread is in `ns`.
pub fn runtime_in(ns: Option<&Path>, threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all()
        .worker_threads(threads)
        .thread_name("proxy-data");
    if let Some(ns) = ns {
        let ns: PathBuf = ns.to_path_buf();
        // Check once here so that the hook cannot fail later.
        std::fs::File::open(&ns)?;
        b.on_thread_start(move || {
            if let Err(e) = enter(&ns) {
                tracing::error!(error = %e, "entering the node's network namespace");
                std::process::abort();
            }
        });
    }
    b.build()
}
