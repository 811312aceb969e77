//! Test harness: real master processes on loopback, each with its own free
//! ports, data directory and log file, all under one temporary directory.
//!
//! The same harness can drive a real three-member etcd instead
//! (`FLOTILLA_TEST_TARGET=etcd`, Debian's `/usr/bin/etcd`), so that the
//! expectations of the etcd-compatibility tests can be checked against etcd
//! itself. Every process started here is killed when the `Cluster` (or the
//! `Watcher`, or the one-shot command) is dropped, also when a test fails; a
//! failing test prints the tail of every master's log.
//!
//! Environment:
//! - `FLOTILLA_TEST_TARGET`: `flotilla` (default) or `etcd`.
//! - `FLOTILLA_TEST_ETCD`, `FLOTILLA_TEST_ETCDCTL`: paths of etcd and etcdctl
//!   (default `/usr/bin/etcd`, `/usr/bin/etcdctl`).
//! - `FLOTILLA_TEST_KEEP=1`: keep the temporary directory (logs, data).
//! - `RUST_LOG`: passed to the masters (default `info`).
#![allow(dead_code)]

pub mod hollow;
pub mod procs;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_proto::cluster::cluster_admin_client::ClusterAdminClient;
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::kv_client::KvClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{
    MemberAddRequest, PutRequest, RangeRequest, StatusRequest, StatusResponse,
};
use flotilla_testkit::{etcd_joined_cluster, object_key, Boot, Member, Probe, Statuses};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel, Endpoint};

/// Which server the tests run against.
pub use flotilla_testkit::Target;

/// The target `FLOTILLA_TEST_TARGET` names (`Target::from_env`).
pub fn target() -> Target {
    Target::from_env()
}

/// Prints why a test is skipped and returns true when the target is etcd;
/// for tests of Flotilla-only behaviour. A test that uses only etcd APIs
/// (`portable`) still runs against etcd when
/// `FLOTILLA_TEST_CLUSTER_ON_ETCD=1`, to check the test itself.
pub fn skip_on_etcd(test: &str, portable: bool) -> bool {
    if target() != Target::Etcd {
        return false;
    }
    if portable && std::env::var("FLOTILLA_TEST_CLUSTER_ON_ETCD").is_ok_and(|v| v == "1") {
        println!("{test}: running against etcd (FLOTILLA_TEST_CLUSTER_ON_ETCD=1)");
        return false;
    }
    println!("SKIP {test}: Flotilla-only test (FLOTILLA_TEST_TARGET=etcd)");
    true
}

pub fn flotilla_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flotilla"))
}

/// The `flt` binary, built by the same `cargo build --release` into the same
/// folder as `flotilla` (`cargo build --release -p flt` if missing).
pub fn flt_bin() -> PathBuf {
    let path = flotilla_bin().with_file_name("flt");
    assert!(
        path.exists(),
        "{} is missing: build it first (`cargo build --release -p flt`)",
        path.display()
    );
    path
}

/// A base port for `flotilla up` whose client, ingress (+3, +4), peer
/// and DNS ports are all free (see [`flotilla_testkit::ports`]).
pub fn free_up_base() -> u16 {
    flotilla_testkit::ports::free_block(&[
        0, 1, 2, 3, 4, 10_000, 10_001, 10_002, 20_000, 20_001, 20_002,
    ])
}

pub fn etcd_bin() -> PathBuf {
    std::env::var_os("FLOTILLA_TEST_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(flotilla_testkit::ETCD_BIN))
}

pub fn etcdctl_bin() -> PathBuf {
    let path = std::env::var_os("FLOTILLA_TEST_ETCDCTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/etcdctl"));
    assert!(
        path.exists(),
        "{} is missing: install Debian's etcd-client (scripts/test does)",
        path.display()
    );
    path
}

/// A port on 127.0.0.1 for a server of the test: free, below the
/// kernel's ephemeral range, and given to no other test process running at
/// the same time (see [`flotilla_testkit::ports`]).
pub fn free_port() -> u16 {
    flotilla_testkit::ports::free_port()
}

/// The last key a new Flotilla cluster writes on its own: the last of
/// the default ClusterRoleBindings, after the system namespaces and the
/// default ClusterRoles.
pub fn bootstrap_key() -> String {
    let (_, bindings) = flotilla_objects::rbac::bootstrap_policy();
    let last = bindings.last().map(|b| b.metadata.name.clone());
    object_key("clusterrolebindings", "", &last.unwrap_or_default())
}

