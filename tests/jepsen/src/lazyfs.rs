//! The power-loss layer under a master's data folder: a `flotilla-lazyfs`
//! daemon (tests/lazyfs) mounted on the folder, keeping what the master
//! writes in memory until the master fsyncs it, and backed by a sibling
//! folder that holds only what was synced. A power loss is SIGUSR1 to the
//! daemon (it reports what it drops and exits without flushing), then a
//! fresh daemon on the same two folders.
//!
//! The daemons run in the harness's own mount namespace (`ip netns exec`
//! gave it one): nothing is mounted in the machine's namespace, and a
//! master started later (its own namespace is a copy of this one) sees the
//! mount.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flotilla_lazyfs::mountpoint::unmount_all;
pub use flotilla_lazyfs::report::Report;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a daemon has to answer on its mount, or to exit.
const WAIT: Duration = Duration::from_secs(10);

/// One mounted layer.
pub struct LazyFs {
    bin: PathBuf,
    backing: PathBuf,
    mount: PathBuf,
    log: PathBuf,
    /// `--fsync-delay-ms` of every daemon of this layer.
    fsync_delay_ms: u64,
    child: Option<Child>,
}

impl LazyFs {
    /// Mounts a layer on `mount` (created if missing), backed by `backing`
    /// (created if missing); the daemon's log goes to `log`. Its fsyncs
    /// take up to `fsync_delay_ms` (see `flotilla-lazyfs --fsync-delay-ms`).
    pub fn mount(
        bin: &Path,
        backing: &Path,
        mount: &Path,
        log: &Path,
        fsync_delay_ms: u64,
    ) -> Result<LazyFs> {
        let mut fs = LazyFs {
            bin: bin.to_path_buf(),
            backing: backing.to_path_buf(),
            mount: mount.to_path_buf(),
            log: log.to_path_buf(),
            fsync_delay_ms,
            child: None,
        };
        fs.start()?;
        Ok(fs)
    }

    fn ready_file(&self) -> PathBuf {
        self.log.with_extension("ready")
    }

    fn report_file(&self) -> PathBuf {
        self.log.with_extension("lost.json")
    }

    fn start(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.backing)
            .with_context(|| format!("create {}", self.backing.display()))?;
        std::fs::create_dir_all(&self.mount)
            .with_context(|| format!("create {}", self.mount.display()))?;
        let ready = self.ready_file();
        let _ = std::fs::remove_file(&ready);
        let _ = std::fs::remove_file(self.report_file());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("open {}", self.log.display()))?;
        let child = Command::new(&self.bin)
            .arg("--backing")
            .arg(&self.backing)
            .arg("--mount")
            .arg(&self.mount)
            .arg("--report")
            .arg(self.report_file())
            .arg("--ready-file")
            .arg(&ready)
            .arg("--fsync-delay-ms")
            .arg(self.fsync_delay_ms.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        self.child = Some(child);
        let until = Instant::now() + WAIT;
        while !ready.exists() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    bail!(
                        "flotilla-lazyfs on {} exited ({status}) before it was ready; see {}",
                        self.mount.display(),
                        self.log.display()
                    );
                }
            }
            if Instant::now() >= until {
                self.stop();
                bail!(
                    "flotilla-lazyfs on {} was not ready within {WAIT:?}; see {}",
                    self.mount.display(),
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Cuts the power: everything written and not fsynced since the mount
    /// is gone (an fsync under way included). Tells the daemon to drop it
    /// and exit, and returns at once; the master on the layer may still
    /// run, and must be killed before [`LazyFs::after_cut`].
    pub fn cut(&mut self) -> Result<()> {
        let Some(child) = self.child.as_ref() else {
            bail!("no flotilla-lazyfs runs on {}", self.mount.display());
        };
        kill(Pid::from_raw(child.id() as i32), Signal::SIGUSR1)
            .with_context(|| format!("SIGUSR1 to flotilla-lazyfs on {}", self.mount.display()))
    }

    /// After [`LazyFs::cut`]: wait for the daemon to exit, read what it
    /// dropped, and mount the layer again on the synced state. The master
    /// on it must be dead.
    pub fn after_cut(&mut self) -> Result<Report> {
        let Some(mut child) = self.child.take() else {
            bail!("no flotilla-lazyfs runs on {}", self.mount.display());
        };
        let until = Instant::now() + WAIT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    detach(&self.mount);
                    bail!(
                        "flotilla-lazyfs on {} did not exit on SIGUSR1 within {WAIT:?}: \
                         the power was not cut",
                        self.mount.display()
                    );
                }
            }
        }
        detach(&self.mount);
        let report = std::fs::read_to_string(self.report_file()).with_context(|| {
            format!(
                "flotilla-lazyfs on {} exited without its report",
                self.mount.display()
            )
        })?;
        let lost: Report = serde_json::from_str(report.trim())
            .with_context(|| format!("read the report {report:?}"))?;
        self.start()?;
        Ok(lost)
    }

    /// Clean shutdown (the daemon flushes and unmounts); whatever is left
    /// mounted is detached.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let until = Instant::now() + WAIT;
            while Instant::now() < until {
                if !matches!(child.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        detach(&self.mount);
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lazily unmounts whatever is mounted on `dir` (the daemon's dead mount
/// after a power cut; nothing after a clean stop).
fn detach(dir: &Path) {
    if let Err(e) = unmount_all(dir) {
        tracing::warn!("umount -l {}: {e}", dir.display());
    }
}
