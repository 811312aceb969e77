//! Shared helpers of the integration tests: a daemon on temporary folders,
//! stopped and unmounted by a Drop guard whatever the test does.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub const BIN: &str = env!("CARGO_BIN_EXE_flotilla-lazyfs");
const TIMEOUT: Duration = Duration::from_secs(20);

/// True when FUSE tests can run here (root and /dev/fuse); prints why not.
pub fn fuse_available(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let dev = Path::new("/dev/fuse").exists();
    if !root || !dev {
        println!("SKIP {test}: needs root and /dev/fuse (root: {root}, /dev/fuse: {dev})");
        return false;
    }
    true
}

/// Polls `cond` until it holds or the timeout passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Temporary folders for one test: backing, mount point, report, ready file.
pub struct Dirs {
    _tmp: tempfile::TempDir,
    pub backing: PathBuf,
    pub mount: PathBuf,
    pub report: PathBuf,
    pub ready: PathBuf,
    pub log: PathBuf,
}

impl Dirs {
    pub fn new() -> Dirs {
        let tmp = tempfile::tempdir().expect("tempdir");
        let backing = tmp.path().join("backing");
        let mount = tmp.path().join("mnt");
        fs::create_dir(&backing).expect("mkdir backing");
        fs::create_dir(&mount).expect("mkdir mount");
        Dirs {
            report: tmp.path().join("report.json"),
            ready: tmp.path().join("ready"),
            log: tmp.path().join("daemon.log"),
            backing,
            mount,
            _tmp: tmp,
        }
    }

    /// A path under the mount point.
    pub fn m(&self, rel: &str) -> PathBuf {
        self.mount.join(rel)
    }

    /// A path under the backing folder.
    pub fn b(&self, rel: &str) -> PathBuf {
        self.backing.join(rel)
    }
}

/// A running daemon. Dropping it kills it and detaches its mount.
pub struct Daemon {
    child: Option<Child>,
    mount: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon on `dirs` and waits for its ready file.
    pub fn start(dirs: &Dirs) -> Daemon {
        Daemon::start_with(dirs, &[])
    }

    /// Starts the daemon without kernel caching of names and attributes, so
    /// every path walk asks the daemon (tests of inode identity).
    pub fn start_uncached(dirs: &Dirs) -> Daemon {
        Daemon::start_with(dirs, &["--cache-ttl-ms", "0"])
    }

    fn start_with(dirs: &Dirs, extra: &[&str]) -> Daemon {
        let _ = fs::remove_file(&dirs.ready);
        let _ = fs::remove_file(&dirs.report);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&dirs.log)
            .expect("log file");
        let child = Command::new(BIN)
            .arg("--backing")
            .arg(&dirs.backing)
            .arg("--mount")
            .arg(&dirs.mount)
            .arg("--report")
            .arg(&dirs.report)
            .arg("--ready-file")
            .arg(&dirs.ready)
            .args(extra)
            .env("RUST_LOG", "debug,fuser=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn flotilla-lazyfs");
        let mut daemon = Daemon {
            child: Some(child),
            mount: dirs.mount.clone(),
            log: dirs.log.clone(),
        };
        let deadline = Instant::now() + TIMEOUT;
        while !dirs.ready.exists() {
            if let Some(status) = daemon.try_wait() {
                panic!(
                    "daemon exited early ({status}); log:\n{}",
                    daemon.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "daemon not ready in time; log:\n{}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        daemon
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Waits for the daemon to exit after a signal.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "daemon did not exit in time");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Power cut with a report (SIGUSR1); leaves the mount dead, then
    /// detaches it. Returns the report line.
    pub fn power_cut(mut self, dirs: &Dirs) -> String {
        kill(self.pid(), Signal::SIGUSR1).expect("SIGUSR1");
        let status = self.wait_exit();
        assert!(status.success(), "exit after SIGUSR1: {status}");
        assert_dead_mount(&dirs.mount);
        detach(&dirs.mount);
        fs::read_to_string(&dirs.report).expect("report file")
    }

    /// Power cut without a report (SIGKILL); the mount is left dead (not
    /// detached).
    pub fn sigkill(mut self) {
        kill(self.pid(), Signal::SIGKILL).expect("SIGKILL");
        self.wait_exit();
        assert_dead_mount(&self.mount);
    }

    /// Orderly shutdown (SIGTERM); returns the exit status.
    pub fn stop(mut self) -> ExitStatus {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM");
        self.wait_exit()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A mount whose daemon died answers ENOTCONN (to anything not answered
/// from the kernel's caches: opendir always asks the daemon).
pub fn assert_dead_mount(mount: &Path) {
    let err = fs::read_dir(mount).expect_err("the mount should be dead");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "{err}");
}

/// Detaches the mount with the binary's `unmount` subcommand.
pub fn detach(mount: &Path) {
    let status = Command::new(BIN)
        .arg("unmount")
        .arg(mount)
        .stderr(Stdio::null())
        .status()
        .expect("run unmount");
    assert!(status.success());
    assert!(
        fs::read_dir(mount).is_ok(),
        "mount point still dead after unmount"
    );
}

/// True if /proc/mounts lists `mount`.
pub fn is_mounted(mount: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let needle = format!(" {} ", mount.display());
    mounts.lines().any(|l| l.contains(&needle))
}

/// A field of the report line.
pub fn field(report: &str, key: &str) -> u64 {
    let pat = format!("\"{key}\": ");
    let start = report
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {report}"))
        + pat.len();
    report[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("{key} in {report}: {e}"))
}

/// Deterministic, non-repeating test bytes.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 251) as u8).wrapping_add(seed))
        .collect()
}