/// The revision of a new cluster's store once it has settled: etcd starts at
/// 1; Flotilla's masters then create the system namespaces, the default
/// ClusterRoles and ClusterRoleBindings, and each system namespace's
/// ServiceAccount `default`, one revision each.
pub fn fresh_revision() -> i64 {
    match target() {
        Target::Etcd => 1,
        Target::Flotilla => {
            let (roles, bindings) = flotilla_objects::rbac::bootstrap_policy();
            let namespaces = flotilla_control::api::PROTECTED_NAMESPACES.len();
            (1 + 2 * namespaces + roles.len() + bindings.len()) as i64
        }
    }
}

/// Master flags; the defaults are the contract's, with fast elections.
#[derive(Clone, Debug)]
pub struct Opts {
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// `--snapshot-logs` (etcd: `--snapshot-count`).
    pub snapshot_logs: Option<u64>,
    /// `--auto-compaction-retention` in revisions (etcd: revision mode).
    pub auto_compaction_retention: Option<u64>,
    /// More flags for every master.
    pub extra_args: Vec<String>,
    /// How long `Cluster::start` waits for an elected leader.
    pub ready_timeout: Duration,
    /// The masters' `RUST_LOG`, instead of the test's own (default `info`).
    pub rust_log: Option<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            heartbeat_ms: 100,
            election_ms: 300,
            snapshot_logs: None,
            auto_compaction_retention: None,
            extra_args: Vec::new(),
            ready_timeout: Duration::from_secs(30),
            rust_log: None,
        }
    }
}

pub struct Master {
    pub name: String,
    /// HOST:PORT
    pub client_addr: String,
    /// HOST:PORT
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// Removed from the membership by the test: not expected to serve.
    pub removed: bool,
}

impl Master {
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct Cluster {
    pub target: Target,
    pub opts: Opts,
    pub masters: Vec<Master>,
    dir: Option<tempfile::TempDir>,
    token: String,
}

impl Cluster {
    /// Starts `n` masters forming one cluster and waits for a leader.
    pub async fn start(n: usize, opts: Opts) -> Cluster {
        let target = target();
        let dir = tempfile::Builder::new()
            .prefix("flotilla-test-")
            .tempdir()
            .expect("create tempdir");
        let token = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut cluster = Cluster {
            target,
            opts,
            masters: Vec::new(),
            dir: Some(dir),
            token,
        };
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let peers: Vec<String> = (0..n)
            .map(|_| format!("127.0.0.1:{}", free_port()))
            .collect();
        let founders: Vec<(String, String)> = names.iter().cloned().zip(peers.clone()).collect();
        for (name, peer) in names.iter().zip(&peers) {
            let client = format!("127.0.0.1:{}", free_port());
            cluster.add_process(name, &client, peer, Boot::New(founders.clone()));
        }
        println!(
            "[harness] {:?} cluster of {n} in {}",
            target,
            cluster.dir().display()
        );
        let timeout = cluster.opts.ready_timeout;
        cluster.wait_started(timeout).await;
        if target == Target::Flotilla {
            // The masters create the namespaces and roles every cluster has
            // just after they start: wait for them, so that tests counting
            // revisions start from a quiet store.
            let addr = cluster.client_addr(0);
            let key = bootstrap_key();
            wait_until(
                timeout,
                "the default namespaces and roles exist",
                async || {
                    range_prefix(&addr, &key, true)
                        .await
                        .is_ok_and(|kvs| !kvs.is_empty())
                },
            )
            .await;
            // And the leader's service account controller (unless
            // --controllers leaves it out) has given each of those
            // namespaces its account `default`.
            let all_loops = !cluster
                .opts
                .extra_args
                .iter()
                .any(|a| a.starts_with("--controllers"));
            let namespaces = if all_loops {
                flotilla_control::api::PROTECTED_NAMESPACES
            } else {
                &[]
            };
            for ns in namespaces {
                let key = object_key("serviceaccounts", ns, "default");
                wait_until(timeout, "the default service accounts exist", async || {
                    range_prefix(&addr, &key, true)
                        .await
                        .is_ok_and(|kvs| !kvs.is_empty())
                })
                .await;
            }
        }
        cluster
    }

