//! Connections from the node's network namespace: the agent may run outside
//! it (`--netns`), while probes must reach pod IPs as the node does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpStream;

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
    let ns: PathBuf = ns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: setns changes the calling thread only, and this
    // one ends right after; the socket stays in the namespace it was made in.
    std::thread::spawn(move || {
        let r = (|| {
            let f = std::fs::File::open(&ns)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            s.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(s)
        })();
        let _ = tx.send(r);
    });
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("the connecting thread ended"))??;
    TcpStream::from_std(s)
}

/// Listen on `addr` in `netns` (None: the agent's own namespace).
pub async fn listen(
    netns: Option<&Path>,
    addr: SocketAddr,
) -> std::io::Result<tokio::net::TcpListener> {
    let Some(ns) = netns else {
        return tokio::net::TcpListener::bind(addr).await;
    };
    let ns: PathBuf = ns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let r = (|| {
            let f = std::fs::File::open(&ns)?;
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let l = std::net::TcpListener::bind(addr)?;
            l.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(l)
        })();
        let _ = tx.send(r);
    });
    let l = rx
        .await
        .map_err(|_| std::io::Error::other("the listening thread ended"))??;
    tokio::net::TcpListener::from_std(l)
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
