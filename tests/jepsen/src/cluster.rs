//! The masters of one run: real `flotilla master` (or etcd) processes, each
//! started with `ip netns exec` in its own namespace, listening on its own
//! address. Also the network faults (iptables inside the masters'
//! namespaces).
//!
//! This runs inside the clients' namespace; the masters are put in their own
//! process groups so that a Ctrl-C reaches the harness, which then kills
//! them (SIGKILL on drop).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flotilla_proto::cluster::cluster_admin_client::ClusterAdminClient;
use flotilla_proto::cluster::RemoveMasterRequest;
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use flotilla_proto::etcdserverpb::{
    MemberAddRequest, MemberListRequest, MemberRemoveRequest, StatusRequest,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::netns::NetSpec;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// Which server the run tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// `flotilla master` processes.
    Flotilla,
    /// A three- (or five-) member etcd (Debian's /usr/bin/etcd), for comparison.
    Etcd,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Target::Flotilla => "flotilla",
            Target::Etcd => "etcd",
        })
    }
}

/// Flags shared by every master of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ClusterOpts {
    pub target: Target,
    pub flotilla_bin: PathBuf,
    pub etcd_bin: PathBuf,
    pub heartbeat_ms: u64,
    pub election_ms: u64,
    /// `--snapshot-logs` (etcd: `--snapshot-count`).
    pub snapshot_logs: u64,
    /// libfaketime, preloaded into every master (Flotilla only) so that the
    /// clock nemesis can move its wall clock; `None`: real clocks.
    #[serde(default)]
    pub fake_clock: Option<PathBuf>,
}

/// Where Debian's `faketime` package puts the multi-threaded libfaketime.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

#[derive(Clone, Debug)]
enum Boot {
    /// Founding member.
    Initial,
    /// Flotilla: `--join` these client addresses; etcd: this
    /// `--initial-cluster` with `--initial-cluster-state existing`.
    Join(String),
}

pub struct Node {
    pub name: String,
    pub ns: String,
    pub ip: String,
    pub client_addr: String,
    pub peer_addr: String,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    /// libfaketime's spec for this master's wall clock (`+0`, `-300s`...),
    /// read again by the master at most once a second.
    pub clock_file: PathBuf,
    /// The wall-clock offset last written to `clock_file`, in seconds.
    pub clock_offset: i64,
    boot: Boot,
    child: Option<Child>,
    pub paused: bool,
    /// Removed from the membership (by the member nemesis) and not running.
    pub removed: bool,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct Cluster {
    pub opts: ClusterOpts,
    pub nodes: Vec<Node>,
    token: String,
}

/// A gRPC channel to `addr`, connecting within `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> Result<Channel> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(timeout)
        .timeout(timeout);
    Ok(tokio::time::timeout(timeout, ep.connect())
        .await
        .map_err(|_| anyhow::anyhow!("connect to {addr}: timed out"))??)
}

/// (member id, leader id) as `addr` reports it, within `timeout`.
pub async fn member_status(addr: &str, timeout: Duration) -> Result<(u64, u64)> {
    let call = async {
        let mut c = MaintenanceClient::new(connect(addr, timeout).await?);
        let s = c.status(StatusRequest {}).await?.into_inner();
        Ok::<_, anyhow::Error>((s.header.map(|h| h.member_id).unwrap_or(0), s.leader))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| anyhow::anyhow!("status of {addr}: timed out"))?
}

impl Cluster {
    pub fn new(opts: ClusterOpts, net: &NetSpec, data_root: &Path, log_dir: &Path) -> Cluster {
        let nodes = net
            .hosts
            .iter()
            .map(|h| Node {
                name: h.name.clone(),
                ns: h.ns.clone(),
                ip: h.ip.clone(),
                client_addr: format!("{}:{CLIENT_PORT}", h.ip),
                peer_addr: format!("{}:{PEER_PORT}", h.ip),
                data_dir: data_root.join(&h.name),
                log_path: log_dir.join(format!("{}.log", h.name)),
                clock_file: log_dir.join(format!("{}.clock", h.name)),
                clock_offset: 0,
                boot: Boot::Initial,
                child: None,
                paused: false,
                removed: false,
            })
            .collect();
        Cluster {
            opts,
            nodes,
            token: format!("jepsen-{}", net.prefix),
        }
    }