    /// Like `wait_ready`, but fails at once if a master exits meanwhile.
    pub async fn wait_started(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            self.assert_none_exited();
            if self.ready().await.is_ok() {
                return;
            }
            if start.elapsed() >= timeout {
                let why = self.ready().await.err().unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting until the cluster is ready; last: {why}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Panics if a started master's process has exited.
    pub fn assert_none_exited(&mut self) {
        for m in &mut self.masters {
            if let Some(child) = &mut m.child {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{} exited unexpectedly ({status}); see its log below",
                        m.name
                    );
                }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    fn add_process(&mut self, name: &str, client: &str, peer: &str, boot: Boot) -> usize {
        let data_dir = self.dir().join(format!("{name}.data"));
        let log_path = self.dir().join(format!("{name}.log"));
        let args = self.args_for(name, client, peer, &data_dir, boot);
        self.masters.push(Master {
            name: name.to_string(),
            client_addr: client.to_string(),
            peer_addr: peer.to_string(),
            data_dir,
            log_path,
            args,
            child: None,
            removed: false,
        });
        let i = self.masters.len() - 1;
        self.spawn(i);
        i
    }

    fn args_for(
        &self,
        name: &str,
        client: &str,
        peer: &str,
        data: &Path,
        boot: Boot,
    ) -> Vec<String> {
        let o = &self.opts;
        let mut m = Member::new(name, data, client, peer, boot);
        m.heartbeat_ms = o.heartbeat_ms;
        m.election_ms = o.election_ms;
        m.snapshot_logs = o.snapshot_logs;
        m.auto_compaction_retention = o.auto_compaction_retention;
        m.cluster_token = Some(self.token.clone());
        m.extra_args = o.extra_args.clone();
        m.args(self.target)
    }

    fn program(&self) -> PathBuf {
        match self.target {
            Target::Flotilla => flotilla_bin(),
            Target::Etcd => etcd_bin(),
        }
    }

    fn spawn(&mut self, i: usize) {
        let program = self.program();
        let rust_log =
            self.opts.rust_log.clone().unwrap_or_else(|| {
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_string())
            });
        let m = &mut self.masters[i];
        assert!(m.child.is_none(), "{} is already running", m.name);
        let mut log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .expect("open log file");
        writeln!(
            log,
            "=== [harness] starting {} {}",
            program.display(),
            m.args.join(" ")
        )
        .unwrap();
        let child = Command::new(&program)
            .args(&m.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env("RUST_LOG", rust_log)
            .env("NO_COLOR", "1")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        println!(
            "[harness] started {} pid {} client {} peer {}",
            m.name,
            child.id(),
            m.client_addr,
            m.peer_addr
        );
        m.child = Some(child);
    }

    /// Indexes of the masters whose process runs and that were not removed.
    pub fn live(&mut self) -> Vec<usize> {
        (0..self.masters.len())
            .filter(|&i| !self.masters[i].removed && self.masters[i].is_running())
            .collect()
    }

    /// Indexes of the masters that have a process and were not removed
    /// (without reaping: usable through `&self`).
    pub fn started(&self) -> Vec<usize> {
        (0..self.masters.len())
            .filter(|&i| !self.masters[i].removed && self.masters[i].child.is_some())
            .collect()
    }

    pub fn client_addr(&self, i: usize) -> String {
        self.masters[i].client_addr.clone()
    }

    /// Client addresses of the started masters, comma-separated, as
    /// etcdctl's `--endpoints` wants them.
    pub fn endpoints(&self) -> String {
        self.started()
            .iter()
            .map(|&i| self.masters[i].client_addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// SIGKILL master `i` (no chance to flush or say goodbye).
    pub fn kill(&mut self, i: usize) {
        println!("[harness] SIGKILL {}", self.masters[i].name);
        self.masters[i].kill();
    }

    /// SIGTERM master `i` and wait (up to 15 s) for it to exit.
    pub fn stop(&mut self, i: usize) {
        let m = &mut self.masters[i];
        println!("[harness] SIGTERM {}", m.name);
        if let Some(child) = &mut m.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    m.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            println!("[harness] {} ignored SIGTERM for 15 s; SIGKILL", m.name);
        }
        m.kill();
    }

    /// SIGSTOP master `i`: it keeps its sockets but answers nothing.
    /// SIGSTOP master `i`, and wait until every thread of it has stopped:
    /// the signal is delivered asynchronously, and a master that still runs
    /// for a moment after `kill` returns could answer a request the test
    /// sends next, as if the pause had not happened.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGSTOP);
        if let Some(pid) = self.masters[i].pid() {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !all_threads_stopped(pid) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "master {} did not stop within 5 s of SIGSTOP",
                    self.masters[i].name
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// SIGCONT master `i` after `pause`.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&mut self, i: usize, sig: nix::sys::signal::Signal) {
        let m = &self.masters[i];
        println!("[harness] {sig:?} {}", m.name);
        if let Some(pid) = m.pid() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            nix::sys::signal::kill(pid, sig).expect("signal");
        }
    }

    /// Starts master `i` again, with the same flags and data directory.
    pub fn restart(&mut self, i: usize) {
        println!("[harness] restarting {}", self.masters[i].name);
        self.masters[i].kill();
        self.spawn(i);
    }

    /// Starts a new, empty master that joins the running cluster
    /// (Flotilla: `--join` with the live masters' client addresses; etcd:
    /// MemberAdd, then `--initial-cluster-state existing`). Returns its index.
    /// Does not wait for it to catch up.
    pub async fn add_master(&mut self) -> usize {
        let name = format!("n{}", self.masters.len() + 1);
        let client = format!("127.0.0.1:{}", free_port());
        let peer = format!("127.0.0.1:{}", free_port());
        let boot = match self.target {
            Target::Flotilla => Boot::Join(
                self.started()
                    .iter()
                    .map(|&i| self.masters[i].client_addr.clone())
                    .collect(),
            ),
            Target::Etcd => {
                let leader = self.leader().await;
                let mut c =
                    ClusterClient::new(channel(&self.masters[leader].client_addr).await.unwrap());
                let resp = c
                    .member_add(MemberAddRequest {
                        peer_ur_ls: vec![format!("http://{peer}")],
                        is_learner: false,
                    })
                    .await
                    .expect("etcd MemberAdd")
                    .into_inner();
                let ic = etcd_joined_cluster(&resp.members, &name, &format!("http://{peer}"));
                Boot::Existing(ic)
            }
        };
        self.add_process(&name, &client, &peer, boot)
    }

    /// Marks master `i` as removed from the membership (the test removed it)
    /// and kills its process.
    pub fn forget(&mut self, i: usize) {
        self.masters[i].kill();
        self.masters[i].removed = true;
    }

    /// etcd member id of master `i` (Maintenance.Status header.member_id).
    pub async fn member_id(&self, i: usize) -> anyhow::Result<u64> {
        let s = maintenance_status(&self.masters[i].client_addr).await?;
        Ok(s.header.map(|h| h.member_id).unwrap_or(0))
    }

    /// What the started masters answer to Maintenance.Status (each within
    /// 2 s), with their indexes.
    async fn statuses(&self) -> (Vec<usize>, Statuses) {
        let started = self.started();
        let st = Statuses::probe(&self.client_addrs_of(&started), &status_probe()).await;
        (started, st)
    }

    fn client_addrs_of(&self, masters: &[usize]) -> Vec<&str> {
        masters
            .iter()
            .map(|&i| self.masters[i].client_addr.as_str())
            .collect()
    }

    /// The index of the leader, if the started masters that answer agree on
    /// one that answers and says it is the leader (`flotilla_testkit`'s
    /// definition); else why not.
    pub async fn try_leader(&self) -> Result<usize, String> {
        let (started, st) = self.statuses().await;
        st.leader().map(|l| started[l])
    }

    /// Waits (up to 30 s) for a leader and returns its index.
    pub async fn leader(&self) -> usize {
        wait_for(Duration::from_secs(30), "a leader is elected", async || {
            self.try_leader().await
        })
        .await
    }

    /// Waits until the cluster is ready (`flotilla_testkit::wait_ready`:
    /// every started master answers Status and names the same leader, which
    /// answers).
    pub async fn wait_ready(&self, timeout: Duration) {
        let started = self.started();
        let eps = self.client_addrs_of(&started);
        if let Err(e) = flotilla_testkit::wait_ready(&eps, &status_probe(), timeout).await {
            panic!("waiting until the cluster is ready: {e:#}");
        }
    }

    /// The leader once the cluster is ready (see `wait_ready`); else why
    /// not.
    pub async fn ready(&self) -> Result<usize, String> {
        let (started, st) = self.statuses().await;
        st.ready().map(|l| started[l])
    }

    pub async fn kv(&self, i: usize) -> anyhow::Result<KvClient<Channel>> {
        Ok(KvClient::new(channel(&self.masters[i].client_addr).await?)
            .max_decoding_message_size(64 << 20))
    }

    pub async fn admin(&self, i: usize) -> anyhow::Result<ClusterAdminClient<Channel>> {
        Ok(ClusterAdminClient::new(
            channel(&self.masters[i].client_addr).await?,
        ))
    }

    /// Runs etcdctl against all started masters.
    pub async fn etcdctl(&self, args: &[&str]) -> CmdOut {
        etcdctl_at(&self.endpoints(), args, None, Duration::from_secs(30)).await
    }

    /// Runs etcdctl against all started masters, with `input` on stdin.
    pub async fn etcdctl_stdin(&self, args: &[&str], input: &[u8]) -> CmdOut {
        etcdctl_at(
            &self.endpoints(),
            args,
            Some(input.to_vec()),
            Duration::from_secs(30),
        )
        .await
    }

    /// Prints the last lines of every master's log.
    pub fn dump_logs(&self, lines: usize) {
        for m in &self.masters {
            eprintln!(
                "----- last {lines} lines of {} ({}) -----",
                m.name,
                m.log_path.display()
            );
            eprintln!("{}", tail(&m.log_path, lines));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.masters {
            m.kill();
        }
        if std::thread::panicking() {
            self.dump_logs(60);
        }
        let keep = std::env::var("FLOTILLA_TEST_KEEP").is_ok_and(|v| v == "1");
        if keep {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!("[harness] kept {}", path.display());
            }
        }
    }
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// A gRPC channel to `addr` (HOST:PORT): 1 s to connect, 10 s per request.
pub async fn channel(addr: &str) -> anyhow::Result<Channel> {
    channel_with(addr, None).await
}

/// A channel to `addr`, over TLS when `tls` is given.
pub async fn channel_with(
    addr: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
) -> anyhow::Result<Channel> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(
        tokio::time::timeout(Duration::from_secs(2), endpoint.connect())
            .await
            .map_err(|_| anyhow::anyhow!("connect to {addr} timed out"))??,
    )
}

/// How the harness asks a master for its status: within 2 s.
fn status_probe() -> Probe {
    Probe::new(Duration::from_secs(2))
}

/// Maintenance.Status of one member, within 2 s.
pub async fn maintenance_status(addr: &str) -> anyhow::Result<StatusResponse> {
    let call = async {
        let mut c = MaintenanceClient::new(channel(addr).await?);
        Ok::<_, anyhow::Error>(c.status(StatusRequest {}).await?.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(2), call)
        .await
        .map_err(|_| anyhow::anyhow!("status of {addr} timed out"))?
}

/// Polls `cond` (every 100 ms) until it holds; panics after `timeout`.
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond().await {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `f` (every 100 ms) until it returns Ok; panics after `timeout` with
/// the last error.
pub async fn wait_for<T, E: Display>(
    timeout: Duration,
    what: &str,
    mut f: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let start = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                if start.elapsed() >= timeout {
                    panic!("timed out after {timeout:?} waiting until {what}; last: {e}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub use flotilla_proto::prefix_end;

/// Puts one key through master `addr`; returns the revision of the write.
pub async fn put(addr: &str, key: &str, value: &str) -> anyhow::Result<i64> {
    put_with(addr, None, key, value).await
}

/// [`put`] over TLS when `tls` is given.
pub async fn put_with(
    addr: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
    key: &str,
    value: &str,
) -> anyhow::Result<i64> {
    let mut kv = KvClient::new(channel_with(addr, tls).await?);
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        kv.put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("put {key} via {addr} timed out"))??;
    Ok(resp.into_inner().header.map(|h| h.revision).unwrap_or(0))
}

/// Every key under `prefix` on master `addr`, with its value and mod revision.
pub async fn range_prefix(
    addr: &str,
    prefix: &str,
    serializable: bool,
) -> anyhow::Result<BTreeMap<String, (String, i64)>> {
    let mut kv = KvClient::new(channel(addr).await?).max_decoding_message_size(256 << 20);
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        kv.range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix.as_bytes()),
            serializable,
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("range {prefix} on {addr} timed out"))??;
    Ok(resp
        .into_inner()
        .kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                (
                    String::from_utf8_lossy(&kv.value).into_owned(),
                    kv.mod_revision,
                ),
            )
        })
        .collect())
}

/// Output of a finished command.
#[derive(Debug)]
pub struct CmdOut {
    pub cmd: String,
    /// None when killed by a signal or by the harness's timeout.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOut {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics (showing everything) unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> CmdOut {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panics unless the command failed and its stderr contains `needle`.
    #[track_caller]
    pub fn fails_with(self, needle: &str) -> CmdOut {
        assert!(
            !self.success() && self.code.is_some(),
            "expected failure with {needle:?}, got: {self}"
        );
        assert!(
            self.stderr.contains(needle),
            "expected {needle:?} on stderr, got: {self}"
        );
        self
    }

    /// stdout then stderr.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

impl Display for CmdOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmd, self.code, self.stdout, self.stderr
        )
    }
}

fn etcdctl_command(endpoints: &str, args: &[&str]) -> (tokio::process::Command, String) {
    let mut cmd = tokio::process::Command::new(etcdctl_bin());
    cmd.env("ETCDCTL_API", "3")
        .env_remove("ETCDCTL_ENDPOINTS")
        .env_remove("ETCDCTL_WRITE_OUT")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .kill_on_drop(true);
    let shown = format!("etcdctl --endpoints={endpoints} {}", args.join(" "));
    (cmd, shown)
}

/// Runs etcdctl once (ETCDCTL_API=3), killing it after `timeout`.
pub async fn etcdctl_at(
    endpoints: &str,
    args: &[&str],
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> CmdOut {
    let (mut cmd, shown) = etcdctl_command(endpoints, args);
    run_command(&mut cmd, shown, input, timeout).await
}

/// Runs a command to completion (stdin from `input`, or none), killing it
/// after `timeout`.
pub async fn run_command(
    cmd: &mut tokio::process::Command,
    shown: String,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> CmdOut {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}"));
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let feed = async move {
        if let (Some(mut s), Some(data)) = (stdin.take(), input) {
            let _ = s.write_all(&data).await;
            let _ = s.shutdown().await;
        }
    };
    let read_out = async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    };
    let read_err = async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        buf
    };
    let all = async {
        let ((), out, err, status) = tokio::join!(feed, read_out, read_err, child.wait());
        (out, err, status)
    };
    match tokio::time::timeout(timeout, all).await {
        Ok((out, err, status)) => CmdOut {
            cmd: shown,
            code: status.ok().and_then(|s| s.code()),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        },
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            CmdOut {
                cmd: shown,
                code: None,
                stdout: String::new(),
                stderr: format!("[harness] killed after {timeout:?}"),
            }
        }
    }
}

