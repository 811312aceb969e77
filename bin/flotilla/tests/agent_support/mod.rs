//! What the agent tests share: test images served by a real registry
//! (`scripts/images` builds them once per build folder; Debian's
//! docker-registry serves them), a test network (a bridge and one network
//! namespace per host, with unique names), and the removal of everything an
//! agent leaves on the machine (processes in its cgroups, containerd and
//! its shims, mounts under its folder, its cgroups), done on drop, so also
//! when a test fails.
#![allow(dead_code)]

pub mod lan;
pub mod proxy;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where `scripts/images` keeps its build: beside the build folder.
fn images_dir() -> PathBuf {
    // CARGO_BIN_EXE_flotilla is <target>/release/flotilla.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_flotilla"));
    bin.parent()
        .and_then(Path::parent)
        .map(|t| t.join("test-images"))
        .unwrap_or_else(|| std::env::temp_dir().join("flotilla-test-images"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Debian's docker-registry on `ip`, with the test images pushed.
pub struct Registry {
    pub addr: String,
    child: Child,
}

impl Registry {
    pub fn start(dir: &Path, ip: Ipv4Addr) -> Registry {
        let port = {
            let l = std::net::TcpListener::bind((ip, 0)).expect("a free port");
            l.local_addr().expect("addr").port()
        };
        let addr = format!("{ip}:{port}");
        let conf = dir.join("registry.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: \"{addr}\"}}\n",
                dir.join("registry").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let reg = Registry { addr, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.addr).is_err() {
            assert!(Instant::now() < deadline, "the registry never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        run(Command::new(repo_root().join("scripts/images"))
            .arg("--out")
            .arg(images_dir())
            .arg("--push")
            .arg(&reg.addr));
        reg
    }

    /// Mirrors that send docker.io and registry.k8s.io here.
    pub fn mirrors(&self) -> Vec<flotilla_agent::RegistryMirror> {
        ["docker.io", "registry.k8s.io"]
            .iter()
            .map(|r| flotilla_agent::RegistryMirror {
                registry: r.to_string(),
                endpoint: format!("http://{}", self.addr),
            })
            .collect()
    }

    pub fn mirror_flags(&self) -> Vec<String> {
        self.mirrors()
            .iter()
            .flat_map(|m| {
                [
                    "--registry-mirror".to_string(),
                    format!("{}={}", m.registry, m.endpoint),
                ]
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes what an agent (node `node`, files under `dir`) leaves behind:
/// every process in its pods' cgroups, then containerd and its shims (their
/// command lines name `dir`), then mounts under `dir`, then the cgroups.
pub struct NodeCleanup {
    pub node: String,
    pub dir: PathBuf,
}

fn pids_in(dir: &Path, out: &mut Vec<i32>) {
    if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                pids_in(&e.path(), out);
            }
        }
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Processes whose command line mentions `needle`.
pub fn processes_naming(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if pid == me {
                continue;
            }
            if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
                if String::from_utf8_lossy(&cmd).contains(needle) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

impl NodeCleanup {
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let rel = format!("flotilla-{}", self.node);
        let root = Path::new("/sys/fs/cgroup");
        let mut dirs = vec![root.join(&rel)];
        if let Ok(entries) = std::fs::read_dir(root) {
            for e in entries.flatten() {
                dirs.push(e.path().join(&rel));
            }
        }
        dirs.into_iter().filter(|d| d.is_dir()).collect()
    }

    pub fn run(&self) {
        for round in 0..50 {
            let mut pids = Vec::new();
            for d in self.cgroup_dirs() {
                pids_in(&d, &mut pids);
            }
            pids.extend(processes_naming(&self.dir.to_string_lossy()));
            pids.sort_unstable();
            pids.dedup();
            if pids.is_empty() {
                break;
            }
            if round == 0 {
                println!(
                    "[cleanup] killing {} leftover processes of node {}",
                    pids.len(),
                    self.node
                );
            }
            pids.iter().for_each(|p| kill(*p));
            std::thread::sleep(Duration::from_millis(100));
        }
        unmount_under(&self.dir);
        for d in self.cgroup_dirs() {
            remove_tree(&d);
        }
    }
}

impl Drop for NodeCleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// Unmount everything mounted under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Lines of a CRI log file, without their timestamp and stream.
pub fn log_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

/// Runs `args` in a network namespace (as `nsenter --net`, which keeps the
/// host's /sys).
pub fn in_netns(netns: &str, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("nsenter")
}

/// A `flotilla agent` process for one host of a [`lan::Lan`]; on drop it is
/// killed and everything it left is removed ([`NodeCleanup`]).
pub struct AgentProc {
    pub name: String,
    pub dir: PathBuf,
    pub log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    _cleanup: NodeCleanup,
}

impl AgentProc {
    pub fn start(
        servers: &str,
        name: &str,
        host: &lan::Host,
        dir: &Path,
        registry: &Registry,
    ) -> AgentProc {
        Self::start_with(servers, name, host, dir, registry, &[])
    }

    /// [`AgentProc::start`] with more flags.
    pub fn start_with(
        servers: &str,
        name: &str,
        host: &lan::Host,
        dir: &Path,
        registry: &Registry,
        extra: &[&str],
    ) -> AgentProc {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("agent dir");
        let mut args: Vec<String> = [
            "agent",
            "--server",
            servers,
            "--name",
            name,
            "--node-ip",
            &host.ip.to_string(),
            "--netns",
            &host.netns_path(),
            "--lease-interval-seconds",
            "2",
            // Several agents share this machine: not the default port.
            "--metrics-addr",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push("--data-dir".into());
        args.push(dir.join("data").to_string_lossy().into_owned());
        args.extend(registry.mirror_flags());
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut a = AgentProc {
            name: name.to_string(),
            log: dir.join("agent.log"),
            dir: dir.clone(),
            args,
            child: None,
            _cleanup: NodeCleanup {
                node: name.to_string(),
                dir,
            },
        };
        a.spawn();
        a
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("flotilla agent");
        self.child = Some(child);
    }

    /// The agent's containerd socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("data/containerd/containerd.sock")
    }

    /// Stop the agent with SIGTERM and wait for it (its pods keep running).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn tail(&self, n: usize) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            println!("--- agent {} log (tail) ---\n{}", self.name, self.tail(60));
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// GET `path` from `addr` over HTTP/1.0, connecting from a network
/// namespace; the body.
pub async fn http_get_in(
    netns: &str,
    addr: std::net::SocketAddr,
    path: &str,
) -> Result<String, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ns = PathBuf::from(format!("/run/netns/{netns}"));
    let mut s = flotilla_agent::netns::connect(Some(&ns), addr, Duration::from_secs(2))
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {head}"));
    }
    Ok(body.to_string())
}

/// Runs `flt --server SERVERS ARGS...` to completion (60 s at most).
pub async fn flt(servers: &str, args: &[&str]) -> crate::common::CmdOut {
    let mut cmd = tokio::process::Command::new(crate::common::flt_bin());
    cmd.arg("--server").arg(servers).args(args);
    crate::common::run_command(
        &mut cmd,
        format!("flt {}", args.join(" ")),
        None,
        Duration::from_secs(60),
    )
    .await
}

/// `flt ARGS` with `input` on its standard input (then closed).
pub async fn flt_in(servers: &str, args: &[&str], input: &[u8]) -> crate::common::CmdOut {
    let mut cmd = tokio::process::Command::new(crate::common::flt_bin());
    cmd.arg("--server").arg(servers).args(args);
    crate::common::run_command(
        &mut cmd,
        format!("flt {}", args.join(" ")),
        Some(input.to_vec()),
        Duration::from_secs(120),
    )
    .await
}

/// Wait until pod `name` runs; its IP.
pub async fn running_ip(
    pods: &flotilla_client::Api<flotilla_objects::core::Pod>,
    name: &str,
) -> String {
    crate::common::wait_for(
        Duration::from_secs(90),
        &format!("{name} runs"),
        async || {
            let p = pods.get(name).await.map_err(|e| e.to_string())?;
            match p.status {
                Some(s) if s.phase == "Running" && !s.pod_ip.is_empty() => Ok(s.pod_ip),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await
}

/// One node for a cluster: a test host with its agent (and containerd),
/// images from a registry on the test bridge; removed on drop (the agent
/// first).
pub struct OneNode {
    pub agent: AgentProc,
    pub registry: Registry,
    pub lan: lan::Lan,
    /// The node's name.
    pub name: String,
}

/// Start [`OneNode`] for `cluster` and wait until its Node is registered.
pub async fn one_node(cluster: &crate::common::Cluster) -> OneNode {
    let mut lan = lan::Lan::new();
    lan.add_host();
    let registry = Registry::start(cluster.dir(), lan.gateway);
    let name = format!("s1-{}", lan.id);
    let agent = AgentProc::start(
        &cluster.endpoints(),
        &name,
        &lan.hosts[0],
        cluster.dir(),
        &registry,
    );
    let client = flotilla_client::Client::connect(&[cluster.client_addr(0)]).expect("client");
    let nodes = flotilla_client::Api::<flotilla_objects::core::Node>::all(client);
    crate::common::wait_for(Duration::from_secs(120), "the node registers", async || {
        nodes
            .get(&name)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    OneNode {
        agent,
        registry,
        lan,
        name,
    }
}

/// One master, a test network of `hosts` hosts, and a registry on its
/// bridge: what a test of agents on hosts starts from.
pub struct Site {
    pub cluster: crate::common::Cluster,
    pub lan: lan::Lan,
    pub registry: Registry,
    /// The master's client address(es), for agents and flt.
    pub servers: String,
}

impl Site {
    pub async fn start(hosts: usize) -> Site {
        let cluster = crate::common::Cluster::start(1, crate::common::Opts::default()).await;
        let mut lan = lan::Lan::new();
        for _ in 0..hosts {
            lan.add_host();
        }
        let registry = Registry::start(cluster.dir(), lan.gateway);
        let servers = cluster.endpoints();
        Site {
            cluster,
            lan,
            registry,
            servers,
        }
    }

    /// An agent named `name` on host `i`.
    pub fn agent(&self, name: &str, i: usize) -> AgentProc {
        AgentProc::start(
            &self.servers,
            name,
            &self.lan.hosts[i],
            self.cluster.dir(),
            &self.registry,
        )
    }
}
