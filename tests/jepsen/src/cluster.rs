//! The masters of one run: real `flotilla master` (or etcd) processes, each
//! started with `ip netns exec` in its own namespace, listening on its own
//! address. Also the network faults (iptables inside the masters'
//! namespaces).
//!
//! This runs inside the clients' namespace; the masters are put in their own
//! process groups so that a Ctrl-C reaches the harness, which then kills
//! them (SIGKILL on drop).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use flotilla_proto::cluster::cluster_admin_client::ClusterAdminClient;
use flotilla_proto::cluster::RemoveMasterRequest;
use flotilla_proto::etcdserverpb::cluster_client::ClusterClient;
use flotilla_proto::etcdserverpb::{MemberAddRequest, MemberListRequest, MemberRemoveRequest};
use flotilla_testkit::{connect, etcd_joined_cluster, member_status, Boot, Member, Probe};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::lazyfs::{LazyFs, Report};
use crate::netns::NetSpec;

pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// Which server the run tests.
pub use flotilla_testkit::Target;

/// How long a master has to answer Maintenance.Status when the harness
/// looks for the leader.
const STATUS_TIMEOUT: Duration = Duration::from_millis(800);

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
    /// The `flotilla-lazyfs` binary: every master's data folder is then a
    /// power-loss layer (see [`crate::lazyfs`]); `None`: plain folders.
    #[serde(default)]
    pub lazyfs: Option<PathBuf>,
    /// The layers' longest fsync, in milliseconds (`flotilla-lazyfs
    /// --fsync-delay-ms`; 0: at once).
    #[serde(default)]
    pub lazyfs_fsync_delay_ms: u64,
    /// Extra flags of every master (last on its command line).
    #[serde(default)]
    pub extra_args: Vec<String>,
}

/// Where Debian's `faketime` package puts the multi-threaded libfaketime.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

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
    /// Founding member (of every node), or joining again after a removal.
    boot: Boot,
    child: Option<Child>,
    /// The power-loss layer on `data_dir`, when the run has one.
    pub fs: Option<LazyFs>,
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

