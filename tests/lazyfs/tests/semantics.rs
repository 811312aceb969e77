//! File semantics through the mount: sizes, appends, unlink and rename of
//! files with pending data, hard links, mmap, metadata, fallocate.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::time::Instant;

use common::{field, fuse_available, pattern, Daemon, Dirs};

fn write_synced(path: &std::path::Path, data: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

/// A shrink then re-extension reads zeros, not the old backing bytes; the
/// fsync applies exactly that; an unsynced truncate (also O_TRUNC) is undone
/// by a power cut.
#[test]
fn truncate_is_pending_and_shrink_then_extend_reads_zeros() {
    if !fuse_available("truncate_is_pending_and_shrink_then_extend_reads_zeros") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start_uncached(&dirs);
    write_synced(&dirs.m("t"), &[b'A'; 100]);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dirs.m("t"))
        .expect("open");
    f.set_len(10).expect("shrink");
    f.set_len(50).expect("extend");
    let mut expect = vec![b'A'; 10];
    expect.resize(50, 0);
    assert_eq!(fs::read(dirs.m("t")).expect("read"), expect);
    assert_eq!(fs::read(dirs.b("t")).expect("backing"), vec![b'A'; 100]);
    f.sync_all().expect("fsync");
    assert_eq!(fs::read(dirs.b("t")).expect("backing"), expect);
    drop(f);

    write_synced(&dirs.m("u"), b"keep me");
    OpenOptions::new()
        .write(true)
        .open(dirs.m("u"))
        .expect("open")
        .set_len(2)
        .expect("truncate");
    fs::write(dirs.m("v"), b"").expect("create v");
    write_synced(&dirs.m("w"), b"whole file");
    File::create(dirs.m("w")).expect("O_TRUNC"); // truncates, never fsynced
    assert_eq!(fs::metadata(dirs.m("w")).expect("stat").len(), 0);
    let report = d.power_cut(&dirs);
    assert_eq!(field(&report, "files_with_unsynced"), 2, "{report}");
    let _d = Daemon::start(&dirs);
    assert_eq!(fs::read(dirs.m("u")).expect("read"), b"keep me");
    assert_eq!(fs::read(dirs.m("w")).expect("read"), b"whole file");
    assert_eq!(fs::read(dirs.m("t")).expect("read"), expect);
}

/// Writes on an O_APPEND handle land at the logical end, pending data
/// included.
#[test]
fn o_append_writes_at_the_logical_end() {
    if !fuse_available("o_append_writes_at_the_logical_end") {
        return;
    }
    let dirs = Dirs::new();
    let _d = Daemon::start(&dirs);
    write_synced(&dirs.m("log"), b"synced;");
    fs::OpenOptions::new()
        .write(true)
        .open(dirs.m("log"))
        .expect("open")
        .write_all_at(b"X", 3)
        .expect("pwrite");
    let mut a = OpenOptions::new()
        .append(true)
        .open(dirs.m("log"))
        .expect("open append");
    let mut b = OpenOptions::new()
        .append(true)
        .open(dirs.m("log"))
        .expect("open append");
    a.write_all(b"one;").expect("append");
    b.write_all(b"two;").expect("append");
    a.write_all(b"three;").expect("append");
    a.sync_data().expect("fdatasync");
    assert_eq!(
        fs::read(dirs.b("log")).expect("backing"),
        b"synXed;one;two;three;"
    );
}

/// An unlinked file that is still open reads its pending data; once closed,
/// the pending data is dropped. A rename over a file drops the replaced
/// file's pending data.
#[test]
fn unlink_and_rename_drop_pending_data_of_gone_files() {
    if !fuse_available("unlink_and_rename_drop_pending_data_of_gone_files") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start_uncached(&dirs);
    let data = pattern(20_000, 11);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dirs.m("doomed"))
        .expect("create");
    f.write_all(&data).expect("write");
    fs::remove_file(dirs.m("doomed")).expect("unlink");
    assert!(
        !dirs.b("doomed").exists(),
        "unlink reaches the backing at once"
    );
    let mut buf = vec![0u8; data.len()];
    f.read_exact_at(&mut buf, 0).expect("read unlinked");
    assert_eq!(buf, data);
    drop(f);

    // Closed first, then unlinked: dropped by the unlink itself.
    fs::write(dirs.m("closed"), pattern(5000, 1)).expect("write");
    fs::remove_file(dirs.m("closed")).expect("unlink");

    fs::write(dirs.m("old"), b"old pending data").expect("write");
    fs::write(dirs.m("new"), b"new").expect("write");
    fs::rename(dirs.m("new"), dirs.m("old")).expect("rename");
    assert_eq!(fs::read(dirs.m("old")).expect("read"), b"new");
    let report = d.power_cut(&dirs);
    // Only "new" (now "old") has pending data left: 3 bytes.
    assert_eq!(field(&report, "files_with_unsynced"), 1, "{report}");
    assert_eq!(field(&report, "unsynced_bytes"), 3, "{report}");
}

