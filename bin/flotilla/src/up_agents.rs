//! The agents of `flotilla up`: each in a host network namespace of its own
//! (`flotilla-up-aN`, made here), joined to the machine by a bridge
//! (`flotilla-up0`, 172.30.0.1/24; agent N at 172.30.0.(10+N)), run in this
//! process with their own containerd. The namespaces and the bridge are
//! made once and kept, like the agents' pods, so that the next
//! `flotilla up` adopts them. Beside each agent runs a node proxy
//! (`--proxy-mode`, iptables by default) for the same namespace.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use flotilla_agent::{Agent, AgentConfig, RegistryMirror};
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

fn host_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 10 + i as u8)
}

/// Make (or find) the bridge and agent `i`'s namespace; its path.
fn network(i: usize) -> Result<String> {
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

/// The agents, running.
pub struct Agents {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    pub names: Vec<String>,
}

impl Agents {
    /// Start `n` agents against `servers`, their data under `data_dir`.
    pub fn start(
        n: usize,
        servers: &[String],
        data_dir: &Path,
        mirrors: &[RegistryMirror],
        proxy_mode: Option<flotilla_proxy::Mode>,
        pki: &UpPki,
    ) -> Result<Agents> {
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
        // Each agent calls the masters as system:node:<name> (group
        // system:nodes) and serves its pod streams with the same
        // certificate, to the masters only; the proxies are system:kube-proxy.
        let client_as = |files| crate::master_client::connect_as(servers, Some(files), None);
        let proxy_client = client_as(pki.client("kube-proxy", "system:kube-proxy", &[], &[])?)?;
        for i in 1..=n {
            let name = format!("agent-{i}");
            let netns = network(i).with_context(|| format!("the network of {name}"))?;
            let mut cfg = AgentConfig::new(&name, host_ip(i), data_dir.join("agents").join(&name));
            cfg.netns = Some(netns.clone().into());
            let files = pki.client(
                &name,
                &format!("system:node:{name}"),
                &["system:nodes"],
                &[host_ip(i).into()],
            )?;
            cfg.stream_tls = Some(crate::master_client::server_tls(
                files.cert.clone().context("agent certificate")?,
                files.key.clone().context("agent key")?,
                pki.ca_file(),
            )?);
            let client = client_as(files)?;
            if let Some(mode) = proxy_mode {
                let mut pcfg = flotilla_proxy::Config::new(&name, mode);
                pcfg.netns = Some(netns.into());
                pcfg.node_ip = Some(host_ip(i));
                let (client, stop, n2) = (proxy_client.clone(), stop.clone(), name.clone());
                agents.tasks.push(tokio::spawn(async move {
                    if let Err(e) = flotilla_proxy::run(pcfg, client, stop).await {
                        tracing::error!(node = %n2, "proxy stopped: {e}");
                    }
                }));
            }
            cfg.registry_mirrors = mirrors.to_vec();
            let (client, stop, n2) = (client.clone(), stop.clone(), name.clone());
            agents.tasks.push(tokio::spawn(async move {
                if let Err(e) = Agent::run(cfg, client, stop).await {
                    tracing::error!(agent = %n2, "agent stopped: {e}");
                }
            }));
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
