//! The `flotilla-lazyfs` daemon: command line, mounting, and the signals
//! that cut the power (SIGUSR1) or shut down cleanly (SIGTERM/SIGINT).
//! Test tooling for the chaos tests; see the library docs and README.md.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use flotilla_lazyfs::fs::{Control, LazyFs, DEFAULT_TTL};
use flotilla_lazyfs::mountpoint;
use flotilla_lazyfs::report::write_atomically;
use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use nix::sys::signal::{SigSet, Signal};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "flotilla-lazyfs",
    about = "A FUSE filesystem that simulates power loss: unsynced file data lives only in \
             this daemon's memory until the file is fsynced",
    long_about = "A FUSE filesystem that simulates power loss (test tooling, in the spirit of \
                  Jepsen's LazyFS).\n\n\
                  Mirrors BACKING at MOUNT. BACKING always holds exactly what is durable: data \
                  written through MOUNT stays in memory until its file is fsynced; metadata \
                  operations (create, mkdir, unlink, rename, link, ...) reach BACKING at once.\n\n\
                  Signals:\n  \
                  SIGUSR1          power cut: write the --report line, exit 0 at once, losing \
                  every unsynced byte (the mount is left dead)\n  \
                  SIGKILL          power cut without a report\n  \
                  SIGTERM, SIGINT, SIGHUP  orderly shutdown: flush every file, unmount, exit 0\n\n\
                  After a power cut, detach the dead mount (`flotilla-lazyfs unmount MOUNT` or \
                  `umount -l MOUNT`), or just start a new daemon on the same folders: it \
                  detaches a dead mount on MOUNT itself.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    /// Folder holding the durable state (what survives a power cut).
    #[arg(long, value_name = "DIR", required = true)]
    backing: Option<PathBuf>,
    /// Empty folder to mount on (a dead mount left there by a killed daemon
    /// is detached first).
    #[arg(long, value_name = "DIR", required = true)]
    mount: Option<PathBuf>,
    /// On SIGUSR1, replace FILE with one JSON line: {"files_with_unsynced": N,
    /// "unsynced_bytes": B, "fsyncs": K, "writes": W}.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Written (atomically, holding the daemon's pid) once the mount answers.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// How long the kernel may cache names and attributes, in milliseconds
    /// (0: ask the daemon every time; for tests of the lookup paths).
    #[arg(long, value_name = "MS", default_value_t = DEFAULT_TTL.as_millis() as u64)]
    cache_ttl_ms: u64,
    /// Make every fsync of a file take a random time from 0 to MS
    /// milliseconds before its data is durable and it returns, as on a slow
    /// disk; other requests are served meanwhile, and a power cut in that
    /// time loses the data (0: fsyncs at once).
    #[arg(long, value_name = "MS", default_value_t = 0)]
    fsync_delay_ms: u64,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Detach every mount on DIR (umount2 with MNT_DETACH, like `umount -l`),
    /// such as the dead mount a killed daemon leaves behind.
    Unmount {
        /// The mount point.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match (cli.command, cli.backing, cli.mount) {
        (Some(Cmd::Unmount { dir }), _, _) => unmount(&dir),
        (None, Some(backing), Some(mount)) => {
            let timing = Timing {
                ttl: Duration::from_millis(cli.cache_ttl_ms),
                fsync_delay: Duration::from_millis(cli.fsync_delay_ms),
            };
            let files = Files {
                report: cli.report.as_deref(),
                ready: cli.ready_file.as_deref(),
            };
            serve(&backing, &mount, files, timing)
        }
        // clap enforces --backing and --mount without a subcommand.
        (None, _, _) => Err(anyhow::anyhow!("--backing and --mount are required")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn unmount(dir: &Path) -> Result<()> {
    let n = mountpoint::unmount_all(dir).with_context(|| format!("detaching {}", dir.display()))?;
    if n == 0 {
        info!(dir = %dir.display(), "not a mount point; nothing to detach");
    } else {
        info!(dir = %dir.display(), detached = n, "detached");
    }
    Ok(())
}

/// Lets the daemon hold descriptors for every open and every dirty file.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Waits up to `timeout` for one of `set`'s (blocked) signals.
fn wait_signal(set: &SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timespec; no siginfo wanted.
    let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// The files the daemon writes for the harness.
struct Files<'a> {
    report: Option<&'a Path>,
    ready: Option<&'a Path>,
}

/// How the mount answers: the kernel's cache time, and the slow disk's
/// longest fsync.
struct Timing {
    ttl: Duration,
    fsync_delay: Duration,
}

fn serve(backing: &Path, mount: &Path, files: Files<'_>, timing: Timing) -> Result<()> {
    let Files { report, ready } = files;
    let Timing { ttl, fsync_delay } = timing;
    let mount = mountpoint::prepare(mount, backing)?;
    // Modes arrive from the kernel with the caller's umask applied already.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };
    raise_fd_limit();

    // Block the signals before any thread starts, so every thread inherits
    // the mask and they are only ever taken by `wait_signal` below.
    let mut signals = SigSet::empty();
    for s in [
        Signal::SIGUSR1,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;

    let (fs, control) = LazyFs::new(backing, ttl)
        .with_context(|| format!("opening the backing folder {}", backing.display()))?;
    // Each daemon draws its own delays.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    let fs = fs.with_slow_fsync(fsync_delay, seed);
    let mut config = Config::default();
    // No writeback cache (fuser does not ask for it: every write reaches the
    // daemon) and no direct_io (mmap needs the page cache).
    config.mount_options = vec![
        MountOption::FSName("flotilla-lazyfs".to_string()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(1);
    let session = Session::new(fs, &mount, &config)
        .with_context(|| format!("mounting on {}", mount.display()))?;
    let mut session = session;
    let mut unmounter = session.unmount_callable();
    let worker = thread::Builder::new()
        .name("fuse".to_string())
        .spawn(move || session.run())
        .context("starting the FUSE thread")?;

    if let Err(e) = mountpoint::wait_live(&mount, Duration::from_secs(10), || worker.is_finished())
    {
        let _ = unmounter.unmount();
        return Err(e).context("waiting for the mount to answer");
    }
    if let Some(ready) = ready {
        write_atomically(ready, format!("{}\n", std::process::id()).as_bytes())
            .with_context(|| format!("writing the ready file {}", ready.display()))?;
    }
    info!(
        backing = %backing.display(),
        mount = %mount.display(),
        fsync_delay_max_ms = fsync_delay.as_millis() as u64,
        "mounted"
    );

    loop {
        match wait_signal(&signals, Duration::from_millis(200)) {
            Some(libc::SIGUSR1) => power_cut(&control, report),
            Some(sig) => {
                info!(sig, "orderly shutdown");
                return shutdown(&control, &mut unmounter, worker, &mount);
            }
            None if worker.is_finished() => {
                // Unmounted from outside: an orderly unmount (the session's
                // destroy flushed the pending files).
                let result = worker.join();
                let (flushed, failed) = control.flush_all();
                info!(flushed, failed, "the mount went away; exiting");
                return match result {
                    Ok(Ok(())) if failed == 0 => Ok(()),
                    Ok(Ok(())) => bail!("{failed} file(s) could not be flushed"),
                    Ok(Err(e)) => Err(e).context("FUSE session"),
                    Err(_) => bail!("the FUSE thread panicked"),
                };
            }
            None => {}
        }
    }
}

/// SIGUSR1: the power goes. Report what is lost, then die without flushing
/// or unmounting.
fn power_cut(control: &Control, report: Option<&Path>) -> ! {
    let r = control.report();
    warn!(
        files_with_unsynced = r.files_with_unsynced,
        unsynced_bytes = r.unsynced_bytes,
        fsyncs = r.fsyncs,
        writes = r.writes,
        "power cut: unsynced data is lost"
    );
    for (file, bytes) in control.dirty_files() {
        warn!(
            file,
            unsynced_bytes = bytes,
            "power cut: loses this file's unsynced data"
        );
    }
    if let Some(path) = report {
        if let Err(e) = r.write_to(path) {
            error!("writing the report {}: {e}", path.display());
        }
    }
    // SAFETY: ends the process at once: no destructors, no unmount, no flush.
    unsafe { libc::_exit(0) }
}

/// SIGTERM/SIGINT: what an orderly OS shutdown does. Flush every file,
/// unmount, exit 0.
fn shutdown(
    control: &Control,
    unmounter: &mut SessionUnmounter,
    worker: thread::JoinHandle<std::io::Result<()>>,
    mount: &Path,
) -> Result<()> {
    let (flushed, mut failed) = control.flush_all();
    info!(flushed, failed, "flushed the pending files");
    match unmounter.unmount() {
        Ok(()) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !worker.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if worker.is_finished() {
                match worker.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!("FUSE session ended with: {e}"),
                    Err(_) => warn!("the FUSE thread panicked"),
                }
            }
        }
        Err(e) => {
            warn!("unmount failed ({e}); detaching instead");
            mountpoint::unmount_all(mount).context("detaching the mount")?;
        }
    }
    // Anything written between the first flush and the unmount.
    failed += control.flush_all().1;
    if failed > 0 {
        bail!("{failed} file(s) could not be flushed");
    }
    info!("unmounted");
    Ok(())
}