/// Both names of a hard link share the inode's pending data; an fsync
/// through either name makes it durable under both.
#[test]
fn hard_links_share_pending_data() {
    if !fuse_available("hard_links_share_pending_data") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start_uncached(&dirs);
    fs::write(dirs.m("a"), b"shared pending").expect("write");
    fs::hard_link(dirs.m("a"), dirs.m("b")).expect("link");
    assert_eq!(fs::read(dirs.m("b")).expect("read"), b"shared pending");
    assert_eq!(fs::metadata(dirs.m("a")).expect("stat").nlink(), 2);
    assert_eq!(
        fs::metadata(dirs.m("a")).expect("stat").ino(),
        fs::metadata(dirs.m("b")).expect("stat").ino()
    );
    File::open(dirs.m("b"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    assert_eq!(fs::read(dirs.b("a")).expect("backing"), b"shared pending");
    // A hard link of a synced file (a RocksDB checkpoint), then the
    // original removed: the link keeps the data.
    write_synced(&dirs.m("000012.sst"), &pattern(9000, 2));
    fs::create_dir(dirs.m("checkpoint")).expect("mkdir");
    fs::hard_link(dirs.m("000012.sst"), dirs.m("checkpoint/000012.sst")).expect("link");
    fs::remove_file(dirs.m("000012.sst")).expect("unlink");
    d.power_cut(&dirs);
    let _d = Daemon::start(&dirs);
    assert_eq!(fs::read(dirs.m("a")).expect("read"), b"shared pending");
    assert_eq!(fs::read(dirs.m("b")).expect("read"), b"shared pending");
    assert_eq!(
        fs::read(dirs.m("checkpoint/000012.sst")).expect("read"),
        pattern(9000, 2)
    );
}

/// A shared read-only mmap (what bbolt does) sees data written and not yet
/// fsynced.
#[test]
fn mmap_read_sees_unsynced_data() {
    if !fuse_available("mmap_read_sees_unsynced_data") {
        return;
    }
    let dirs = Dirs::new();
    let _d = Daemon::start(&dirs);
    let data = pattern(3 * 4096 + 100, 4);
    let mut w = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dirs.m("db"))
        .expect("create");
    w.write_all(&data).expect("write");
    let r = File::open(dirs.m("db")).expect("open");
    // SAFETY: a fresh read-only shared mapping of a file we keep open; it
    // is unmapped before the file closes.
    let seen = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            data.len(),
            libc::PROT_READ,
            libc::MAP_SHARED,
            r.as_raw_fd(),
            0,
        );
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        let seen = std::slice::from_raw_parts(p as *const u8, data.len()).to_vec();
        libc::munmap(p, data.len());
        seen
    };
    assert_eq!(seen, data);
    assert_eq!(fs::metadata(dirs.b("db")).expect("stat").len(), 0);
}

