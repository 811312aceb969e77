//! `flotilla proxy`: the node proxy, like kube-proxy. It watches Services,
//! EndpointSlices and Nodes through `flotilla-client` caches and makes the
//! node send traffic for a service's addresses (cluster IP, node ports,
//! external IPs, load balancer addresses) to the service's ready
//! endpoints, in one of two modes:
//!
//! - iptables ([`rules::iptables_mode`], [`iptables::Writer`]): the kernel
//!   DNATs, with kube-proxy's chain layout under FLOTILLA- names;
//! - nftables ([`nftables`]): the kernel DNATs, from a table of the
//!   proxy's own whose verdict maps look service addresses up, so that a
//!   change writes only what changed (kube-proxy's nftables mode);
//! - userspace ([`userspace`]): nat rules REDIRECT each service address to
//!   a listener of this process, which connects to an endpoint, retrying
//!   others when a connect fails.
//!
//! Load balancer addresses are answered by one elected node ([`lb`]); the
//! elected node's proxy puts the address on the node's interface so that
//! it answers ARP for it.
//!
//! Owns: the proxy's rules and listeners, and `--cleanup`. Must not depend
//! on the agent, the controllers, the masters' crates or the store: it
//! reads the cluster only through the API (`flotilla-client`).

pub mod iptables;
pub mod lb;
pub mod lbaddr;
pub mod metrics;
pub mod model;
pub mod netns;
pub mod nftables;
pub mod rules;
pub mod udp;
pub mod userspace;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flotilla_client::{Api, Client, ListParams, Reflector};
use flotilla_objects::core::{Node, Service};
use flotilla_objects::discovery::EndpointSlice;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Errors of the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(String),
    #[error("{command}: {stderr}")]
    Command { command: String, stderr: String },
    #[error("the caches did not fill within {0:?} (are the masters reachable?)")]
    NotReady(Duration),
}

/// How the proxy moves traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Iptables,
    Nftables,
    Userspace,
}

impl Mode {
    /// Whether the kernel forwards (iptables and nftables modes).
    pub fn in_kernel(self) -> bool {
        matches!(self, Mode::Iptables | Mode::Nftables)
    }
}

/// The proxy's settings.
#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub mode: Mode,
    /// The node's network namespace when the proxy runs outside it.
    pub netns: Option<PathBuf>,
    /// The node's address: load balancer addresses go on its interface.
    pub node_ip: Option<Ipv4Addr>,
    /// Pod addresses; traffic to cluster IPs from elsewhere is masqueraded.
    pub cluster_cidr: Option<String>,
    /// The service (cluster IP) range, routed to the node's loopback so
    /// that addresses without endpoints are refused (None: no route).
    pub service_cidr: Option<String>,
    /// Interval of full resyncs (rewrite every chain).
    pub resync: Duration,
    /// Least time between two syncs (changes coalesce within it).
    pub min_sync_interval: Duration,
    /// Threads of the userspace data path.
    pub data_threads: usize,
    /// The iptables backend (None: [`iptables::Backend::detect`]).
    pub iptables_backend: Option<iptables::Backend>,
    /// Where the sync series go, and the readiness they give.
    pub metrics: Option<metrics::ProxyMetrics>,
}

impl Config {
    pub fn new(node_name: &str, mode: Mode) -> Config {
        Config {
            node_name: node_name.to_string(),
            mode,
            netns: None,
            node_ip: None,
            cluster_cidr: Some("10.244.0.0/16".into()),
            service_cidr: Some("10.96.0.0/12".into()),
            resync: Duration::from_secs(60),
            min_sync_interval: Duration::from_millis(20),
            data_threads: 2,
            iptables_backend: None,
            metrics: None,
        }
    }
}

/// A mode's data path and the writer of its rules.
enum Backend {
    Iptables(iptables::Writer),
    Nftables(nftables::Writer, nftables::rules::Renderer),
    Userspace(userspace::Userspace, iptables::Writer),
}