/// A long-running command (e.g. `etcdctl watch`) whose stdout is read line by
/// line with deadlines. Killed on drop.
pub struct Watcher {
    child: tokio::process::Child,
    shown: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Watcher {
    pub fn etcdctl(endpoints: &str, args: &[&str]) -> Watcher {
        let (mut cmd, shown) = etcdctl_command(endpoints, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{shown}`: {e}"));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err = stderr.clone();
        let mut child_err = child.stderr.take().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = child_err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                err.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Watcher {
            child,
            shown,
            lines: rx,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The next line of stdout, or None if none comes within `timeout` (or
    /// the command ended).
    pub async fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match tokio::time::timeout(timeout, self.lines.recv()).await {
            Ok(Some(line)) => {
                self.seen.push(line.clone());
                Some(line)
            }
            _ => None,
        }
    }

    /// Exactly `n` more lines within `timeout`, or a panic that shows what
    /// came.
    pub async fn lines(&mut self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_line(left).await {
                Some(line) => out.push(line),
                None => panic!(
                    "`{}`: expected {n} lines within {timeout:?}, got {out:?}\nall stdout so far: {:?}\nstderr: {}",
                    self.shown,
                    self.seen,
                    self.stderr()
                ),
            }
        }
        out
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Decodes standard base64 (as etcdctl's JSON output encodes bytes).
pub fn b64(text: &str) -> String {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        if c == b'=' {
            break;
        }
        let v = val(c).unwrap_or_else(|| panic!("not base64: {text:?}"));
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JSON number as u64/i64 (etcdctl prints ids as numbers that overflow
/// i64), or a panic naming the field.
pub fn ju64(v: &serde_json::Value, field: &str) -> u64 {
    v.get(field)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not a u64 in {v}"))
}

pub fn ji64(v: &serde_json::Value, field: &str) -> i64 {
    v.get(field)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or_else(|| panic!("field {field:?} missing or not an i64 in {v}"))
}

/// A JSON integer field that protobuf's JSON leaves out when it is zero.
pub fn ji64_or0(v: &serde_json::Value, field: &str) -> i64 {
    v.get(field)
        .and_then(serde_json::Value::as_i64)
        .unwrap_or(0)
}

/// Whether every thread of `pid` is stopped (state T in /proc), or the
/// process is gone.
pub fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.filter_map(Result::ok).all(|t| {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "tid (comm) S ...": the state follows the last ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "T" || state == "t" || state == "Z" || state == "X")
    })
}
