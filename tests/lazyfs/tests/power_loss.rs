//! Power-loss behaviour of the daemon, end to end: the binary on temporary
//! folders, a real FUSE mount, SIGUSR1/SIGKILL, a remount.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use common::{field, fuse_available, is_mounted, pattern, Daemon, Dirs};

/// (1) fsynced data survives a power cut byte for byte; unsynced data does
/// not, and the report counts exactly the unsynced bytes.
#[test]
fn fsynced_file_survives_sigusr1_and_report_counts_unsynced() {
    if !fuse_available("fsynced_file_survives_sigusr1_and_report_counts_unsynced") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start(&dirs);
    let synced = pattern(300_000, 1);
    {
        let mut f = File::create(dirs.m("synced")).expect("create");
        // Many small writes, like a log.
        for chunk in synced.chunks(4096) {
            f.write_all(chunk).expect("write");
        }
        f.sync_all().expect("fsync");
        // Then 123 bytes more that are never fsynced.
        f.write_all(&[7u8; 123]).expect("write");
    }
    fs::write(dirs.m("unsynced"), [9u8; 777]).expect("write unsynced");
    // The mount shows everything; the backing folder only what is synced.
    assert_eq!(fs::metadata(dirs.m("synced")).expect("stat").len(), 300_123);
    assert_eq!(fs::read(dirs.b("synced")).expect("read backing"), synced);
    assert_eq!(fs::metadata(dirs.b("unsynced")).expect("stat").len(), 0);

    let report = d.power_cut(&dirs);
    assert_eq!(field(&report, "files_with_unsynced"), 2, "{report}");
    assert_eq!(field(&report, "unsynced_bytes"), 900, "{report}");
    assert_eq!(field(&report, "fsyncs"), 1, "{report}");
    assert!(field(&report, "writes") >= 75, "{report}");

    let _d = Daemon::start(&dirs);
    assert_eq!(fs::read(dirs.m("synced")).expect("read after"), synced);
    assert_eq!(fs::read(dirs.m("unsynced")).expect("read after"), b"");
}

/// (1) The same with SIGKILL (no report) and fdatasync; the next daemon
/// detaches the dead mount by itself.
#[test]
fn fdatasynced_file_survives_sigkill() {
    if !fuse_available("fdatasynced_file_survives_sigkill") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start(&dirs);
    let data = pattern(70_000, 3);
    {
        let mut f = File::create(dirs.m("wal")).expect("create");
        f.write_all(&data).expect("write");
        f.sync_data().expect("fdatasync");
        f.write_all(b"lost").expect("write");
    }
    d.sigkill();
    // No explicit detach: the new daemon finds the dead mount and detaches it.
    let d = Daemon::start(&dirs);
    assert_eq!(fs::read(dirs.m("wal")).expect("read"), data);
    // And once more through the `unmount` subcommand.
    d.sigkill();
    common::detach(&dirs.mount);
    assert!(!is_mounted(&dirs.mount));
    let _d = Daemon::start(&dirs);
    assert_eq!(fs::read(dirs.m("wal")).expect("read"), data);
}

/// (2) Data written without fsync reads back through the mount, yet a power
/// cut leaves the (already created) file empty.
#[test]
fn unsynced_file_is_readable_then_empty_after_power_cut() {
    if !fuse_available("unsynced_file_is_readable_then_empty_after_power_cut") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start(&dirs);
    let data = pattern(50_000, 5);
    fs::write(dirs.m("f"), &data).expect("write");
    assert_eq!(fs::read(dirs.m("f")).expect("read"), data);
    // Re-open and read at an offset (a fresh handle: no page cache help).
    let f = File::open(dirs.m("f")).expect("open");
    let mut buf = vec![0u8; 1000];
    f.read_exact_at(&mut buf, 20_000).expect("pread");
    assert_eq!(buf, &data[20_000..21_000]);
    drop(f);
    assert!(dirs.b("f").exists(), "creation reaches the backing at once");
    assert_eq!(fs::metadata(dirs.b("f")).expect("stat").len(), 0);

    let report = d.power_cut(&dirs);
    assert_eq!(field(&report, "unsynced_bytes"), 50_000, "{report}");
    let _d = Daemon::start(&dirs);
    assert!(dirs.m("f").exists());
    assert_eq!(fs::read(dirs.m("f")).expect("read"), b"");
}