impl Backend {
    async fn new(cfg: &Config) -> Result<Backend, Error> {
        Ok(match cfg.mode {
            Mode::Iptables => Backend::Iptables(iptables_writer(cfg).await),
            Mode::Nftables => Backend::Nftables(
                nftables::Writer::new(cfg.netns.clone()),
                nftables::rules::Renderer::default(),
            ),
            Mode::Userspace => Backend::Userspace(
                userspace::Userspace::new(cfg.netns.as_deref(), cfg.data_threads)
                    .map_err(|e| Error::Io(format!("data path threads: {e}")))?,
                iptables_writer(cfg).await,
            ),
        })
    }

    /// Make the node serve `ports`.
    async fn sync(
        &mut self,
        ports: &[model::SvcPort],
        cluster_cidr: Option<&str>,
    ) -> Result<iptables::SyncStats, Error> {
        match self {
            Backend::Iptables(w) => w.sync(rules::iptables_mode(ports, cluster_cidr)).await,
            Backend::Nftables(w, r) => w.sync(r.render(ports, cluster_cidr)).await,
            Backend::Userspace(u, w) => {
                let listeners = u.apply(ports).await;
                w.sync(rules::userspace_mode(ports, &listeners)).await
            }
        }
    }

    /// The next sync rewrites everything.
    fn force_full(&mut self) {
        match self {
            Backend::Iptables(w) | Backend::Userspace(_, w) => w.force_full(),
            Backend::Nftables(w, _) => w.force_full(),
        }
    }
}

/// The writer of iptables rules, with the configured or detected backend.
async fn iptables_writer(cfg: &Config) -> iptables::Writer {
    let kind = match cfg.iptables_backend {
        Some(b) => b,
        None => iptables::Backend::detect(cfg.netns.as_deref()).await,
    };
    tracing::info!(backend = ?kind, "iptables backend");
    iptables::Writer::new(cfg.netns.clone(), kind)
}

/// Remove every rule, chain and load balancer address the proxy writes.
pub async fn cleanup(netns: Option<&std::path::Path>) -> Result<usize, Error> {
    let n = iptables::cleanup(netns).await? + nftables::cleanup(netns).await?;
    lbaddr::cleanup(netns).await;
    Ok(n)
}

/// Run the proxy until `token` is cancelled. Rules stay in place on exit
/// (established and new connections keep working until the next proxy
/// syncs); `--cleanup` removes them.
pub async fn run(cfg: Config, client: Client, token: CancellationToken) -> Result<(), Error> {
    let span = tracing::info_span!("proxy", node = %cfg.node_name, mode = ?cfg.mode);
    async move {
        let services = Reflector::spawn(Api::<Service>::all(client.clone()), ListParams::default());
        let slices = Reflector::spawn(
            Api::<EndpointSlice>::all(client.clone()),
            ListParams::default(),
        );
        let nodes = Reflector::spawn(Api::<Node>::all(client), ListParams::default());
        let wait = Duration::from_secs(60);
        for ok in [
            services.wait_until_ready(wait).await,
            slices.wait_until_ready(wait).await,
            nodes.wait_until_ready(wait).await,
        ] {
            if !ok {
                return Err(Error::NotReady(wait));
            }
        }
        let mut backend = Backend::new(&cfg).await?;
        if let Some(cidr) = &cfg.service_cidr {
            lbaddr::ensure_service_route(cfg.netns.as_deref(), cidr).await;
        }
        let mut other_mode_removed = false;
        let mut lb = lbaddr::Addresses::new(cfg.netns.clone(), cfg.node_ip);
        let (svc_cache, slice_cache, node_cache) =
            (services.cache(), slices.cache(), nodes.cache());
        let mut changes = [
            svc_cache.changes(),
            slice_cache.changes(),
            node_cache.changes(),
        ];
        let mut last_resync = Instant::now();
        let mut udp_before: UdpEndpoints = BTreeMap::new();
        loop {
            for c in changes.iter_mut() {
                c.borrow_and_update();
            }
            let started = Instant::now();
            let (svcs, sls, ns) = (svc_cache.list(), slice_cache.list(), node_cache.list());
            let ports = model::build(&model::Inputs {
                node_name: &cfg.node_name,
                services: &svcs,
                slices: &sls,
                nodes: &ns,
            });
            let result = backend.sync(&ports, cfg.cluster_cidr.as_deref()).await;
            if let Some(m) = &cfg.metrics {
                match &result {
                    Ok(s) => m.synced(started.elapsed(), s.full, s.chains_written, ports.len()),
                    Err(_) => m.failed(),
                }
            }
            match &result {
                Ok(s) => tracing::info!(
                    services = ports.len(),
                    full = s.full,
                    chains_written = s.chains_written,
                    chains_removed = s.chains_removed,
                    bytes = s.payload_bytes,
                    kernel_ms = s.kernel.as_millis() as u64,
                    took_ms = started.elapsed().as_millis() as u64,
                    "synced"
                ),
                Err(e) => tracing::error!(error = %e, "sync failed; retrying"),
            }
            if result.is_ok() && !other_mode_removed {
                // What another mode of an earlier run left would still take
                // traffic: remove it (only the proxy's own chains and
                // table) once this mode's rules are in place, so that
                // services are never without rules in between.
                other_mode_removed = true;
                remove_other_mode(cfg.netns.as_deref(), cfg.mode).await;
            }
            let udp_now = udp_endpoints(&ports);
            if result.is_ok() {
                flush_udp_conntrack(cfg.netns.as_deref(), cfg.mode, &udp_before, &udp_now).await;
                udp_before = udp_now;
            }
            lb.apply(&model::lb_addresses(&ports)).await;
            let retry = result.is_err();
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)), if retry => {}
                _ = tokio::time::sleep(cfg.resync.saturating_sub(last_resync.elapsed())) => {
                    backend.force_full();
                    last_resync = Instant::now();
                }
                _ = async {
                    let [a, b, c] = &mut changes;
                    tokio::select! {
                        _ = a.changed() => {}
                        _ = b.changed() => {}
                        _ = c.changed() => {}
                    }
                } => {
                    tokio::time::sleep(cfg.min_sync_interval).await;
                }
            }
        }
        tracing::info!("stopping; rules stay until `flotilla proxy --cleanup`");
        Ok(())
    }
    .instrument(span)
    .await
}

