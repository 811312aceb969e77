//! Sockets and commands in the node's network namespace: the agent may run
//! outside it (`--netns`), while probes must reach pod IPs as the node does
//! and the pod streams listen on the node's IP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Run `f` on a thread of its own inside `ns`: setns changes the calling
/// thread only, and this one ends right after; sockets stay in the
/// namespace they were made in.
async fn on_thread_in<T, F>(ns: &Path, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let ns: PathBuf = ns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| {
            let file = std::fs::File::open(&ns)?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)?;
            f()
        })();
        let _ = tx.send(r);
    });
    rx.await
        .map_err(|_| std::io::Error::other("the namespace thread ended"))?
}

/// Connect to `addr` from `netns` (None: the agent's own namespace).
pub async fn connect(
    netns: Option<&Path>,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let Some(ns) = netns else {
        return match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("dial tcp {addr}: i/o timeout"),
            )),
        };
    };
    let s = on_thread_in(ns, move || {
        let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })
    .await?;
    TcpStream::from_std(s)
}

/// Listen on `addr` in `netns` (None: the agent's own namespace).
pub async fn listen(netns: Option<&Path>, addr: SocketAddr) -> std::io::Result<TcpListener> {
    let Some(ns) = netns else {
        return TcpListener::bind(addr).await;
    };
    let l = on_thread_in(ns, move || {
        let l = std::net::TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .await?;
    TcpListener::from_std(l)
}

/// A command that runs in `netns` (None: the agent's own namespace). Only
/// the network namespace changes, as with `nsenter --net`: /sys stays the
/// host's (runc needs it to find the cgroups).
pub fn command_in(
    netns: Option<&Path>,
    program: &Path,
) -> std::io::Result<tokio::process::Command> {
    let mut cmd = tokio::process::Command::new(program);
    if let Some(ns) = netns {
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
