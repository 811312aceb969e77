//! `flotilla`: the daemon binary. Each role is a subcommand; this file only
//! parses flags, sets up logging and signals, and hands over to the libraries.

mod agent_bootstrap;
mod agent_cmd;
mod autoscale_args;
mod backup_cmd;
mod certs_cmd;
mod control_plane;
mod dns;
mod ingress_cmd;
mod logging;
mod master_client;
mod metrics_args;
mod provider_exec;
mod provider_grpc;
mod provider_local;
mod proxy_cmd;
mod security;
mod store;
mod up_agents;
mod up_autoscale;
mod up_pki;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use flotilla_raftstore::kv::Limits;
use flotilla_raftstore::MasterConfig;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Flotilla: a container orchestrator whose masters keep their own replicated store"
)]
struct Cli {
    /// Log lines as text or as JSON objects (to stderr; filter with RUST_LOG,
    /// e.g. RUST_LOG=info,flotilla_raftstore=debug).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "FLOTILLA_LOG_FORMAT"
    )]
    log_format: logging::Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a master: a member of the Raft group that keeps the cluster state
    /// and serves the etcd v3 API and Flotilla's admin API.
    Master(Box<MasterArgs>),
    /// Run a local three-master cluster in this process, with its data under one folder.
    Up(Box<UpArgs>),
    /// Run a node agent: register this node and run the pods bound to it
    /// through containerd.
    Agent(Box<agent_cmd::AgentArgs>),
    /// Run a node proxy: send traffic for services' addresses to their
    /// endpoints, through iptables or through this process.
    Proxy(proxy_cmd::ProxyArgs),
    /// Make a cluster CA and certificates signed by it.
    #[command(subcommand)]
    Certs(certs_cmd::CertsCmd),
    /// Run an ingress router: HTTP(S) requests routed by the Ingress
    /// objects' hosts and paths straight to ready pods.
    Ingress(ingress_cmd::IngressArgs),
    /// Read a backup taken with `etcdctl snapshot save`.
    #[command(subcommand)]
    Snapshot(backup_cmd::SnapshotCmd),
    /// Build a new master's data folder from a backup (as `etcdctl snapshot
    /// restore`): run it for every master of the new cluster, with the same
    /// backup and --initial-cluster, then start them.
    Restore(backup_cmd::RestoreArgs),
}

#[derive(Args)]
struct Tuning {
    /// Interval between leader heartbeats, in milliseconds. openraft also
    /// uses it as the timeout of every AppendEntries, so it must exceed the
    /// slowest follower fsync.
    #[arg(long, default_value_t = 100)]
    heartbeat_interval_ms: u64,
    /// Election timeout in milliseconds: a follower that hears nothing from
    /// its leader for this long (randomized up to 1.2 times, plus up to 1.5
    /// heartbeats) stands for election. At least three heartbeats.
    #[arg(long, default_value_t = 300)]
    election_timeout_ms: u64,
    /// Log entries between two snapshots; the log is purged behind a snapshot.
    #[arg(long, default_value_t = 10_000)]
    snapshot_logs: u64,
    /// Also take a snapshot whenever the log grew by this many MiB since
    /// the last one: an entry carries a batch of up to 512 writes, so the
    /// count of entries alone does not bound the log's size (0: by entries
    /// only). A snapshot pins a view of the state and writes nothing until
    /// a follower needs it.
    #[arg(long, default_value_t = 64)]
    snapshot_log_mib: u64,
    /// Revisions of history kept by automatic compaction (0 turns it off).
    #[arg(long, default_value_t = 10_000)]
    auto_compaction_retention: i64,
    /// Do not fsync the Raft log or the vote (etcd's --unsafe-no-fsync).
    /// For tests only: a power loss on a majority of masters then loses
    /// acknowledged writes.
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// Largest request accepted, in bytes (etcd's --max-request-bytes).
    #[arg(long, default_value_t = 1_572_864)]
    max_request_bytes: usize,
    /// Most operations in one transaction branch (etcd's --max-txn-ops).
    #[arg(long, default_value_t = 128)]
    max_txn_ops: usize,
    /// Range services' cluster IPs are drawn from (the same on every master).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cluster_ip_range: String,
    /// Range of node ports for NodePort and LoadBalancer services, LOW-HIGH.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// Addresses for LoadBalancer services (CIDR, e.g. 192.168.50.240/28):
    /// each gets one, shown in its status and answered by the node proxies.
    /// Without a pool their status is left to an outside load balancer.
    #[arg(long, value_name = "CIDR")]
    lb_pool: Option<String>,
    /// Leader loops to run, as kube-controller-manager's --controllers:
    /// `*` for all, NAME to add one, -NAME to leave one out (e.g.
    /// `*,-node-lifecycle-controller`); unknown names are an error.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// How long an event is kept after it last happened (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    event_ttl: std::time::Duration,
    /// Range nodes' pod CIDRs are drawn from (the same on every master).
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Size of each node's pod CIDR, as a prefix length (24: a /24 each).
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
}