async fn remove_other_mode(netns: Option<&std::path::Path>, mode: Mode) {
    let other = match mode {
        Mode::Nftables => iptables::cleanup(netns).await,
        Mode::Iptables | Mode::Userspace => nftables::cleanup(netns).await,
    };
    match other {
        Ok(0) => {}
        Ok(n) => tracing::info!(removed = n, "removed the rules of another proxy mode"),
        Err(e) => tracing::warn!(error = %e, "removing the rules of another proxy mode"),
    }
}

/// Delete the UDP conntrack entries that would keep datagrams from the
/// endpoints now in the rules (UDP has no connection to end):
/// - in iptables and nftables modes, those NATed to an endpoint that left;
/// - in both modes, for a service address that had no endpoint, those to
///   that address that were not NATed at all (datagrams sent while there
///   was no rule: each later one would follow the same entry, refreshed,
///   and never reach an endpoint), kube-proxy's flush of services that go
///   from 0 endpoints to some.
async fn flush_udp_conntrack(
    netns: Option<&std::path::Path>,
    mode: Mode,
    before: &UdpEndpoints,
    now: &UdpEndpoints,
) {
    let none = BTreeSet::new();
    if mode.in_kernel() {
        for (dst, eps) in before {
            for ep in eps.difference(now.get(dst).unwrap_or(&none)) {
                iptables::flush_udp(netns, &dst.0.to_string(), ep.0, ep.1).await;
            }
        }
    }
    for (dst, eps) in now {
        if !eps.is_empty() && before.get(dst).is_none_or(BTreeSet::is_empty) {
            iptables::flush_udp_unnated(netns, &dst.0.to_string()).await;
        }
    }
}

/// UDP endpoints (address, port) by service address (cluster IP, node port).
type UdpEndpoints = BTreeMap<(Ipv4Addr, Option<u16>), BTreeSet<(Ipv4Addr, u16)>>;

fn udp_endpoints(ports: &[model::SvcPort]) -> UdpEndpoints {
    ports
        .iter()
        .filter(|p| p.proto == model::Proto::Udp)
        .map(|p| {
            (
                (p.cluster_ip, p.node_port),
                p.endpoints.iter().map(|e| (e.ip, e.port)).collect(),
            )
        })
        .collect()
}
