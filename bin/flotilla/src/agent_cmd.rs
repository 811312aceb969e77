//! `flotilla agent`: flags to an [`AgentConfig`], then the agent until a
//! signal.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use flotilla_agent::{Agent, AgentConfig, RegistryMirror};
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RuntimeKind {
    /// Real containers through containerd's CRI.
    Cri,
    /// No containers: pods are reported Running at once (scale tests).
    Fake,
}

#[derive(Args)]
pub struct AgentArgs {
    #[command(flatten)]
    masters: crate::master_client::MasterClientArgs,
    /// This node's name.
    #[arg(long)]
    name: String,
    /// The node's pool (the label flotilla.dev/nodepool); its NodePool's
    /// labels and taints are the node's.
    #[arg(long, default_value = "default")]
    pool: String,
    /// The node's address: its InternalIP and its pods' hostIP.
    #[arg(long)]
    node_ip: Ipv4Addr,
    /// Folder for the agent's containerd, pod logs and volumes.
    #[arg(long, default_value = "/var/lib/flotilla/agent")]
    data_dir: PathBuf,
    /// Socket of a containerd to use; without it the agent starts and
    /// supervises its own, with a configuration it writes.
    #[arg(long)]
    containerd_socket: Option<PathBuf>,
    /// The containerd binary started when no socket is given.
    #[arg(long, default_value = "containerd")]
    containerd_bin: PathBuf,
    /// The node's network namespace (e.g. /run/netns/NAME), when it is not
    /// the agent's own: the agent's containerd and the pods' network live
    /// there, and probes connect from there.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// A registry mirror, REGISTRY=URL (repeatable): with
    /// docker.io=http://127.0.0.1:5000, `image: busybox` comes from there.
    #[arg(long = "registry-mirror")]
    registry_mirrors: Vec<RegistryMirror>,
    /// The pod sandbox ("pause") image.
    #[arg(long, default_value = flotilla_agent::config::DEFAULT_SANDBOX_IMAGE)]
    sandbox_image: String,
    /// Folder of the CNI plugins.
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_bin_dir: PathBuf,
    /// Name of the node's pod bridge.
    #[arg(long, default_value = "flt0")]
    cni_bridge: String,
    /// Port of the pod streams (logs, exec) the masters relay to, on the node's IP.
    #[arg(long, default_value_t = 10250)]
    stream_port: u16,
    /// Seconds between two renewals of the node's Lease.
    #[arg(long, default_value_t = 10)]
    lease_interval_seconds: u64,
    /// Container runtime: cri (containerd), or fake (no containers).
    #[arg(long, value_enum, default_value = "cri")]
    runtime: RuntimeKind,
    /// Name servers of pods with dnsPolicy ClusterFirst, IP[,IP] (the
    /// kube-dns ClusterIP); without it such pods use the host's resolv.conf.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<std::net::IpAddr>,
    /// The cluster domain in pods' DNS search path.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The pods' addresses across the cluster (the masters' --cluster-cidr):
    /// pods' traffic to other addresses (masters, other hosts) is
    /// masqueraded to the node's address, so that it finds its way back; ""
    /// for no such rule.
    #[arg(long, default_value = flotilla_agent::config::DEFAULT_CLUSTER_CIDR)]
    cluster_cidr: String,
    /// A bootstrap token (`ID.SECRET`, in a file): with no --cert-file,
    /// the agent asks the masters for its client certificate with it
    /// (TLS bootstrap: a CertificateSigningRequest the masters approve and
    /// sign), keeps it in --cert-dir and renews it before it expires.
    #[arg(long, value_name = "FILE", conflicts_with = "cert_file")]
    bootstrap_token_file: Option<PathBuf>,
    /// Where the certificate obtained with --bootstrap-token-file is kept
    /// (default: DATA_DIR/pki).
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// (Ready: registered, and the node's pods are listed.)
    #[command(flatten)]
    metrics: crate::metrics_args::MetricsArgs,
}

pub async fn run(mut a: AgentArgs, stop: impl std::future::Future<Output = ()>) -> Result<()> {
    let token = CancellationToken::new();
    if let Some(file) = &a.bootstrap_token_file {
        let dir = a.cert_dir.clone().unwrap_or_else(|| a.data_dir.join("pki"));
        let ca = a.masters.trusted_ca_file.clone();
        let (crt, key) = crate::agent_bootstrap::ensure(
            &a.masters.server,
            ca.clone(),
            &a.name,
            file,
            &dir,
            &token,
        )
        .await
        .context("TLS bootstrap")?;
        a.masters.cert_file = Some(crt);
        a.masters.key_file = Some(key);
        tokio::spawn(crate::agent_bootstrap::renew(
            a.masters.server.clone(),
            ca,
            a.name.clone(),
            dir,
            token.clone(),
        ));
    }
    let mut cfg = AgentConfig::new(&a.name, a.node_ip, a.data_dir);
    cfg.fake_runtime = matches!(a.runtime, RuntimeKind::Fake);
    cfg.pool = a.pool;
    cfg.containerd_socket = a.containerd_socket;
    cfg.containerd_bin = a.containerd_bin;
    cfg.netns = a.netns;
    cfg.registry_mirrors = a.registry_mirrors;
    cfg.sandbox_image = a.sandbox_image;
    cfg.cni_bin_dir = a.cni_bin_dir;
    cfg.cni_bridge = a.cni_bridge;
    cfg.stream_port = a.stream_port;
    cfg.cluster_dns = a.cluster_dns;
    cfg.cluster_domain = a.cluster_domain;
    cfg.cluster_cidr = Some(a.cluster_cidr).filter(|c| !c.is_empty());
    cfg.lease_interval = std::time::Duration::from_secs(a.lease_interval_seconds.max(1));
    cfg.stream_tls = a.masters.stream_tls()?;
    cfg.cluster_ca_file = a.masters.trusted_ca_file.clone();
    let client = a.masters.connect()?;
    let registry = flotilla_telemetry::registry();
    let m = flotilla_agent::metrics::AgentMetrics::new(&registry, &a.name);
    cfg.metrics = Some(m.clone());
    a.metrics
        .serve(
            Some(crate::metrics_args::AGENT_DEFAULT),
            &registry,
            std::sync::Arc::new(flotilla_telemetry::ReadyFn(move || m.ready())),
            token.clone(),
        )
        .await?;
    let run = Agent::run(cfg, client, token.clone());
    tokio::pin!(run);
    tokio::select! {
        r = &mut run => return r.context("agent"),
        _ = stop => tracing::info!("stopping"),
    }
    token.cancel();
    run.await.context("agent")
}