impl Cluster {
    pub fn new(opts: ClusterOpts, net: &NetSpec, data_root: &Path, log_dir: &Path) -> Cluster {
        let mut nodes: Vec<Node> = net
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
                boot: Boot::New(Vec::new()),
                child: None,
                fs: None,
                paused: false,
                removed: false,
            })
            .collect();
        let founders: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n.name.clone(), n.peer_addr.clone()))
            .collect();
        for n in &mut nodes {
            n.boot = Boot::New(founders.clone());
        }
        Cluster {
            opts,
            nodes,
            token: format!("jepsen-{}", net.prefix),
        }
    }

    fn args(&self, i: usize) -> Vec<String> {
        let n = &self.nodes[i];
        let o = &self.opts;
        let mut m = Member::new(
            &n.name,
            &n.data_dir,
            &n.client_addr,
            &n.peer_addr,
            n.boot.clone(),
        );
        m.heartbeat_ms = o.heartbeat_ms;
        m.election_ms = o.election_ms;
        m.snapshot_logs = Some(o.snapshot_logs);
        m.extra_args = o.extra_args.clone();
        match o.target {
            Target::Flotilla => {
                // Keep every revision: watchers resume from old ones (etcd
                // keeps them all unless told otherwise).
                m.auto_compaction_retention = Some(0);
                // The masters sit on the test's own sealed bridge.
                m.insecure_allow_plaintext = true;
            }
            Target::Etcd => m.cluster_token = Some(self.token.clone()),
        }
        m.args(o.target)
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
        if let Some(bin) = self.opts.lazyfs.clone() {
            for n in &mut self.nodes {
                let backing = n.data_dir.with_extension("synced");
                let log = n.log_path.with_extension("lazyfs.log");
                let delay = self.opts.lazyfs_fsync_delay_ms;
                n.fs = Some(LazyFs::mount(&bin, &backing, &n.data_dir, &log, delay)?);
            }
        }
        for i in 0..self.nodes.len() {
            self.spawn(i)?;
        }
        Ok(())
    }

    /// Cuts the power of the data folders of `victims` at once, then
    /// SIGKILLs their masters, as a power cut stops disk and CPU together:
    /// an fsync still under way in a layer (a slow disk) is lost, even if
    /// its master would have lived to see it return. Returns what each lost.
    pub fn power_cut(&mut self, victims: &[usize]) -> Result<Vec<Report>> {
        for &v in victims {
            self.layer(v)?.cut()?;
        }
        for &v in victims {
            self.kill(v);
        }
        victims
            .iter()
            .map(|&v| self.layer(v)?.after_cut())
            .collect()
    }

    /// Master `i`'s power-loss layer.
    fn layer(&mut self, i: usize) -> Result<&mut LazyFs> {
        let n = &mut self.nodes[i];
        match n.fs.as_mut() {
            Some(fs) => Ok(fs),
            None => bail!("{}'s data folder has no power-loss layer", n.name),
        }
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

    /// Indexes of the members whose process was started (not removed).
    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| !self.nodes[i].removed && self.nodes[i].child.is_some())
            .collect()
    }

    fn client_addrs_of(&self, nodes: &[usize]) -> Vec<&str> {
        nodes
            .iter()
            .map(|&i| self.nodes[i].client_addr.as_str())
            .collect()
    }

    /// The leader among the running members (`flotilla_testkit::leader_of`:
    /// the answering masters that name a leader agree on it, and it answers
    /// and names itself), if there is one.
    pub async fn leader(&self) -> Option<usize> {
        let running = self.running();
        let probe = Probe::new(STATUS_TIMEOUT);
        let l = flotilla_testkit::leader_of(&self.client_addrs_of(&running), &probe).await;
        Some(running[l.ok().flatten()?])
    }

    /// Waits until the cluster is ready (`flotilla_testkit::wait_ready`: every
    /// running member answers and names the same leader, which answers);
    /// returns the leader.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<usize> {
        let removed: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.removed)
            .map(|n| n.name.as_str())
            .collect();
        if !removed.is_empty() {
            bail!("masters {removed:?} are out of the membership");
        }
        let running = self.running();
        let probe = Probe::new(STATUS_TIMEOUT);
        let l = flotilla_testkit::wait_ready(&self.client_addrs_of(&running), &probe, timeout)
            .await
            .context("cluster not ready")?;
        Ok(running[l])
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
        let probe = Probe::new(Duration::from_secs(5));
        let timeout = probe.timeout;
        let addr = &self.nodes[via].client_addr;
        match self.opts.target {
            Target::Flotilla => {
                let mut c = ClusterAdminClient::new(connect(addr, &probe).await?);
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
                let id = member_status(&self.nodes[i].client_addr, &probe)
                    .await
                    .map(|s| s.member_id)
                    .or_else(|_| -> Result<u64> { bail!("no member id") })?;
                let mut c = ClusterClient::new(connect(addr, &probe).await?);
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
        let probe = Probe::new(Duration::from_secs(5));
        let timeout = probe.timeout;
        let dir = self.nodes[i].data_dir.clone();
        if dir.exists() {
            // What is in it: the folder may be a mount point.
            for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
                let p = e?.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                }
                .with_context(|| format!("wipe {}", p.display()))?;
            }
        }
        let addr = self.nodes[via].client_addr.clone();
        match self.opts.target {
            Target::Flotilla => {
                let others: Vec<String> = (0..self.nodes.len())
                    .filter(|&j| j != i && !self.nodes[j].removed)
                    .map(|j| self.nodes[j].client_addr.clone())
                    .collect();
                // The joining master sends AddMaster to the cluster itself.
                self.nodes[i].boot = Boot::Join(others);
            }
            Target::Etcd => {
                let mut c = ClusterClient::new(connect(&addr, &probe).await?);
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
                let ic = etcd_joined_cluster(&list.members, &self.nodes[i].name, &me);
                self.nodes[i].boot = Boot::Existing(ic);
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
        for n in &mut self.nodes {
            if let Some(mut fs) = n.fs.take() {
                fs.stop();
            }
        }
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