/// Metadata operations reach the backing folder at once.
#[test]
fn metadata_reaches_the_backing_at_once() {
    if !fuse_available("metadata_reaches_the_backing_at_once") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start_uncached(&dirs);
    fs::create_dir_all(dirs.m("x/y")).expect("mkdir");
    assert!(dirs.b("x/y").is_dir());
    std::os::unix::fs::symlink("../target", dirs.m("x/link")).expect("symlink");
    assert_eq!(
        fs::read_link(dirs.m("x/link")).expect("readlink"),
        std::path::Path::new("../target")
    );
    assert_eq!(
        fs::read_link(dirs.b("x/link")).expect("readlink backing"),
        std::path::Path::new("../target")
    );
    fs::write(dirs.m("x/f"), b"data").expect("write");
    fs::set_permissions(dirs.m("x/f"), fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(
        fs::metadata(dirs.b("x/f"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    let mut names: Vec<String> = fs::read_dir(dirs.m("x"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["f", "link", "y"]);
    fs::remove_dir(dirs.m("x/y")).expect("rmdir");
    assert!(!dirs.b("x/y").exists());
    let err = fs::remove_dir(dirs.m("x")).expect_err("rmdir non-empty");
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    // Directory fsync works (fsyncdir).
    File::open(dirs.m("x"))
        .expect("open dir")
        .sync_all()
        .expect("fsyncdir");
    // statfs answers with the backing filesystem's numbers.
    let mut buf = vec![0u8; 4];
    File::open(dirs.m("x/f"))
        .expect("open")
        .read_exact(&mut buf)
        .expect("read");
    d.power_cut(&dirs);
    let _d = Daemon::start(&dirs);
    assert!(dirs.m("x/link").symlink_metadata().is_ok());
    assert_eq!(
        fs::metadata(dirs.m("x/f"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    // The file exists (metadata) but its data was never fsynced.
    assert_eq!(fs::metadata(dirs.m("x/f")).expect("stat").len(), 0);
}

/// fallocate: mode 0 grows the size (pending), KEEP_SIZE changes nothing,
/// PUNCH_HOLE reads as zeros.
#[test]
fn fallocate_modes() {
    if !fuse_available("fallocate_modes") {
        return;
    }
    let dirs = Dirs::new();
    let _d = Daemon::start(&dirs);
    write_synced(&dirs.m("f"), &[b'x'; 8192]);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dirs.m("f"))
        .expect("open");
    let fd = f.as_raw_fd();
    // SAFETY: fallocate on an open descriptor.
    let rc = unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(fs::metadata(dirs.m("f")).expect("stat").len(), 8192);
    // SAFETY: as above.
    let rc = unsafe { libc::fallocate(fd, 0, 4096, 8192) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    assert_eq!(fs::metadata(dirs.m("f")).expect("stat").len(), 12288);
    // SAFETY: as above.
    let rc = unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            100,
            200,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    let mut expect = vec![b'x'; 8192];
    expect[100..300].fill(0);
    expect.resize(12288, 0);
    assert_eq!(fs::read(dirs.m("f")).expect("read"), expect);
    assert_eq!(fs::read(dirs.b("f")).expect("backing"), vec![b'x'; 8192]);
    f.sync_all().expect("fsync");
    assert_eq!(fs::read(dirs.b("f")).expect("backing"), expect);
}

/// Many small appends with periodic fsyncs, as a WAL does, run at a useful
/// rate (a loose bound: this is a smoke test of the append path).
#[test]
fn many_small_appends_with_periodic_fdatasync_all_land() {
    if !fuse_available("many_small_appends_with_periodic_fdatasync_all_land") {
        return;
    }
    let dirs = Dirs::new();
    let _d = Daemon::start(&dirs);
    let record = [b'r'; 100];
    let mut f = File::create(dirs.m("wal")).expect("create");
    let start = Instant::now();
    let n = 20_000;
    for i in 0..n {
        f.write_all(&record).expect("append");
        if i % 100 == 99 {
            f.sync_data().expect("fdatasync");
        }
    }
    let took = start.elapsed();
    println!(
        "{n} appends of 100 bytes (+{} fdatasyncs) in {took:?}",
        n / 100
    );
    assert_eq!(fs::metadata(dirs.b("wal")).expect("stat").len(), 100 * n);
}

/// The kernel may forget an inode (evict it from its caches) while the file
/// still has pending data; the data must survive that. `drop_caches` makes
/// the kernel forget every unused inode now.
#[test]
fn pending_data_survives_the_kernel_forgetting_the_inode() {
    if !fuse_available("pending_data_survives_the_kernel_forgetting_the_inode") {
        return;
    }
    let dirs = Dirs::new();
    let d = Daemon::start_uncached(&dirs);
    let data = pattern(10_000, 8);
    fs::write(dirs.m("kept"), &data).expect("write");
    fs::write(dirs.m("synced"), b"s").expect("write");
    File::open(dirs.m("synced"))
        .expect("open")
        .sync_all()
        .expect("fsync");
    // Drop the kernel's unused dentries and inodes (not the page cache).
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "2") {
        println!("SKIP pending_data_survives_the_kernel_forgetting_the_inode: drop_caches: {e}");
        return;
    }
    common::wait_until("the kernel to forget the inode with pending data", || {
        d.log_text()
            .lines()
            .any(|l| l.contains("the kernel forgot the inode") && l.contains("pending=true"))
    });
    assert_eq!(fs::read(dirs.m("kept")).expect("read"), data);
    assert_eq!(fs::read(dirs.m("synced")).expect("read"), b"s");
    let report = d.power_cut(&dirs);
    assert_eq!(field(&report, "unsynced_bytes"), 10_000, "{report}");
}
