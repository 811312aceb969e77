//! The agents of `flotilla up`: each in a host network namespace of its own
//! (`flotilla-up-aN`, made here), joined to the machine by a bridge
//! (`flotilla-up0`, 172.30.0.1/24; agent N at 172.30.0.(10+N)), run in this
//! process with their own containerd. The namespaces and the bridge are
//! made once and kept, like the agents' pods, so that the next
//! `flotilla up` adopts them. Beside each agent runs a node proxy
//! (`--proxy-mode`, iptables by default) for the same namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use flotilla_agent::{Agent, AgentConfig, RegistryMirror};
use flotilla_client::Client;
use flotilla_objects::nodepool::DEFAULT_NODE_POOL;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::up_pki::UpPki;

const BRIDGE: &str = "flotilla-up0";

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn exists(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Agent `i`'s address (1..=240).
pub fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 10 + i as u8)
}

/// Make (or find) the bridge and agent `i`'s namespace; its path.
pub fn network(i: usize) -> Result<String> {
    if !exists(&["link", "show", BRIDGE]) {
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", "172.30.0.1/24", "dev", BRIDGE])?;
    }
    ip(&["link", "set", BRIDGE, "up"])?;
    let netns = format!("flotilla-up-a{i}");
    let path = format!("/run/netns/{netns}");
    if !Path::new(&path).exists() {
        let veth = format!("fltup{i}");
        ip(&["netns", "add", &netns])?;
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        ip(&["link", "set", &veth, "master", BRIDGE, "up"])?;
        let addr = format!("{}/24", host_ip(i));
        ip(&["-n", &netns, "addr", "add", &addr, "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
    }
    Ok(path)
}

/// What every agent of `flotilla up` shares: the masters, the data
/// folder, the registry mirrors, the node proxies' mode and client, and
/// the certificates.
#[derive(Clone)]
pub struct AgentEnv {
    servers: Vec<String>,
    data_dir: PathBuf,
    mirrors: Vec<RegistryMirror>,
    proxy: Option<(flotilla_proxy::Mode, Client)>,
    pki: Arc<UpPki>,
}

impl AgentEnv {
    pub fn new(
        servers: &[String],
        data_dir: &Path,
        mirrors: &[RegistryMirror],
        proxy_mode: Option<flotilla_proxy::Mode>,
        pki: Arc<UpPki>,
    ) -> Result<AgentEnv> {
        // The proxies call the masters as system:kube-proxy.
        let proxy = match proxy_mode {
            Some(mode) => Some((
                mode,
                crate::master_client::connect_as(
                    servers,
                    Some(pki.client("kube-proxy", "system:kube-proxy", &[], &[])?),
                    None,
                )?,
            )),
            None => None,
        };
        Ok(AgentEnv {
            servers: servers.to_vec(),
            data_dir: data_dir.to_path_buf(),
            mirrors: mirrors.to_vec(),
            proxy,
            pki,
        })
    }

    /// Where agent `name` keeps its data.
    pub fn agent_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join("agents").join(name)
    }

    /// Start agent `name` of `pool` (the `i`th: its namespace and address),
    /// until `stop`; with `fake`, a node without containers (no namespace,
    /// no proxy). The agent's tasks.
    pub fn spawn(
        &self,
        i: usize,
        name: &str,
        pool: &str,
        fake: bool,
        stop: &CancellationToken,
    ) -> Result<Vec<JoinHandle<()>>> {
        // Each agent calls the masters as system:node:<name> (group
        // system:nodes) and serves its pod streams with the same
        // certificate, to the masters only.
        let mut tasks = Vec::new();
        let mut cfg = AgentConfig::new(name, host_ip(i), self.agent_dir(name));
        cfg.pool = pool.to_string();
        cfg.fake_runtime = fake;
        let netns = if fake {
            None
        } else {
            let netns = network(i).with_context(|| format!("the network of {name}"))?;
            cfg.netns = Some(netns.clone().into());
            Some(netns)
        };
        let files = self.pki.client(
            name,
            &format!("system:node:{name}"),
            &["system:nodes"],
            &[host_ip(i).into()],
        )?;
        cfg.stream_tls = Some(crate::master_client::server_tls(
            files.cert.clone().context("agent certificate")?,
            files.key.clone().context("agent key")?,
            self.pki.ca_file(),
        )?);
        let client = crate::master_client::connect_as(&self.servers, Some(files), None)?;
        if let (Some((mode, proxy_client)), Some(netns)) = (&self.proxy, netns) {
            let mut pcfg = flotilla_proxy::Config::new(name, *mode);
            pcfg.netns = Some(netns.into());
            pcfg.node_ip = Some(host_ip(i));
            let (client, stop, n2) = (proxy_client.clone(), stop.clone(), name.to_string());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = flotilla_proxy::run(pcfg, client, stop).await {
                    tracing::error!(node = %n2, "proxy stopped: {e}");
                }
            }));
        }
        cfg.registry_mirrors = self.mirrors.clone();
        cfg.cluster_ca_file = Some(self.pki.ca_file());
        let (stop, n2) = (stop.clone(), name.to_string());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = Agent::run(cfg, client, stop).await {
                tracing::error!(agent = %n2, "agent stopped: {e}");
            }
        }));
        Ok(tasks)
    }
}

/// The agents, running.
pub struct Agents {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    pub names: Vec<String>,
}

impl Agents {
    /// Start `n` agents (agent-1.., pool default).
    pub fn start(n: usize, env: &AgentEnv) -> Result<Agents> {
        let stop = CancellationToken::new();
        let mut agents = Agents {
            stop: stop.clone(),
            tasks: Vec::new(),
            names: Vec::new(),
        };
        if n == 0 {
            return Ok(agents);
        }
        if !nix::unistd::geteuid().is_root() {
            bail!("agents need root (network namespaces, containerd): run as root, or with --agents 0");
        }
        for i in 1..=n {
            let name = format!("agent-{i}");
            let tasks = env.spawn(i, &name, DEFAULT_NODE_POOL, false, &stop)?;
            agents.tasks.extend(tasks);
            agents.names.push(name);
        }
        Ok(agents)
    }

    /// Stop the agents (their pods keep running; the next start adopts them).
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
