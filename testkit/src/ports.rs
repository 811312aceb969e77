//! Ports for the servers a test starts, unique across the test processes
//! that run at once.
//!
//! A port that `bind(127.0.0.1:0)` hands out comes from the kernel's
//! ephemeral range, the range it also takes the local ports of outgoing
//! connections from. Between the test's probe and its server's bind,
//! another process's connection could take the port, and the server then
//! failed with "Address already in use" (twice in one CI run). Ports here
//! come from below that range, so no outgoing connection takes one. Each is
//! reserved for the process that asked by a file in a shared folder, which
//! names the process: another test process skips it while that process
//! lives, and the kernel's own bind check runs as well.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The lowest port handed out.
const LOW: u16 = 10_000;

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn folder() -> PathBuf {
    std::env::temp_dir().join("flotilla-test-ports")
}

/// Whether the process that wrote a reservation is gone. A file without a
/// pid is being written, unless it is older than a few seconds (its
/// writer died between creating it and writing to it).
fn stale(path: &Path) -> bool {
    match std::fs::read_to_string(path) {
        Ok(s) => match s.trim().parse::<u32>() {
            Ok(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => std::fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(10)),
        },
        Err(_) => false,
    }
}

/// Reserve `port` for this process; false if a live process holds it.
fn reserve(port: u16) -> bool {
    let dir = folder();
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(port.to_string());
    for _ in 0..2 {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => return writeln!(f, "{}", std::process::id()).is_ok(),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !stale(&path) {
                    return false;
                }
                let _ = std::fs::remove_file(&path);
            }
            Err(_) => return false,
        }
    }
    false
}

fn release(port: u16) {
    let _ = std::fs::remove_file(folder().join(port.to_string()));
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Where a search of `span` candidates starts: differs between processes
/// and calls.
fn start(span: u32) -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id().wrapping_mul(7919) ^ nanos) % span.max(1)
}

/// A port on 127.0.0.1 that is free, below the ephemeral range, and given
/// to no other test process while this one lives (nor twice to this one).
pub fn free_port() -> u16 {
    free_block(&[0])
}

/// A base port such that `base + d` is free and reserved as by
/// [`free_port`] for every `d` of `offsets` (a server that listens on
/// several ports from one base, as `flotilla up` does).
pub fn free_block(offsets: &[u16]) -> u16 {
    let top = offsets.iter().copied().max().unwrap_or(0);
    let end = ephemeral_start().saturating_sub(top);
    assert!(
        end > LOW,
        "no room below the ephemeral ports for offsets up to {top}"
    );
    let span = u32::from(end - LOW);
    let first = start(span);
    for i in 0..span {
        let base = LOW + ((first + i) % span) as u16;
        let mut taken = Vec::new();
        let ok = offsets.iter().all(|d| {
            let port = base + d;
            let mine = reserve(port);
            if mine {
                taken.push(port);
            }
            mine && bindable(port)
        });
        if ok {
            return base;
        }
        for p in taken {
            release(p);
        }
    }
    panic!("no free port block below {}", end + top);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_reserved_and_never_given_twice() {
        let eph = ephemeral_start();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let p = free_port();
            assert!((LOW..eph).contains(&p), "{p}");
            assert!(seen.insert(p), "{p} given twice");
            let held = std::fs::read_to_string(folder().join(p.to_string())).expect("reserved");
            assert_eq!(held.trim(), std::process::id().to_string());
        }
        let base = free_block(&[0, 3, 20_002]);
        assert!(u32::from(base) + 20_002 < u32::from(eph));
        for d in [0, 3, 20_002] {
            assert!(!seen.contains(&(base + d)));
        }
    }

    #[test]
    fn a_reservation_of_a_process_that_is_gone_is_taken_over() {
        let p = free_port();
        // A pid no process has: Linux's pid_max is at most 2^22.
        std::fs::write(folder().join(p.to_string()), "4294967\n").expect("write");
        assert!(reserve(p), "a dead process's reservation was kept");
        assert!(!reserve(p), "a live process's reservation was taken");
    }

    #[test]
    fn an_empty_reservation_is_kept_while_fresh_and_taken_over_once_old() {
        let p = free_port();
        let path = folder().join(p.to_string());
        std::fs::write(&path, "").expect("write");
        assert!(!reserve(p), "a reservation being written was taken");
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(old))
            .expect("age the file");
        assert!(reserve(p), "an abandoned empty reservation was kept");
    }
}