impl Tuning {
    fn api_config(&self) -> Result<flotilla_control::ApiConfig> {
        let mut services = flotilla_control::alloc::ServiceRanges::parse(
            &self.service_cluster_ip_range,
            &self.service_node_port_range,
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        if let Some(pool) = &self.lb_pool {
            services = services
                .with_lb_pool(pool)
                .map_err(|e| anyhow::anyhow!("--lb-pool: {e}"))?;
        }
        let pod_cidrs = flotilla_control::podcidr::PodCidrs::parse(
            &self.cluster_cidr,
            self.node_cidr_mask_size,
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        Ok(flotilla_control::ApiConfig {
            services,
            pod_cidrs,
        })
    }

    /// The leader loops --controllers chose.
    fn leader_loops(&self) -> Result<Vec<std::sync::Arc<dyn flotilla_runtime::LeaderLoop>>> {
        let mut all = flotilla_controllers::leader_loops(self.event_ttl);
        all.insert(0, std::sync::Arc::new(flotilla_scheduler::Scheduler));
        flotilla_controllers::select(all, &self.controllers)
            .map_err(|e| anyhow::anyhow!("--controllers: {e}"))
    }
}

#[derive(Args)]
struct MasterArgs {
    /// This master's name, unique in the cluster; its member id derives from it.
    #[arg(long)]
    name: String,
    /// Folder for this master's RocksDB and snapshots; reuse it to restart.
    #[arg(long)]
    data_dir: PathBuf,
    /// Address for clients: etcd v3 API and Flotilla's admin API.
    #[arg(long, default_value = "127.0.0.1:2379")]
    client_addr: SocketAddr,
    /// Address for the other masters (Raft traffic).
    #[arg(long, default_value = "127.0.0.1:2380")]
    peer_addr: SocketAddr,
    /// Founding members as NAME=PEER_ADDR,...; the same on every founding master.
    #[arg(long, value_delimiter = ',', conflicts_with = "join")]
    initial_cluster: Vec<String>,
    /// Client addresses of running masters; a new master asks them to admit it.
    #[arg(long, value_delimiter = ',')]
    join: Vec<String>,
    /// Serve cluster DNS (UDP and TCP) on ADDR:PORT, answering from this
    /// master's replica; no DNS server without it.
    #[arg(long)]
    dns_addr: Option<SocketAddr>,
    /// (The client port also serves /metrics and etcd's /health, as etcd.)
    #[command(flatten)]
    metrics: metrics_args::MetricsArgs,
    #[command(flatten)]
    dns: dns::DnsArgs,
    #[command(flatten)]
    security: security::SecurityArgs,
    #[command(flatten)]
    tuning: Tuning,
    #[command(flatten)]
    autoscale: autoscale_args::MasterAutoscaleArgs,
}

#[derive(Args)]
struct UpArgs {
    /// Folder holding the three masters' data (m1, m2, m3 under it).
    #[arg(long, default_value = "flotilla-data")]
    data_dir: PathBuf,
    /// First client port; masters use PORT, PORT+10000, PORT+20000 for
    /// clients, the next port for peers and the one after for DNS.
    #[arg(long, default_value_t = 2379)]
    base_port: u16,
    /// Node agents to run (root only), each in a host network namespace of
    /// its own on the bridge flotilla-up0 (172.30.0.0/24).
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// A registry mirror for the agents, REGISTRY=URL (repeatable); images,
    /// the sandbox image (registry.k8s.io/pause:3.6) included, come from
    /// there (scripts/images builds and pushes test images).
    #[arg(long = "registry-mirror")]
    registry_mirrors: Vec<flotilla_agent::RegistryMirror>,
    /// The node proxy beside each agent: iptables, userspace, or none.
    #[arg(long, value_enum, default_value = "iptables")]
    proxy_mode: proxy_cmd::UpProxyMode,
    /// Bearer tokens the masters accept, besides the certificates up makes
    /// (kube-apiserver's CSV: token,user,uid,"group1,group2").
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    #[command(flatten)]
    ingress: ingress_cmd::UpIngressArgs,
    #[command(flatten)]
    dns: dns::DnsArgs,
    #[command(flatten)]
    tuning: Tuning,
    #[command(flatten)]
    autoscale: autoscale_args::UpAutoscaleArgs,
}

fn parse_initial_cluster(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|item| {
            let (name, addr) = item.split_once('=').with_context(|| {
                format!("--initial-cluster entry {item:?} is not NAME=HOST:PORT")
            })?;
            let addr = addr.trim_start_matches("http://");
            addr.parse::<SocketAddr>().with_context(|| {
                format!("--initial-cluster entry {item:?}: {addr:?} is not HOST:PORT")
            })?;
            Ok((name.to_string(), addr.to_string()))
        })
        .collect()
}

fn config(
    name: &str,
    data_dir: PathBuf,
    client: SocketAddr,
    peer: SocketAddr,
    t: &Tuning,
) -> MasterConfig {
    let mut c = MasterConfig::new(name, data_dir, client, peer);
    c.heartbeat_interval_ms = t.heartbeat_interval_ms;
    c.election_timeout_ms = t.election_timeout_ms;
    c.snapshot_logs = t.snapshot_logs;
    c.snapshot_log_bytes = t.snapshot_log_mib.saturating_mul(1 << 20);
    c.auto_compaction_retention = t.auto_compaction_retention;
    c.unsafe_no_fsync = t.unsafe_no_fsync;
    c.limits = Limits {
        max_request_bytes: t.max_request_bytes,
        max_txn_ops: t.max_txn_ops,
        ..Limits::default()
    };
    c
}

/// Listen for SIGINT and SIGTERM from now on (before anything slow starts,
/// so that an early Ctrl-C is a graceful stop, not the default kill).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}

async fn run_master(a: MasterArgs) -> Result<()> {
    let stop = shutdown_signal()?;
    let mut cfg = config(&a.name, a.data_dir, a.client_addr, a.peer_addr, &a.tuning);
    cfg.initial_cluster = parse_initial_cluster(&a.initial_cluster)?;
    cfg.join = a.join;
    let (sec, access) = a.security.build(a.client_addr, a.peer_addr)?;
    cfg.security = sec;
    let dns = a.dns_addr.map(|addr| a.dns.config(addr)).transpose()?;
    let mut loops = a.tuning.leader_loops()?;
    loops.extend(a.autoscale.leader_loop()?);
    loops.extend(a.security.csr_loop()?);
    let running = control_plane::start(cfg, a.tuning.api_config()?, loops, dns, access).await?;
    let m = running.master.clone();
    let health = std::sync::Arc::new(flotilla_raftstore::health::MasterHealth(m.clone()));
    if let Err(e) = a
        .metrics
        .serve(None, &m.config().metrics, health, m.shutdown_token())
        .await
    {
        running.shutdown().await;
        return Err(e);
    }
    stop.await;
    tracing::info!("stopping");
    running.shutdown().await;
    Ok(())
}

async fn run_up(a: UpArgs) -> Result<()> {
    let stop = shutdown_signal()?;
    if a.base_port > u16::MAX - 20_001 {
        bail!(
            "--base-port {} leaves no room for three masters",
            a.base_port
        );
    }
    let names = ["m1", "m2", "m3"];
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|i| (a.base_port + i * 10_000, a.base_port + i * 10_000 + 1))
        .collect();
    let dns_addrs: Vec<SocketAddr> = ports.iter().map(|(c, _)| addr(c + 2)).collect();
    let initial: Vec<(String, String)> = names
        .iter()
        .zip(&ports)
        .map(|(n, (_, p))| (n.to_string(), addr(*p).to_string()))
        .collect();
    let pki = std::sync::Arc::new(up_pki::UpPki::ensure(&a.data_dir)?);
    let endpoints: Vec<String> = ports.iter().map(|(c, _)| addr(*c).to_string()).collect();
    let root = nix::unistd::geteuid().is_root();
    let proxy_mode = if root { a.proxy_mode.mode() } else { None };
    let env = up_agents::AgentEnv::new(
        &endpoints,
        &a.data_dir,
        &a.registry_mirrors,
        proxy_mode,
        pki.clone(),
    )?;
    let autoscale = up_autoscale::UpAutoscale::new(&a.autoscale, env.clone())?;
    let mut running = Vec::new();
    for ((n, (c, p)), d) in names.iter().zip(&ports).zip(&dns_addrs) {
        let mut cfg = config(n, a.data_dir.join(n), addr(*c), addr(*p), &a.tuning);
        cfg.initial_cluster = initial.clone();
        let mut args = pki.master_args(n)?;
        args.token_auth_file = a.token_auth_file.clone();
        let (sec, access) = args.build(addr(*c), addr(*p))?;
        cfg.security = sec;
        let dns = Some(a.dns.config(*d)?);
        let mut loops = a.tuning.leader_loops()?;
        loops.extend(autoscale.as_ref().map(|s| s.leader_loop.clone()));
        loops.extend(args.csr_loop()?);
        running.push(
            control_plane::start(cfg, a.tuning.api_config()?, loops, dns, access)
                .await
                .with_context(|| format!("starting master {n}"))?,
        );
    }
    for r in &running {
        if !r
            .master
            .wait_ready(std::time::Duration::from_secs(30))
            .await
        {
            eprintln!(
                "warning: master {} has not published itself yet",
                r.master.config().name
            );
        }
    }
    let agents = if a.agents > 0 && !root {
        eprintln!(
            "warning: not root: starting no agents (they need network namespaces and containerd)"
        );
        up_agents::Agents::start(0, &env)?
    } else {
        up_agents::Agents::start(a.agents, &env)?
    };
    if let Some(s) = &autoscale {
        let admin = master_client::connect_as(
            &endpoints,
            Some(pki.client("admin", "admin", &["system:masters"], &[])?),
            None,
        )?;
        s.ensure_pool(admin).await?;
    }
    let flt_config = pki.write_flt_config(&a.data_dir, &endpoints)?;
    let pki_dir = std::path::absolute(&pki.dir).unwrap_or(pki.dir.clone());
    let ingress = ingress_cmd::UpIngress::start(
        &a.ingress,
        a.base_port,
        master_client::connect_as(
            &endpoints,
            Some(pki.client("admin", "admin", &["system:masters"], &[])?),
            None,
        )?,
        master_client::connect_as(
            &endpoints,
            Some(pki.client("ingress", "system:ingress", &[], &[])?),
            None,
        )?,
        !agents.names.is_empty(),
    )
    .await?;
    println!(
        "Flotilla is up: three masters and {} agents, data in {}",
        agents.names.len(),
        a.data_dir.display()
    );
    println!(
        "  flt:           export FLT_CONFIG={}   (cluster-admin over TLS; certificates in {})",
        flt_config.display(),
        pki_dir.display()
    );
    if !agents.names.is_empty() {
        println!(
            "  agents:        {} (host namespaces flotilla-up-a1.., bridge flotilla-up0); pods: flt get pods -o wide",
            agents.names.join(", "),
        );
        if a.registry_mirrors.is_empty() {
            println!("  images:        no --registry-mirror given: pulls go to the registries themselves");
        }
    }
    let https: Vec<String> = endpoints.iter().map(|e| format!("https://{e}")).collect();
    println!(
        "  etcd v3 API:   ETCDCTL_API=3 etcdctl --endpoints={} --cacert {p}/ca.crt --cert {p}/admin.crt --key {p}/admin.key endpoint status -w table",
        https.join(","),
        p = pki_dir.display()
    );
    println!("  cluster:       flt cluster status");
    if let Some(s) = &autoscale {
        println!(
            "  autoscaler:    pool default between {} and {} nodes (local provider); flt describe nodepool default",
            s.min, s.max
        );
    }
    for (n, d) in names.iter().zip(&dns_addrs) {
        println!(
            "  {n} dns {d}    dig @{} -p {} kubernetes.default.svc.{}",
            d.ip(),
            d.port(),
            a.dns.cluster_domain
        );
    }
    if let Some(i) = &ingress {
        let show = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "  ingress:       http {} https {}    curl -H 'Host: HOST' http://{}/",
            show(i.http),
            show(i.https),
            show(i.http)
        );
    }
    println!("Press Ctrl-C to stop; the same command starts it again on the same data.");
    stop.await;
    println!("stopping...");
    if let Some(i) = ingress {
        i.shutdown().await;
    }
    agents.shutdown().await;
    if let Some(s) = &autoscale {
        s.provider.shutdown().await;
    }
    for r in running {
        r.shutdown().await;
    }
    Ok(())
}

/// jemalloc rather than glibc's malloc: under load a master allocates and
/// frees small buffers on every request, and glibc's arenas spent about a
/// sixth of a leader's CPU there (bench/RESULTS.md, issue 20).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let res = rt.block_on(async {
        match cli.cmd {
            Cmd::Master(a) => run_master(*a).await,
            Cmd::Up(a) => run_up(*a).await,
            Cmd::Agent(a) => agent_cmd::run(*a, shutdown_signal()?).await,
            Cmd::Proxy(a) => proxy_cmd::run(a, shutdown_signal()?).await,
            Cmd::Certs(c) => certs_cmd::run(c),
            Cmd::Snapshot(c) => backup_cmd::status(c),
            Cmd::Restore(a) => backup_cmd::restore(a),
            Cmd::Ingress(a) => ingress_cmd::run(a, shutdown_signal()?).await,
        }
    });
    if let Err(e) = res {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}
