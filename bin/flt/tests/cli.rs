//! `flt` as a user runs it, without a cluster: help, version, and how it
//! fails when no master answers. (Its behaviour against real masters is
//! tested in bin/flotilla/tests/cluster.rs.)

use std::process::{Command, Output};

fn flt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flt"))
        .args(args)
        .env_remove("FLT_SERVER")
        .output()
        .expect("run flt")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An address on which nothing listens: a port reserved for this process
/// (`flotilla_testkit::ports`), which nothing else binds.
fn dead_addr() -> String {
    format!("127.0.0.1:{}", flotilla_testkit::ports::free_port())
}

#[test]
fn version() {
    let out = flt(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        format!("flt {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_commands() {
    let out = flt(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["cluster", "version", "--server", "FLT_SERVER"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
    let out = flt(&["cluster", "--help"]);
    let help = text(&out.stdout);
    for word in ["status", "add-master", "remove-master"] {
        assert!(help.contains(word), "{word} missing from:\n{help}");
    }
}

#[test]
fn unreachable_server_is_one_error_line_and_exit_1() {
    let dead = dead_addr();
    for args in [
        vec!["--server", dead.as_str(), "cluster", "status"],
        vec!["--server", dead.as_str(), "cluster", "remove-master", "m1"],
        vec![
            "--server",
            dead.as_str(),
            "cluster",
            "add-master",
            "m4",
            "--peer-addr",
            "127.0.0.1:1",
            "--client-addr",
            "127.0.0.1:2",
        ],
    ] {
        let out = flt(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("Error: "), "{args:?}: {err}");
        assert!(err.contains(&dead), "names the server: {err}");
    }
}

#[test]
fn server_from_environment() {
    let dead = dead_addr();
    let out = Command::new(env!("CARGO_BIN_EXE_flt"))
        .args(["cluster", "status"])
        .env("FLT_SERVER", &dead)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&dead));
}

#[test]
fn bad_usage_is_one_error_line_and_exit_1() {
    let out = flt(&["cluster", "add-master", "m4"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("Error: "), "{err}");
}
