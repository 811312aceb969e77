//! The store as `flotilla master` opens it: data written in a format this
//! release does not know is refused, and a new data folder is made durable.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn flotilla_master_refuses_data_written_in_a_format_it_does_not_know() {
    if skip_on_etcd("format refusal", false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    flotilla_raftstore::format::mark_data_dir(
        dir.path(),
        flotilla_raftstore::format::FORMAT_VERSION + 1,
    )
    .expect("mark");
    let peer = format!("127.0.0.1:{}", free_port());
    let client = format!("127.0.0.1:{}", free_port());
    let data_dir = dir.path().display().to_string();
    let args = [
        "master",
        "--name",
        "n1",
        "--data-dir",
        &data_dir,
        "--client-addr",
        &client,
        "--peer-addr",
        &peer,
        "--initial-cluster",
        &format!("n1={peer}"),
    ];
    let mut cmd = tokio::process::Command::new(flotilla_bin());
    cmd.args(args);
    let out = run_command(
        &mut cmd,
        "flotilla master".into(),
        None,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(out.code, Some(1), "{out}");
    let want = format!(
        "written in format {}",
        flotilla_raftstore::format::FORMAT_VERSION + 1
    );
    assert!(
        out.stderr.contains(&want) && out.stderr.contains("needs a newer Flotilla"),
        "{out}"
    );
}

/// `(pid, fd)` of each open of `path` in an strace log, and whether that
/// process then fsynced that descriptor.
fn opened_then_fsynced(trace: &str, path: &str) -> bool {
    let open = format!("openat(AT_FDCWD, \"{path}\", ");
    let lines: Vec<&str> = trace.lines().collect();
    lines.iter().enumerate().any(|(i, line)| {
        let Some((pid, rest)) = line.split_once(' ') else {
            return false;
        };
        if !rest.trim_start().starts_with(&open) {
            return false;
        }
        let Some(fd) = rest.rsplit("= ").next().map(str::trim) else {
            return false;
        };
        let fsync = format!("fsync({fd})");
        lines[i + 1..].iter().any(|l| {
            l.split_once(' ')
                .is_some_and(|(p, r)| p == pid && r.trim_start().starts_with(&fsync))
        })
    })
}

#[tokio::test]
async fn a_new_data_folder_and_its_parent_are_fsynced_at_first_start() {
    if skip_on_etcd("data folder fsync", false) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let trace = dir.path().join("trace");
    let peer = format!("127.0.0.1:{}", free_port());
    let client = format!("127.0.0.1:{}", free_port());
    let child = tokio::process::Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,fsync", "-o"])
        .arg(&trace)
        .arg(flotilla_bin())
        .args(["master", "--name", "n1", "--data-dir"])
        .arg(&data)
        .args(["--client-addr", &client, "--peer-addr", &peer])
        .args(["--initial-cluster", &format!("n1={peer}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("run flotilla master under strace (Debian's strace)");
    // Killing strace would leave the master it traces running: the whole
    // process group goes, even if the test fails.
    let _group = KillGroup(child.id().expect("strace's pid") as i32);
    let (data_s, parent_s) = (data.display().to_string(), dir.path().display().to_string());
    wait_until(
        Duration::from_secs(30),
        "the data folder and its parent are fsynced",
        async || {
            let t = std::fs::read_to_string(&trace).unwrap_or_default();
            opened_then_fsynced(&t, &data_s) && opened_then_fsynced(&t, &parent_s)
        },
    )
    .await;
}

/// Kills a process group when dropped.
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
    }
}