/// (3) The RocksDB CURRENT pattern: write a temporary file, fsync it, rename
/// it over CURRENT. The new content survives; an unsynced file renamed over
/// it leaves an empty file (the model: the rename is durable, the data not).
#[test]
fn rename_over_current_keeps_synced_content() {
    if !fuse_available("rename_over_current_keeps_synced_content") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start(&dirs);
    let write_synced = |name: &str, data: &[u8]| {
        let mut f = File::create(dirs.m(name)).expect("create");
        f.write_all(data).expect("write");
        f.sync_all().expect("fsync");
    };
    write_synced("CURRENT", b"MANIFEST-000001\n");
    write_synced("CURRENT.dbtmp", b"MANIFEST-000007\n");
    fs::rename(dirs.m("CURRENT.dbtmp"), dirs.m("CURRENT")).expect("rename");
    File::open(&dirs.mount)
        .expect("open dir")
        .sync_all()
        .expect("fsyncdir");
    // An unsynced file renamed elsewhere keeps its pending data with it.
    fs::write(dirs.m("moving"), b"pending").expect("write");
    fs::rename(dirs.m("moving"), dirs.m("moved")).expect("rename");
    assert_eq!(fs::read(dirs.m("moved")).expect("read"), b"pending");
    File::open(dirs.m("moved"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    let report = d.power_cut(&dirs);
    assert_eq!(field(&report, "files_with_unsynced"), 0, "{report}");

    let d = Daemon::start(&dirs);
    assert_eq!(
        fs::read(dirs.m("CURRENT")).expect("read"),
        b"MANIFEST-000007\n"
    );
    assert!(!dirs.m("CURRENT.dbtmp").exists());
    assert_eq!(fs::read(dirs.m("moved")).expect("read"), b"pending");

    // Now without the fsync of the temporary file.
    fs::write(dirs.m("CURRENT.dbtmp"), b"MANIFEST-000009\n").expect("write");
    fs::rename(dirs.m("CURRENT.dbtmp"), dirs.m("CURRENT")).expect("rename");
    assert_eq!(
        fs::read(dirs.m("CURRENT")).expect("read"),
        b"MANIFEST-000009\n"
    );
    let report = d.power_cut(&dirs);
    assert_eq!(field(&report, "files_with_unsynced"), 1, "{report}");
    let _d = Daemon::start(&dirs);
    assert_eq!(fs::read(dirs.m("CURRENT")).expect("read"), b"");
    assert!(!dirs.m("CURRENT.dbtmp").exists());
}

/// (4) An overwrite in the middle of a synced file, not fsynced, is undone.
#[test]
fn unsynced_overwrite_in_the_middle_is_undone() {
    if !fuse_available("unsynced_overwrite_in_the_middle_is_undone") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start(&dirs);
    let original = vec![b'A'; 64 * 1024];
    {
        let mut f = File::create(dirs.m("db")).expect("create");
        f.write_all(&original).expect("write");
        f.sync_all().expect("fsync");
    }
    {
        let mut f = OpenOptions::new()
            .write(true)
            .open(dirs.m("db"))
            .expect("open");
        f.seek(SeekFrom::Start(30_000)).expect("seek");
        f.write_all(&[b'B'; 5000]).expect("write");
    }
    let seen = fs::read(dirs.m("db")).expect("read");
    assert_eq!(seen.len(), original.len());
    assert!(seen[30_000..35_000].iter().all(|b| *b == b'B'));
    assert!(seen[..30_000].iter().all(|b| *b == b'A'));
    assert!(seen[35_000..].iter().all(|b| *b == b'A'));
    let report = d.power_cut(&dirs);
    assert_eq!(field(&report, "unsynced_bytes"), 5000, "{report}");
    let _d = Daemon::start(&dirs);
    assert_eq!(fs::read(dirs.m("db")).expect("read"), original);
}

/// SIGTERM is an orderly shutdown: everything pending is flushed, the mount
/// is gone, the exit status is 0.
#[test]
fn sigterm_flushes_everything_and_unmounts() {
    if !fuse_available("sigterm_flushes_everything_and_unmounts") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start(&dirs);
    fs::create_dir(dirs.m("sub")).expect("mkdir");
    fs::write(dirs.m("sub/a"), b"never fsynced").expect("write");
    fs::write(dirs.m("b"), pattern(10_000, 9)).expect("write");
    let status = d.stop();
    assert!(status.success(), "{status}");
    assert!(!is_mounted(&dirs.mount));
    assert_eq!(fs::read(dirs.b("sub/a")).expect("read"), b"never fsynced");
    assert_eq!(fs::read(dirs.b("b")).expect("read"), pattern(10_000, 9));
}
