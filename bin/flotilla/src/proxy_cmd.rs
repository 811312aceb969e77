//! `flotilla proxy`: flags to a [`flotilla_proxy::Config`], then the proxy
//! until a signal (or `--cleanup` and exit).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProxyMode {
    /// The kernel forwards: nat chains DNAT each service address to an endpoint.
    Iptables,
    /// The kernel forwards, from a table of the proxy's own (`ip flotilla`)
    /// whose verdict maps look service addresses up: a change is live in
    /// milliseconds even with thousands of services. Needs `nft`.
    Nftables,
    /// This process forwards: it accepts each connection and connects to an
    /// endpoint, retrying another when a connect fails.
    Userspace,
}

impl From<ProxyMode> for flotilla_proxy::Mode {
    fn from(m: ProxyMode) -> Self {
        match m {
            ProxyMode::Iptables => flotilla_proxy::Mode::Iptables,
            ProxyMode::Nftables => flotilla_proxy::Mode::Nftables,
            ProxyMode::Userspace => flotilla_proxy::Mode::Userspace,
        }
    }
}

/// `flotilla proxy --iptables-backend`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum IptablesBackend {
    /// Legacy when the kernel has ip_tables and iptables-legacy is
    /// installed (much faster at thousands of services), else nft.
    Auto,
    /// iptables-legacy: the ip_tables kernel interface.
    Legacy,
    /// iptables-nft: iptables rules kept in nf_tables.
    Nft,
}

/// `flotilla up --proxy-mode`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum UpProxyMode {
    /// Kernel forwarding (nat chains).
    Iptables,
    /// Kernel forwarding (an nftables table of the proxy's own).
    Nftables,
    /// Forwarding by the proxy process.
    Userspace,
    /// No proxies.
    None,
}

impl UpProxyMode {
    pub fn mode(self) -> Option<flotilla_proxy::Mode> {
        match self {
            UpProxyMode::Iptables => Some(flotilla_proxy::Mode::Iptables),
            UpProxyMode::Nftables => Some(flotilla_proxy::Mode::Nftables),
            UpProxyMode::Userspace => Some(flotilla_proxy::Mode::Userspace),
            UpProxyMode::None => None,
        }
    }
}

#[derive(Args)]
pub struct ProxyArgs {
    #[command(flatten)]
    masters: crate::master_client::MasterClientArgs,
    /// This node's name (its Node object; endpoints on it are "local").
    #[arg(long, required_unless_present = "cleanup")]
    node_name: Option<String>,
    /// How traffic is moved.
    #[arg(long, value_enum, default_value = "iptables")]
    mode: ProxyMode,
    /// The node's address: load balancer addresses this node answers go on
    /// the interface that holds it.
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,
    /// The node's network namespace (e.g. /run/netns/NAME), when it is not
    /// the proxy's own: rules and listeners go there.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Pod addresses: traffic to a cluster IP from outside them is masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// The service (cluster IP) range, as the masters'
    /// --service-cluster-ip-range: routed to the node's loopback so that a
    /// cluster IP without endpoints is refused at once ("" for no route).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// Which iptables writes the rules (iptables and userspace modes).
    #[arg(long, value_enum, default_value = "auto")]
    iptables_backend: IptablesBackend,
    /// Seconds between two full resyncs (every chain rewritten).
    #[arg(long, default_value_t = 60)]
    resync_seconds: u64,
    /// Remove every rule, chain and address the proxy ever wrote, then exit.
    #[arg(long)]
    cleanup: bool,
    /// (Ready: a sync succeeded within two resync intervals.)
    #[command(flatten)]
    metrics: crate::metrics_args::MetricsArgs,
}

pub async fn run(a: ProxyArgs, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    if a.cleanup {
        let n = flotilla_proxy::cleanup(a.netns.as_deref())
            .await
            .context("cleanup")?;
        println!("removed {n} chains and tables");
        return Ok(());
    }
    let node = a.node_name.context("--node-name is required")?;
    let mut cfg = flotilla_proxy::Config::new(&node, a.mode.into());
    cfg.netns = a.netns;
    cfg.node_ip = a.node_ip;
    cfg.cluster_cidr = Some(a.cluster_cidr).filter(|c| !c.is_empty());
    cfg.service_cidr = Some(a.service_cidr).filter(|c| !c.is_empty());
    cfg.iptables_backend = match a.iptables_backend {
        IptablesBackend::Auto => None,
        IptablesBackend::Legacy => Some(flotilla_proxy::iptables::Backend::Legacy),
        IptablesBackend::Nft => Some(flotilla_proxy::iptables::Backend::Nft),
    };
    cfg.resync = std::time::Duration::from_secs(a.resync_seconds.max(1));
    let client = a.masters.connect()?;
    let token = CancellationToken::new();
    let registry = flotilla_telemetry::registry();
    let m = flotilla_proxy::metrics::ProxyMetrics::new(&registry);
    cfg.metrics = Some(m.clone());
    let within = 2 * cfg.resync;
    a.metrics
        .serve(
            Some(crate::metrics_args::PROXY_DEFAULT),
            &registry,
            std::sync::Arc::new(flotilla_telemetry::ReadyFn(move || m.ready(within))),
            token.clone(),
        )
        .await?;
    let run = flotilla_proxy::run(cfg, client, token.clone());
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => return r.context("proxy"),
        _ = stop => tracing::info!("stopping"),
    }
    token.cancel();
    run.await.context("proxy")
}
