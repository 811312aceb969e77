//! What the `flt` process tests share: running the real binary against a
//! cluster's masters, golden files with run-to-run values masked, and the
//! one-line error check.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use regex::Regex;

/// The lines a spawned flt prints.
pub type StdoutLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

pub struct Flt {
    pub servers: String,
    pub home: PathBuf,
}

impl Flt {
    pub async fn run_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        input: Option<&str>,
    ) -> CmdOut {
        self.exec(args, env, input, true).await
    }

    /// flt with only its config file (~/.flt/config) to say where the
    /// masters are: no FLT_SERVER.
    pub async fn by_config(&self, args: &[&str]) -> CmdOut {
        self.exec(args, &[], None, false).await
    }

    async fn exec(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        input: Option<&str>,
        server: bool,
    ) -> CmdOut {
        let mut cmd = tokio::process::Command::new(flt_bin());
        cmd.args(args)
            .env("HOME", &self.home)
            .env_remove("FLT_CONFIG")
            .current_dir(repo_root());
        if server {
            cmd.env("FLT_SERVER", &self.servers);
        } else {
            cmd.env_remove("FLT_SERVER");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_command(
            &mut cmd,
            format!("flt {}", args.join(" ")),
            input.map(|s| s.as_bytes().to_vec()),
            Duration::from_secs(60),
        )
        .await
    }

    /// Start a long-running flt (`get -w`): the child (killed when dropped)
    /// and its standard output's lines.
    pub fn spawn(&self, args: &[&str]) -> (tokio::process::Child, StdoutLines) {
        let mut cmd = tokio::process::Command::new(flt_bin());
        cmd.args(args)
            .env("FLT_SERVER", &self.servers)
            .env("HOME", &self.home)
            .env_remove("FLT_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("flt {}: {e}", args.join(" ")));
        let stdout = child.stdout.take().expect("stdout");
        let lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        (child, lines)
    }

    /// The standard output of a flt that must succeed.
    pub async fn out(&self, args: &[&str]) -> String {
        self.run(args).await.ok().stdout
    }

    pub async fn run(&self, args: &[&str]) -> CmdOut {
        self.run_env(args, &[], None).await
    }

    pub async fn stdin(&self, args: &[&str], input: &str) -> CmdOut {
        self.run_env(args, &[], Some(input)).await
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Mask what differs from run to run: uids, times, cluster IPs and
/// revisions; with `ages`, also table ages, and then (as masked cells change
/// column widths) runs of 3+ spaces inside lines become exactly 3, so that
/// such tables are compared on content and order (their alignment is tested
/// exactly by flt's printer tests).
pub fn mask_with(s: &str, ages: bool) -> String {
    let rules = [
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "<uid>",
        ),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", "<time>"),
        (
            r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000",
            "<time>",
        ),
        (r"10\.(9[6-9]|1[01][0-9])\.\d{1,3}\.\d{1,3}", "<ip>"),
        (r"resourceVersion: '\d+'", "resourceVersion: '<rv>'"),
        (
            r#""resourceVersion": "\d+""#,
            r#""resourceVersion": "<rv>""#,
        ),
    ];
    let age_rules = [
        // AGE cells: "0s", "12s", "2m5s", ending a row or a column.
        (r"(?m)\b(\d+[smhdy])+( {3,}|$)", "<age>$2"),
        (r"(\S) {3,}", "$1   "),
    ];
    let mut out = s.to_string();
    let extra: &[(&str, &str)] = if ages { &age_rules } else { &[] };
    for (re, rep) in rules.iter().chain(extra) {
        out = Regex::new(re)
            .expect("mask regex")
            .replace_all(&out, *rep)
            .into_owned();
    }
    out
}

pub fn mask(s: &str) -> String {
    mask_with(s, true)
}

/// Compare with tests/golden/NAME.txt; tables with ages are masked (see
/// [`mask_with`]), other output must match to the space.
#[track_caller]
pub fn golden(name: &str, actual: &str) {
    let ages = !matches!(
        name,
        "api_resources" | "get_deploy_yaml" | "apply_examples" | "apply_examples_again"
    );
    golden_with(name, actual, ages)
}

#[track_caller]
pub fn golden_with(name: &str, actual: &str, ages: bool) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.txt"));
    let actual = mask_with(actual, ages);
    if std::env::var_os("FLT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).expect("write golden file");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with FLT_UPDATE_GOLDEN=1 to create it)",
            path.display()
        )
    });
    assert_eq!(actual, want, "output differs from {}", path.display());
}

/// One error line on stderr, exit code 1, nothing on stdout.
#[track_caller]
pub fn one_error(out: &CmdOut, want: &str) {
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(out.stderr, format!("Error: {want}\n"), "{out}");
}

pub async fn cluster() -> (Cluster, Flt, tempfile::TempDir) {
    cluster_with(Opts::default()).await
}

/// A cluster whose masters run only the garbage collector of the
/// controllers: for tests that write workloads by hand and race nobody.
pub async fn cluster_without_workload_controllers() -> (Cluster, Flt, tempfile::TempDir) {
    cluster_with(Opts {
        extra_args: vec!["--controllers=garbage-collector".into()],
        ..Opts::default()
    })
    .await
}

pub async fn cluster_with(opts: Opts) -> (Cluster, Flt, tempfile::TempDir) {
    let c = Cluster::start(3, opts).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let home = tempfile::tempdir().expect("home dir");
    let flt = Flt {
        servers: c.endpoints(),
        home: home.path().to_path_buf(),
    };
    // The namespaces every cluster has are made by the masters just after
    // they start.
    wait_until(
        Duration::from_secs(20),
        "the default namespace exists",
        async || flt.run(&["get", "ns", "default"]).await.success(),
    )
    .await;
    (c, flt, home)
}
