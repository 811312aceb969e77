//! The node's network namespace, when the proxy runs outside it
//! (`--netns`): commands enter it before exec, and the userspace data path
//! runs on threads that all live in it (sockets stay in the namespace they
//! were made in).

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

/// A thread of its own, in `ns`, driving a current-thread runtime: tasks
/// spawned on [`DataThread::handle`] run there, and the sockets they make
/// are made in `ns`. Connections accepted on one such thread are served
/// on it from start to end, with no wake-ups across threads (the
/// userspace data path runs one per CPU, each with its own listener in a
/// `SO_REUSEPORT` group). Dropping it stops the runtime and joins the
/// thread.
pub struct DataThread {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DataThread {
    pub fn spawn(ns: Option<&Path>, name: &str) -> std::io::Result<DataThread> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (entered, has_entered) = std::sync::mpsc::channel();
        let ns: Option<PathBuf> = ns.map(Path::to_path_buf);
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let r = ns.as_deref().map(enter).transpose();
                let ok = r.is_ok();
                let _ = entered.send(r);
                if ok {
                    rt.block_on(async {
                        let _ = stopped.await;
                    });
                }
                rt.shutdown_background();
            })?;
        match has_entered.recv() {
            Ok(Ok(_)) => Ok(DataThread {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::other("the data thread ended at start")),
        }
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for DataThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