    fn initial_cluster(&self) -> String {
        self.nodes
            .iter()
            .map(|n| match self.opts.target {
                Target::Flotilla => format!("{}={}", n.name, n.peer_addr),
                Target::Etcd => format!("{}=http://{}", n.name, n.peer_addr),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    fn args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let o = &self.opts;
        let data = n.data_dir.to_string_lossy().into_owned();
        let mut a: Vec<String> = Vec::new();
        match o.target {
            Target::Flotilla => {
                a.extend(
                    [
                        "master",
                        "--name",
                        &n.name,
                        "--data-dir",
                        &data,
                        "--client-addr",
                        &n.client_addr,
                        "--peer-addr",
                        &n.peer_addr,
                        "--heartbeat-interval-ms",
                        &o.heartbeat_ms.to_string(),
                        "--election-timeout-ms",
                        &o.election_ms.to_string(),
                        "--snapshot-logs",
                        &o.snapshot_logs.to_string(),
                        // Keep every revision: watchers resume from old ones.
                        "--auto-compaction-retention",
                        "0",
                        // The masters sit on the test's own sealed bridge.
                        "--insecure-allow-plaintext",
                    ]
                    .map(String::from),
                );
                match &n.boot {
                    Boot::Initial => {
                        a.push("--initial-cluster".into());
                        a.push(self.initial_cluster());
                    }
                    Boot::Join(addrs) => {
                        a.push("--join".into());
                        a.push(addrs.clone());
                    }
                }
            }
            Target::Etcd => {
                let client_url = format!("http://{}", n.client_addr);
                let peer_url = format!("http://{}", n.peer_addr);
                a.extend(
                    [
                        "--name",
                        &n.name,
                        "--data-dir",
                        &data,
                        "--listen-client-urls",
                        &client_url,
                        "--advertise-client-urls",
                        &client_url,
                        "--listen-peer-urls",
                        &peer_url,
                        "--initial-advertise-peer-urls",
                        &peer_url,
                        "--initial-cluster-token",
                        &self.token,
                        "--heartbeat-interval",
                        &o.heartbeat_ms.to_string(),
                        "--election-timeout",
                        // etcd refuses an election timeout under five
                        // heartbeats (Flotilla's default 100/300 would not start).
                        &o.election_ms.max(5 * o.heartbeat_ms).to_string(),
                        "--snapshot-count",
                        &o.snapshot_logs.to_string(),
                        "--logger",
                        "zap",
                        "--log-outputs",
                        "stderr",
                    ]
                    .map(String::from),
                );
                let (ic, state) = match &n.boot {
                    Boot::Initial => (self.initial_cluster(), "new"),
                    Boot::Join(ic) => (ic.clone(), "existing"),
                };
                a.extend(
                    ["--initial-cluster", &ic, "--initial-cluster-state", state].map(String::from),
                );
            }
        }
        a
    }

    fn program(&self) -> &Path {
        match self.opts.target {
            Target::Flotilla => &self.opts.flotilla_bin,
            Target::Etcd => &self.opts.etcd_bin,
        }
    }

    /// Starts master `i` in its namespace (with its current data directory).
    pub fn spawn(&mut self, i: usize) -> Result<()> {
        let args = self.args(i);
        let program = self.program().to_path_buf();
        let n = &mut self.nodes[i];
        if n.child.is_some() {
            bail!("{} is already running", n.name);
        }
        std::fs::create_dir_all(n.log_path.parent().unwrap())?;
        let mut log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log_path)
            .with_context(|| format!("open {}", n.log_path.display()))?;
        writeln!(
            log,
            "=== [jepsen] ip netns exec {} {} {}",
            n.ns,
            program.display(),
            args.join(" ")
        )?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &n.ns]).arg(&program).args(&args);
        if let Some(lib) = &self.opts.fake_clock {
            // Only the wall clock moves (as when NTP steps it): elections,
            // timers and leases run on the monotonic clock, which a step
            // does not touch.
            if !n.clock_file.exists() {
                std::fs::write(&n.clock_file, "+0\n")?;
            }
            cmd.env("LD_PRELOAD", lib)
                .env("FAKETIME_TIMESTAMP_FILE", &n.clock_file)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .env(
                "RUST_LOG",
                std::env::var("FLOTILLA_JEPSEN_MASTER_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Own process group: Ctrl-C reaches the harness, not the masters.
            .process_group(0)
            .spawn()
            .with_context(|| format!("start {} in {}", program.display(), n.ns))?;
        tracing::info!(
            "started {} (pid {}) at {}",
            n.name,
            child.id(),
            n.client_addr
        );
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    pub fn start_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.spawn(i)?;
        }
        Ok(())
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        match &mut self.nodes[i].child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL (and reap) master `i`.
    pub fn kill(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            tracing::info!("SIGKILL {}", n.name);
        }
        n.paused = false;
    }

    /// Step master `i`'s wall clock to `offset` seconds from the real one
    /// (it takes effect within a second: libfaketime's cache).
    pub fn set_clock(&mut self, i: usize, offset: i64) -> Result<()> {
        let n = &mut self.nodes[i];
        if self.opts.fake_clock.is_none() {
            bail!("{}: the clock cannot be moved (no libfaketime)", n.name);
        }
        // Write and rename: the master never reads a half-written spec.
        let tmp = n.clock_file.with_extension("clock.tmp");
        std::fs::write(&tmp, format!("{offset:+}s\n"))?;
        std::fs::rename(&tmp, &n.clock_file)?;
        n.clock_offset = offset;
        Ok(())
    }

    /// SIGSTOP master `i`.
    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
            self.nodes[i].paused = true;
            tracing::info!("SIGSTOP {}", self.nodes[i].name);
        }
    }

    /// SIGCONT master `i`.
    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
            tracing::info!("SIGCONT {}", self.nodes[i].name);
        }
        self.nodes[i].paused = false;
    }

    /// Indexes of the members (not removed).
    pub fn members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].removed)
            .collect()
    }

    /// Client addresses of every member (running or not), in order.
    pub fn client_addrs(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.client_addr.clone()))
            .collect()
    }

    /// (member id, leader id) of each member that answers within `timeout`.
    pub async fn statuses(&self, timeout: Duration) -> Vec<Option<(u64, u64)>> {
        let calls = self.nodes.iter().map(|n| async move {
            if n.removed || n.child.is_none() {
                return None;
            }
            member_status(&n.client_addr, timeout).await.ok()
        });
        futures::future::join_all(calls).await
    }

    /// The master that most answering members name as leader, if it answers
    /// and agrees.
    pub async fn leader(&self) -> Option<usize> {
        let st = self.statuses(Duration::from_millis(800)).await;
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, l) in st.iter().flatten() {
            if *l != 0 {
                *votes.entry(*l).or_default() += 1;
            }
        }
        let (&leader, _) = votes.iter().max_by_key(|(_, v)| **v)?;
        st.iter()
            .position(|s| matches!(s, Some((id, l)) if *id == leader && *l == leader))
    }

    /// Waits until every running member answers and all agree on a leader.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<usize> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < timeout {
            let st = self.statuses(Duration::from_millis(800)).await;
            let expected: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| !self.nodes[i].removed && self.nodes[i].child.is_some())
                .collect();
            let answered: Vec<(usize, (u64, u64))> = expected
                .iter()
                .filter_map(|&i| st[i].map(|s| (i, s)))
                .collect();
            let leaders: std::collections::BTreeSet<u64> =
                answered.iter().map(|(_, (_, l))| *l).collect();
            let removed: Vec<&str> = self
                .nodes
                .iter()
                .filter(|n| n.removed)
                .map(|n| n.name.as_str())
                .collect();
            if !removed.is_empty() {
                bail!("masters {removed:?} are out of the membership");
            }
            if answered.len() == expected.len() && leaders.len() == 1 {
                let l = *leaders.iter().next().unwrap();
                if let Some(&(i, _)) = answered.iter().find(|(_, (id, _))| *id == l && l != 0) {
                    return Ok(i);
                }
            }
            last = format!("statuses (member id, leader id): {st:x?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("cluster not ready after {timeout:?}; last {last}")
    }

    /// Drops every packet between the given pairs of masters (both
    /// directions), replacing any earlier partition.
    pub fn partition(&self, cuts: &[(usize, usize)]) -> Result<()> {
        let mut blocked: Vec<Vec<&str>> = vec![Vec::new(); self.nodes.len()];
        for &(a, b) in cuts {
            blocked[a].push(&self.nodes[b].ip);
            blocked[b].push(&self.nodes[a].ip);
        }
        for (i, ips) in blocked.iter().enumerate() {
            let mut rules = String::from(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
            );
            for ip in ips {
                rules.push_str(&format!("-A INPUT -s {ip}/32 -j DROP\n"));
                rules.push_str(&format!("-A OUTPUT -d {ip}/32 -j DROP\n"));
            }
            rules.push_str("COMMIT\n");
            iptables_restore(&self.nodes[i].ns, &rules)?;
        }
        Ok(())
    }

    /// One-way and lossy faults: master `to` drops the packets that master
    /// `from` sends it, all of them or with probability `p`; replaces any
    /// earlier partition.
    pub fn drop_inbound(&self, drops: &[(usize, usize, Option<f64>)]) -> Result<()> {
        for i in 0..self.nodes.len() {
            let mut rules = String::from(
                "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n",
            );
            for &(to, from, p) in drops {
                if to != i {
                    continue;
                }
                let ip = &self.nodes[from].ip;
                match p {
                    None => rules.push_str(&format!("-A INPUT -s {ip}/32 -j DROP\n")),
                    Some(p) => rules.push_str(&format!(
                        "-A INPUT -s {ip}/32 -m statistic --mode random --probability {p:.3} -j DROP\n"
                    )),
                }
            }
            rules.push_str("COMMIT\n");
            iptables_restore(&self.nodes[i].ns, &rules)?;
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal_network(&self) -> Result<()> {
        self.partition(&[])
    }

    /// Membership: removes master `i` (Flotilla: ClusterAdmin.RemoveMaster;
    /// etcd: MemberRemove), asking the master `via`.
    pub async fn remove_member(&self, i: usize, via: usize) -> Result<()> {
        let timeout = Duration::from_secs(5);
        let addr = &self.nodes[via].client_addr;
        match self.opts.target {
            Target::Flotilla => {
                let mut c = ClusterAdminClient::new(connect(addr, timeout).await?);
                tokio::time::timeout(
                    timeout,
                    c.remove_master(RemoveMasterRequest {
                        name: self.nodes[i].name.clone(),
                    }),
                )
                .await
                .context("RemoveMaster timed out")??;
            }
            Target::Etcd => {
                let (id, _) = member_status(&self.nodes[i].client_addr, timeout)
                    .await
                    .or_else(|_| -> Result<(u64, u64)> { bail!("no member id") })?;
                let mut c = ClusterClient::new(connect(addr, timeout).await?);
                tokio::time::timeout(timeout, c.member_remove(MemberRemoveRequest { id }))
                    .await
                    .context("MemberRemove timed out")??;
            }
        }
        Ok(())
    }

    /// Membership: master `i` (removed, stopped) comes back empty and joins
    /// again (Flotilla: `--join`; etcd: MemberAdd then `existing`).
    pub async fn rejoin(&mut self, i: usize, via: usize) -> Result<()> {
        let timeout = Duration::from_secs(5);
        let dir = self.nodes[i].data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("wipe {}", dir.display()))?;
        }
        let addr = self.nodes[via].client_addr.clone();
        match self.opts.target {
            Target::Flotilla => {
                let others: Vec<String> = (0..self.nodes.len())
                    .filter(|&j| j != i && !self.nodes[j].removed)
                    .map(|j| self.nodes[j].client_addr.clone())
                    .collect();
                // The joining master sends AddMaster to the cluster itself.
                self.nodes[i].boot = Boot::Join(others.join(","));
            }
            Target::Etcd => {
                let mut c = ClusterClient::new(connect(&addr, timeout).await?);
                tokio::time::timeout(
                    timeout,
                    c.member_add(MemberAddRequest {
                        peer_ur_ls: vec![format!("http://{}", self.nodes[i].peer_addr)],
                        is_learner: false,
                    }),
                )
                .await
                .context("MemberAdd timed out")??;
                let list = tokio::time::timeout(
                    timeout,
                    c.member_list(MemberListRequest { linearizable: true }),
                )
                .await
                .context("MemberList timed out")??
                .into_inner();
                let me = format!("http://{}", self.nodes[i].peer_addr);
                let ic: Vec<String> = list
                    .members
                    .iter()
                    .map(|m| {
                        let url = m.peer_ur_ls.first().cloned().unwrap_or_default();
                        let name = if m.name.is_empty() && url == me {
                            self.nodes[i].name.clone()
                        } else {
                            m.name.clone()
                        };
                        format!("{name}={url}")
                    })
                    .collect();
                self.nodes[i].boot = Boot::Join(ic.join(","));
            }
        }
        self.nodes[i].removed = false;
        self.spawn(i)
    }

    /// SIGKILLs every master.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn iptables_restore(ns: &str, rules: &str) -> Result<()> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "iptables-restore", "-w", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run iptables-restore")?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .context("write iptables rules")?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "iptables-restore in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
